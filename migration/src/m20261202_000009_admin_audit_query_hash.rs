//! The admin audit keeps a call's path (at most 64 characters) and a hash of its query instead
//! of the whole query: a caller controls both, and what a caller controls is stored bounded.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261201_000008_security_team::AdminAudit;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum QueryHash {
    /// SHA-256 (hex) of the query string; null when there was none.
    QuerySha256,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AdminAudit::Table)
                    .add_column(string_null(QueryHash::QuerySha256))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AdminAudit::Table)
                    .drop_column(QueryHash::QuerySha256)
                    .to_owned(),
            )
            .await
    }
}
