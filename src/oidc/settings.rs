//! What a relying party needs to know about its provider: the keys every `[*_login]` section
//! shares (`[console_login]` today, `[customer_login]` next). Each section has its own struct
//! in `config.rs` (serde cannot refuse unknown keys through `flatten`) and hands this one over.

use crate::secrets::Secret;
use url::{Host, Url};

/// The scopes asked for when the settings name none.
pub const DEFAULT_SCOPES: &str = "openid email profile";

/// The sign-in age asked for when the settings name none.
pub const DEFAULT_REAUTHENTICATE_AFTER_MINUTES: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// Exactly as the provider writes it in its discovery document and its ID tokens.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Space-separated; `openid` among them.
    pub scopes: String,
    /// The most a sign-in may be old when it is asked for (`max_age`).
    pub reauthenticate_after_minutes: u32,
}

/// A setting that cannot work, named by its key within the section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {problem}")]
pub struct SettingsError {
    pub key: &'static str,
    pub problem: &'static str,
}

impl ProviderSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, problem| Err(SettingsError { key, problem });
        let Ok(issuer) = Url::parse(&self.issuer) else {
            return invalid("issuer", "must be an absolute https URL");
        };
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return invalid("issuer", "must not have a query or fragment");
        }
        if !secure_or_loopback(&issuer) {
            return invalid(
                "issuer",
                "must be an https URL (plain http only on loopback, for tests)",
            );
        }
        if !is_token(&self.client_id, 255) {
            return invalid(
                "client_id",
                "must be 1 to 255 printable characters without spaces",
            );
        }
        if self.client_secret.expose().is_empty() || self.client_secret.expose().len() > 1024 {
            return invalid("client_secret", "must be 1 to 1024 characters");
        }
        let scopes: Vec<&str> = self.scopes.split(' ').filter(|s| !s.is_empty()).collect();
        if !scopes.contains(&"openid") || scopes.iter().any(|s| !is_token(s, 128)) {
            return invalid(
                "scopes",
                "must be space-separated scope names including `openid`",
            );
        }
        if !(1..=1440).contains(&self.reauthenticate_after_minutes) {
            return invalid("reauthenticate_after_minutes", "must be between 1 and 1440");
        }
        Ok(())
    }

    /// The discovery document's address (OpenID Connect Discovery 1.0 §4).
    pub fn discovery_url(&self) -> Result<Url, url::ParseError> {
        Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        ))
    }
}

/// https, or plain http to this machine (a provider started by a test). Every address the
/// provider gives us (endpoints, keys) must meet the same rule as its issuer.
pub fn secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// A claim or scope name: printable, no spaces, bounded.
pub fn is_token(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            issuer: "https://id.harmony.example".into(),
            client_id: "keyhole".into(),
            client_secret: Secret::new("s3cret".into()),
            scopes: DEFAULT_SCOPES.into(),
            reauthenticate_after_minutes: DEFAULT_REAUTHENTICATE_AFTER_MINUTES,
        }
    }

    #[test]
    fn an_https_issuer_is_accepted_and_its_discovery_url_has_no_double_slash() {
        let mut s = settings();
        s.validate().unwrap();
        s.issuer = "https://id.harmony.example/tenant/".into();
        assert_eq!(
            s.discovery_url().unwrap().as_str(),
            "https://id.harmony.example/tenant/.well-known/openid-configuration"
        );
    }

    #[test]
    fn plain_http_is_refused_unless_the_issuer_is_loopback() {
        let mut s = settings();
        for (issuer, ok) in [
            ("http://id.harmony.example", false),
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("ftp://id.harmony.example", false),
            ("id.harmony.example", false),
            ("https://id.harmony.example?x=1", false),
        ] {
            s.issuer = issuer.into();
            assert_eq!(s.validate().is_ok(), ok, "{issuer}");
        }
    }

    #[test]
    fn scopes_must_include_openid_and_other_keys_be_sane() {
        let mut s = settings();
        s.scopes = "email profile".into();
        assert_eq!(s.validate().unwrap_err().key, "scopes");
        s = settings();
        s.client_id = "has space".into();
        assert_eq!(s.validate().unwrap_err().key, "client_id");
        s = settings();
        s.client_secret = Secret::new(String::new());
        assert_eq!(s.validate().unwrap_err().key, "client_secret");
        s = settings();
        s.reauthenticate_after_minutes = 0;
        assert_eq!(
            s.validate().unwrap_err().key,
            "reauthenticate_after_minutes"
        );
    }
}
