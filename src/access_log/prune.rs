//! Retention: removes the oldest records while keeping what is left verifiable. Records go
//! only up to a signed checkpoint, one checkpoint's span per statement, oldest first: after
//! every step the first remaining record hangs from a checkpoint that stays, so even a prune
//! interrupted half-way leaves a log that verifies.
//!
//! The admin-call records (`admin_audit`), the record of who read the log, have a retention of
//! their own (`audit_retention_days`, by default the log's): they are not chained, so they go
//! in one statement.

use crate::store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: u64,
    /// The last removed record; the log now starts right after it.
    pub through_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(
        "records younger than the retention period ({retention_days} days) must be kept: \
         --before may be at most {latest_allowed}"
    )]
    WithinRetention {
        retention_days: u32,
        latest_allowed: DateTime<Utc>,
    },
    #[error("checkpoint {0} does not match its record; run `keyhole log verify` first")]
    Mismatch(i64),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Refuses a `before` inside the retention period.
fn past_retention(
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<(), PruneError> {
    let latest_allowed = now - chrono::Duration::days(i64::from(retention_days));
    if before > latest_allowed {
        return Err(PruneError::WithinRetention {
            retention_days,
            latest_allowed,
        });
    }
    Ok(())
}

/// Removes the admin-call records older than `before`; returns how many.
pub async fn prune_audit(
    store: &Store,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<u64, PruneError> {
    past_retention(before, now, retention_days)?;
    let removed = store.delete_admin_audit_before(before).await?;
    tracing::info!(removed, before = %before, "admin audit pruned");
    Ok(removed)
}

pub async fn prune(
    store: &Store,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<PruneReport, PruneError> {
    past_retention(before, now, retention_days)?;
    // Everything below the first record at or after the cutoff is older than it. The newest
    // record always stays: the chain continues from it, and a checkpoint beyond an empty log
    // would read as a truncation.
    let Some((head, _)) = store.access_log_head().await? else {
        return Ok(PruneReport {
            removed: 0,
            through_id: None,
        });
    };
    let keep_from = match store.access_log_id_bounds(Some(before), None).await? {
        Some((first_young, _)) => first_young.min(head),
        None => head,
    };
    let oldest = store.access_log_first().await?.map_or(keep_from, |r| r.id);
    let mut report = PruneReport {
        removed: 0,
        through_id: None,
    };
    for checkpoint in store.checkpoints_between(oldest, keep_from - 1).await? {
        let record = store
            .access_log_between(checkpoint.record_id - 1, checkpoint.record_id, 1)
            .await?;
        if record.first().map(|r| &r.hash) != Some(&checkpoint.hash) {
            return Err(PruneError::Mismatch(checkpoint.record_id));
        }
        report.removed += store
            .delete_access_log_through(checkpoint.record_id)
            .await?;
        report.through_id = Some(checkpoint.record_id);
    }
    if let Some(through) = report.through_id {
        tracing::info!(
            removed = report.removed,
            through_id = through,
            "access log pruned"
        );
    }
    Ok(report)
}
