//! `grants`: a customer's consent for a partner to access a set of scopes.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "grants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub customer_id: String,
    pub client_id: String,
    /// Space-separated list of granted scopes.
    #[sea_orm(column_type = "Text")]
    pub scopes: String,
    pub status: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<DateTimeUtc>,
    /// When the grant's one authorization code was spent; null until then (and again when it
    /// was given back after a failed exchange). The authority on spent codes.
    pub code_redeemed_at: Option<DateTimeUtc>,
    /// The code exchange's answer, sealed under a key derived from the code, while a retry may
    /// still get it (until `code_reissue_until`).
    #[sea_orm(column_type = "Blob", nullable)]
    pub code_reissue_sealed: Option<Vec<u8>>,
    pub code_reissue_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::customers::Entity",
        from = "Column::CustomerId",
        to = "super::customers::Column::Id"
    )]
    Customers,
    #[sea_orm(
        belongs_to = "super::partners::Entity",
        from = "Column::ClientId",
        to = "super::partners::Column::ClientId"
    )]
    Partners,
    #[sea_orm(has_many = "super::refresh_tokens::Entity")]
    RefreshTokens,
}

impl Related<super::customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customers.def()
    }
}

impl Related<super::partners::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Partners.def()
    }
}

impl Related<super::refresh_tokens::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RefreshTokens.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
