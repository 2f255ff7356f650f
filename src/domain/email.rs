//! An e-mail address as Keyhole keeps it for people who sign in: trimmed, lowercased, bounded.
//! Deliverability is not checked (nothing is sent to it); it is an account name a person
//! recognises, so only what makes it ambiguous or unbounded is refused.

use std::fmt;

/// RFC 5321's limit on a forward path.
const MAX_LEN: usize = 254;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an e-mail address (local@domain, at most 254 characters, no spaces)")]
pub struct EmailError(String);

/// `local@domain`, lowercase, at most 254 bytes, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim().to_lowercase();
        let refused = || EmailError(raw.chars().take(64).collect());
        if email.len() > MAX_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refused());
        }
        match email.split_once('@') {
            Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
            {
                Ok(Self(email))
            }
            _ => Err(refused()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_bounded() {
        assert_eq!(
            Email::parse("  Ana.Lyst@Harmony.Example ")
                .unwrap()
                .as_str(),
            "ana.lyst@harmony.example"
        );
        for bad in [
            "",
            "no-at-sign",
            "@harmony.example",
            "ana@",
            "a@b@c",
            "ana lyst@harmony.example",
            "ana\u{0}@harmony.example",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@harmony.example", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }
}
