//! Ed25519 signing keys: generated on first start, stored in the database, rotated by
//! `keyhole keys rotate`. Every instance reloads them each minute, so a rotation reaches all
//! instances within 60 s, and a retired key stays published until its tokens have expired.

use super::{ACCESS_TOKEN_TYP, AccessClaims, LEEWAY_SECONDS};
use crate::clock::SharedClock;
use crate::secrets::{SecretError, random_bytes};
use crate::store::{Store, StoreError, StoredKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use parking_lot::RwLock;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

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
}

/// Generates a fresh Ed25519 key; its `kid` is the RFC 7638 JWK thumbprint.
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

impl KeySet {
    fn build(keys: &[StoredKey]) -> Result<Self, KeyError> {
        // Keys arrive newest first; the newest unretired one signs.
        let current = keys
            .iter()
            .find(|k| k.retired_at.is_none())
            .ok_or(KeyError::NoKey)?;
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
                encoding: EncodingKey::from_ed_der(&current.private_key),
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
    keys: RwLock<Arc<KeySet>>,
}

impl KeyRing {
    /// Loads the keys, generating the first one when the database has none.
    pub async fn load(
        store: Store,
        clock: SharedClock,
        access_token_ttl_seconds: u32,
    ) -> Result<Self, KeyError> {
        let access_token_ttl = i64::from(access_token_ttl_seconds);
        let mut stored = Self::fetch(&store, &clock, access_token_ttl).await?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            store.add_signing_key(generate_key(clock.now())?).await?;
            stored = Self::fetch(&store, &clock, access_token_ttl).await?;
        }
        let set = KeySet::build(&stored)?;
        Ok(Self {
            store,
            clock,
            access_token_ttl,
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
        let set = KeySet::build(&stored)?;
        *self.keys.write() = Arc::new(set);
        Ok(())
    }

    /// Adds a new current key; the old one stays published until its tokens expire.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let key = generate_key(self.clock.now())?;
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
    fn generated_keys_are_distinct_and_loadable() {
        let now = chrono::Utc::now();
        let a = generate_key(now).unwrap();
        let b = generate_key(now).unwrap();
        assert_ne!(a.kid, b.kid);
        assert!(KeySet::build(&[a]).is_ok());
    }
}
