//! The grace window for retries (issue 17). A partner whose HTTP client timed out and retries
//! a refresh or a code exchange must not lose the customer's grant to reuse detection: inside
//! `reuse_grace_seconds` of the first use, the same client presenting the same just-spent
//! token or code gets the very answer the first use gave — the same access token (with what is
//! left of its life), the same refresh token, the same scope. Everything else is reuse, as
//! before: after the window, a token older than the just-rotated one, another scope.
//!
//! The first use keeps its answer for the window, sealed with XChaCha20-Poly1305 under a key
//! derived from the presented token or code (HMAC-SHA256 keyed with it, under a label of our
//! own). The database holds that token or code only as its plain SHA-256 — a different
//! derivation — so whoever reads the database, a backup or Redis cannot open the answer: only
//! a presenter of the secret itself can, and only the owning client is let that far. Answers
//! are cleared by the next rotation, by revocation, and by a sweep once their window ended.

use super::token::TokenResponse;
use crate::app::App;
use crate::clock::SharedClock;
use crate::domain::GrantId;
use crate::error::Internal;
use crate::secrets::random_bytes;
use crate::store::{IssuedFor, RefreshRecord, Rotation, SealedAnswer, Store, Successor};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;
use zeroize::Zeroizing;

/// A retry that arrives while the first use is still signing and storing waits this many
/// times this long for its answer (at most about a second), then gets a clean `invalid_grant`
/// and may retry again: it is never taken for reuse.
const WAIT_POLLS: u32 = 20;
const WAIT_STEP: Duration = Duration::from_millis(50);

/// How often each instance clears answers whose window has ended.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

const NONCE_LEN: usize = 24;

/// A spent secret as presented, and where its answer is kept.
#[derive(Debug, Clone, Copy)]
pub enum Spent<'a> {
    /// An authorization code; its answer is kept on its grant's row.
    Code { code: &'a str, grant: GrantId },
    /// A refresh token; its answer is kept on its own row.
    RefreshToken {
        token: &'a str,
        record: &'a RefreshRecord,
    },
}

impl<'a> Spent<'a> {
    /// What the refresh token issued for this spend replaces.
    pub fn issued_for(&self) -> IssuedFor<'a> {
        match *self {
            Spent::Code { .. } => IssuedFor::Code,
            Spent::RefreshToken { record, .. } => IssuedFor::Refresh(record),
        }
    }

    fn secret(&self) -> &str {
        match self {
            Spent::Code { code, .. } => code,
            Spent::RefreshToken { token, .. } => token,
        }
    }

    /// Names the kind of secret and its row: the key's label and the seal's associated data,
    /// so an answer copied to another row, or to the other kind, does not open.
    fn binding(&self) -> String {
        match self {
            Spent::Code { grant, .. } => format!("authorization_code:{grant}"),
            Spent::RefreshToken { record, .. } => format!("refresh_token:{}", record.id),
        }
    }

    /// The key the answer is sealed under: HMAC-SHA256 keyed with the presented secret. The
    /// stored lookup hash is SHA-256 of the secret alone, which says nothing about this.
    fn key(&self) -> Result<XChaCha20Poly1305, Internal> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret().as_bytes())
            .map_err(|e| Internal::Other(anyhow::anyhow!("answer key: {e}")))?;
        mac.update(b"keyhole reissue v1\0");
        mac.update(self.binding().as_bytes());
        let key = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        XChaCha20Poly1305::new_from_slice(key.as_slice())
            .map_err(|e| Internal::Other(anyhow::anyhow!("answer key: {e}")))
    }
}

/// What is sealed: the answer, with the access token's end instead of its remaining life.
#[derive(Serialize, Deserialize)]
struct KeptAnswer {
    access_token: String,
    refresh_token: String,
    scope: String,
    access_expires_at: i64,
    /// DPoP: the key the tokens are bound to; absent in answers kept before DPoP.
    #[serde(default)]
    jkt: Option<String>,
}

/// Seals an answer for a retry of `spent` until `until`.
pub fn seal(
    spent: Spent<'_>,
    answer: &TokenResponse,
    access_expires_at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<SealedAnswer, Internal> {
    let kept = KeptAnswer {
        access_token: answer.access_token.clone(),
        refresh_token: answer.refresh_token.clone(),
        scope: answer.scope.clone(),
        access_expires_at: access_expires_at.timestamp(),
        jkt: answer.bound_to.clone(),
    };
    let plain = Zeroizing::new(serde_json::to_vec(&kept).map_err(anyhow::Error::from)?);
    let nonce = random_bytes::<NONCE_LEN>().map_err(anyhow::Error::from)?;
    let binding = spent.binding();
    let ciphertext = spent
        .key()?
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plain,
                aad: binding.as_bytes(),
            },
        )
        .map_err(|e| Internal::Other(anyhow::anyhow!("sealing an answer: {e}")))?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    Ok(SealedAnswer { sealed, until })
}

/// Opens an answer with the presented secret; `None` when it does not open (another secret,
/// another row, or altered), which the caller treats as nothing kept.
pub fn open(spent: Spent<'_>, answer: &SealedAnswer, now: DateTime<Utc>) -> Option<TokenResponse> {
    let (nonce, ciphertext) = answer.sealed.split_first_chunk::<NONCE_LEN>()?;
    let binding = spent.binding();
    let plain = Zeroizing::new(
        spent
            .key()
            .ok()?
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: binding.as_bytes(),
                },
            )
            .ok()?,
    );
    let kept: KeptAnswer = serde_json::from_slice(&plain).ok()?;
    let left = (kept.access_expires_at - now.timestamp()).max(0);
    Some(TokenResponse {
        access_token: kept.access_token,
        token_type: super::token::token_type(kept.jkt.as_deref()),
        expires_in: u32::try_from(left).unwrap_or(u32::MAX),
        refresh_token: kept.refresh_token,
        scope: kept.scope,
        bound_to: kept.jkt,
    })
}

/// What a second presentation of a spent token or code is.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A retry inside the window: the first use's answer, to open.
    Replay(SealedAnswer),
    /// A retry inside the window while the first use is still issuing.
    Pending,
    /// The first use failed and gave it back: the partner may simply try again.
    GivenBack,
    /// Reuse: outside the window, older than the just-rotated one, revoked, or nothing kept.
    Reuse,
}

/// Tells a retry from a reuse. The window runs from the first use, not from the retry.
pub fn judge(rotation: &Rotation, now: DateTime<Utc>, grace: chrono::Duration) -> Verdict {
    if grace <= chrono::Duration::zero() || rotation.revoked {
        return Verdict::Reuse;
    }
    let Some(spent_at) = rotation.spent_at else {
        return Verdict::GivenBack;
    };
    if spent_at + grace <= now {
        return Verdict::Reuse;
    }
    match (rotation.successor, &rotation.answer) {
        (Successor::NotYet, _) => Verdict::Pending,
        (Successor::Spent, _) => Verdict::Reuse,
        (Successor::Live, Some(answer)) if answer.until > now => Verdict::Replay(answer.clone()),
        // A successor stored without an answer: issued while the window was off.
        (Successor::Live, _) => Verdict::Reuse,
    }
}

/// The grace window in force.
pub fn grace(app: &App) -> chrono::Duration {
    chrono::Duration::seconds(i64::from(app.settings.reuse_grace_seconds))
}

/// Judges a second presentation of `spent`, waiting (boundedly) while the first use is still
/// issuing.
pub async fn settle(app: &App, spent: Spent<'_>) -> Result<Verdict, Internal> {
    for poll in 0..WAIT_POLLS {
        let rotation = match spent {
            Spent::Code { grant, .. } => app.store.code_rotation(grant).await?,
            Spent::RefreshToken { record, .. } => app.store.refresh_rotation(&record.id).await?,
        };
        // The row is gone (its grant was deleted): nothing to give.
        let Some(rotation) = rotation else {
            return Ok(Verdict::Reuse);
        };
        match judge(&rotation, app.clock.now(), grace(app)) {
            Verdict::Pending if poll + 1 < WAIT_POLLS => tokio::time::sleep(WAIT_STEP).await,
            verdict => return Ok(verdict),
        }
    }
    Ok(Verdict::Pending)
}

/// Clears kept answers once their window has ended, on every instance (cheap: the ends are
/// indexed, and only a few answers are ever kept).
pub async fn sweep(store: Store, clock: SharedClock) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        match store.forget_answers(clock.now()).await {
            Ok(0) => {}
            Ok(cleared) => tracing::debug!(cleared, "cleared answers kept for retries"),
            // The next tick tries again; until then the answers are ignored (`judge`).
            Err(e) => tracing::warn!(error = %e, "clearing answers kept for retries failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> TokenResponse {
        TokenResponse {
            access_token: "eyJ.access".into(),
            token_type: "Bearer",
            expires_in: 300,
            refresh_token: "kh_rt_next".into(),
            scope: "claims:status".into(),
            bound_to: None,
        }
    }

    fn record(id: &str) -> RefreshRecord {
        RefreshRecord {
            id: id.into(),
            grant_id: GrantId::random(),
            parent_id: None,
            expires_at: Utc::now(),
            used_at: None,
            revoked_at: None,
            jkt: None,
        }
    }

    #[test]
    fn an_answer_opens_only_with_the_presented_secret_on_its_own_row() {
        let now = Utc::now();
        let (row_1, row_2) = (record("row-1"), record("row-2"));
        let spent = Spent::RefreshToken {
            token: "kh_rt_spent",
            record: &row_1,
        };
        let sealed = seal(
            spent,
            &answer(),
            now + chrono::Duration::seconds(300),
            now + chrono::Duration::seconds(5),
        )
        .unwrap();
        assert!(
            !sealed.sealed.windows(10).any(|w| w == b"kh_rt_next"),
            "sealed, not stored in the clear"
        );
        let later = now + chrono::Duration::seconds(3);
        let opened = open(spent, &sealed, later).unwrap();
        assert_eq!(opened.access_token, "eyJ.access");
        assert_eq!(opened.refresh_token, "kh_rt_next");
        assert_eq!(opened.scope, "claims:status");
        assert_eq!(opened.expires_in, 297, "what is left of the access token");

        let other_token = Spent::RefreshToken {
            token: "kh_rt_other",
            record: &row_1,
        };
        let other_row = Spent::RefreshToken {
            token: "kh_rt_spent",
            record: &row_2,
        };
        let as_code = Spent::Code {
            code: "kh_rt_spent",
            grant: GrantId::random(),
        };
        for wrong in [other_token, other_row, as_code] {
            assert!(open(wrong, &sealed, later).is_none(), "{wrong:?}");
        }
        let mut altered = sealed.clone();
        if let Some(last) = altered.sealed.last_mut() {
            *last ^= 1;
        }
        assert!(open(spent, &altered, later).is_none());
        let expired = open(spent, &sealed, now + chrono::Duration::seconds(400)).unwrap();
        assert_eq!(expired.expires_in, 0);
    }

    fn rotation(successor: Successor, answer: bool) -> Rotation {
        let now = Utc::now();
        Rotation {
            spent_at: Some(now),
            revoked: false,
            successor,
            answer: answer.then(|| SealedAnswer {
                sealed: vec![1],
                until: now + chrono::Duration::seconds(5),
            }),
        }
    }

    #[test]
    fn only_a_retry_of_the_just_rotated_secret_inside_the_window_is_replayed() {
        let five = chrono::Duration::seconds(5);
        let live = rotation(Successor::Live, true);
        let at = |s| live.spent_at.unwrap() + chrono::Duration::seconds(s);
        assert!(matches!(judge(&live, at(4), five), Verdict::Replay(_)));
        assert_eq!(
            judge(&live, at(5), five),
            Verdict::Reuse,
            "the window ended"
        );
        assert_eq!(
            judge(&live, at(1), chrono::Duration::zero()),
            Verdict::Reuse,
            "0 turns the window off"
        );
        assert_eq!(
            judge(&rotation(Successor::NotYet, false), at(1), five),
            Verdict::Pending
        );
        assert_eq!(
            judge(&rotation(Successor::Spent, true), at(1), five),
            Verdict::Reuse,
            "its successor was used: not the just-rotated one"
        );
        assert_eq!(
            judge(&rotation(Successor::Live, false), at(1), five),
            Verdict::Reuse,
            "nothing kept to give"
        );
        let revoked = Rotation {
            revoked: true,
            ..live.clone()
        };
        assert_eq!(judge(&revoked, at(1), five), Verdict::Reuse);
        let given_back = Rotation {
            spent_at: None,
            ..live
        };
        assert_eq!(judge(&given_back, Utc::now(), five), Verdict::GivenBack);
    }
}
