//! Issue 17: the database becomes the authority for spent codes, and a retry inside the grace
//! window gets the first use's answer again.
//!
//! - `grants.code_redeemed_at`: when the grant's one code was spent (null: not yet, or given
//!   back after a failed exchange). Shared state only describes the code; a Redis restored from
//!   an old snapshot can no longer make a spent code look new.
//! - `grants.code_reissue_sealed` / `code_reissue_until` and `refresh_tokens.reissue_sealed` /
//!   `reissue_until`: the answer the first use of a code or refresh token gave, sealed under a
//!   key derived from that code or token (which the database never holds), kept only until the
//!   window ends. Indexed on the end, so the sweep that clears them is cheap.
//! - An index on `refresh_tokens.parent_id`, to find a token's successor.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000003_create_grants::Grants;
use crate::m20261122_000004_create_refresh_tokens::RefreshTokens;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Grace {
    CodeRedeemedAt,
    CodeReissueSealed,
    CodeReissueUntil,
    ReissueSealed,
    ReissueUntil,
}

const GRANTS_UNTIL: &str = "idx_grants_code_reissue_until";
const TOKENS_UNTIL: &str = "idx_refresh_tokens_reissue_until";
const TOKENS_PARENT: &str = "idx_refresh_tokens_parent_id";

fn grant_columns() -> Vec<ColumnDef> {
    vec![
        timestamp_with_time_zone_null(Grace::CodeRedeemedAt),
        blob_null(Grace::CodeReissueSealed),
        timestamp_with_time_zone_null(Grace::CodeReissueUntil),
    ]
}

fn token_columns() -> Vec<ColumnDef> {
    vec![
        blob_null(Grace::ReissueSealed),
        timestamp_with_time_zone_null(Grace::ReissueUntil),
    ]
}

fn indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name(GRANTS_UNTIL)
            .table(Grants::Table)
            .col(Grace::CodeReissueUntil)
            .to_owned(),
        Index::create()
            .name(TOKENS_UNTIL)
            .table(RefreshTokens::Table)
            .col(Grace::ReissueUntil)
            .to_owned(),
        Index::create()
            .name(TOKENS_PARENT)
            .table(RefreshTokens::Table)
            .col(RefreshTokens::ParentId)
            .to_owned(),
    ]
}

/// Adds columns one statement each: SQLite alters one column at a time.
async fn add_columns(
    manager: &SchemaManager<'_>,
    table: DynIden,
    columns: Vec<ColumnDef>,
) -> Result<(), DbErr> {
    for mut column in columns {
        manager
            .alter_table(
                Table::alter()
                    .table(table.clone())
                    .add_column(&mut column)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

async fn drop_columns(
    manager: &SchemaManager<'_>,
    table: DynIden,
    columns: impl IntoIterator<Item = Grace>,
) -> Result<(), DbErr> {
    for column in columns {
        manager
            .alter_table(
                Table::alter()
                    .table(table.clone())
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_columns(manager, Grants::Table.into_iden(), grant_columns()).await?;
        add_columns(manager, RefreshTokens::Table.into_iden(), token_columns()).await?;
        for index in indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Indexes first: SQLite refuses to drop an indexed column.
        manager
            .drop_index(
                Index::drop()
                    .name(GRANTS_UNTIL)
                    .table(Grants::Table)
                    .to_owned(),
            )
            .await?;
        for name in [TOKENS_UNTIL, TOKENS_PARENT] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(RefreshTokens::Table)
                        .to_owned(),
                )
                .await?;
        }
        drop_columns(
            manager,
            Grants::Table.into_iden(),
            [
                Grace::CodeRedeemedAt,
                Grace::CodeReissueSealed,
                Grace::CodeReissueUntil,
            ],
        )
        .await?;
        drop_columns(
            manager,
            RefreshTokens::Table.into_iden(),
            [Grace::ReissueSealed, Grace::ReissueUntil],
        )
        .await
    }
}
