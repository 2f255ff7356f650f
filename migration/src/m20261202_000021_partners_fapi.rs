//! FAPI 2.0 per partner: whether its authorization requests must be pushed (PAR, RFC 9126),
//! whether its tokens must be DPoP-bound (RFC 9449), and, for `private_key_jwt` (RFC 7523),
//! where its public keys are: a JWKS URI, or the JWKS itself. A partner registered with keys
//! keeps a `secret_hash` of a secret nobody was ever shown, and client authentication refuses
//! secrets for it outright.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_partners::Partners;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Fapi {
    RequirePar,
    RequireDpop,
    /// `https` URI of the partner's JWKS (keys cached, refetched on an unknown `kid`).
    JwksUri,
    /// The partner's JWKS itself, as JSON text (`--jwks-file`).
    Jwks,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for mut column in [
            boolean(Fapi::RequirePar).default(false).to_owned(),
            boolean(Fapi::RequireDpop).default(false).to_owned(),
            string_null(Fapi::JwksUri),
            text_null(Fapi::Jwks),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Partners::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Fapi::RequirePar,
            Fapi::RequireDpop,
            Fapi::JwksUri,
            Fapi::Jwks,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Partners::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
