//! The security console's services (issue 13): what its pages show, with no actix types; the
//! handlers live in `http::console`.

pub mod charts;
pub mod workforce;
