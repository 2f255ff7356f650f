use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Customers {
    Table,
    Id,
    UpstreamId,
    Email,
    PasswordHash,
    CreatedAt,
}

pub(crate) fn create_table() -> TableCreateStatement {
    Table::create()
        .table(Customers::Table)
        .col(string(Customers::Id).primary_key())
        .col(string_uniq(Customers::UpstreamId))
        .col(string_uniq(Customers::Email))
        .col(string(Customers::PasswordHash))
        .col(timestamp_with_time_zone(Customers::CreatedAt))
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(create_table()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Customers::Table).to_owned())
            .await
    }
}
