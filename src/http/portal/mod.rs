//! The customer portal. This part: sign-in, sign-out and the session they create.

pub mod login;
pub mod session;
