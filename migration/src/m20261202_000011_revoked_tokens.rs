//! Revoked access tokens, by `jti`, kept in the database as well as in shared state: Redis is a
//! cache that may lose what it held (a restart from an older snapshot, a failover), and a lost
//! marker must not bring a revoked token back. A row lives until its token would have expired.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000003_create_grants::Grants;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum RevokedTokens {
    Table,
    Jti,
    GrantId,
    RevokedAt,
    /// When the token expires (with the verifier's leeway): after that the row can go.
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RevokedTokens::Table)
                    .col(string(RevokedTokens::Jti).primary_key())
                    .col(string(RevokedTokens::GrantId))
                    .col(timestamp_with_time_zone(RevokedTokens::RevokedAt))
                    .col(timestamp_with_time_zone(RevokedTokens::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_revoked_tokens_grant_id")
                            .from(RevokedTokens::Table, RevokedTokens::GrantId)
                            .to(Grants::Table, Grants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_revoked_tokens_grant_id")
                    .table(RevokedTokens::Table)
                    .col(RevokedTokens::GrantId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_revoked_tokens_expires_at")
                    .table(RevokedTokens::Table)
                    .col(RevokedTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RevokedTokens::Table).to_owned())
            .await
    }
}
