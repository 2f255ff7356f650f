//! `access_log`: append-only, hash-chained audit log of partner data access.
//!
//! Deliberately has no foreign keys so entries outlive the rows they refer to.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "access_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The writer whose hash chain holds the record (one per gateway instance).
    pub chain: String,
    /// The record's place in its chain: 1, 2, 3…
    pub seq: i64,
    pub at: DateTimeUtc,
    pub request_id: String,
    pub client_id: Option<String>,
    pub grant_id: Option<String>,
    pub customer_id: Option<String>,
    pub resource: String,
    pub resource_id: Option<String>,
    /// JSON array of record ids returned, stored as text.
    #[sea_orm(column_type = "Text")]
    pub record_ids: String,
    /// JSON array of field names returned, stored as text.
    #[sea_orm(column_type = "Text")]
    pub fields: String,
    pub outcome: String,
    pub status: i32,
    pub client_ip: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
