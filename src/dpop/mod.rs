//! DPoP (RFC 9449): sender-constrained tokens. A partner proves, on every token request and
//! every partner call, that it holds the private key its tokens are bound to (`cnf.jkt`, the
//! key's RFC 7638 thumbprint), with a fresh signed proof per request.
//!
//! `proof.rs` checks one proof against the request it came with (pure, no I/O); `nonce.rs`
//! makes and checks server nonces (stateless, shared by every instance through the encryption
//! key). A proof's `jti` is spent in shared state by the caller: at the token endpoint with a
//! put-if-absent, on the partner path inside the gate's one round trip.

mod nonce;
mod proof;

pub use nonce::Nonces;
pub use proof::{Expected, Proof, htu};

use crate::config::DpopSettings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// RFC 9449 §4.2: the `typ` of a proof.
pub const PROOF_TYP: &str = "dpop+jwt";

/// The algorithms a proof may be signed with, as advertised in the metadata's
/// `dpop_signing_alg_values_supported`: asymmetric only (never `none`, never HMAC).
pub const SIGNING_ALGS: [&str; 3] = ["ES256", "EdDSA", "PS256"];

/// A proof longer than this is refused unread: an RSA-4096 key in the header fits easily.
pub const MAX_PROOF_LEN: usize = 4096;

/// Longest `jti` and `nonce` accepted; the `jti` is stored only as a hash.
pub const MAX_JTI_LEN: usize = 256;

/// Why a proof was refused. The partner is told `invalid_dpop_proof` with this text, or
/// `use_dpop_nonce` with a fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("a DPoP proof is required")]
    Missing,
    #[error("send one DPoP header, not several")]
    Repeated,
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("the DPoP proof's typ must be dpop+jwt")]
    WrongType,
    #[error("the DPoP proof's algorithm is not one of ES256, EdDSA, PS256")]
    UnsupportedAlgorithm,
    #[error("the DPoP proof's jwk is not a public key of its algorithm")]
    BadKey,
    #[error("the DPoP proof's signature is invalid")]
    BadSignature,
    #[error("the DPoP proof's htm does not match the request method")]
    WrongMethod,
    #[error("the DPoP proof's htu does not match the request URI")]
    WrongUri,
    #[error("the DPoP proof's iat is outside the accepted window")]
    Stale,
    #[error("the DPoP proof's ath does not match the access token")]
    WrongAccessTokenHash,
    #[error("the DPoP proof was made by another key than the token is bound to")]
    WrongKey,
    #[error("the DPoP proof's jti was already used")]
    Replayed,
    #[error("a DPoP nonce from this server is required")]
    UseNonce,
}

/// What every DPoP check needs, built once at start.
pub struct Dpop {
    nonces: Nonces,
    require_nonce: bool,
    window: i64,
    /// The public URL partners call, which their proofs' `htu` names.
    issuer: String,
    /// The token endpoint's `htu`, normalised once.
    token_uri: Option<String>,
}

impl Dpop {
    pub fn new(
        settings: &DpopSettings,
        issuer: String,
        nonce_key: zeroize::Zeroizing<[u8; 32]>,
    ) -> Self {
        Self {
            nonces: Nonces::new(nonce_key),
            require_nonce: settings.require_nonce,
            window: i64::from(settings.iat_window_seconds),
            token_uri: htu(&format!("{issuer}/oauth/token")),
            issuer,
        }
    }

    /// The `htu` a proof for a token request must name.
    pub fn token_uri(&self) -> Option<&str> {
        self.token_uri.as_deref()
    }

    /// The `htu` a proof for a request to `path` on this server must name, normalised.
    pub fn resource_uri(&self, path: &str) -> Option<String> {
        htu(&format!("{}{path}", self.issuer))
    }

    /// Checks a proof for a request: everything but its `jti`, which the caller spends in
    /// shared state (see [`Dpop::replay_ttl`]).
    pub fn check(
        &self,
        proof: &str,
        method: &str,
        uri: &str,
        access_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Proof, DpopError> {
        let checked = proof::verify(
            proof,
            &Expected {
                method,
                uri,
                access_token,
                now: now.timestamp(),
                window: self.window,
            },
        )?;
        match checked.nonce.as_deref() {
            Some(nonce) if !self.nonces.is_current(nonce, now) => Err(DpopError::UseNonce),
            None if self.require_nonce => Err(DpopError::UseNonce),
            _ => Ok(checked),
        }
    }

    /// The nonce a partner should put in its next proofs.
    pub fn nonce(&self, now: DateTime<Utc>) -> String {
        self.nonces.current(now)
    }

    /// Whether responses carry a `DPoP-Nonce` header.
    pub fn requires_nonce(&self) -> bool {
        self.require_nonce
    }

    /// How long a spent `jti` must be remembered: a proof is accepted while its `iat` is within
    /// the window on either side of our clock, so twice the window covers its whole life.
    pub fn replay_ttl(&self) -> Duration {
        Duration::from_secs(u64::try_from(2 * self.window + 1).unwrap_or(121))
    }
}

/// The shared-state name of a proof's `jti`: per key, hashed, so its length is fixed and a
/// partner's `jti` cannot collide with another key's.
pub fn replay_id(proof: &Proof) -> String {
    let mut hash = Sha256::new();
    hash.update(proof.jkt.as_bytes());
    hash.update(b":");
    hash.update(proof.jti.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// RFC 9449 §4.1 `ath`: base64url of the SHA-256 of the access token.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}
