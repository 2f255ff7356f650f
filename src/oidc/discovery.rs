//! The provider's discovery document (OpenID Connect Discovery 1.0 §3–4), checked before
//! anything in it is used: the issuer it names must be the configured one exactly (§4.3), and
//! every address in it must meet the issuer's own https rule.

use super::fetch::FetchError;
use super::settings::secure_or_loopback;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::str::FromStr;
use url::Url;

/// The signature algorithms we verify ID tokens with. Never `none`, and never HMAC: an HMAC
/// "signature" keyed with something public (the provider's own public key, in the classic
/// confusion attack) proves nothing, and we need no shared-secret tokens from a provider
/// that has key pairs.
pub(crate) const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// How we authenticate to the token endpoint (OpenID Connect Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    Basic,
    Post,
}

/// A provider, as its checked discovery document describes it.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    /// What it advertises for ID tokens, less what we never accept.
    pub algorithms: Vec<Algorithm>,
    pub client_auth: ClientAuth,
    /// RFC 9207: the provider names itself in every authorization answer.
    pub iss_parameter: bool,
    /// RP-Initiated Logout 1.0: where a sign-out at Keyhole sends the browser next. Left out
    /// when it is not an address the issuer's https rule allows.
    pub end_session_endpoint: Option<Url>,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    end_session_endpoint: Option<String>,
}

impl Provider {
    /// Checks a discovery document fetched for `issuer`.
    pub(crate) fn from_document(issuer: &str, json: serde_json::Value) -> Result<Self, FetchError> {
        let unusable = |why: String| Err(FetchError::Unusable(why));
        let doc: Document = match serde_json::from_value(json) {
            Ok(doc) => doc,
            Err(e) => return unusable(format!("the discovery document: {e}")),
        };
        if doc.issuer != issuer {
            // Comparing exactly (no trailing-slash forgiveness) is what §4.3 asks: ID tokens
            // will carry this string, and a document for another issuer is a mix-up.
            return unusable(format!(
                "the discovery document names issuer {:?}, not the configured {issuer:?}",
                truncate(&doc.issuer)
            ));
        }
        for (name, url) in [
            ("authorization_endpoint", &doc.authorization_endpoint),
            ("token_endpoint", &doc.token_endpoint),
            ("jwks_uri", &doc.jwks_uri),
        ] {
            if !secure_or_loopback(url) {
                return unusable(format!("the discovery document's {name} is not https"));
            }
        }
        let algorithms: Vec<Algorithm> = doc
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|alg| Algorithm::from_str(alg).ok())
            .filter(|alg| ACCEPTED_ALGORITHMS.contains(alg))
            .collect();
        if algorithms.is_empty() {
            return unusable(
                "the provider signs ID tokens with no algorithm we accept (RS*, PS*, ES256, \
                 ES384, EdDSA)"
                    .into(),
            );
        }
        // Absent, the default is client_secret_basic (Discovery §3).
        let auth_methods = doc
            .token_endpoint_auth_methods_supported
            .unwrap_or_else(|| vec!["client_secret_basic".into()]);
        let client_auth = if auth_methods.iter().any(|m| m == "client_secret_basic") {
            ClientAuth::Basic
        } else if auth_methods.iter().any(|m| m == "client_secret_post") {
            ClientAuth::Post
        } else {
            return unusable(
                "the token endpoint takes neither client_secret_basic nor client_secret_post"
                    .into(),
            );
        };
        // Absent says nothing (many providers do PKCE without listing it); present without
        // S256 means our challenge would be ignored or refused.
        if doc
            .code_challenge_methods_supported
            .is_some_and(|methods| !methods.iter().any(|m| m == "S256"))
        {
            return unusable("the provider does not support PKCE with S256".into());
        }
        Ok(Self {
            issuer: doc.issuer,
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint: doc.token_endpoint,
            jwks_uri: doc.jwks_uri,
            algorithms,
            client_auth,
            iss_parameter: doc.authorization_response_iss_parameter_supported,
            end_session_endpoint: doc
                .end_session_endpoint
                .and_then(|url| Url::parse(&url).ok())
                .filter(secure_or_loopback),
        })
    }
}

/// Provider-supplied text in our logs stays short.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document() -> serde_json::Value {
        json!({
            "issuer": "https://id.example",
            "authorization_endpoint": "https://id.example/auth",
            "token_endpoint": "https://id.example/token",
            "jwks_uri": "https://id.example/jwks",
            "id_token_signing_alg_values_supported": ["RS256", "HS256", "none", "ES256"],
        })
    }

    #[test]
    fn only_asymmetric_algorithms_the_provider_advertises_are_kept() {
        let p = Provider::from_document("https://id.example", document()).unwrap();
        assert_eq!(p.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(p.client_auth, ClientAuth::Basic, "the default");
        assert!(!p.iss_parameter);
    }

    #[test]
    fn the_issuer_must_match_exactly() {
        for configured in [
            "https://id.example/",
            "https://ID.example",
            "https://other.example",
        ] {
            let err = Provider::from_document(configured, document()).unwrap_err();
            assert!(matches!(err, FetchError::Unusable(_)), "{configured}");
        }
    }

    #[test]
    fn an_end_session_endpoint_is_kept_only_when_it_meets_the_https_rule() {
        let p = Provider::from_document("https://id.example", document()).unwrap();
        assert_eq!(p.end_session_endpoint, None, "not advertised");
        for (given, kept) in [
            ("https://id.example/logout", true),
            ("http://id.example/logout", false),
            ("javascript:alert(1)", false),
            ("not a url", false),
        ] {
            let mut doc = document();
            doc["end_session_endpoint"] = json!(given);
            let p = Provider::from_document("https://id.example", doc).unwrap();
            assert_eq!(p.end_session_endpoint.is_some(), kept, "{given}");
        }
    }

    #[test]
    fn a_provider_with_only_hmac_or_none_is_unusable() {
        let mut doc = document();
        doc["id_token_signing_alg_values_supported"] = json!(["HS256", "none"]);
        assert!(Provider::from_document("https://id.example", doc).is_err());
    }

    #[test]
    fn endpoints_must_be_https_and_client_auth_follows_the_document() {
        let mut doc = document();
        doc["token_endpoint"] = json!("http://id.example/token");
        assert!(Provider::from_document("https://id.example", doc).is_err());
        let mut doc = document();
        doc["token_endpoint_auth_methods_supported"] =
            json!(["private_key_jwt", "client_secret_post"]);
        let p = Provider::from_document("https://id.example", doc).unwrap();
        assert_eq!(p.client_auth, ClientAuth::Post);
        let mut doc = document();
        doc["token_endpoint_auth_methods_supported"] = json!(["private_key_jwt"]);
        assert!(Provider::from_document("https://id.example", doc).is_err());
        let mut doc = document();
        doc["code_challenge_methods_supported"] = json!(["plain"]);
        assert!(Provider::from_document("https://id.example", doc).is_err());
    }
}
