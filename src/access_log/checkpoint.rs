//! Signed checkpoints: every N records (and after a quiet interval) the chain's head hash is
//! signed with the checkpoint key, which is kept outside the database (see `key`). A checkpoint makes the records up to it
//! tamper-evident to anyone holding the public key — without database access — and it is
//! what detects the deletion of the newest records, which the chain alone cannot.

use super::key::{CheckpointKey, CheckpointKeyError};
use crate::clock::SharedClock;
use crate::config::AccessLogSettings;
use crate::store::{Store, StoredCheckpoint};
use crate::tokens::thumbprint;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The JWS `typ` of a checkpoint, so an access token can never pass for one, nor the reverse.
pub const CHECKPOINT_TYP: &str = "keyhole-log-checkpoint+jwt";

/// What a checkpoint signs. Checkpoints of the `legacy` chain, signed before there were
/// chains, name their record by `record_id` (its `seq`) and no chain.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointClaims {
    iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record_id: Option<i64>,
    hash: String,
    iat: i64,
}

impl CheckpointClaims {
    fn names(&self, chain: &str, seq: i64) -> bool {
        match (&self.chain, self.seq, self.record_id) {
            (Some(c), Some(s), None) => c == chain && s == seq,
            (None, None, Some(id)) => chain == super::chain::LEGACY_CHAIN && id == seq,
            _ => false,
        }
    }
}

/// A chain's head as its writer last made it durable in the database: `(seq, hash)`.
pub type Head = Option<(i64, String)>;

pub fn sign(
    key: &CheckpointKey,
    issuer: &str,
    chain: &str,
    seq: i64,
    hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<StoredCheckpoint, CheckpointKeyError> {
    let claims = CheckpointClaims {
        iss: issuer.to_owned(),
        chain: Some(chain.to_owned()),
        seq: Some(seq),
        record_id: None,
        hash: hash.to_owned(),
        iat: now.timestamp(),
    };
    let (kid, signature) = key.sign_jws(CHECKPOINT_TYP, &claims)?;
    Ok(StoredCheckpoint {
        chain: chain.to_owned(),
        seq,
        hash: hash.to_owned(),
        kid,
        signature,
        signed_at: now,
    })
}

/// The public keys a checkpoint may be signed with, by `kid`. A key's `kid` is its RFC 7638
/// thumbprint, so pinning a `kid` pins the key itself.
pub struct PublicKeys(HashMap<String, DecodingKey>);

impl PublicKeys {
    /// One key, already known to be the key its `kid` names.
    pub(super) fn single(kid: &str, key: DecodingKey) -> Self {
        Self(HashMap::from([(kid.to_owned(), key)]))
    }

    /// From JWKs (RFC 8037 `OKP`/`Ed25519`), as an export carries them. A key whose `kid` is
    /// not its thumbprint is refused; with `trusted`, only those `kid`s are kept.
    pub fn from_jwks(
        jwks: &[serde_json::Value],
        trusted: Option<&[String]>,
    ) -> Result<Self, String> {
        let mut map = HashMap::new();
        for jwk in jwks {
            let field = |name: &str| jwk.get(name).and_then(|v| v.as_str());
            let (Some("OKP"), Some("Ed25519"), Some(kid), Some(x)) =
                (field("kty"), field("crv"), field("kid"), field("x"))
            else {
                return Err(format!("unsupported key {jwk}"));
            };
            let raw = URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| format!("key {kid} is not base64url"))?;
            if thumbprint(&raw) != kid {
                return Err(format!("key {kid} is not the key its id names"));
            }
            if trusted.is_none_or(|t| t.iter().any(|k| k == kid)) {
                map.insert(kid.to_owned(), decoding(kid, x)?);
            }
        }
        Ok(Self(map))
    }

    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.0.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// The claims of a compact JWS of type `typ` signed by the key `kid`, if that key is one
    /// of these and the signature verifies.
    pub fn verify_jws<T: DeserializeOwned>(
        &self,
        typ: &str,
        kid: &str,
        jws: &str,
    ) -> Result<T, String> {
        let header = jsonwebtoken::decode_header(jws)
            .map_err(|e| format!("the signature is malformed: {e}"))?;
        if header.typ.as_deref() != Some(typ) {
            return Err(format!("the signature is not a {typ}"));
        }
        if header.kid.as_deref() != Some(kid) {
            return Err("the signature names another key".into());
        }
        let key = self
            .0
            .get(kid)
            .ok_or_else(|| format!("signing key {kid} is unknown or not trusted"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        Ok(jsonwebtoken::decode::<T>(jws, key, &validation)
            .map_err(|e| format!("the signature does not verify: {e}"))?
            .claims)
    }

    /// Whether the checkpoint's signature is valid and signs exactly its chain, place and
    /// hash; returns the signed time (seconds since the epoch).
    pub fn verify(&self, checkpoint: &StoredCheckpoint) -> Result<i64, String> {
        let claims: CheckpointClaims =
            self.verify_jws(CHECKPOINT_TYP, &checkpoint.kid, &checkpoint.signature)?;
        if !claims.names(&checkpoint.chain, checkpoint.seq) || claims.hash != checkpoint.hash {
            return Err("the signature covers another record or hash".into());
        }
        Ok(claims.iat)
    }
}

pub(super) fn decoding(kid: &str, x: &str) -> Result<DecodingKey, String> {
    DecodingKey::from_ed_components(x).map_err(|e| format!("key {kid} is unusable: {e}"))
}

/// Signs the head of `chain` whenever `every` records were added since the last checkpoint,
/// or when records were added and `interval` has passed. Runs until the writer stops.
pub async fn run(
    store: Store,
    key: Arc<CheckpointKey>,
    issuer: String,
    clock: SharedClock,
    settings: AccessLogSettings,
    chain: String,
    mut head: watch::Receiver<Head>,
) {
    let every = i64::from(settings.checkpoint_every);
    let interval = Duration::from_secs(u64::from(settings.checkpoint_interval_seconds));
    let mut last = loop {
        match store.latest_checkpoint(&chain).await {
            Ok(latest) => break latest.map_or(0, |c| c.seq),
            Err(e) => {
                tracing::warn!(error = %e, "reading the latest checkpoint failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut signed_at = Instant::now();
    loop {
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(interval) => {}
        }
        let Some((id, hash)) = head.borrow_and_update().clone() else {
            continue;
        };
        if id <= last || (id - last < every && signed_at.elapsed() < interval) {
            continue;
        }
        match checkpoint(&store, &key, &issuer, &clock, &chain, id, &hash).await {
            Ok(()) => {
                last = id;
                signed_at = Instant::now();
            }
            // The next change or tick tries again with the newer head.
            Err(e) => tracing::warn!(error = %e, %chain, seq = id, "signing a checkpoint failed"),
        }
    }
}

/// Signs and stores one checkpoint of the record `seq` of `chain`, whose hash is `hash`.
pub async fn checkpoint(
    store: &Store,
    key: &CheckpointKey,
    issuer: &str,
    clock: &SharedClock,
    chain: &str,
    seq: i64,
    hash: &str,
) -> anyhow::Result<()> {
    let signed = sign(key, issuer, chain, seq, hash, clock.now())?;
    // A copy outside the database: whoever can rewrite the database cannot rewrite the log
    // stream this line goes to, and the auditor can compare the two.
    tracing::info!(
        chain,
        seq,
        hash = %hash,
        kid = %signed.kid,
        signature = %signed.signature,
        "access log checkpoint"
    );
    store.insert_checkpoint(signed).await?;
    Ok(())
}
