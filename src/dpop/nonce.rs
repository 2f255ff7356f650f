//! Server-provided DPoP nonces (RFC 9449 §8, §9). A nonce names a five-minute period and
//! carries an HMAC of it under a key derived from the encryption key, so every instance makes
//! and accepts the same nonces without shared state. The current and the previous period's
//! nonces are accepted, so a partner that just fetched one is never refused at the turn.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use sha2::Sha256;
use zeroize::Zeroizing;

const PERIOD_SECONDS: i64 = 300;
const TAG_LEN: usize = 16;

pub struct Nonces {
    key: Zeroizing<[u8; 32]>,
    /// The current period's nonce, made once per period rather than per response.
    current: RwLock<(i64, String)>,
}

impl Nonces {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self {
            key,
            current: RwLock::new((i64::MIN, String::new())),
        }
    }

    fn period(now: DateTime<Utc>) -> i64 {
        now.timestamp().div_euclid(PERIOD_SECONDS)
    }

    fn tag(&self, period: i64) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        // HMAC accepts keys of any length: this cannot fail.
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice()) {
            mac.update(b"keyhole dpop nonce v1\0");
            mac.update(&period.to_be_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        }
        out
    }

    fn make(&self, period: i64) -> String {
        let mut raw = [0u8; 8 + TAG_LEN];
        raw[..8].copy_from_slice(&period.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(period));
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn current(&self, now: DateTime<Utc>) -> String {
        let period = Self::period(now);
        {
            let current = self.current.read();
            if current.0 == period {
                return current.1.clone();
            }
        }
        let nonce = self.make(period);
        *self.current.write() = (period, nonce.clone());
        nonce
    }

    /// Whether `nonce` is this or the previous period's.
    pub fn is_current(&self, nonce: &str, now: DateTime<Utc>) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce.as_bytes()) else {
            return false;
        };
        let Some((period, tag)) = raw.split_first_chunk::<8>() else {
            return false;
        };
        let period = i64::from_be_bytes(*period);
        let now = Self::period(now);
        if period != now && period != now - 1 {
            return false;
        }
        subtle::ConstantTimeEq::ct_eq(tag, self.tag(period).as_slice()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_nonce_holds_for_its_period_and_the_next_only() {
        let nonces = Nonces::new(Zeroizing::new([7; 32]));
        let t0 = at("2030-01-01T00:00:00Z");
        let nonce = nonces.current(t0);
        assert_eq!(nonces.current(at("2030-01-01T00:04:59Z")), nonce);
        assert!(nonces.is_current(&nonce, at("2030-01-01T00:09:59Z")));
        assert!(!nonces.is_current(&nonce, at("2030-01-01T00:10:00Z")));
        assert!(!nonces.is_current(&nonce, at("2029-12-31T23:59:59Z")));
        assert_ne!(nonces.current(at("2030-01-01T00:05:00Z")), nonce);
    }

    #[test]
    fn a_nonce_of_another_key_or_altered_is_refused() {
        let ours = Nonces::new(Zeroizing::new([7; 32]));
        let theirs = Nonces::new(Zeroizing::new([8; 32]));
        let now = at("2030-01-01T00:00:00Z");
        assert!(!ours.is_current(&theirs.current(now), now));
        let mut altered = ours.current(now).into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(!ours.is_current(std::str::from_utf8(&altered).unwrap(), now));
        assert!(!ours.is_current("", now));
        assert!(!ours.is_current("not base64!", now));
    }
}
