//! Access tokens: signing keys, issuing and verifying RFC 9068 JWTs, the JWKS.

mod claims;
mod keys;
mod verify;

pub use claims::AccessClaims;
pub use keys::{KeyError, KeyRing, generate_key, public_jwk, thumbprint};
pub use verify::{TokenError, Verifier};

/// RFC 9068 §2.1: the `typ` of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Clock skew tolerated on `exp` and `iat`: small, explicit, and the same everywhere.
pub const LEEWAY_SECONDS: i64 = 5;
