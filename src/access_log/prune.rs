//! Retention: removes the oldest records while keeping what is left verifiable, chain by
//! chain. Records go only up to a signed checkpoint, one checkpoint's span per statement,
//! oldest first: after every step the chain's first remaining record hangs from a checkpoint
//! that stays, so even a prune interrupted half-way leaves a log that verifies.
//!
//! The admin-call records (`admin_audit`), the record of who read the log, have a retention of
//! their own (`audit_retention_days`, by default the log's): they are not chained, so they go
//! in one statement.
//!
//! The console's running totals are history, not records: they name no customer's data and
//! may outlive the records they count. Each prune also bounds them: hourly, daily and
//! per-field totals for [`ROLLUP_HISTORY_DAYS`], customer–partner pairs for [`PAIRS_DAYS`] after their
//! last read (the console asks "how many partners read this customer in the last 30 days";
//! an older pair answers nothing and would grow with every customer ever read).

use crate::store::{RollupsPruned, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Days of hourly, daily and per-field totals kept: a year's comparison and a little more.
pub const ROLLUP_HISTORY_DAYS: i64 = 400;

/// Days a customer–partner pair is kept after its last read.
pub const PAIRS_DAYS: i64 = 30;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: u64,
    /// Per chain that lost records, the last removed `seq`: the chain now starts right after.
    pub chains: Vec<PrunedChain>,
    /// Running-total rows past their own bound (see the module doc).
    pub rollups: RollupsPruned,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrunedChain {
    pub chain: String,
    pub removed: u64,
    pub through_seq: i64,
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
    #[error(
        "checkpoint {1} of chain {0} does not match its record; run `keyhole log verify` first"
    )]
    Mismatch(String, i64),
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
    let mut report = PruneReport {
        removed: 0,
        chains: Vec::new(),
        rollups: store
            .prune_rollups(
                now - chrono::Duration::days(ROLLUP_HISTORY_DAYS),
                now - chrono::Duration::days(PAIRS_DAYS),
            )
            .await?,
    };
    for chain in store.access_log_chains().await? {
        if let Some(pruned) = prune_chain(store, &chain, before).await? {
            report.removed += pruned.removed;
            report.chains.push(pruned);
        }
    }
    Ok(report)
}

async fn prune_chain(
    store: &Store,
    chain: &str,
    before: DateTime<Utc>,
) -> Result<Option<PrunedChain>, PruneError> {
    // Everything below the chain's first record at or after the cutoff is older than it. The
    // newest record always stays: the chain continues from it, and a checkpoint beyond an
    // empty chain would read as a truncation.
    let Some((head, _)) = store.chain_head(chain).await? else {
        return Ok(None);
    };
    let keep_from = match store
        .access_log_seq_bounds(chain, Some(before), None)
        .await?
    {
        Some((first_young, _)) => first_young.min(head),
        None => head,
    };
    let oldest = store
        .access_log_first(chain)
        .await?
        .map_or(keep_from, |r| r.seq);
    let mut pruned = None::<PrunedChain>;
    for checkpoint in store
        .checkpoints_between(chain, oldest, keep_from - 1)
        .await?
    {
        let record = store
            .access_log_between(chain, checkpoint.seq - 1, checkpoint.seq, 1)
            .await?;
        if record.first().map(|r| &r.hash) != Some(&checkpoint.hash) {
            return Err(PruneError::Mismatch(chain.to_owned(), checkpoint.seq));
        }
        let removed = store
            .delete_access_log_through(chain, checkpoint.seq)
            .await?;
        let entry = pruned.get_or_insert_with(|| PrunedChain {
            chain: chain.to_owned(),
            removed: 0,
            through_seq: 0,
        });
        entry.removed += removed;
        entry.through_seq = checkpoint.seq;
    }
    if let Some(p) = &pruned {
        tracing::info!(
            chain,
            removed = p.removed,
            through_seq = p.through_seq,
            "access log pruned"
        );
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{AccessRecord, ChainedRecord, Outcome};
    use crate::store::testing;

    fn read(seq: i64, at: DateTime<Utc>) -> ChainedRecord {
        ChainedRecord {
            id: 0,
            chain: "c1".to_owned(),
            seq,
            record: AccessRecord {
                at,
                request_id: format!("r{seq}"),
                client_id: Some("p".to_owned()),
                grant_id: None,
                customer_id: Some(format!("cu{seq}")),
                resource: "claims".to_owned(),
                resource_id: None,
                record_ids: Vec::new(),
                fields: vec!["claims:status".to_owned()],
                outcome: Outcome::Ok,
                status: 200,
                client_ip: None,
            },
            prev_hash: String::new(),
            hash: format!("h{seq}"),
        }
    }

    #[tokio::test]
    async fn a_prune_also_bounds_the_running_totals() {
        let (store, _dir) = testing::store().await;
        let now = chrono::Utc::now();
        let days = |d| now - chrono::Duration::days(d);
        store
            .insert_access_records(vec![
                read(1, days(500)),
                read(2, days(40)),
                read(3, days(1)),
            ])
            .await
            .unwrap();
        let report = prune(&store, days(400), now, 365).await.unwrap();
        // Totals older than ROLLUP_HISTORY_DAYS, pairs unread for PAIRS_DAYS; the records
        // themselves stay (no checkpoint to prune up to).
        assert_eq!(
            report.rollups,
            RollupsPruned {
                hourly: 1,
                daily: 1,
                field_reads: 1,
                pairs: 2
            }
        );
        assert_eq!(report.removed, 0);
    }
}
