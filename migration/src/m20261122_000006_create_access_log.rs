use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum AccessLog {
    Table,
    Id,
    At,
    RequestId,
    ClientId,
    GrantId,
    CustomerId,
    Resource,
    ResourceId,
    RecordIds,
    Fields,
    Outcome,
    Status,
    ClientIp,
    PrevHash,
    Hash,
}

/// Append-only audit table: intentionally no foreign keys, so entries
/// outlive the partners, customers and grants they mention.
pub(crate) fn create_table() -> TableCreateStatement {
    // `big_pk_auto` renders as `bigserial PRIMARY KEY` on PostgreSQL and
    // `integer PRIMARY KEY AUTOINCREMENT` on SQLite.
    Table::create()
        .table(AccessLog::Table)
        .col(big_pk_auto(AccessLog::Id))
        .col(timestamp_with_time_zone(AccessLog::At))
        .col(string(AccessLog::RequestId))
        .col(string_null(AccessLog::ClientId))
        .col(string_null(AccessLog::GrantId))
        .col(string_null(AccessLog::CustomerId))
        .col(string(AccessLog::Resource))
        .col(string_null(AccessLog::ResourceId))
        .col(text(AccessLog::RecordIds))
        .col(text(AccessLog::Fields))
        .col(string(AccessLog::Outcome))
        .col(integer(AccessLog::Status))
        .col(string_null(AccessLog::ClientIp))
        .col(string(AccessLog::PrevHash))
        .col(string(AccessLog::Hash))
        .to_owned()
}

/// Every secondary index costs a page write in every group commit, so only the lookups that
/// exist get one: by partner, by customer, by grant (portal history), each in id order.
/// Time ranges follow id order and need no index of their own.
pub(crate) fn create_indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_access_log_client_id_id")
            .table(AccessLog::Table)
            .col(AccessLog::ClientId)
            .col(AccessLog::Id)
            .to_owned(),
        Index::create()
            .name("idx_access_log_customer_id_id")
            .table(AccessLog::Table)
            .col(AccessLog::CustomerId)
            .col(AccessLog::Id)
            .to_owned(),
        Index::create()
            .name("idx_access_log_grant_id_id")
            .table(AccessLog::Table)
            .col(AccessLog::GrantId)
            .col(AccessLog::Id)
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
            .drop_table(Table::drop().table(AccessLog::Table).to_owned())
            .await
    }
}
