//! What a validated ID token says about the person: the claims every caller needs by name,
//! and the others on request (issue 14 picks its customer by a configured claim).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The claims of an ID token whose signature, issuer, audience, times and nonce were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityClaims {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) auth_time: Option<DateTime<Utc>>,
    pub(crate) all: Map<String, Value>,
}

impl IdentityClaims {
    /// `iss`: the provider, exactly as configured.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `sub`: the person's stable id at that provider (unique only together with the issuer).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// `email`, when the provider shares it.
    pub fn email(&self) -> Option<&str> {
        self.string("email")
    }

    /// `email_verified`: true only when the provider says so.
    pub fn email_verified(&self) -> bool {
        self.all.get("email_verified") == Some(&Value::Bool(true))
    }

    /// `auth_time`: when the person last actually signed in at the provider.
    pub fn auth_time(&self) -> Option<DateTime<Utc>> {
        self.auth_time
    }

    /// Any claim, by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.all.get(name)
    }

    /// A claim that is a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.all.get(name).and_then(Value::as_str)
    }

    /// A claim that is a list of strings (`groups`, `roles`); a single string counts as a list
    /// of one, as some providers write a lone group that way. Non-strings are skipped.
    pub fn strings(&self, name: &str) -> Vec<&str> {
        match self.all.get(name) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(all: Value) -> IdentityClaims {
        IdentityClaims {
            issuer: "https://id.example".into(),
            subject: "u1".into(),
            auth_time: None,
            all: all.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn groups_read_as_a_list_whether_one_string_or_many() {
        let c = claims(json!({"groups": ["a", 7, "b"], "role": "admin"}));
        assert_eq!(c.strings("groups"), vec!["a", "b"]);
        assert_eq!(c.strings("role"), vec!["admin"]);
        assert!(c.strings("absent").is_empty());
    }

    #[test]
    fn email_is_verified_only_when_the_provider_says_true() {
        assert!(
            !claims(json!({"email": "a@x.example", "email_verified": "true"})).email_verified()
        );
        let c = claims(json!({"email": "a@x.example", "email_verified": true}));
        assert!(c.email_verified());
        assert_eq!(c.email(), Some("a@x.example"));
        assert_eq!(c.string("missing"), None);
    }
}
