//! SeaORM entities for the Keyhole database schema.
//!
//! The schema itself is created by the `migration` crate; these entities
//! mirror it column for column.

pub mod access_log;
pub mod access_log_customer_partners;
pub mod access_log_daily;
pub mod access_log_field_reads;
pub mod access_log_hourly;
pub mod admin_audit;
pub mod admin_tokens;
pub mod chain_checkpoints;
pub mod console_users;
pub mod customers;
pub mod grants;
pub mod partners;
pub mod prelude;
pub mod refresh_tokens;
pub mod revoked_tokens;
pub mod signing_keys;
