//! Secrets: generation, storage hashes and comparison.
//!
//! Client secrets, refresh tokens, codes, session ids and admin tokens are 256-bit random
//! values, so a plain SHA-256 is a sufficient storage hash and keeps lookups by hash possible.
//! Customer passwords are chosen by people and get argon2id.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the operating system's random number generator failed")]
    Random(#[from] getrandom::Error),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}

/// A secret value that must never reach a log line. It (de)serializes as the plain string,
/// because settings that hold one pass through figment as values.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a setting that holds a secret says when given something other than a string: never
/// the value. (Figment reads `KEYHOLE_CUSTOMER_LOGIN__CLIENT_SECRET=918273645501` as a number,
/// and serde's own message, `invalid type: found unsigned int 918273645501`, went to the
/// console and the service's log.)
const NOT_A_STRING: &str = "expected a string (the value is a secret and is not shown; in the environment, quote it: \"...\")";

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            // Every other kind that serde's default message would quote.
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_char<E: serde::de::Error>(self, _: char) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        deserializer.deserialize_string(Visitor)
    }
}

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)?;
    Ok(buf)
}

/// 256 random bits, base64url, with a readable prefix (`kh_rt_…`) so a leaked token is
/// recognisable by secret scanners.
pub fn random_token(prefix: &str) -> Result<Secret, SecretError> {
    let bytes = random_bytes::<32>()?;
    Ok(Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))))
}

/// Storage and lookup hash of a high-entropy secret: hex SHA-256.
pub fn token_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Checks a presented high-entropy secret against its stored hash in constant time.
pub fn token_matches(presented: &str, stored_hash: &str) -> bool {
    token_hash(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| SecretError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::PasswordHash(e.to_string()))
}

pub fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A dummy hash verified when a login names an unknown e-mail address, so the response time
/// does not reveal which addresses have accounts.
pub fn dummy_password_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$B8hrzYIMhEvGJtrYV3dthBwWMDNgXMhbYgA4JShsh0Y"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = random_token("kh_rt_").unwrap();
        let b = random_token("kh_rt_").unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("kh_rt_"));
        assert_eq!(a.expose().len(), 6 + 43);
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn token_hashes_match_only_their_token() {
        let token = random_token("x_").unwrap();
        let hash = token_hash(token.expose());
        assert!(token_matches(token.expose(), &hash));
        assert!(!token_matches("x_other", &hash));
    }

    #[test]
    fn passwords_round_trip_through_argon2() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches("correct horse", &hash));
        assert!(!password_matches("wrong horse", &hash));
        assert!(!password_matches("anything", "not a hash"));
        // The dummy hash parses, so unknown-user logins cost the same as real ones.
        assert!(PasswordHash::new(dummy_password_hash()).is_ok());
    }
}
