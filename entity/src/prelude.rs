//! Convenience re-exports of every entity under its table-style name.

pub use super::access_log::Entity as AccessLog;
pub use super::access_log_customer_partners::Entity as AccessLogCustomerPartners;
pub use super::access_log_daily::Entity as AccessLogDaily;
pub use super::access_log_field_reads::Entity as AccessLogFieldReads;
pub use super::access_log_hourly::Entity as AccessLogHourly;
pub use super::admin_audit::Entity as AdminAudit;
pub use super::admin_tokens::Entity as AdminTokens;
pub use super::chain_checkpoints::Entity as ChainCheckpoints;
pub use super::console_users::Entity as ConsoleUsers;
pub use super::customers::Entity as Customers;
pub use super::grants::Entity as Grants;
pub use super::partners::Entity as Partners;
pub use super::refresh_tokens::Entity as RefreshTokens;
pub use super::revoked_tokens::Entity as RevokedTokens;
pub use super::signing_keys::Entity as SigningKeys;
