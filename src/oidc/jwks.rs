//! The provider's signing keys: fetched from `jwks_uri`, kept, and fetched again when a token
//! names a key we do not know (the provider rotated), at most once a minute so that tokens
//! with made-up key ids cannot make us hammer the provider.

use super::fetch::{FetchError, ProviderHttp};
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

/// One verification key of the provider.
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
            AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
            AlgorithmParameters::EllipticCurve(ec) => (AlgorithmFamily::Ec, Some(ec.curve.clone())),
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                (AlgorithmFamily::Ed, Some(EllipticCurve::Ed25519))
            }
            // Symmetric keys, other curves, and kinds this crate version added after us.
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

/// Parses a key set, one key at a time: a key of a kind we do not know must not hide the
/// others.
pub(crate) fn parse_key_set(json: &serde_json::Value) -> Result<Vec<ProviderKey>, FetchError> {
    #[derive(Deserialize)]
    struct KeySet {
        keys: Vec<serde_json::Value>,
    }
    let set = KeySet::deserialize(json)
        .map_err(|e| FetchError::Unusable(format!("the provider's key set: {e}")))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
        .filter_map(|jwk| ProviderKey::from_jwk(&jwk))
        .collect())
}

struct Fetched {
    keys: Arc<Vec<ProviderKey>>,
    at: DateTime<Utc>,
}

/// The key set of one provider, shared by every sign-in.
#[derive(Default)]
pub(crate) struct KeyCache {
    // A tokio mutex, held across the fetch: concurrent sign-ins that all miss wait for one
    // fetch instead of each making their own.
    fetched: Mutex<Option<Fetched>>,
}

impl KeyCache {
    /// The keys: from the cache, or fetched when there is none yet, or when none fits a token
    /// signed with `alg` naming `kid` and the last fetch is at least a minute old.
    pub(crate) async fn keys(
        &self,
        http: &ProviderHttp,
        jwks_uri: &Url,
        alg: Algorithm,
        kid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<ProviderKey>>, FetchError> {
        let mut fetched = self.fetched.lock().await;
        let refetch = match fetched.as_ref() {
            None => true,
            Some(current) => {
                fitting(&current.keys, alg, kid).is_empty() && now - current.at >= REFETCH_AFTER
            }
        };
        if refetch {
            let json: serde_json::Value = http.get_json(jwks_uri).await?;
            let keys = Arc::new(parse_key_set(&json)?);
            *fetched = Some(Fetched { keys, at: now });
        }
        match fetched.as_ref() {
            Some(current) => Ok(current.keys.clone()),
            None => Err(FetchError::Unusable("no key set".into())),
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
    fn a_key_that_names_its_algorithm_is_for_that_algorithm_only() {
        let keys = parse_key_set(&json!({"keys": [
            {"kty": "RSA", "kid": "r", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"}
        ]}))
        .unwrap();
        assert_eq!(fitting(&keys, Algorithm::RS256, Some("r")), vec![0]);
        assert!(fitting(&keys, Algorithm::PS256, Some("r")).is_empty());
    }
}
