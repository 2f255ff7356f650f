use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000003_create_grants::Grants;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum RefreshTokens {
    Table,
    Id,
    GrantId,
    TokenHash,
    ParentId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    RevokedAt,
}

pub(crate) fn create_table() -> TableCreateStatement {
    Table::create()
        .table(RefreshTokens::Table)
        .col(string(RefreshTokens::Id).primary_key())
        .col(string(RefreshTokens::GrantId))
        .col(string_uniq(RefreshTokens::TokenHash))
        .col(string_null(RefreshTokens::ParentId))
        .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
        .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
        .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
        .col(timestamp_with_time_zone_null(RefreshTokens::RevokedAt))
        .foreign_key(
            ForeignKey::create()
                .name("fk_refresh_tokens_grant_id")
                .from(RefreshTokens::Table, RefreshTokens::GrantId)
                .to(Grants::Table, Grants::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

pub(crate) fn create_indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_refresh_tokens_grant_id")
            .table(RefreshTokens::Table)
            .col(RefreshTokens::GrantId)
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
            .drop_table(Table::drop().table(RefreshTokens::Table).to_owned())
            .await
    }
}
