//! One hash chain per writer (issue 12): every record carries `chain` (the writer's id) and
//! `seq` (1, 2, 3… within it), unique together, so a journal can be imported twice and keep
//! one copy. Checkpoints sign a chain's head, so they are keyed by `(chain, seq)`.
//!
//! The records written before this migration form the chain `legacy`, with `seq = id`: their
//! hashes (over the id) and their checkpoints (over the record id) stay valid as they are.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000006_create_access_log::AccessLog;
use crate::m20261201_000008_security_team::LogCheckpoints;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The chain of every record written before chains existed.
pub const LEGACY_CHAIN: &str = "legacy";

#[derive(DeriveIden)]
enum Chains {
    Chain,
    Seq,
}

#[derive(DeriveIden)]
enum ChainCheckpoints {
    Table,
    Chain,
    Seq,
    Hash,
    Kid,
    Signature,
    SignedAt,
}

fn chain_checkpoints() -> TableCreateStatement {
    Table::create()
        .table(ChainCheckpoints::Table)
        .col(string(ChainCheckpoints::Chain))
        .col(big_integer(ChainCheckpoints::Seq))
        .col(string(ChainCheckpoints::Hash))
        .col(string(ChainCheckpoints::Kid))
        .col(text(ChainCheckpoints::Signature))
        .col(timestamp_with_time_zone(ChainCheckpoints::SignedAt))
        .primary_key(
            Index::create()
                .col(ChainCheckpoints::Chain)
                .col(ChainCheckpoints::Seq),
        )
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(AccessLog::Table)
                    .add_column(string(Chains::Chain).default(LEGACY_CHAIN))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AccessLog::Table)
                    .add_column(big_integer(Chains::Seq).default(0))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE access_log SET seq = id")
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_access_log_chain_seq")
                    .table(AccessLog::Table)
                    .col(Chains::Chain)
                    .col(Chains::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager.create_table(chain_checkpoints()).await?;
        db.execute_unprepared(&format!(
            "INSERT INTO chain_checkpoints (chain, seq, hash, kid, signature, signed_at) \
             SELECT '{LEGACY_CHAIN}', record_id, hash, kid, signature, signed_at FROM log_checkpoints"
        ))
        .await?;
        manager
            .drop_table(Table::drop().table(LogCheckpoints::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(crate::m20261201_000008_security_team::checkpoints())
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "INSERT INTO log_checkpoints (record_id, hash, kid, signature, signed_at) \
             SELECT seq, hash, kid, signature, signed_at FROM chain_checkpoints \
             WHERE chain = '{LEGACY_CHAIN}'"
        ))
        .await?;
        manager
            .drop_table(Table::drop().table(ChainCheckpoints::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_access_log_chain_seq")
                    .table(AccessLog::Table)
                    .to_owned(),
            )
            .await?;
        for column in [Chains::Seq, Chains::Chain] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AccessLog::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
