//! `partners`: registered OAuth clients.

use sea_orm::entity::prelude::*;

// `f64` columns rule out `Eq` on this model.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "partners")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_id: String,
    pub name: String,
    pub secret_hash: String,
    /// JSON array of registered redirect URIs, stored as text.
    #[sea_orm(column_type = "Text")]
    pub redirect_uris: String,
    /// Space-separated list of scopes the partner may request.
    #[sea_orm(column_type = "Text")]
    pub fields: String,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<i32>,
    pub grant_rate_per_second: Option<f64>,
    pub grant_burst: Option<i32>,
    pub status: String,
    pub created_at: DateTimeUtc,
    /// When the security team (or an alert rule) last suspended or reinstated it.
    pub status_changed_at: Option<DateTimeUtc>,
    /// Authorization requests must be pushed first (PAR, RFC 9126).
    pub require_par: bool,
    /// Tokens must be DPoP-bound (RFC 9449).
    pub require_dpop: bool,
    /// `private_key_jwt`: the partner's JWKS URI…
    pub jwks_uri: Option<String>,
    /// …or its JWKS itself, as JSON text.
    #[sea_orm(column_type = "Text", nullable)]
    pub jwks: Option<String>,
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
