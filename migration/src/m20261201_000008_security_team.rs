//! What the security team's API needs: signed checkpoints of the access log's hash chain, a
//! record of every admin call, and the indexes of the access-log filters that had none.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_partners::Partners;
use crate::m20261122_000006_create_access_log::AccessLog;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum LogCheckpoints {
    Table,
    /// The id of the last record the checkpoint covers.
    RecordId,
    /// That record's hash.
    Hash,
    Kid,
    /// A compact JWS over the record id and hash, by the signing key `kid`.
    Signature,
    SignedAt,
}

#[derive(DeriveIden)]
enum PartnerStatusChange {
    StatusChangedAt,
}

#[derive(DeriveIden)]
pub(crate) enum AdminAudit {
    Table,
    Id,
    At,
    RequestId,
    /// Null when the call carried no valid admin token.
    TokenId,
    TokenName,
    Method,
    Path,
    Status,
    ClientIp,
}

pub(crate) fn checkpoints() -> TableCreateStatement {
    Table::create()
        .table(LogCheckpoints::Table)
        .col(big_integer(LogCheckpoints::RecordId).primary_key())
        .col(string(LogCheckpoints::Hash))
        .col(string(LogCheckpoints::Kid))
        .col(text(LogCheckpoints::Signature))
        .col(timestamp_with_time_zone(LogCheckpoints::SignedAt))
        .to_owned()
}

fn admin_audit() -> TableCreateStatement {
    Table::create()
        .table(AdminAudit::Table)
        .col(big_pk_auto(AdminAudit::Id))
        .col(timestamp_with_time_zone(AdminAudit::At))
        .col(string(AdminAudit::RequestId))
        .col(string_null(AdminAudit::TokenId))
        .col(string_null(AdminAudit::TokenName))
        .col(string(AdminAudit::Method))
        .col(text(AdminAudit::Path))
        .col(integer(AdminAudit::Status))
        .col(string_null(AdminAudit::ClientIp))
        .to_owned()
}

/// The filters that would otherwise scan the whole log: a rare outcome (`denied`), and a time
/// range far from the newest records. Both end in `id` so the newest-first order is the index's.
fn access_log_indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_access_log_outcome_id")
            .table(AccessLog::Table)
            .col(AccessLog::Outcome)
            .col(AccessLog::Id)
            .to_owned(),
        Index::create()
            .name("idx_access_log_at")
            .table(AccessLog::Table)
            .col(AccessLog::At)
            .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Partners::Table)
                    .add_column(timestamp_with_time_zone_null(
                        PartnerStatusChange::StatusChangedAt,
                    ))
                    .to_owned(),
            )
            .await?;
        manager.create_table(checkpoints()).await?;
        manager.create_table(admin_audit()).await?;
        for index in access_log_indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["idx_access_log_outcome_id", "idx_access_log_at"] {
            manager
                .drop_index(Index::drop().name(name).table(AccessLog::Table).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(AdminAudit::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(LogCheckpoints::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Partners::Table)
                    .drop_column(PartnerStatusChange::StatusChangedAt)
                    .to_owned(),
            )
            .await
    }
}
