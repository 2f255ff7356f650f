//! The customer portal: sign-in, sessions, grants, access history and revocation.

pub mod backchannel;
pub mod grants;
pub mod login;
pub mod oidc;
pub mod session;
