//! `application/x-www-form-urlencoded` bodies of the OAuth endpoints.

use crate::error::OAuthError;
use std::collections::HashMap;

/// Parameters of a form, each present at most once (RFC 6749 §3.1, §3.2).
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(body) {
            if params.insert(key.to_string(), value.into_owned()).is_some() {
                // Named, but only as much of the name as a real parameter's: the caller (anyone,
                // before authentication) chose it, and it goes back in the answer.
                let named: String = key
                    .chars()
                    .filter(|c| c.is_ascii_graphic() && *c != '`')
                    .take(40)
                    .collect();
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{named}` is repeated"
                )));
            }
        }
        Ok(Self(params))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter `{key}` is required")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red team: the name of a repeated parameter was echoed whole (up to the 64 KiB body,
    /// any characters) in the error of endpoints anyone can reach.
    #[test]
    fn a_repeated_parameter_is_named_briefly_and_printably() {
        let name = format!("{}%0A%3Cscript%3E", "x".repeat(10_000));
        let body = format!("{name}=1&{name}=2");
        let Err(OAuthError::Client { description, .. }) = Form::parse(body.as_bytes()) else {
            panic!("a repeated parameter is refused");
        };
        assert!(description.len() < 120, "{} bytes", description.len());
        assert!(
            !description.contains('\n') && !description.contains('<'),
            "{description}"
        );
        assert!(description.contains("xxxx"), "{description}");
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(Form::parse(b"a=1&a=2").is_err());
        let form = Form::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), None);
        assert_eq!(form.get("c"), Some("x y"));
        assert!(form.require("b").is_err());
    }
}
