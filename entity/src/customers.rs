//! `customers`: end users whose data partners access.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub upstream_id: String,
    #[sea_orm(unique)]
    pub email: String,
    pub password_hash: String,
    pub created_at: DateTimeUtc,
    /// The provider's `iss` for customers who sign in there; null for built-in accounts.
    pub oidc_issuer: Option<String>,
    /// Their `sub` at that provider.
    pub oidc_subject: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::grants::Entity")]
    Grants,
}

impl Related<super::grants::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Grants.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
