//! Ed25519 signing keys: generated on first start, stored in the database sealed under the
//! encryption key (`sealing`), rotated by `keyhole keys rotate`. Every instance reloads them
//! each minute, so a rotation reaches all instances within 60 s, and a retired key stays
//! published until its tokens have expired.

use super::sealing::{EncryptionKey, SealError, is_sealed};
use super::{ACCESS_TOKEN_TYP, AccessClaims, LEEWAY_SECONDS};
use crate::clock::SharedClock;
use crate::secrets::{SecretError, random_bytes};
use crate::store::{KeyReplacement, Store, StoreError, StoredKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use parking_lot::RwLock;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::Zeroizing;

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

/// Generates a fresh Ed25519 key; its `kid` is the RFC 7638 JWK thumbprint. Its private key is
/// in the clear: the key ring seals it before storing it.
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

struct CurrentKey {
    kid: String,
    encoding: EncodingKey,
}

/// One immutable snapshot of the keys; swapped whole on reload.
pub(super) struct KeySet {
    current: CurrentKey,
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
    /// Builds the snapshot; the current private key is decrypted unless `previous` holds it
    /// already, so an instance started before an encryption-key rotation keeps signing.
    fn build(
        keys: &[StoredKey],
        encryption_key: &EncryptionKey,
        previous: Option<&KeySet>,
    ) -> Result<Self, KeyError> {
        // Keys arrive newest first; the newest unretired one signs.
        let current = keys
            .iter()
            .find(|k| k.retired_at.is_none())
            .ok_or(KeyError::NoKey)?;
        let encoding = match previous.filter(|p| p.current.kid == current.kid) {
            Some(previous) => previous.current.encoding.clone(),
            None => EncodingKey::from_ed_der(&private_der(encryption_key, current)?),
        };
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
            current: CurrentKey {
                kid: current.kid.clone(),
                encoding,
            },
            verifying,
            jwks: json!({ "keys": jwks }),
        })
    }
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
        let set = KeySet::build(&stored, &encryption_key, None)?;
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
        let set = KeySet::build(&stored, &self.encryption_key, Some(&self.snapshot()))?;
        *self.keys.write() = Arc::new(set);
        Ok(())
    }

    /// Adds a new current key; the old one stays published until its tokens expire.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let key = seal_new(&self.encryption_key, generate_key(self.clock.now())?)?;
        let kid = key.kid.clone();
        self.store.add_signing_key(key).await?;
        self.reload().await?;
        Ok(kid)
    }

    pub(super) fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    pub fn current_kid(&self) -> String {
        self.snapshot().current.kid.clone()
    }

    pub fn jwks(&self) -> Value {
        self.snapshot().jwks.clone()
    }

    /// Signs `claims` as an RFC 9068 access token with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        Ok(self.sign_jws(ACCESS_TOKEN_TYP, claims)?.1)
    }

    /// Signs any claims as a compact JWS of type `typ` with the current key; returns the
    /// key's id with it. The `typ` keeps one kind of signed object from passing for another.
    pub fn sign_jws<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<(String, String), KeyError> {
        let keys = self.snapshot();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(keys.current.kid.clone());
        let jws = jsonwebtoken::encode(&header, claims, &keys.current.encoding)?;
        Ok((keys.current.kid.clone(), jws))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(KeySet::build(std::slice::from_ref(&a), &encryption_key, None).is_ok());
        let sealed = seal_new(&encryption_key, a).unwrap();
        assert!(is_sealed(&sealed.private_key));
        assert!(KeySet::build(std::slice::from_ref(&sealed), &encryption_key, None).is_ok());
        let wrong = EncryptionKey::generate().unwrap();
        assert!(matches!(
            KeySet::build(&[sealed], &wrong, None),
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
            KeySet::build(&[a], &encryption_key, None),
            Err(KeyError::BadKey { .. })
        ));
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
