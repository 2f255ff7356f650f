//! A scope names exactly one field of one resource: `claims:status`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("scope `{0}` is not of the form resource:field")]
    Malformed(String),
    #[error("no scope was requested")]
    Empty,
}

/// `{resource}:{field}`, both lowercase identifiers of at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    resource: String,
    field: String,
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

impl Scope {
    pub fn new(resource: &str, field: &str) -> Result<Self, ScopeError> {
        if is_identifier(resource) && is_identifier(field) {
            Ok(Self {
                resource: resource.to_owned(),
                field: field.to_owned(),
            })
        } else {
            Err(ScopeError::Malformed(format!("{resource}:{field}")))
        }
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn field(&self) -> &str {
        &self.field
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (resource, field) = s
            .split_once(':')
            .ok_or_else(|| ScopeError::Malformed(s.to_owned()))?;
        Self::new(resource, field).map_err(|_| ScopeError::Malformed(s.to_owned()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.field)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of scopes, ordered so its text form (space-separated, RFC 6749 §3.3) is canonical.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct FieldSet(BTreeSet<Scope>);

impl FieldSet {
    /// Parses a non-empty space-separated scope string; duplicates collapse.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let set = s
            .split(' ')
            .filter(|part| !part.is_empty())
            .map(Scope::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if set.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(set))
    }

    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn is_subset(&self, other: &FieldSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes of `self` that `other` lacks, for error messages.
    pub fn difference<'a>(&'a self, other: &'a FieldSet) -> impl Iterator<Item = &'a Scope> {
        self.0.difference(&other.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
}

impl fmt::Display for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

impl Serialize for FieldSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FieldSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_resource_colon_field() {
        let scope: Scope = "claims:status".parse().unwrap();
        assert_eq!(scope.resource(), "claims");
        assert_eq!(scope.field(), "status");
        assert_eq!(scope.to_string(), "claims:status");
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in [
            "claims",
            ":status",
            "claims:",
            "Claims:status",
            "claims:sta tus",
            "claims:status:x",
            "claims/../x:y",
            "1claims:status",
            "claims:ß",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_field_set_is_canonical_and_deduplicated() {
        let set = FieldSet::parse("claims:status_updated_at  claims:status claims:status").unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "claims:status claims:status_updated_at");
    }

    #[test]
    fn an_empty_field_set_is_refused() {
        assert_eq!(FieldSet::parse("   "), Err(ScopeError::Empty));
    }

    #[test]
    fn subsets_and_differences() {
        let small = FieldSet::parse("claims:status").unwrap();
        let big = FieldSet::parse("claims:status claims:status_updated_at").unwrap();
        assert!(small.is_subset(&big));
        assert!(!big.is_subset(&small));
        let missing: Vec<String> = big.difference(&small).map(|s| s.to_string()).collect();
        assert_eq!(missing, vec!["claims:status_updated_at"]);
    }
}
