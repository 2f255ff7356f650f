//! Domain types: parsed at the edge, trusted inside. No framework imports here.

pub mod catalog;
pub mod email;
pub mod ids;
pub mod pkce;
pub mod scope;
pub mod subject;

pub use catalog::{Catalog, CatalogError, Field, Resource};
pub use email::{Email, EmailError};
pub use ids::{ClientId, CustomerId, GrantId, IdError, UpstreamCustomerId};
pub use pkce::{CodeChallenge, CodeVerifier, PkceError};
pub use scope::{FieldSet, Scope, ScopeError};
pub use subject::pairwise_subject;

/// The most characters of a caller-chosen string (a path segment, an id, a method) that
/// Keyhole stores or logs: enough for every legitimate value, too little to grow anything.
pub const MAX_STORED_CHARS: usize = 64;

/// What is kept of a caller-chosen string: at most [`MAX_STORED_CHARS`] characters.
pub fn bounded(s: &str) -> String {
    s.chars().take(MAX_STORED_CHARS).collect()
}
