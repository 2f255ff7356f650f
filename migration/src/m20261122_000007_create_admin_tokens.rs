use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum AdminTokens {
    Table,
    Id,
    Name,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

pub(crate) fn create_table() -> TableCreateStatement {
    Table::create()
        .table(AdminTokens::Table)
        .col(string(AdminTokens::Id).primary_key())
        .col(string(AdminTokens::Name))
        .col(string_uniq(AdminTokens::TokenHash))
        .col(timestamp_with_time_zone(AdminTokens::CreatedAt))
        .col(timestamp_with_time_zone_null(AdminTokens::RevokedAt))
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(create_table()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AdminTokens::Table).to_owned())
            .await
    }
}
