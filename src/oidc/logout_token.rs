//! Logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4–2.6): the provider's signed word,
//! sent straight to us, that a person signed out there. Validated as an ID token is (signature
//! by a provider key and an advertised asymmetric algorithm, `iss` exactly, `aud`), then:
//!
//! - `iat` not in the future and at most [`MAX_AGE_SECONDS`] old (a recorded token cannot be
//!   played back later to end a newer session), `exp` (optional) not passed;
//! - `jti` present (the caller accepts each once);
//! - `events` holds the back-channel logout event, as an object;
//! - `sub` or `sid` (or both) present, and each (like `jti`) a string of 1 to 255 characters
//!   when present: a malformed one refuses the token rather than counting as absent;
//! - no `nonce`, so that an ID token can never pass as a logout token.

use super::id_token::{self, Header, IdTokenError, LEEWAY_SECONDS, seconds};
use super::jwks::ProviderKey;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// How old a logout token may be when it arrives. Providers send them at once.
pub const MAX_AGE_SECONDS: i64 = 5 * 60;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Who signed out at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The person's `sub`, when the provider names them.
    pub subject: Option<String>,
    /// The provider's session id, when it names the session.
    pub sid: Option<String>,
    /// The token's own id, accepted once.
    pub jti: String,
}

/// Why a logout token was refused. For the log and a terse `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error(transparent)]
    Token(#[from] IdTokenError),
    #[error("the logout token does not carry the back-channel logout event")]
    Event,
    #[error("the logout token names neither a subject nor a session")]
    NoSubject,
    #[error("the logout token carries a nonce (an ID token?)")]
    Nonce,
    #[error("the logout token is too old")]
    TooOld,
    #[error("the logout token's `{0}` is not a string of 1 to 255 characters")]
    Malformed(&'static str),
}

pub(crate) fn verify(
    token: &str,
    header: &Header,
    keys: &[ProviderKey],
    issuer: &str,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<LogoutClaims, LogoutTokenError> {
    let all = id_token::verify_signature(
        token,
        header,
        keys,
        issuer,
        client_id,
        &["iss", "aud", "iat"],
    )?;
    let now = now.timestamp();
    let iat = seconds(&all, "iat")?.ok_or(IdTokenError::Claim("iat"))?;
    if iat > now + LEEWAY_SECONDS {
        return Err(IdTokenError::NotYetValid.into());
    }
    if iat.saturating_add(MAX_AGE_SECONDS + LEEWAY_SECONDS) < now {
        return Err(LogoutTokenError::TooOld);
    }
    if seconds(&all, "exp")?.is_some_and(|exp| exp.saturating_add(LEEWAY_SECONDS) <= now) {
        return Err(IdTokenError::Expired.into());
    }
    if all.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    match all
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(EVENT))
    {
        Some(Value::Object(_)) => {}
        _ => return Err(LogoutTokenError::Event),
    }
    let jti = bounded(&all, "jti")?.ok_or(IdTokenError::Claim("jti"))?;
    let subject = bounded(&all, "sub")?;
    let sid = bounded(&all, "sid")?;
    if subject.is_none() && sid.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    Ok(LogoutClaims { subject, sid, jti })
}

/// A string claim of 1 to 255 characters, or `None` when absent. Anything else is a broken
/// token, not an absent claim: a `sub` that cannot be read must not leave the `sid` beside it
/// to decide whose sessions end.
fn bounded(
    all: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, LogoutTokenError> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
        Some(_) => Err(LogoutTokenError::Malformed(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwks::parse_key_set;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{Algorithm, EncodingKey, encode};
    use serde_json::json;

    const ISSUER: &str = "https://id.example";
    const CLIENT: &str = "keyhole";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn good() -> Value {
        json!({
            "iss": ISSUER, "aud": CLIENT, "iat": now().timestamp() - 2, "jti": "bWJq",
            "sub": "carla", "sid": "08a5019c", "events": {EVENT: {}},
        })
    }

    fn check(claims: &Value) -> Result<LogoutClaims, LogoutTokenError> {
        let seed = crate::secrets::random_bytes::<32>().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let token = encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap();
        let keys = parse_key_set(&json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes()),
        }]}))
        .unwrap();
        let header = id_token::read_header(&token, &[Algorithm::EdDSA]).unwrap();
        verify(&token, &header, &keys, ISSUER, CLIENT, now())
    }

    fn without(name: &str) -> Value {
        let mut c = good();
        c.as_object_mut().unwrap().remove(name);
        c
    }

    fn with(name: &str, value: Value) -> Value {
        let mut c = good();
        c[name] = value;
        c
    }

    #[test]
    fn a_good_logout_token_names_the_subject_the_session_and_its_id() {
        let claims = check(&good()).unwrap();
        assert_eq!(claims.subject.as_deref(), Some("carla"));
        assert_eq!(claims.sid.as_deref(), Some("08a5019c"));
        assert_eq!(claims.jti, "bWJq");
        assert!(check(&without("sub")).is_ok(), "sid alone is enough");
        assert!(check(&without("sid")).is_ok(), "sub alone is enough");
    }

    #[test]
    fn each_broken_rule_is_refused() {
        let t = now().timestamp();
        for (claims, why) in [
            (without("events"), "no events"),
            (with("events", json!({EVENT: "yes"})), "event not an object"),
            (with("events", json!({"other": {}})), "another event"),
            (with("nonce", json!("n")), "a nonce"),
            (without("jti"), "no jti"),
            (without("iat"), "no iat"),
            (with("iat", json!(t + 600)), "iat in the future"),
            (with("iat", json!(t - 3600)), "too old"),
            (with("exp", json!(t - 60)), "expired"),
            (
                with("iss", json!("https://other.example")),
                "another issuer",
            ),
            (with("aud", json!("someone-else")), "another audience"),
            (
                {
                    let mut c = without("sub");
                    c.as_object_mut().unwrap().remove("sid");
                    c
                },
                "neither sub nor sid",
            ),
            (
                with("sub", json!("x".repeat(300))).pipe_remove("sid"),
                "overlong sub alone",
            ),
        ] {
            assert!(check(&claims).is_err(), "{why}");
        }
    }

    #[test]
    fn a_far_future_exp_or_an_ancient_iat_is_judged_without_overflow() {
        // Provider-signed numbers at the ends of the range: judged, never a panic.
        assert!(check(&with("exp", json!(i64::MAX))).is_ok());
        assert!(check(&with("exp", json!(1e300))).is_ok());
        assert!(check(&with("iat", json!(i64::MIN))).is_err());
        assert!(check(&with("iat", json!(-1e300))).is_err());
    }

    #[test]
    fn a_present_but_malformed_subject_session_or_id_is_refused_not_ignored() {
        for (name, value) in [
            ("sub", json!("x".repeat(256))),
            ("sub", json!(42)),
            ("sub", json!("")),
            ("sub", Value::Null),
            ("sid", json!("s".repeat(256))),
            ("sid", json!(["08a5019c"])),
            ("jti", json!(7)),
        ] {
            assert!(
                matches!(
                    check(&with(name, value.clone())),
                    Err(LogoutTokenError::Malformed(_))
                ),
                "{name}: {value}"
            );
        }
        assert!(check(&with("sub", json!("x".repeat(255)))).is_ok());
    }

    trait Remove {
        fn pipe_remove(self, name: &str) -> Self;
    }

    impl Remove for Value {
        fn pipe_remove(mut self, name: &str) -> Self {
            self.as_object_mut().unwrap().remove(name);
            self
        }
    }
}
