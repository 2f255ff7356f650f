//! The authorization server's HTTP surface.

pub mod authorize;
pub mod endpoints;
pub mod forms;
pub mod metadata;
pub mod par;
