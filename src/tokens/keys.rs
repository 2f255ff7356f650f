//! Ed25519 signing keys: generated on first start, stored in the database sealed under the
//! encryption key (`sealing`), rotated by `keyhole keys rotate`.
//!
//! Every instance reloads the keys on a timer of its own, so a rotated key is *published first
//! and used later*: from the rotation on, every instance that has reloaded publishes it in the
//! JWKS and accepts its tokens, but it signs only from its activation time, by which every
//! instance has reloaded it. Each instance picks the signing key from its clock on every
//! signature, so all switch at the same moment without waiting for a reload. The key it
//! replaces signs until then and stays published until the last tokens it signed have expired.

use super::sealing::{EncryptionKey, SealError, is_sealed};
use super::{ACCESS_TOKEN_TYP, AccessClaims, LEEWAY_SECONDS};
use crate::clock::SharedClock;
use crate::secrets::{SecretError, random_bytes};
use crate::store::{KeyReplacement, Store, StoreError, StoredKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use parking_lot::RwLock;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// How often every instance re-reads the signing keys (the reload task in `startup`).
pub const RELOAD_EVERY: Duration = Duration::from_secs(15);

/// How long whoever fetches `/.well-known/jwks.json` may cache it (its `Cache-Control`).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(30);

/// How long a rotated key is published before it signs. An instance that reloaded just before
/// the rotation loads the new key one reload interval later, or two if that reload fails (a
/// database blip); a JWKS it served just before then may be cached for `JWKS_MAX_AGE` more.
/// 15 + 15 + 30 s: every instance, and every fresh copy of the JWKS, has the key before it
/// signs, and DESIGN.md's promise holds: running instances sign with it within 60 s.
pub const ACTIVATION_DELAY: Duration = Duration::from_secs(60);

const _: () = assert!(
    ACTIVATION_DELAY.as_secs() >= 2 * RELOAD_EVERY.as_secs() + JWKS_MAX_AGE.as_secs(),
    "a rotated key must be published for two reloads and a JWKS cache lifetime before it signs"
);
const _: () = assert!(
    ACTIVATION_DELAY.as_secs() <= 60,
    "DESIGN.md: running instances sign with the new key within 60 s"
);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] SecretError),
    #[error("signing key {kid} is unusable: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("no signing key is available")]
    NoKey,
    #[error(
        "signing key {kid} cannot be decrypted with the encryption key in keys.encryption_key_file (or KEYHOLE_KEYS__ENCRYPTION_KEY); no new key was made"
    )]
    Sealed {
        kid: String,
        #[source]
        source: SealError,
    },
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Generates a fresh Ed25519 key, active from when it is stored; its `kid` is the RFC 7638 JWK
/// thumbprint. Its private key is in the clear: the key ring seals it before storing it.
pub fn generate_key(now: chrono::DateTime<chrono::Utc>) -> Result<StoredKey, KeyError> {
    let seed = random_bytes::<32>()?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = signing.to_pkcs8_der().map_err(|e| KeyError::BadKey {
        kid: "new".into(),
        reason: e.to_string(),
    })?;
    let public_key = signing.verifying_key().to_bytes().to_vec();
    Ok(StoredKey {
        kid: thumbprint(&public_key),
        private_key: der.as_bytes().to_vec(),
        public_key,
        created_at: now,
        retired_at: None,
        activates_at: None,
    })
}

/// A key's public half as a JWK (RFC 8037).
pub fn public_jwk(key: &StoredKey) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&key.public_key),
        "kid": key.kid, "alg": "EdDSA", "use": "sig",
    })
}

/// The RFC 7638 thumbprint of an Ed25519 public key: every key's `kid`.
pub fn thumbprint(public_key: &[u8]) -> String {
    // RFC 7638 §3: the required members, lexicographic order, no whitespace.
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public_key)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A freshly generated key, its private half sealed for storage.
fn seal_new(encryption_key: &EncryptionKey, mut key: StoredKey) -> Result<StoredKey, KeyError> {
    let der = Zeroizing::new(std::mem::take(&mut key.private_key));
    key.private_key = encryption_key.seal(&key.kid, &der)?;
    Ok(key)
}

/// A key that signs now or will, its private half opened.
struct Signer {
    kid: String,
    /// When it starts signing; `None` for a key that signs from when it was stored, so that an
    /// instance whose clock is behind the one that stored it signs with it too.
    from: Option<DateTime<Utc>>,
    /// When its successor takes over.
    until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    encoding: EncodingKey,
}

impl Signer {
    fn signs_at(&self, now: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| from <= now) && self.until.is_none_or(|until| now < until)
    }
}

/// The keys that sign now or will, in the order they take over; never empty.
struct Signers {
    first: Signer,
    later: Vec<Signer>,
}

impl Signers {
    /// The key that signs at `now`: the last to have taken over by then. Before any has (a
    /// clock set back past the snapshot's own time), the first.
    fn at(&self, now: DateTime<Utc>) -> &Signer {
        std::iter::once(&self.first)
            .chain(&self.later)
            .rev()
            .find(|s| s.signs_at(now))
            .unwrap_or(&self.first)
    }

    fn find(&self, kid: &str) -> Option<&Signer> {
        std::iter::once(&self.first)
            .chain(&self.later)
            .find(|s| s.kid == kid)
    }
}

/// One immutable snapshot of the keys; swapped whole on reload. It holds every key that signs
/// now or later, so signing switches to a pending key at its activation time without a reload.
pub(super) struct KeySet {
    signers: Signers,
    pub(super) verifying: HashMap<String, DecodingKey>,
    jwks: Value,
}

/// A stored key's private half as PKCS#8 DER, checked against its public half. A key in the
/// clear is accepted here (an instance of an older version may have just rotated during a
/// rolling upgrade); the next start seals it.
fn private_der(
    encryption_key: &EncryptionKey,
    key: &StoredKey,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let der = if is_sealed(&key.private_key) {
        encryption_key
            .open(&key.kid, &key.private_key)
            .map_err(|source| KeyError::Sealed {
                kid: key.kid.clone(),
                source,
            })?
    } else {
        Zeroizing::new(key.private_key.clone())
    };
    let bad = |reason: String| KeyError::BadKey {
        kid: key.kid.clone(),
        reason,
    };
    let signing =
        ed25519_dalek::SigningKey::from_pkcs8_der(&der).map_err(|e| bad(e.to_string()))?;
    if signing.verifying_key().to_bytes().as_slice() != key.public_key.as_slice() {
        return Err(bad("the private key does not match the public key".into()));
    }
    Ok(der)
}

/// What `reseal` did to the stored keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resealed {
    /// Keys that were in the clear (from before sealing) and are now sealed.
    pub were_plain: usize,
    /// Keys that were sealed under the previous encryption key and are now under the new one.
    pub rewrapped: usize,
    /// Keys that were sealed under the target key already.
    pub unchanged: usize,
}

/// Seals every stored key, retired ones included, under `target`: keys in the clear are sealed
/// and keys sealed under `previous` re-sealed, all in one transaction. A key that opens with
/// neither key stops everything before anything is written, naming the key.
pub async fn reseal(
    store: &Store,
    target: &EncryptionKey,
    previous: Option<&EncryptionKey>,
) -> Result<Resealed, KeyError> {
    let mut report = Resealed::default();
    let mut replacements = Vec::new();
    for key in store.all_signing_keys().await? {
        let der = if !is_sealed(&key.private_key) {
            report.were_plain += 1;
            private_der(target, &key)?
        } else if target.open(&key.kid, &key.private_key).is_ok() {
            report.unchanged += 1;
            continue;
        } else {
            // Not under the target key, so under the previous one; without one, this
            // reports the target key's failure.
            let der = private_der(previous.unwrap_or(target), &key)?;
            report.rewrapped += 1;
            der
        };
        replacements.push(KeyReplacement {
            private_key: target.seal(&key.kid, &der)?,
            kid: key.kid,
            expected: key.private_key,
        });
    }
    if !replacements.is_empty() {
        store.replace_private_keys(replacements).await?;
    }
    Ok(report)
}

impl KeySet {
    /// Builds the snapshot at `now`; the private keys of those that sign now or later are
    /// decrypted unless `previous` holds them already, so an instance started before an
    /// encryption-key rotation keeps signing.
    fn build(
        keys: &[StoredKey],
        encryption_key: &EncryptionKey,
        previous: Option<&KeySet>,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let signers = Self::signers(keys, encryption_key, previous, now)?;
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for key in keys {
            let x = URL_SAFE_NO_PAD.encode(&key.public_key);
            let decoding = DecodingKey::from_ed_components(&x).map_err(|e| KeyError::BadKey {
                kid: key.kid.clone(),
                reason: e.to_string(),
            })?;
            verifying.insert(key.kid.clone(), decoding);
            jwks.push(public_jwk(key));
        }
        Ok(Self {
            signers,
            verifying,
            jwks: json!({ "keys": jwks }),
        })
    }

    /// The keys not retired by `now`, in the order they take over.
    fn signers(
        keys: &[StoredKey],
        encryption_key: &EncryptionKey,
        previous: Option<&KeySet>,
        now: DateTime<Utc>,
    ) -> Result<Signers, KeyError> {
        let mut signers = keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|retired| retired > now))
            .map(|key| {
                let known = previous.and_then(|p| p.signers.find(&key.kid));
                let encoding = match known {
                    Some(signer) => signer.encoding.clone(),
                    None => EncodingKey::from_ed_der(&private_der(encryption_key, key)?),
                };
                Ok(Signer {
                    kid: key.kid.clone(),
                    from: key.activates_at,
                    until: key.retired_at,
                    created_at: key.created_at,
                    encoding,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        signers.sort_by_key(|s| (s.from, s.created_at));
        let mut signers = signers.into_iter();
        let first = signers.next().ok_or(KeyError::NoKey)?;
        Ok(Signers {
            first,
            later: signers.collect(),
        })
    }
}

/// `at`, rounded up to a whole second, so the time printed is the time stored on any database.
fn whole_second_after(at: DateTime<Utc>) -> DateTime<Utc> {
    let down = at.trunc_subsecs(0);
    if down == at {
        at
    } else {
        down + chrono::TimeDelta::seconds(1)
    }
}

/// What `keys rotate` did: the new key, and when it starts signing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    pub kid: String,
    pub signs_from: DateTime<Utc>,
}

pub struct KeyRing {
    store: Store,
    clock: SharedClock,
    access_token_ttl: i64,
    encryption_key: EncryptionKey,
    keys: RwLock<Arc<KeySet>>,
}

/// How often `load` reseals when another instance, starting at the same time over a database
/// from before sealing, sealed the same keys first.
const RESEAL_ATTEMPTS: usize = 3;

impl KeyRing {
    /// Loads the keys, generating the first one when the database has none. Every stored key
    /// must open with `encryption_key` (keys in the clear, from before sealing, are sealed
    /// now), so a wrong key stops the start instead of hiding behind a new signing key.
    pub async fn load(
        store: Store,
        clock: SharedClock,
        access_token_ttl_seconds: u32,
        encryption_key: EncryptionKey,
    ) -> Result<Self, KeyError> {
        let mut attempt = 1;
        let resealed = loop {
            match reseal(&store, &encryption_key, None).await {
                Err(KeyError::Store(StoreError::Changed(_))) if attempt < RESEAL_ATTEMPTS => {
                    attempt += 1;
                }
                other => break other?,
            }
        };
        if resealed.were_plain > 0 {
            tracing::warn!(
                keys = resealed.were_plain,
                "signing keys stored in the clear are now encrypted; their plain copies may \
                 remain in backups and free database pages: run `keyhole keys rotate`"
            );
        }
        let access_token_ttl = i64::from(access_token_ttl_seconds);
        let mut stored = Self::fetch(&store, &clock, access_token_ttl).await?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            store
                .add_signing_key(seal_new(&encryption_key, generate_key(clock.now())?)?)
                .await?;
            stored = Self::fetch(&store, &clock, access_token_ttl).await?;
        }
        let set = KeySet::build(&stored, &encryption_key, None, clock.now())?;
        Ok(Self {
            store,
            clock,
            access_token_ttl,
            encryption_key,
            keys: RwLock::new(Arc::new(set)),
        })
    }

    async fn fetch(
        store: &Store,
        clock: &SharedClock,
        ttl: i64,
    ) -> Result<Vec<StoredKey>, KeyError> {
        // A key retired longer ago than a token lives can have no valid tokens left.
        let since = clock.now() - chrono::Duration::seconds(ttl + LEEWAY_SECONDS);
        Ok(store.signing_keys(since).await?)
    }

    /// Re-reads the keys, picking up a rotation done by another process.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let stored = Self::fetch(&self.store, &self.clock, self.access_token_ttl).await?;
        let set = KeySet::build(
            &stored,
            &self.encryption_key,
            Some(&self.snapshot()),
            self.clock.now(),
        )?;
        *self.keys.write() = Arc::new(set);
        Ok(())
    }

    /// Adds a new key, published and trusted by every instance once it reloads, that signs
    /// from `ACTIVATION_DELAY` on; the key it replaces signs until then and stays published
    /// until its tokens expire.
    pub async fn rotate(&self) -> Result<Rotation, KeyError> {
        let now = self.clock.now();
        let mut key = generate_key(now)?;
        let rotation = Rotation {
            kid: key.kid.clone(),
            signs_from: whole_second_after(now + ACTIVATION_DELAY),
        };
        key.activates_at = Some(rotation.signs_from);
        self.store
            .add_signing_key(seal_new(&self.encryption_key, key)?)
            .await?;
        self.reload().await?;
        Ok(rotation)
    }

    pub(super) fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    /// The key that signs now.
    pub fn current_kid(&self) -> String {
        self.snapshot().signers.at(self.clock.now()).kid.clone()
    }

    pub fn jwks(&self) -> Value {
        self.snapshot().jwks.clone()
    }

    /// Signs `claims` as an RFC 9068 access token with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        Ok(self.sign_jws(ACCESS_TOKEN_TYP, claims)?.1)
    }

    /// Signs any claims as a compact JWS of type `typ` with the key that signs now (chosen on
    /// every signature, so a pending key takes over at its activation time on every instance
    /// at once); returns the key's id with it. The `typ` keeps one kind of signed object from
    /// passing for another.
    pub fn sign_jws<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<(String, String), KeyError> {
        let keys = self.snapshot();
        let signer = keys.signers.at(self.clock.now());
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(signer.kid.clone());
        let jws = jsonwebtoken::encode(&header, claims, &signer.encoding)?;
        Ok((signer.kid.clone(), jws))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 Appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn generated_keys_are_distinct_and_loadable_sealed_or_not() {
        let now = chrono::Utc::now();
        let a = generate_key(now).unwrap();
        let b = generate_key(now).unwrap();
        assert_ne!(a.kid, b.kid);
        let encryption_key = EncryptionKey::generate().unwrap();
        assert!(KeySet::build(std::slice::from_ref(&a), &encryption_key, None, now).is_ok());
        let sealed = seal_new(&encryption_key, a).unwrap();
        assert!(is_sealed(&sealed.private_key));
        assert!(KeySet::build(std::slice::from_ref(&sealed), &encryption_key, None, now).is_ok());
        let wrong = EncryptionKey::generate().unwrap();
        assert!(matches!(
            KeySet::build(&[sealed], &wrong, None, now),
            Err(KeyError::Sealed { .. })
        ));
    }

    #[test]
    fn a_private_key_that_does_not_match_its_public_key_is_refused() {
        let now = chrono::Utc::now();
        let mut a = generate_key(now).unwrap();
        a.public_key = generate_key(now).unwrap().public_key;
        let encryption_key = EncryptionKey::generate().unwrap();
        assert!(matches!(
            KeySet::build(&[a], &encryption_key, None, now),
            Err(KeyError::BadKey { .. })
        ));
    }

    /// A key ring over `store`, as one instance loads it, with a clock of its own.
    async fn instance(
        store: &Store,
        clock: &ManualClock,
        encryption_key: &EncryptionKey,
    ) -> KeyRing {
        let clock: SharedClock = Arc::new(clock.clone());
        let encryption_key = EncryptionKey::from_base64(&encryption_key.to_base64()).unwrap();
        KeyRing::load(store.clone(), clock, 300, encryption_key)
            .await
            .unwrap()
    }

    /// Signs a token with whatever key signs now: its `kid` and the token.
    fn sign(keys: &KeyRing) -> (String, String) {
        keys.sign_jws("test+jwt", &json!({ "n": 1 })).unwrap()
    }

    /// Whether `keys` trusts `token`'s signature, as the verifier checks it.
    fn verifies(keys: &KeyRing, token: &str) -> bool {
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let snapshot = keys.snapshot();
        let Some(key) = snapshot.verifying.get(&kid) else {
            return false;
        };
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_exp = false;
        jsonwebtoken::decode::<Value>(token, key, &validation).is_ok()
    }

    fn delay() -> chrono::Duration {
        chrono::Duration::from_std(ACTIVATION_DELAY).unwrap()
    }

    fn published(keys: &KeyRing) -> Vec<String> {
        let mut kids: Vec<String> = keys.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        kids.sort();
        kids
    }

    #[tokio::test]
    async fn a_pending_key_is_published_and_trusted_but_signs_only_from_its_activation() {
        let (store, _dir) = crate::store::testing::store().await;
        let encryption_key = EncryptionKey::generate().unwrap();
        let clock = ManualClock::new(chrono::Utc::now());
        let keys = instance(&store, &clock, &encryption_key).await;
        let old = keys.current_kid();

        let rotation = keys.rotate().await.unwrap();
        let new = rotation.kid.clone();
        let wait = rotation.signs_from - clock.now();
        assert!(wait >= delay() && wait < delay() + chrono::Duration::seconds(1));
        let mut both = vec![old.clone(), new.clone()];
        both.sort();
        assert_eq!(published(&keys), both, "both keys are in the JWKS");
        let (kid, token) = sign(&keys);
        assert_eq!(kid, old, "the new key does not sign yet");
        assert_eq!(keys.current_kid(), old);
        assert!(verifies(&keys, &token));

        // An instance whose clock is already at the activation time signs with the new key;
        // this one trusts what it signs.
        let ahead = ManualClock::new(rotation.signs_from);
        let (kid, early) = sign(&instance(&store, &ahead, &encryption_key).await);
        assert_eq!(kid, new);
        assert!(verifies(&keys, &early));

        // At the activation time, with no reload in between, the new key signs.
        clock.advance(wait - chrono::Duration::milliseconds(1));
        assert_eq!(sign(&keys).0, old);
        clock.advance(chrono::Duration::milliseconds(1));
        let (kid, token) = sign(&keys);
        assert_eq!(kid, new);
        assert_eq!(keys.current_kid(), new);
        assert!(verifies(&keys, &token));
        assert_eq!(
            published(&keys),
            both,
            "the old key's tokens are still valid"
        );
    }

    #[tokio::test]
    async fn the_old_key_stays_published_until_the_last_token_it_signed_has_expired() {
        let (store, _dir) = crate::store::testing::store().await;
        let encryption_key = EncryptionKey::generate().unwrap();
        let clock = ManualClock::new(chrono::Utc::now());
        let keys = instance(&store, &clock, &encryption_key).await;
        let old = keys.current_kid();
        let rotation = keys.rotate().await.unwrap();

        // The last token the old key signs, just before the new key takes over.
        clock.advance(rotation.signs_from - clock.now() - chrono::Duration::seconds(1));
        let (kid, last) = sign(&keys);
        assert_eq!(kid, old);
        // It lives 300 s: until then (and the leeway) it is still trusted...
        clock.advance(chrono::Duration::seconds(300 + LEEWAY_SECONDS - 1));
        keys.reload().await.unwrap();
        assert!(verifies(&keys, &last));
        assert!(published(&keys).contains(&old));
        // ...and once it has expired, its key goes.
        clock.advance(chrono::Duration::seconds(2));
        keys.reload().await.unwrap();
        assert!(!published(&keys).contains(&old));
    }

    #[tokio::test]
    async fn the_first_key_of_an_empty_database_signs_at_once_even_where_clocks_lag() {
        let (store, _dir) = crate::store::testing::store().await;
        let encryption_key = EncryptionKey::generate().unwrap();
        let clock = ManualClock::new(chrono::Utc::now());
        let first = instance(&store, &clock, &encryption_key).await;
        let kid = first.current_kid();
        let stored = store.all_signing_keys().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].activates_at, None,
            "nobody can have a stale JWKS yet"
        );
        assert_eq!(sign(&first).0, kid);
        // An instance whose clock is behind the one that made the key signs with it too.
        let behind = ManualClock::new(clock.now() - chrono::Duration::seconds(5));
        assert_eq!(
            sign(&instance(&store, &behind, &encryption_key).await).0,
            kid
        );
    }

    #[tokio::test]
    async fn a_second_rotation_before_the_first_key_signs_takes_over_from_it_in_turn() {
        let (store, _dir) = crate::store::testing::store().await;
        let encryption_key = EncryptionKey::generate().unwrap();
        let clock = ManualClock::new(chrono::Utc::now());
        let keys = instance(&store, &clock, &encryption_key).await;
        let zero = keys.current_kid();
        let one = keys.rotate().await.unwrap();
        clock.advance(chrono::Duration::seconds(10));
        let two = keys.rotate().await.unwrap();
        assert_eq!(published(&keys).len(), 3);

        let stored = store.all_signing_keys().await.unwrap();
        let retired = |kid: &str| stored.iter().find(|k| k.kid == kid).unwrap().retired_at;
        assert_eq!(retired(&zero), Some(one.signs_from));
        assert_eq!(retired(&one.kid), Some(two.signs_from));
        assert_eq!(retired(&two.kid), None);

        assert_eq!(sign(&keys).0, zero);
        clock.advance(one.signs_from - clock.now());
        assert_eq!(sign(&keys).0, one.kid);
        clock.advance(two.signs_from - clock.now() - chrono::Duration::milliseconds(1));
        assert_eq!(sign(&keys).0, one.kid);
        clock.advance(chrono::Duration::milliseconds(1));
        assert_eq!(sign(&keys).0, two.kid);
    }

    #[tokio::test]
    async fn reseal_seals_plain_keys_and_moves_sealed_ones_to_a_new_key() {
        let (store, _dir) = crate::store::testing::store().await;
        let now = chrono::Utc::now();
        let old = EncryptionKey::generate().unwrap();
        let new = EncryptionKey::generate().unwrap();
        // One key from before sealing, one sealed under the old key.
        store
            .add_signing_key(generate_key(now).unwrap())
            .await
            .unwrap();
        store
            .add_signing_key(seal_new(&old, generate_key(now).unwrap()).unwrap())
            .await
            .unwrap();

        assert!(matches!(
            reseal(&store, &new, None).await,
            Err(KeyError::Sealed { .. })
        ));
        let report = reseal(&store, &new, Some(&old)).await.unwrap();
        assert_eq!(
            report,
            Resealed {
                were_plain: 1,
                rewrapped: 1,
                unchanged: 0
            }
        );
        for key in store.all_signing_keys().await.unwrap() {
            assert!(is_sealed(&key.private_key));
            private_der(&new, &key).unwrap();
        }
        let again = reseal(&store, &new, Some(&old)).await.unwrap();
        assert_eq!(again.unchanged, 2);
    }
}
