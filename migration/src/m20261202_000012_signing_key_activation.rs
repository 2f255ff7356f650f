//! A signing key made by a rotation is published before it signs (issue 17): `activates_at` is
//! when it starts signing, chosen so every instance has loaded it, and so trusts its tokens,
//! by then. Null means active since it was stored: the first key of a database, and every
//! key from before this migration.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000005_create_signing_keys::SigningKeys;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Activation {
    ActivatesAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .add_column(timestamp_with_time_zone_null(Activation::ActivatesAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .drop_column(Activation::ActivatesAt)
                    .to_owned(),
            )
            .await
    }
}
