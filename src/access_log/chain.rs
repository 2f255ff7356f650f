//! The hash chain: each record's hash covers the previous hash and a canonical encoding of the
//! record, including its id, so any edit, deletion or reordering breaks a link.

use super::record::{AccessRecord, ChainedRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Field order is fixed by this struct; serde_json writes it deterministically.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    id: i64,
    at: String,
    request_id: &'a str,
    client_id: Option<&'a str>,
    grant_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    resource: &'a str,
    resource_id: Option<&'a str>,
    record_ids: &'a [String],
    fields: &'a [String],
    outcome: &'a str,
    status: u16,
    client_ip: Option<&'a str>,
}

pub fn chain_hash(prev_hash: &str, id: i64, record: &AccessRecord) -> String {
    let canonical = Canonical {
        v: 1,
        id,
        at: record
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request_id: &record.request_id,
        client_id: record.client_id.as_deref(),
        grant_id: record.grant_id.as_deref(),
        customer_id: record.customer_id.as_deref(),
        resource: &record.resource,
        resource_id: record.resource_id.as_deref(),
        record_ids: &record.record_ids,
        fields: &record.fields,
        outcome: record.outcome.as_str(),
        status: record.status,
        client_ip: record.client_ip.as_deref(),
    };
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    // Serialising a struct of strings and numbers cannot fail.
    hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
    hex(&hasher.finalize())
}

/// Chains `records` onto the head `(id, hash)`: consecutive ids, each hash over the last.
pub fn chain_records(
    records: &[AccessRecord],
    head_id: i64,
    head_hash: String,
) -> Vec<ChainedRecord> {
    let mut id = head_id;
    let mut prev = head_hash;
    let mut chained = Vec::with_capacity(records.len());
    for record in records {
        id += 1;
        let hash = chain_hash(&prev, id, record);
        chained.push(ChainedRecord {
            id,
            record: record.clone(),
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    chained
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::Outcome;
    use chrono::Utc;

    fn record() -> AccessRecord {
        AccessRecord {
            at: Utc::now(),
            request_id: "r1".into(),
            client_id: Some("fone-shop".into()),
            grant_id: None,
            customer_id: Some("CU-1001".into()),
            resource: "claims".into(),
            resource_id: Some("C-1".into()),
            record_ids: vec!["C-1".into()],
            fields: vec!["claims:status".into()],
            outcome: Outcome::Ok,
            status: 200,
            client_ip: None,
        }
        .normalised()
    }

    #[test]
    fn the_hash_covers_every_field_the_id_and_the_previous_hash() {
        let r = record();
        let base = chain_hash(GENESIS_HASH, 1, &r);
        assert_eq!(base.len(), 64);
        assert_eq!(base, chain_hash(GENESIS_HASH, 1, &r));
        assert_ne!(base, chain_hash(GENESIS_HASH, 2, &r));
        assert_ne!(base, chain_hash(&base, 1, &r));
        let mut edited = r.clone();
        edited.fields.push("claims:claim_number".into());
        assert_ne!(base, chain_hash(GENESIS_HASH, 1, &edited));
        let mut edited = r.clone();
        edited.status = 404;
        assert_ne!(base, chain_hash(GENESIS_HASH, 1, &edited));
        let mut edited = r;
        edited.client_ip = Some("10.0.0.1".into());
        assert_ne!(base, chain_hash(GENESIS_HASH, 1, &edited));
    }
}
