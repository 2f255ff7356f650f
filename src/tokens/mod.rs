//! Access tokens: signing keys, issuing and verifying RFC 9068 JWTs, the JWKS.

mod claims;
mod keys;
pub mod sealing;
mod verify;

pub use claims::{AccessClaims, Confirmation};
pub use keys::{
    ACTIVATION_DELAY, JWKS_MAX_AGE, KeyError, KeyRing, RELOAD_EVERY, Resealed, Rotation,
    generate_key, public_jwk, reseal, thumbprint,
};
pub use sealing::{EncryptionKey, SealError};
pub use verify::{TokenError, Verifier};

/// RFC 9068 §2.1: the `typ` of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Clock skew tolerated on `exp` and `iat`: small, explicit, and the same everywhere.
pub const LEEWAY_SECONDS: i64 = 5;
