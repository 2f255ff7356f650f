//! Signing keys published at a `jwks_uri`: an OpenID provider's (ID and logout tokens) and a
//! partner's (`private_key_jwt` client assertions, `oauth::client_assertion`). Fetched, kept,
//! and fetched again when a token names a key we do not know (the key's owner rotated), at most
//! once a minute so that tokens with made-up key ids cannot make us hammer the key server. A
//! failed fetch counts as a fetch: the callers that queued behind it, and those that follow
//! for a while, get its failure at once instead of each waiting for a timeout of their own.

use super::fetch::{FetchError, ProviderHttp};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Mutex;
use url::Url;

/// The least time between two fetches caused by unknown key ids.
const REFETCH_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// After a failed fetch, while no usable key set is held, how long until the next try. Short,
/// so a key server's blip locks its owner out for seconds, not a minute; long enough that a
/// flood of tokens cannot turn into a flood of fetches at a server that is down.
const RETRY_AFTER_FAILURE: chrono::Duration = chrono::Duration::seconds(10);

/// The smallest RSA modulus we verify with (NIST SP 800-131A; FAPI 2.0 §5.4.1).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Members of a JWK that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2,
/// §6.4; RFC 8037 §2). A key published with them is compromised: anyone can sign with it.
pub(crate) const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// One verification key of a provider or a partner.
pub(crate) struct ProviderKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key is then for that algorithm only.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    curve: Option<EllipticCurve>,
    pub(crate) key: DecodingKey,
}

impl ProviderKey {
    /// A key usable for signatures, or `None`: encryption keys, symmetric keys (a public key
    /// set has no business holding one), and kinds we cannot verify with are left out.
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return None;
        }
        let (family, curve) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) if rsa_bits(&rsa.n) >= MIN_RSA_BITS => {
                (AlgorithmFamily::Rsa, None)
            }
            AlgorithmParameters::EllipticCurve(ec) => (AlgorithmFamily::Ec, Some(ec.curve.clone())),
            AlgorithmParameters::OctetKeyPair(okp)
                if okp.curve == EllipticCurve::Ed25519 && strong_ed25519(&okp.x) =>
            {
                (AlgorithmFamily::Ed, Some(EllipticCurve::Ed25519))
            }
            // Weak RSA keys, symmetric keys, other curves, and kinds this crate version added
            // after us.
            _ => return None,
        };
        let alg = match &jwk.common.key_algorithm {
            // Key algorithms include encryption ones (RSA-OAEP…): those do not parse here.
            Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
            None => None,
        };
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            curve,
            key: DecodingKey::from_jwk(jwk).ok()?,
        })
    }

    /// Whether a token signed with `alg` (and naming `kid`, if it does) may be verified with
    /// this key: the same key id, the algorithm's own family and curve, and the key's `alg`.
    pub(crate) fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        let family = alg.family();
        let curve_fits = match alg {
            Algorithm::ES256 => self.curve == Some(EllipticCurve::P256),
            Algorithm::ES384 => self.curve == Some(EllipticCurve::P384),
            _ => true,
        };
        if family == AlgorithmFamily::Hmac {
            return false;
        }
        let family = alg.family();
        kid.is_none_or(|kid| self.kid.as_deref() == Some(kid))
            && self.family == family
            && curve_fits
            && self.alg.is_none_or(|own| own == alg)
    }
}

/// The bit length of an RSA modulus given as base64url (0 when it is not base64url).
pub(crate) fn rsa_bits(n: &str) -> usize {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(n) else {
        return 0;
    };
    match bytes.iter().position(|b| *b != 0) {
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
        None => 0,
    }
}

/// Whether `x` is an Ed25519 public key anyone must hold the private half of to sign with: a
/// point on the curve, and not of small order. The verification the library does accepts, for
/// a small-order key, signatures made without any private key (e.g. R the identity, s = 0).
pub(crate) fn strong_ed25519(x: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(x.as_bytes())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok())
        .is_some_and(|key| !key.is_weak())
}

/// Parses a key set, one key at a time: a key of a kind we do not know must not hide the
/// others. Keys published with private members are left out (see [`PRIVATE_MEMBERS`]).
pub(crate) fn parse_key_set(json: &serde_json::Value) -> Result<Vec<ProviderKey>, FetchError> {
    #[derive(Deserialize)]
    struct KeySet {
        keys: Vec<serde_json::Value>,
    }
    let set =
        KeySet::deserialize(json).map_err(|e| FetchError::Unusable(format!("the key set: {e}")))?;
    Ok(set
        .keys
        .iter()
        .filter(|key| !PRIVATE_MEMBERS.iter().any(|m| key.get(m).is_some()))
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
        .filter_map(|jwk| ProviderKey::from_jwk(&jwk))
        .collect())
}

struct Fetched {
    keys: Arc<Vec<ProviderKey>>,
    at: DateTime<Utc>,
}

/// What one cache holds: the last key set fetched, and the last attempt (and how it failed).
#[derive(Default)]
struct Held {
    fetched: Option<Fetched>,
    attempted: Option<DateTime<Utc>>,
    failure: Option<FetchError>,
}

/// The key set at one `jwks_uri`, shared by every token verified with it.
#[derive(Default)]
pub(crate) struct KeyCache {
    // A tokio mutex, held across the fetch: concurrent callers that all miss wait for one
    // fetch instead of each making their own.
    held: Mutex<Held>,
    /// How long a key set is used before it is fetched again, even when every token's key is
    /// in it; `None`: until a token names a key it lacks. A partner that withdraws a
    /// compromised key must not have to wait for our restart.
    lifetime: Option<chrono::Duration>,
}

impl KeyCache {
    /// A cache whose key set is fetched again once it is `lifetime` old; past that, and until
    /// a fetch succeeds, there are no keys (fail closed).
    pub(crate) fn with_lifetime(lifetime: chrono::Duration) -> Self {
        Self {
            held: Mutex::default(),
            lifetime: Some(lifetime),
        }
    }

    /// The keys: from the cache, or fetched when there is no usable set yet (none, or one
    /// past its lifetime), or when none fits a token signed with `alg` naming `kid`. Fetches
    /// are spaced: at least a minute apart while a usable set is held, and
    /// [`RETRY_AFTER_FAILURE`] after a failure while none is.
    pub(crate) async fn keys(
        &self,
        http: &ProviderHttp,
        jwks_uri: &Url,
        alg: Algorithm,
        kid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<ProviderKey>>, FetchError> {
        let mut held = self.held.lock().await;
        let usable = |held: &Held| {
            held.fetched
                .as_ref()
                .filter(|f| self.lifetime.is_none_or(|lifetime| now - f.at < lifetime))
                .map(|f| f.keys.clone())
        };
        let current = usable(&held);
        let wanted = current
            .as_ref()
            .is_none_or(|keys| fitting(keys, alg, kid).is_empty());
        let allowed = match (&current, held.attempted) {
            (_, None) => true,
            (None, Some(at)) => now - at >= RETRY_AFTER_FAILURE,
            (Some(_), Some(at)) => now - at >= REFETCH_AFTER,
        };
        if wanted && allowed {
            held.attempted = Some(now);
            let fetched = match http.get_json::<serde_json::Value>(jwks_uri).await {
                Ok(json) => parse_key_set(&json),
                Err(e) => Err(e),
            };
            match fetched {
                Ok(keys) => {
                    held.fetched = Some(Fetched {
                        keys: Arc::new(keys),
                        at: now,
                    });
                    held.failure = None;
                }
                Err(e) => {
                    held.failure = Some(e.clone());
                    return Err(e);
                }
            }
        }
        match usable(&held) {
            Some(keys) => Ok(keys),
            None => Err(match &held.failure {
                Some(e) => e.clone().again(),
                None => FetchError::Unusable("no key set".into()),
            }),
        }
    }
}

/// Indexes of the keys that fit.
pub(crate) fn fitting(keys: &[ProviderKey], alg: Algorithm, kid: Option<&str>) -> Vec<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, key)| key.fits(alg, kid))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> serde_json::Value {
        json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "future-kind", "kid": "future"}
        ]})
    }

    #[test]
    fn only_signature_keys_of_kinds_we_verify_are_kept() {
        let keys = parse_key_set(&set()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("ed"), Some("ec")]);
    }

    #[test]
    fn a_key_fits_only_its_own_kid_family_and_curve() {
        let keys = parse_key_set(&set()).unwrap();
        assert_eq!(fitting(&keys, Algorithm::EdDSA, Some("ed")), vec![0]);
        assert_eq!(fitting(&keys, Algorithm::EdDSA, None), vec![0]);
        assert_eq!(fitting(&keys, Algorithm::ES256, Some("ec")), vec![1]);
        assert!(
            fitting(&keys, Algorithm::ES384, Some("ec")).is_empty(),
            "P-256 key"
        );
        assert!(fitting(&keys, Algorithm::RS256, Some("ec")).is_empty());
        assert!(fitting(&keys, Algorithm::EdDSA, Some("other")).is_empty());
        assert!(
            fitting(&keys, Algorithm::HS256, None).is_empty(),
            "never HMAC"
        );
    }

    #[test]
    fn weak_rsa_keys_and_keys_published_with_private_parts_are_left_out() {
        let keys = parse_key_set(&json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "big", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "leaked", "d": "AAAA",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}))
        .unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("big")]);
        assert_eq!(rsa_bits(&URL_SAFE_NO_PAD.encode([0u8, 0x01, 0xff])), 9);
        assert_eq!(rsa_bits("!"), 0);
    }

    /// A key server that fails is asked again only after a pause, however many tokens come:
    /// [`RETRY_AFTER_FAILURE`] while no set is held, a minute while one is.
    #[tokio::test]
    async fn a_failed_fetch_stands_for_a_while() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let uri = Url::parse(&format!("{}/jwks", server.uri())).unwrap();
        let http = ProviderHttp::new().unwrap();
        let cache = KeyCache::with_lifetime(chrono::Duration::hours(1));
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let fetches = || async { server.received_requests().await.unwrap().len() };
        let ask = |at| cache.keys(&http, &uri, Algorithm::EdDSA, Some("ed"), at);
        for s in [0, 1, 9] {
            assert!(ask(t0 + chrono::Duration::seconds(s)).await.is_err());
        }
        assert_eq!(fetches().await, 1);
        server.reset().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(set()))
            .mount(&server)
            .await;
        let t1 = t0 + chrono::Duration::seconds(10);
        assert_eq!(ask(t1).await.unwrap().len(), 2);
        // Unknown key ids: one refetch a minute at most, and a set is kept while they fail.
        for s in [1, 30, 59] {
            let keys = cache
                .keys(
                    &http,
                    &uri,
                    Algorithm::EdDSA,
                    Some("new"),
                    t1 + chrono::Duration::seconds(s),
                )
                .await
                .unwrap();
            assert_eq!(keys.len(), 2);
        }
        assert_eq!(fetches().await, 1);
        // Past its lifetime the set is fetched again, and without it there are no keys.
        server.reset().await;
        let late = t1 + chrono::Duration::hours(1);
        assert!(ask(late).await.is_err());
        assert!(ask(late + chrono::Duration::seconds(1)).await.is_err());
        assert_eq!(fetches().await, 1);
    }

    #[test]
    fn a_key_that_names_its_algorithm_is_for_that_algorithm_only() {
        let keys = parse_key_set(&json!({"keys": [
            {"kty": "RSA", "kid": "r", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"}
        ]}))
        .unwrap();
        assert_eq!(fitting(&keys, Algorithm::RS256, Some("r")), vec![0]);
        assert!(fitting(&keys, Algorithm::PS256, Some("r")).is_empty());
    }
}
