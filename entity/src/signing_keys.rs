//! `signing_keys`: Ed25519 keys used to sign access tokens.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Eq)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    /// PKCS#8 DER private key, sealed under the encryption key kept outside the database
    /// (plain in databases from before sealing, until the next start seals it).
    #[sea_orm(column_type = "Blob")]
    pub private_key: Vec<u8>,
    /// Raw 32-byte public key.
    #[sea_orm(column_type = "Blob")]
    pub public_key: Vec<u8>,
    pub created_at: DateTimeUtc,
    /// When it stops signing: its successor's activation time (it stays published until the
    /// tokens it signed have expired).
    pub retired_at: Option<DateTimeUtc>,
    /// When it starts signing, later than `created_at` for a rotated key so every instance
    /// trusts it first; null for a key active since it was stored.
    pub activates_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
