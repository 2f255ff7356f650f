//! Walks the chain and reports the first broken link. The same walk serves the database (page
//! by page, checkpoints fetched with their page, so memory stays flat at any size) and an
//! offline export file (line by line).
//!
//! A link breaks when a record is missing (ids are consecutive), when `prev_hash` differs from
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

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokenLink {
    pub id: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
    /// The newest record covered by a valid signed checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_through: Option<i64>,
    /// Records after the last signed checkpoint: chained, not yet vouched for by a signature.
    pub unsigned_tail: u64,
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

/// The incremental check, fed records oldest first and each checkpoint right after its record
/// (the anchoring checkpoint before the first record).
pub struct Walker<'a> {
    keys: &'a PublicKeys,
    anchor_policy: Anchor,
    /// A checkpoint seen before any record: the candidate anchor.
    anchor: Option<(StoredCheckpoint, i64)>,
    prev: Option<(i64, String)>,
    records: u64,
    signed_through: Option<i64>,
}

impl<'a> Walker<'a> {
    pub fn new(keys: &'a PublicKeys, anchor: Anchor) -> Self {
        Self {
            keys,
            anchor_policy: anchor,
            anchor: None,
            prev: None,
            records: 0,
            signed_through: None,
        }
    }

    /// The id of the last record pushed.
    pub fn last_id(&self) -> Option<i64> {
        self.prev.as_ref().map(|(id, _)| *id)
    }

    /// How many records were pushed.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The id and hash of the last record pushed.
    pub fn head(&self) -> Option<(i64, &str)> {
        self.prev.as_ref().map(|(id, hash)| (*id, hash.as_str()))
    }

    /// Records that a valid signature covers the last record pushed (an export's signed end),
    /// and so, through the chain, every record before it.
    pub fn signed_to_the_end(&mut self) {
        self.signed_through = self.last_id();
    }

    pub fn checkpoint(&mut self, c: &StoredCheckpoint) -> Result<(), BrokenLink> {
        let iat = self.keys.verify(c).map_err(|reason| BrokenLink {
            id: c.record_id,
            reason: format!("the signed checkpoint of this record is invalid: {reason}"),
        })?;
        match &self.prev {
            None => self.anchor = Some((c.clone(), iat)),
            Some((id, hash)) if *id == c.record_id => {
                if *hash != c.hash {
                    return Err(BrokenLink {
                        id: *id,
                        reason: "the record differs from its signed checkpoint".into(),
                    });
                }
                self.signed_through = Some(*id);
            }
            // Of a record that is missing: the next record or the end of the walk reports it.
            Some(_) => {}
        }
        Ok(())
    }

    pub fn push(&mut self, row: &ChainedRecord) -> Result<(), BrokenLink> {
        let broken = |reason: &str| BrokenLink {
            id: row.id,
            reason: reason.to_owned(),
        };
        match &self.prev {
            Some((prev_id, prev_hash)) => {
                if prev_id.checked_add(1) != Some(row.id) {
                    return Err(broken("a record is missing before this one"));
                }
                if &row.prev_hash != prev_hash {
                    return Err(broken("prev_hash does not match the previous record"));
                }
            }
            None if row.id == 1 => {
                if row.prev_hash != GENESIS_HASH {
                    return Err(broken("the first record does not start the chain"));
                }
            }
            None => {
                let anchor = self
                    .anchor
                    .take()
                    .filter(|(c, _)| row.id.checked_sub(1) == Some(c.record_id));
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
        if chain_hash(&row.prev_hash, row.id, &row.record) != row.hash {
            return Err(broken("the record's contents do not match its hash"));
        }
        self.records += 1;
        self.prev = Some((row.id, row.hash.clone()));
        Ok(())
    }

    pub fn report(&self, broken: Option<BrokenLink>) -> VerifyReport {
        VerifyReport {
            ok: broken.is_none(),
            records: self.records,
            first_broken: broken,
            signed_through: self.signed_through,
            // Ids are consecutive once the walk passed them, so the tail is a difference.
            unsigned_tail: match (self.signed_through, self.last_id()) {
                (Some(signed), Some(last)) => u64::try_from(last - signed).unwrap_or(0),
                _ => self.records,
            },
        }
    }

    /// Ends the walk: a checkpoint beyond the last record means records were deleted.
    pub fn finish(self, latest_checkpoint: Option<i64>) -> VerifyReport {
        let last = self.last_id().unwrap_or(0);
        let broken = latest_checkpoint
            .filter(|signed| *signed > last)
            .map(|signed| BrokenLink {
                id: last.saturating_add(1),
                reason: format!(
                    "records up to {signed} were signed in a checkpoint but are missing"
                ),
            });
        self.report(broken)
    }
}

/// Verifies the whole log in the database against `keys` (the checkpoint key: never a key the
/// database holds). `signed_before`: the newest signing time an anchoring checkpoint may have
/// (now minus the retention period), when the oldest records are gone.
pub async fn verify_chain(
    store: &Store,
    keys: &PublicKeys,
    signed_before: Option<DateTime<Utc>>,
) -> Result<VerifyReport, StoreError> {
    let latest = store.latest_checkpoint().await?.map(|c| c.record_id);
    let mut walker = Walker::new(keys, Anchor::Required { signed_before });
    let mut after = 0;
    loop {
        let page = store
            .access_log_checked_between(after, i64::MAX, PAGE)
            .await?;
        let (Some((first, _)), Some((last, _))) = (page.first(), page.last()) else {
            return Ok(walker.finish(latest));
        };
        // On the first page, the checkpoint just before it may anchor a pruned log.
        let from = if after == 0 {
            first.saturating_sub(1)
        } else {
            *first
        };
        let mut checkpoints = store
            .checkpoints_between(from, *last)
            .await?
            .into_iter()
            .peekable();
        after = *last;
        let mut step =
            |walker: &mut Walker, row: Option<&CheckedRecord>| -> Result<(), BrokenLink> {
                if let Some((id, row)) = row {
                    let row = row.as_ref().map_err(|reason| BrokenLink {
                        id: *id,
                        reason: reason.clone(),
                    })?;
                    walker.push(row)?;
                }
                let through = walker.last_id().unwrap_or(from);
                while let Some(c) = checkpoints.next_if(|c| c.record_id <= through) {
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
