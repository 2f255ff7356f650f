use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum SigningKeys {
    Table,
    Kid,
    PrivateKey,
    PublicKey,
    CreatedAt,
    RetiredAt,
}

pub(crate) fn create_table() -> TableCreateStatement {
    // `blob` renders as `blob` on SQLite and `bytea` on PostgreSQL.
    Table::create()
        .table(SigningKeys::Table)
        .col(string(SigningKeys::Kid).primary_key())
        .col(blob(SigningKeys::PrivateKey))
        .col(blob(SigningKeys::PublicKey))
        .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
        .col(timestamp_with_time_zone_null(SigningKeys::RetiredAt))
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(create_table()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SigningKeys::Table).to_owned())
            .await
    }
}
