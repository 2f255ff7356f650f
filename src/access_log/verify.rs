//! Walks the chain and reports the first broken link. The same walk serves the database (page
//! by page, so memory stays flat at any size) and an offline export file.
//!
//! A link breaks when a record is missing (ids are consecutive), when `prev_hash` differs from
//! the previous record's hash (reordering), when a record's contents do not give its hash (an
//! edit), when a record differs from the signed checkpoint of its id (an edit with every later
//! hash recomputed), or when a signed checkpoint names records that are gone (the newest
//! records deleted).

use super::chain::{GENESIS_HASH, chain_hash};
use super::checkpoint::PublicKeys;
use super::record::ChainedRecord;
use crate::store::{Store, StoreError, StoredCheckpoint};
use serde::Serialize;
use std::collections::BTreeMap;

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
}

/// Whether the first record must hang from the genesis hash or a signed checkpoint. The whole
/// log must; an export of a range may start anywhere, since the checkpoints after its first
/// record still cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Required,
    Optional,
}

/// The incremental check, fed one record at a time, oldest first.
pub struct Walker<'a> {
    keys: &'a PublicKeys,
    checkpoints: BTreeMap<i64, StoredCheckpoint>,
    anchor: Anchor,
    prev: Option<(i64, String)>,
    records: u64,
    signed_through: Option<i64>,
}

impl<'a> Walker<'a> {
    pub fn new(keys: &'a PublicKeys, checkpoints: Vec<StoredCheckpoint>, anchor: Anchor) -> Self {
        Self {
            keys,
            checkpoints: checkpoints.into_iter().map(|c| (c.record_id, c)).collect(),
            anchor,
            prev: None,
            records: 0,
            signed_through: None,
        }
    }

    fn signed(&self, id: i64) -> Result<Option<&StoredCheckpoint>, String> {
        match self.checkpoints.get(&id) {
            Some(c) => self.keys.verify(c).map(|()| Some(c)),
            None => Ok(None),
        }
    }

    pub fn push(&mut self, row: &ChainedRecord) -> Result<(), BrokenLink> {
        let broken = |reason: String| BrokenLink { id: row.id, reason };
        match &self.prev {
            Some((prev_id, prev_hash)) => {
                if row.id != prev_id + 1 {
                    return Err(broken("a record is missing before this one".into()));
                }
                if &row.prev_hash != prev_hash {
                    return Err(broken(
                        "prev_hash does not match the previous record".into(),
                    ));
                }
            }
            None if row.id == 1 => {
                if row.prev_hash != GENESIS_HASH {
                    return Err(broken("the first record does not start the chain".into()));
                }
            }
            None => match self.signed(row.id - 1).map_err(&broken)? {
                Some(anchor) if anchor.hash == row.prev_hash => {}
                Some(_) => {
                    return Err(broken(
                        "prev_hash does not match the signed checkpoint before it".into(),
                    ));
                }
                None if self.anchor == Anchor::Required => {
                    return Err(broken(
                        "records before this one were removed without a signed checkpoint".into(),
                    ));
                }
                None => {}
            },
        }
        if chain_hash(&row.prev_hash, row.id, &row.record) != row.hash {
            return Err(broken("the record's contents do not match its hash".into()));
        }
        if let Some(checkpoint) = self.signed(row.id).map_err(&broken)? {
            if checkpoint.hash != row.hash {
                return Err(broken(
                    "the record differs from its signed checkpoint".into(),
                ));
            }
            self.signed_through = Some(row.id);
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
        }
    }

    /// Ends the walk: a checkpoint beyond the last record means records were deleted.
    pub fn finish(self, latest_checkpoint: Option<&StoredCheckpoint>) -> VerifyReport {
        let last = self.prev.as_ref().map_or(0, |(id, _)| *id);
        let broken = latest_checkpoint
            .filter(|c| c.record_id > last)
            .map(|c| BrokenLink {
                id: last + 1,
                reason: format!(
                    "records up to {} were signed in a checkpoint but are missing",
                    c.record_id
                ),
            });
        self.report(broken)
    }
}

/// Verifies the whole log in the database, checkpoints against every key ever used.
pub async fn verify_chain(store: &Store) -> Result<VerifyReport, StoreError> {
    let keys =
        PublicKeys::from_stored(&store.all_signing_keys().await?).map_err(StoreError::corrupt)?;
    let keys = &keys;
    let latest = store.latest_checkpoint().await?;
    let checkpoints = store.checkpoints_between(0, i64::MAX).await?;
    let mut walker = Walker::new(keys, checkpoints, Anchor::Required);
    let mut after = 0;
    loop {
        let page = store.access_log_after(after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(walker.finish(latest.as_ref()));
        };
        after = last.id;
        for row in &page {
            if let Err(broken) = walker.push(row) {
                return Ok(walker.report(Some(broken)));
            }
        }
    }
}
