//! DPoP (RFC 9449 §5): a refresh token issued with a proof is bound to that proof's key, and
//! refreshing it needs a proof by the same key. The key's RFC 7638 thumbprint; null for a
//! token that is not bound (every token from before this migration).

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000004_create_refresh_tokens::RefreshTokens;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Binding {
    DpopJkt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .add_column(string_null(Binding::DpopJkt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .drop_column(Binding::DpopJkt)
                    .to_owned(),
            )
            .await
    }
}
