//! Identifiers, each its own type so one can never be passed where another is meant.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a valid {kind}")]
pub struct IdError {
    kind: &'static str,
    value: String,
}

impl IdError {
    fn new(kind: &'static str, value: &str) -> Self {
        // Never echo an unbounded attacker-chosen string into logs or pages.
        let value: String = value.chars().take(80).collect();
        Self { kind, value }
    }
}

/// Identifiers that travel in URLs and logs: `[A-Za-z0-9._-]{1,64}`.
fn is_safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s != "."
        && s != ".."
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_safe_token(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::new($kind, s))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A partner's OAuth `client_id`.
    ClientId,
    "client id"
);
string_id!(
    /// The insurer's own customer number, as the claims API knows it (`CU-1001`).
    UpstreamCustomerId,
    "customer id"
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Only the hyphenated lowercase form is accepted, so one id has one spelling.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                match Uuid::try_parse(s) {
                    Ok(uuid) if uuid.hyphenated().to_string() == s => Ok(Self(uuid)),
                    _ => Err(IdError::new($kind, s)),
                }
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// One customer's consent to one partner; the same id in tokens, portal and admin API.
    GrantId,
    "grant id"
);
uuid_id!(
    /// Keyhole's internal, never-disclosed customer account id.
    CustomerId,
    "customer account id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_url_safe_tokens() {
        assert!(ClientId::parse("fone-shop").is_ok());
        for bad in ["", "..", "a/b", "a%2Fb", "a b", &"x".repeat(65)] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grant_ids_have_one_spelling() {
        let id = GrantId::random();
        assert_eq!(GrantId::parse(&id.to_string()), Ok(id));
        assert!(GrantId::parse(&id.to_string().to_uppercase()).is_err());
        assert!(GrantId::parse(&id.to_string().replace('-', "")).is_err());
        assert!(GrantId::parse("1").is_err());
    }

    #[test]
    fn id_errors_do_not_echo_huge_input() {
        let err = ClientId::parse(&"y".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }
}
