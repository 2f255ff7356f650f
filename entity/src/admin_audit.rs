//! `admin_audit`: one row per call to the security team's API, refused ones included.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "admin_audit")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    pub request_id: String,
    pub token_id: Option<String>,
    pub token_name: Option<String>,
    pub method: String,
    #[sea_orm(column_type = "Text")]
    pub path: String,
    pub query_sha256: Option<String>,
    pub status: i32,
    pub client_ip: Option<String>,
    pub console_user_id: Option<String>,
    pub console_user_email: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
