//! ID token validation (OpenID Connect Core §3.1.3.7), all of it, with time as a parameter:
//!
//! 1. the header's `alg` is one the provider advertises and we accept (never `none`, never
//!    HMAC), read before any key is chosen;
//! 2. the signature verifies with a provider key that fits the header's `kid`, the algorithm's
//!    family and curve, and the key's own `alg`;
//! 3. `iss` is the configured issuer exactly; `aud` contains our client id, and `azp` is our
//!    client id whenever it is present or there are several audiences;
//! 4. `exp` is in the future and `iat` (and `nbf` and `auth_time`, if any) not in the future,
//!    each with [`LEEWAY_SECONDS`] of clock skew;
//! 5. `nonce` is this sign-in's;
//! 6. `auth_time`, when present, is not in the future (with the same leeway as `iat`): the
//!    portal's recency rule counts from it, so one ahead would stretch it;
//! 7. when a `max_age` was asked for, `auth_time` is present and recent enough.

use super::claims::IdentityClaims;
use super::discovery::ACCEPTED_ALGORITHMS;
use super::jwks::ProviderKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Clock skew forgiven between the provider and us.
pub const LEEWAY_SECONDS: i64 = 30;

/// ID tokens are a few kilobytes; a larger one is refused before it is decoded.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why an ID token was refused. Shown to nobody but the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is not a well-formed JWT")]
    Malformed,
    #[error(
        "the ID token is signed with `{0}`, which is not an algorithm we accept from this provider"
    )]
    Algorithm(String),
    #[error("no key of the provider fits the ID token")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client")]
    Audience,
    #[error("the ID token's authorized party is another client")]
    AuthorizedParty,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet")]
    NotYetValid,
    #[error("the ID token's `{0}` claim is missing or malformed")]
    Claim(&'static str),
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
    #[error("the sign-in at the provider is older than asked for")]
    StaleAuthentication,
    #[error("the sign-in at the provider is dated in the future")]
    FutureAuthentication,
}

/// What this sign-in expects of its ID token.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub max_age: Option<Duration>,
    pub now: DateTime<Utc>,
}

/// The parts of the header that choose the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Reads the header without trusting anything in it beyond choosing a key: its `alg` must be
/// allowed before any key is looked at.
pub(crate) fn read_header(token: &str, allowed: &[Algorithm]) -> Result<Header, IdTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| IdTokenError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed)?;
    // Only what an algorithm name can hold reaches the log.
    let refused = || {
        IdTokenError::Algorithm(
            alg.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(16)
                .collect(),
        )
    };
    let alg = Algorithm::from_str(alg).map_err(|_| refused())?;
    if !allowed.contains(&alg) || !ACCEPTED_ALGORITHMS.contains(&alg) {
        return Err(refused());
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(IdTokenError::Malformed),
    };
    Ok(Header { alg, kid })
}

/// Verifies the signature with the first fitting key that verifies it, then every claim.
pub(crate) fn verify(
    token: &str,
    header: &Header,
    keys: &[ProviderKey],
    expected: &Expected<'_>,
) -> Result<IdentityClaims, IdTokenError> {
    let claims = verify_signature(
        token,
        header,
        keys,
        expected.issuer,
        expected.client_id,
        &["iss", "aud", "sub", "exp"],
    )?;
    check_claims(claims, expected)
}

/// The claims of a signed JWT (a provider's ID or logout token, a partner's client assertion)
/// whose signature verifies with the first fitting key, whose `iss` is `issuer` and whose
/// `aud` contains `audience` (our client id at a provider; our issuer for an assertion), and
/// which has the `required` claims. Times are the caller's to check, against our clock (which
/// tests move).
pub(crate) fn verify_signature(
    token: &str,
    header: &Header,
    keys: &[ProviderKey],
    issuer: &str,
    audience: &str,
    required: &[&str],
) -> Result<Map<String, Value>, IdTokenError> {
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(required);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    let mut fitting = keys
        .iter()
        .filter(|key| key.fits(header.alg, header.kid.as_deref()))
        .peekable();
    if fitting.peek().is_none() {
        return Err(IdTokenError::UnknownKey);
    }
    for key in fitting {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => match e.kind() {
                // Another key with the same id (or none named) may be the one.
                ErrorKind::InvalidSignature => continue,
                ErrorKind::InvalidIssuer => return Err(IdTokenError::Issuer),
                ErrorKind::InvalidAudience => return Err(IdTokenError::Audience),
                ErrorKind::MissingRequiredClaim(claim) => {
                    return Err(IdTokenError::Claim(claim_name(claim)));
                }
                ErrorKind::InvalidAlgorithm => {
                    return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
                }
                _ => return Err(IdTokenError::Malformed),
            },
        }
    }
    Err(IdTokenError::Signature)
}

fn claim_name(claim: &str) -> &'static str {
    match claim {
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        "exp" => "exp",
        "iat" => "iat",
        _ => "a required claim",
    }
}

/// The claims a signature does not settle.
fn check_claims(
    all: Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<IdentityClaims, IdTokenError> {
    let now = expected.now.timestamp();
    let subject = match all.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() && sub.len() <= 255 => sub.to_owned(),
        _ => return Err(IdTokenError::Claim("sub")),
    };
    let issuer = match all.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == expected.issuer => iss.to_owned(),
        _ => return Err(IdTokenError::Issuer),
    };
    let exp = seconds(&all, "exp")?.ok_or(IdTokenError::Claim("exp"))?;
    if exp.saturating_add(LEEWAY_SECONDS) <= now {
        return Err(IdTokenError::Expired);
    }
    let iat = seconds(&all, "iat")?.ok_or(IdTokenError::Claim("iat"))?;
    if iat > now + LEEWAY_SECONDS {
        return Err(IdTokenError::NotYetValid);
    }
    if seconds(&all, "nbf")?.is_some_and(|nbf| nbf > now + LEEWAY_SECONDS) {
        return Err(IdTokenError::NotYetValid);
    }
    let several_audiences = all
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|aud| aud.len() > 1);
    match all.get("azp") {
        Some(Value::String(azp)) if azp == expected.client_id => {}
        None if !several_audiences => {}
        _ => return Err(IdTokenError::AuthorizedParty),
    }
    let nonce = all.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if !bool::from(nonce.as_bytes().ct_eq(expected.nonce.as_bytes())) || nonce.is_empty() {
        return Err(IdTokenError::Nonce);
    }
    let auth_time = seconds(&all, "auth_time")?;
    // A sign-in cannot have happened after the token was issued; one dated ahead (a provider's
    // bug or clock) would make the session "recent" for as long as it lies ahead, and an absurd
    // one passes the `max_age` check below by saturating.
    if auth_time.is_some_and(|at| at > now + LEEWAY_SECONDS) {
        return Err(IdTokenError::FutureAuthentication);
    }
    let auth_time = match auth_time {
        None => None,
        Some(at) => Some(DateTime::from_timestamp(at, 0).ok_or(IdTokenError::Claim("auth_time"))?),
    };
    if let Some(max_age) = expected.max_age {
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        match auth_time.map(|at| at.timestamp()) {
            Some(at) if at.saturating_add(max_age).saturating_add(LEEWAY_SECONDS) >= now => {}
            Some(_) => return Err(IdTokenError::StaleAuthentication),
            None => return Err(IdTokenError::Claim("auth_time")),
        }
    }
    Ok(IdentityClaims {
        issuer,
        subject,
        auth_time,
        all,
    })
}

/// A NumericDate claim (seconds; fractions allowed and dropped), or `None` when absent.
pub(crate) fn seconds(
    all: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, IdTokenError> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(IdTokenError::Claim(name)),
        Some(_) => Err(IdTokenError::Claim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwks::parse_key_set;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, encode};
    use serde_json::json;

    const ISSUER: &str = "https://id.example";
    const CLIENT: &str = "keyhole";
    const NONCE: &str = "n-0S6_WzA2Mj";

    struct Signer {
        encoding: EncodingKey,
        public: [u8; 32],
    }

    fn signer() -> Signer {
        let seed = crate::secrets::random_bytes::<32>().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().unwrap();
        Signer {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: signing.verifying_key().to_bytes(),
        }
    }

    fn keys_of(signer: &Signer, kid: &str) -> Vec<ProviderKey> {
        parse_key_set(&json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(signer.public),
        }]}))
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn claims() -> Value {
        let now = now().timestamp();
        json!({
            "iss": ISSUER, "aud": CLIENT, "sub": "248289761001", "nonce": NONCE,
            "iat": now - 5, "exp": now + 300, "auth_time": now - 60,
            "email": "ana@harmony.example", "groups": ["security"],
        })
    }

    fn sign(signer: &Signer, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        encode(&header, claims, &signer.encoding).unwrap()
    }

    fn expected(max_age: Option<Duration>) -> Expected<'static> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce: NONCE,
            max_age,
            now: now(),
        }
    }

    fn validate(
        token: &str,
        keys: &[ProviderKey],
        expected: &Expected<'_>,
    ) -> Result<IdentityClaims, IdTokenError> {
        let header = read_header(token, &[Algorithm::EdDSA, Algorithm::RS256])?;
        verify(token, &header, keys, expected)
    }

    fn with(change: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut c = claims();
        if let Some(map) = c.as_object_mut() {
            change(map);
        }
        c
    }

    #[test]
    fn a_valid_token_yields_its_claims() {
        let s = signer();
        let token = sign(&s, "k1", &claims());
        let c = validate(
            &token,
            &keys_of(&s, "k1"),
            &expected(Some(Duration::from_secs(600))),
        )
        .unwrap();
        assert_eq!(c.subject(), "248289761001");
        assert_eq!(c.issuer(), ISSUER);
        assert_eq!(c.email(), Some("ana@harmony.example"));
        assert_eq!(c.strings("groups"), vec!["security"]);
        assert_eq!(
            c.auth_time().map(|t| t.timestamp()),
            Some(now().timestamp() - 60)
        );
    }

    #[test]
    fn each_broken_claim_is_refused_for_its_own_reason() {
        let s = signer();
        let keys = keys_of(&s, "k1");
        let at = now().timestamp();
        let cases: Vec<(Value, IdTokenError)> = vec![
            (
                with(|c| {
                    c.insert("iss".into(), json!("https://evil.example"));
                }),
                IdTokenError::Issuer,
            ),
            (
                with(|c| {
                    c.insert("aud".into(), json!("someone-else"));
                }),
                IdTokenError::Audience,
            ),
            (
                with(|c| {
                    c.insert("aud".into(), json!([CLIENT, "other"]));
                }),
                IdTokenError::AuthorizedParty,
            ),
            (
                with(|c| {
                    c.insert("azp".into(), json!("other"));
                }),
                IdTokenError::AuthorizedParty,
            ),
            (
                with(|c| {
                    c.insert("exp".into(), json!(at - LEEWAY_SECONDS));
                }),
                IdTokenError::Expired,
            ),
            (
                with(|c| {
                    c.insert("iat".into(), json!(at + LEEWAY_SECONDS + 1));
                }),
                IdTokenError::NotYetValid,
            ),
            (
                with(|c| {
                    c.insert("nbf".into(), json!(at + 3600));
                }),
                IdTokenError::NotYetValid,
            ),
            (
                with(|c| {
                    c.remove("iat");
                }),
                IdTokenError::Claim("iat"),
            ),
            (
                with(|c| {
                    c.remove("sub");
                }),
                IdTokenError::Claim("sub"),
            ),
            (
                with(|c| {
                    c.insert("nonce".into(), json!("another"));
                }),
                IdTokenError::Nonce,
            ),
            (
                with(|c| {
                    c.remove("nonce");
                }),
                IdTokenError::Nonce,
            ),
            (
                with(|c| {
                    c.insert("auth_time".into(), json!(at - 700));
                }),
                IdTokenError::StaleAuthentication,
            ),
            (
                with(|c| {
                    c.remove("auth_time");
                }),
                IdTokenError::Claim("auth_time"),
            ),
            (
                with(|c| {
                    c.insert("auth_time".into(), json!(at + 3600));
                }),
                IdTokenError::FutureAuthentication,
            ),
        ];
        for (claims, why) in cases {
            let token = sign(&s, "k1", &claims);
            assert_eq!(
                validate(&token, &keys, &expected(Some(Duration::from_secs(600)))).unwrap_err(),
                why,
                "{claims}"
            );
        }
    }

    #[test]
    fn several_audiences_pass_with_our_azp_and_auth_time_is_free_without_max_age() {
        let s = signer();
        let c = with(|c| {
            c.insert("aud".into(), json!([CLIENT, "other"]));
            c.insert("azp".into(), json!(CLIENT));
            c.insert("auth_time".into(), json!(0));
        });
        validate(&sign(&s, "k1", &c), &keys_of(&s, "k1"), &expected(None)).unwrap();
    }

    #[test]
    fn an_auth_time_in_the_future_is_refused_with_or_without_max_age() {
        let s = signer();
        let keys = keys_of(&s, "k1");
        let at = now().timestamp();
        for max_age in [None, Some(Duration::from_secs(600))] {
            for (auth_time, why) in [
                (
                    json!(at + LEEWAY_SECONDS + 1),
                    IdTokenError::FutureAuthentication,
                ),
                (json!(at + 86_400), IdTokenError::FutureAuthentication),
                // Saturates to i64::MAX: passed `max_age` by overflowing.
                (json!(1e300), IdTokenError::FutureAuthentication),
                // Saturates to i64::MIN: no date at all, with max_age or without.
                (json!(-1e300), IdTokenError::Claim("auth_time")),
            ] {
                let token = sign(
                    &s,
                    "k1",
                    &with(|c| {
                        c.insert("auth_time".into(), auth_time.clone());
                    }),
                );
                assert_eq!(
                    validate(&token, &keys, &expected(max_age)).unwrap_err(),
                    why,
                    "{auth_time} {max_age:?}"
                );
            }
            // Skew within the leeway passes.
            let token = sign(
                &s,
                "k1",
                &with(|c| {
                    c.insert("auth_time".into(), json!(at + LEEWAY_SECONDS));
                }),
            );
            let claims = validate(&token, &keys, &expected(max_age)).unwrap();
            assert_eq!(
                claims.auth_time().map(|t| t.timestamp()),
                Some(at + LEEWAY_SECONDS)
            );
        }
    }

    #[test]
    fn a_token_signed_by_another_key_or_naming_an_unknown_kid_is_refused() {
        let ours = signer();
        let theirs = signer();
        let keys = keys_of(&ours, "k1");
        let forged = sign(&theirs, "k1", &claims());
        assert_eq!(
            validate(&forged, &keys, &expected(None)).unwrap_err(),
            IdTokenError::Signature
        );
        let unknown = sign(&theirs, "k2", &claims());
        assert_eq!(
            validate(&unknown, &keys, &expected(None)).unwrap_err(),
            IdTokenError::UnknownKey
        );
    }

    #[test]
    fn a_far_future_exp_is_judged_without_overflow() {
        let s = signer();
        let c = with(|c| {
            c.insert("exp".into(), json!(i64::MAX));
        });
        validate(&sign(&s, "k1", &c), &keys_of(&s, "k1"), &expected(None)).unwrap();
        // One past what the signature library reads as a date: refused, not a panic.
        let c = with(|c| {
            c.insert("exp".into(), json!(1e300));
        });
        assert_eq!(
            validate(&sign(&s, "k1", &c), &keys_of(&s, "k1"), &expected(None)).unwrap_err(),
            IdTokenError::Claim("exp")
        );
    }

    #[test]
    fn alg_none_is_refused_before_any_key_is_looked_at() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let token = format!("{header}.{body}.");
        assert_eq!(
            read_header(&token, &[Algorithm::EdDSA]).unwrap_err(),
            IdTokenError::Algorithm("none".into())
        );
    }

    #[test]
    fn hmac_keyed_with_the_providers_public_key_is_refused_even_if_advertised() {
        let s = signer();
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token = encode(&header, &claims(), &EncodingKey::from_secret(&s.public)).unwrap();
        let advertised = [Algorithm::EdDSA, Algorithm::HS256];
        assert_eq!(
            read_header(&token, &advertised).unwrap_err(),
            IdTokenError::Algorithm("HS256".into())
        );
        // Even a header that slipped through finds no key: HMAC fits none.
        let slipped = Header {
            alg: Algorithm::HS256,
            kid: Some("k1".into()),
        };
        assert_eq!(
            verify(&token, &slipped, &keys_of(&s, "k1"), &expected(None)).unwrap_err(),
            IdTokenError::UnknownKey
        );
    }

    #[test]
    fn an_algorithm_the_provider_does_not_advertise_is_refused() {
        let s = signer();
        let token = sign(&s, "k1", &claims());
        assert_eq!(
            read_header(&token, &[Algorithm::RS256]).unwrap_err(),
            IdTokenError::Algorithm("EdDSA".into())
        );
        assert_eq!(
            read_header("a.b", &[Algorithm::EdDSA]).unwrap_err(),
            IdTokenError::Malformed
        );
    }
}
