//! Walks each chain and reports its first broken link. The same walk serves the database (chain
//! by chain, page by page, checkpoints fetched with their page, so memory stays flat at any
//! size) and an offline export file (line by line, a walker per chain).
//!
//! A link breaks when a record is missing (`seq`s are consecutive), when `prev_hash` differs from
//! the previous record's hash (reordering), when a record's contents do not give its hash (an
//! edit), when a record differs from the signed checkpoint of its id (an edit with every later
//! hash recomputed), when a signed checkpoint names records that are gone (the newest records
//! deleted), or when the oldest records are gone without a signed checkpoint that anchors the
//! rest — or with one signed too recently for retention to have removed them. In the database,
//! a row also breaks when it does not decode or is not stored exactly as the writer wrote it.

use super::chain::{GENESIS_HASH, chain_hash};
use super::checkpoint::PublicKeys;
use super::record::ChainedRecord;
use crate::store::{CheckedRecord, Store, StoreError, StoredCheckpoint};
use chrono::{DateTime, Utc};
use serde::Serialize;

const PAGE: u64 = 1000;

/// Where a chain breaks: the chain, the place in it, and the database row when there is one
/// (a missing record has none).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokenLink {
    pub id: Option<i64>,
    pub chain: String,
    pub seq: i64,
    pub reason: String,
}

/// One chain's verification.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainReport {
    pub chain: String,
    pub ok: bool,
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
    /// The newest record (`seq`) covered by a valid signed checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_through: Option<i64>,
    /// Records after the last signed checkpoint: chained, not yet vouched for by a signature.
    pub unsigned_tail: u64,
}

/// Every chain's verification, and the sums: `ok` only if every chain is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    /// The first broken link of the first broken chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
    pub unsigned_tail: u64,
    pub chains: Vec<ChainReport>,
}

impl VerifyReport {
    pub fn of(chains: Vec<ChainReport>) -> Self {
        Self {
            ok: chains.iter().all(|c| c.ok),
            records: chains.iter().map(|c| c.records).sum(),
            first_broken: chains.iter().find_map(|c| c.first_broken.clone()),
            unsigned_tail: chains.iter().map(|c| c.unsigned_tail).sum(),
            chains,
        }
    }
}

/// Whether the first record must hang from the genesis hash or a signed checkpoint. The whole
/// log must; an export of a range may start anywhere, since the checkpoints after its first
/// record still cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Records before a signed anchor may only be gone if the anchor was signed before this
    /// instant (retention: only old records are pruned).
    Required {
        signed_before: Option<DateTime<Utc>>,
    },
    Optional,
}

/// The incremental check of one chain, fed its records in order and each checkpoint right
/// after its record (the anchoring checkpoint before the first record).
pub struct Walker<'a> {
    keys: &'a PublicKeys,
    chain: String,
    anchor_policy: Anchor,
    /// A checkpoint seen before any record: the candidate anchor.
    anchor: Option<(StoredCheckpoint, i64)>,
    prev: Option<(i64, String)>,
    /// The database row of the last record pushed, when it has one.
    last_row: Option<i64>,
    records: u64,
    signed_through: Option<i64>,
}

impl<'a> Walker<'a> {
    pub fn new(keys: &'a PublicKeys, anchor: Anchor, chain: &str) -> Self {
        Self {
            keys,
            chain: chain.to_owned(),
            anchor_policy: anchor,
            anchor: None,
            prev: None,
            last_row: None,
            records: 0,
            signed_through: None,
        }
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The `seq` of the last record pushed.
    pub fn last_seq(&self) -> Option<i64> {
        self.prev.as_ref().map(|(id, _)| *id)
    }

    /// How many records were pushed.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The `seq` and hash of the last record pushed.
    pub fn head(&self) -> Option<(i64, &str)> {
        self.prev.as_ref().map(|(id, hash)| (*id, hash.as_str()))
    }

    /// Records that a valid signature covers the last record pushed (an export's signed end),
    /// and so, through the chain, every record before it.
    pub fn signed_to_the_end(&mut self) {
        self.signed_through = self.last_seq();
    }

    fn broken(&self, id: Option<i64>, seq: i64, reason: impl Into<String>) -> BrokenLink {
        BrokenLink {
            id,
            chain: self.chain.clone(),
            seq,
            reason: reason.into(),
        }
    }

    pub fn checkpoint(&mut self, c: &StoredCheckpoint) -> Result<(), BrokenLink> {
        if c.chain != self.chain {
            return Err(self.broken(None, c.seq, "a checkpoint of another chain"));
        }
        let iat = self.keys.verify(c).map_err(|reason| {
            self.broken(
                None,
                c.seq,
                format!("the signed checkpoint of this record is invalid: {reason}"),
            )
        })?;
        match &self.prev {
            None => self.anchor = Some((c.clone(), iat)),
            Some((seq, hash)) if *seq == c.seq => {
                if *hash != c.hash {
                    return Err(self.broken(
                        self.last_row,
                        *seq,
                        "the record differs from its signed checkpoint",
                    ));
                }
                self.signed_through = Some(*seq);
            }
            // Of a record that is missing: the next record or the end of the walk reports it.
            Some(_) => {}
        }
        Ok(())
    }

    pub fn push(&mut self, row: &ChainedRecord) -> Result<(), BrokenLink> {
        let id = (row.id > 0).then_some(row.id);
        let chain = self.chain.clone();
        let broken = |reason: &str| BrokenLink {
            id,
            chain: chain.clone(),
            seq: row.seq,
            reason: reason.to_owned(),
        };
        if row.chain != self.chain {
            return Err(broken("a record of another chain"));
        }
        match &self.prev {
            Some((prev_seq, prev_hash)) => {
                if prev_seq.checked_add(1) != Some(row.seq) {
                    return Err(broken("a record is missing before this one"));
                }
                if &row.prev_hash != prev_hash {
                    return Err(broken("prev_hash does not match the previous record"));
                }
            }
            None if row.seq == 1 => {
                if row.prev_hash != GENESIS_HASH {
                    return Err(broken("the first record does not start the chain"));
                }
            }
            None => {
                let anchor = self
                    .anchor
                    .take()
                    .filter(|(c, _)| row.seq.checked_sub(1) == Some(c.seq));
                match (anchor, self.anchor_policy) {
                    (Some((c, _)), _) if c.hash != row.prev_hash => {
                        return Err(broken(
                            "prev_hash does not match the signed checkpoint before it",
                        ));
                    }
                    (
                        Some((_, iat)),
                        Anchor::Required {
                            signed_before: Some(limit),
                        },
                    ) if iat > limit.timestamp() => {
                        return Err(broken(
                            "records before this one were removed although still inside the retention period",
                        ));
                    }
                    (Some(_), _) | (None, Anchor::Optional) => {}
                    (None, Anchor::Required { .. }) => {
                        return Err(broken(
                            "records before this one were removed without a signed checkpoint",
                        ));
                    }
                }
            }
        }
        if chain_hash(&row.prev_hash, &row.chain, row.seq, &row.record) != row.hash {
            return Err(broken("the record's contents do not match its hash"));
        }
        self.records += 1;
        self.prev = Some((row.seq, row.hash.clone()));
        self.last_row = id;
        Ok(())
    }

    pub fn report(&self, broken: Option<BrokenLink>) -> ChainReport {
        ChainReport {
            chain: self.chain.clone(),
            ok: broken.is_none(),
            records: self.records,
            first_broken: broken,
            signed_through: self.signed_through,
            // `seq`s are consecutive once the walk passed them, so the tail is a difference.
            unsigned_tail: match (self.signed_through, self.last_seq()) {
                (Some(signed), Some(last)) => u64::try_from(last - signed).unwrap_or(0),
                _ => self.records,
            },
        }
    }

    /// Ends the walk: a checkpoint beyond the last record means records were deleted.
    pub fn finish(self, latest_checkpoint: Option<i64>) -> ChainReport {
        let last = self.last_seq().unwrap_or(0);
        let broken = latest_checkpoint
            .filter(|signed| *signed > last)
            .map(|signed| {
                self.broken(
                    None,
                    last.saturating_add(1),
                    format!("records up to {signed} were signed in a checkpoint but are missing"),
                )
            });
        self.report(broken)
    }
}

/// Verifies every chain in the database against `keys` (the checkpoint key: never a key the
/// database holds). `signed_before`: the newest signing time an anchoring checkpoint may have
/// (now minus the retention period), when a chain's oldest records are gone. `own`: the
/// verifying instance's chain and the newest `seq` it knows the database holds.
pub async fn verify_chain(
    store: &Store,
    keys: &PublicKeys,
    signed_before: Option<DateTime<Utc>>,
    own: Option<(&str, i64)>,
) -> Result<VerifyReport, StoreError> {
    // A chain whose every record is gone still has its checkpoints, which report it. One
    // whose checkpoints are gone too leaves nothing in the database; only the instance that
    // writes it knows it exists, so its own chain is always walked.
    let mut chains = store.access_log_chains().await?;
    chains.extend(store.checkpoint_chains().await?);
    chains.extend(own.map(|(chain, _)| chain.to_owned()));
    chains.sort();
    chains.dedup();
    let mut reports = Vec::with_capacity(chains.len());
    for chain in chains {
        let known = own.filter(|(c, _)| *c == chain).map(|(_, seq)| seq);
        reports.push(verify_one(store, keys, signed_before, &chain, known).await?);
    }
    Ok(VerifyReport::of(reports))
}

async fn verify_one(
    store: &Store,
    keys: &PublicKeys,
    signed_before: Option<DateTime<Utc>>,
    chain: &str,
    known: Option<i64>,
) -> Result<ChainReport, StoreError> {
    let latest = store.latest_checkpoint(chain).await?.map(|c| c.seq);
    let mut walker = Walker::new(keys, Anchor::Required { signed_before }, chain);
    let mut after = 0;
    loop {
        let page = store
            .access_log_checked_between(chain, after, i64::MAX, PAGE)
            .await?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            let last = walker.last_seq().unwrap_or(0);
            // Retention never removes a chain's newest record, so the database holds at least
            // as far as this instance imported; a signed checkpoint beyond says it first.
            if let Some(known) = known.filter(|k| *k > last)
                && latest.is_none_or(|signed| signed <= last)
            {
                let link = walker.broken(
                    None,
                    last.saturating_add(1),
                    format!(
                        "records up to {known} were written to the database by this instance but are missing"
                    ),
                );
                return Ok(walker.report(Some(link)));
            }
            return Ok(walker.finish(latest));
        };
        let (first, last) = (first.seq, last.seq);
        // On the first page, the checkpoint just before it may anchor a pruned chain.
        let from = if after == 0 {
            first.saturating_sub(1)
        } else {
            first
        };
        let mut checkpoints = store
            .checkpoints_between(chain, from, last)
            .await?
            .into_iter()
            .peekable();
        after = last;
        let mut step =
            |walker: &mut Walker, row: Option<&CheckedRecord>| -> Result<(), BrokenLink> {
                if let Some(row) = row {
                    let record = row.record.as_ref().map_err(|reason| BrokenLink {
                        id: Some(row.id),
                        chain: chain.to_owned(),
                        seq: row.seq,
                        reason: reason.clone(),
                    })?;
                    walker.push(record)?;
                }
                let through = walker.last_seq().unwrap_or(from);
                while let Some(c) = checkpoints.next_if(|c| c.seq <= through) {
                    walker.checkpoint(&c)?;
                }
                Ok(())
            };
        let outcome = std::iter::once(None)
            .chain(page.iter().map(Some))
            .try_for_each(|row| step(&mut walker, row));
        if let Err(broken) = outcome {
            return Ok(walker.report(Some(broken)));
        }
    }
}
