//! The authorization server's logic, free of HTTP: the handlers in `http::oauth` parse the
//! request, call one function here and map the result.

pub mod authorize;
pub mod client_assertion;
pub mod client_auth;
pub mod form;
pub mod grants;
pub mod introspection;
pub mod par;
pub mod reissue;
pub mod revocation;
pub mod token;
