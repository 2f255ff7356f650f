//! Walks the chain from the first record, page by page, and reports the first broken link.

use super::chain::{GENESIS_HASH, chain_hash};
use crate::store::{Store, StoreError};
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
}

pub async fn verify_chain(store: &Store) -> Result<VerifyReport, StoreError> {
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut prev_id = 0;
    let mut records = 0;
    loop {
        let page = store.access_log_after(prev_id, PAGE).await?;
        if page.is_empty() {
            return Ok(VerifyReport {
                ok: true,
                records,
                first_broken: None,
            });
        }
        for row in page {
            let broken = |reason: &str| VerifyReport {
                ok: false,
                records,
                first_broken: Some(BrokenLink {
                    id: row.id,
                    reason: reason.to_owned(),
                }),
            };
            if row.id != prev_id + 1 {
                return Ok(broken("a record is missing before this one"));
            }
            if row.prev_hash != prev_hash {
                return Ok(broken("prev_hash does not match the previous record"));
            }
            if chain_hash(&prev_hash, row.id, &row.record) != row.hash {
                return Ok(broken("the record's contents do not match its hash"));
            }
            records += 1;
            prev_id = row.id;
            prev_hash = row.hash;
        }
    }
}
