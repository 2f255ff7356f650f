//! `refresh_tokens`: rotating refresh tokens issued under a grant.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub grant_id: String,
    #[sea_orm(unique)]
    pub token_hash: String,
    /// The token this one was rotated from, if any (not a foreign key).
    pub parent_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    /// The answer this token's use gave, sealed under a key derived from the token, while a
    /// retry may still get it (until `reissue_until`).
    #[sea_orm(column_type = "Blob", nullable)]
    pub reissue_sealed: Option<Vec<u8>>,
    pub reissue_until: Option<DateTimeUtc>,
    /// DPoP: the thumbprint of the key this token is bound to (RFC 9449 §5).
    pub dpop_jkt: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::grants::Entity",
        from = "Column::GrantId",
        to = "super::grants::Column::Id",
        on_delete = "Cascade"
    )]
    Grants,
}

impl Related<super::grants::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Grants.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
