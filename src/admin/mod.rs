//! The security team's side: who may call the admin API, what it shows of partners and grants,
//! and the anomaly rules. The access-log search itself lives in `access_log::query`.

pub mod alerts;
pub mod auth;
pub mod views;

pub use auth::AdminIdentity;
