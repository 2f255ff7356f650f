//! PKCE (RFC 7636), S256 only: `plain` would let an intercepted code be redeemed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkceError {
    #[error("code_challenge_method must be S256")]
    MethodNotS256,
    #[error("code_challenge is required")]
    MissingChallenge,
    #[error("code_challenge must be 43 base64url characters (an S256 digest)")]
    MalformedChallenge,
    #[error("code_verifier must be 43 to 128 unreserved characters")]
    MalformedVerifier,
}

/// A validated S256 challenge: base64url (no padding) of a 32-byte digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    pub fn parse(method: Option<&str>, challenge: Option<&str>) -> Result<Self, PkceError> {
        let challenge = challenge
            .filter(|c| !c.is_empty())
            .ok_or(PkceError::MissingChallenge)?;
        if method != Some("S256") {
            return Err(PkceError::MethodNotS256);
        }
        match URL_SAFE_NO_PAD.decode(challenge) {
            Ok(digest) if digest.len() == 32 && challenge.len() == 43 => {
                Ok(Self(challenge.to_owned()))
            }
            _ => Err(PkceError::MalformedChallenge),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time, so the comparison leaks nothing about the expected digest.
    pub fn is_satisfied_by(&self, verifier: &CodeVerifier) -> bool {
        let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.0.as_bytes()));
        digest.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`.
#[derive(Debug, Clone)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    pub fn parse(s: &str) -> Result<Self, PkceError> {
        let ok = (43..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(PkceError::MalformedVerifier)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example pair from RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_example_pair_matches() {
        let challenge = CodeChallenge::parse(Some("S256"), Some(CHALLENGE)).unwrap();
        assert!(challenge.is_satisfied_by(&CodeVerifier::parse(VERIFIER).unwrap()));
    }

    #[test]
    fn a_wrong_verifier_fails() {
        let challenge = CodeChallenge::parse(Some("S256"), Some(CHALLENGE)).unwrap();
        let other = CodeVerifier::parse(&"a".repeat(43)).unwrap();
        assert!(!challenge.is_satisfied_by(&other));
    }

    #[test]
    fn plain_and_missing_methods_are_refused() {
        assert_eq!(
            CodeChallenge::parse(Some("plain"), Some(CHALLENGE)),
            Err(PkceError::MethodNotS256)
        );
        assert_eq!(
            CodeChallenge::parse(None, Some(CHALLENGE)),
            Err(PkceError::MethodNotS256)
        );
        assert_eq!(
            CodeChallenge::parse(Some("S256"), None),
            Err(PkceError::MissingChallenge)
        );
        assert_eq!(
            CodeChallenge::parse(Some("S256"), Some("short")),
            Err(PkceError::MalformedChallenge)
        );
    }

    #[test]
    fn verifiers_must_have_the_rfc_shape() {
        assert!(CodeVerifier::parse("too-short").is_err());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_err());
        assert!(CodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_err());
    }
}
