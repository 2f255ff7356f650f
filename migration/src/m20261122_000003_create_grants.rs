use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_partners::Partners;
use crate::m20261122_000002_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Grants {
    Table,
    Id,
    CustomerId,
    ClientId,
    Scopes,
    Status,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    RevokedBy,
    LastUsedAt,
}

pub(crate) fn create_table() -> TableCreateStatement {
    Table::create()
        .table(Grants::Table)
        .col(string(Grants::Id).primary_key())
        .col(string(Grants::CustomerId))
        .col(string(Grants::ClientId))
        .col(text(Grants::Scopes))
        .col(string(Grants::Status))
        .col(timestamp_with_time_zone(Grants::CreatedAt))
        .col(timestamp_with_time_zone(Grants::ExpiresAt))
        .col(timestamp_with_time_zone_null(Grants::RevokedAt))
        .col(string_null(Grants::RevokedBy))
        .col(timestamp_with_time_zone_null(Grants::LastUsedAt))
        .foreign_key(
            ForeignKey::create()
                .name("fk_grants_customer_id")
                .from(Grants::Table, Grants::CustomerId)
                .to(Customers::Table, Customers::Id),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_grants_client_id")
                .from(Grants::Table, Grants::ClientId)
                .to(Partners::Table, Partners::ClientId),
        )
        .to_owned()
}

pub(crate) fn create_indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_grants_customer_id")
            .table(Grants::Table)
            .col(Grants::CustomerId)
            .to_owned(),
        Index::create()
            .name("idx_grants_client_id")
            .table(Grants::Table)
            .col(Grants::ClientId)
            .to_owned(),
        Index::create()
            .name("idx_grants_status")
            .table(Grants::Table)
            .col(Grants::Status)
            .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(create_table()).await?;
        for index in create_indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Grants::Table).to_owned())
            .await
    }
}
