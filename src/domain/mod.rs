//! Domain types: parsed at the edge, trusted inside. No framework imports here.

pub mod catalog;
pub mod ids;
pub mod pkce;
pub mod scope;
pub mod subject;

pub use catalog::{Catalog, CatalogError, Field, Resource};
pub use ids::{ClientId, CustomerId, GrantId, IdError, UpstreamCustomerId};
pub use pkce::{CodeChallenge, CodeVerifier, PkceError};
pub use scope::{FieldSet, Scope, ScopeError};
pub use subject::pairwise_subject;
