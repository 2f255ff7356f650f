use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Partners {
    Table,
    ClientId,
    Name,
    SecretHash,
    RedirectUris,
    Fields,
    RatePerSecond,
    RateBurst,
    GrantRatePerSecond,
    GrantBurst,
    Status,
    CreatedAt,
}

pub(crate) fn create_table() -> TableCreateStatement {
    Table::create()
        .table(Partners::Table)
        .col(string(Partners::ClientId).primary_key())
        .col(string(Partners::Name))
        .col(string(Partners::SecretHash))
        .col(text(Partners::RedirectUris))
        .col(text(Partners::Fields))
        .col(double_null(Partners::RatePerSecond))
        .col(integer_null(Partners::RateBurst))
        .col(double_null(Partners::GrantRatePerSecond))
        .col(integer_null(Partners::GrantBurst))
        .col(string(Partners::Status))
        .col(timestamp_with_time_zone(Partners::CreatedAt))
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(create_table()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Partners::Table).to_owned())
            .await
    }
}
