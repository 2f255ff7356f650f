//! The hash chains: each writer keeps its own, and each record's hash covers the previous hash
//! and a canonical encoding of the record, including its chain and its place in it, so any
//! edit, deletion or reordering breaks a link.

use super::record::{AccessRecord, ChainedRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain of the records written before there were chains (one per writer): their hashes
/// cover `id` (equal to their `seq`) and no chain, and stay as they were written.
pub const LEGACY_CHAIN: &str = migration::LEGACY_CHAIN;

/// Field order is fixed by this struct; serde_json writes it deterministically.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<&'a str>,
    /// `id` in version 1, where it was the record's place in the one chain; `seq` since.
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
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

pub fn chain_hash(prev_hash: &str, chain: &str, seq: i64, record: &AccessRecord) -> String {
    let legacy = chain == LEGACY_CHAIN;
    let canonical = Canonical {
        v: if legacy { 1 } else { 2 },
        chain: (!legacy).then_some(chain),
        id: legacy.then_some(seq),
        seq: (!legacy).then_some(seq),
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

/// Chains `records` onto the head `(seq, hash)` of `chain`: consecutive sequence numbers,
/// each hash over the last.
pub fn chain_records(
    records: impl IntoIterator<Item = AccessRecord>,
    chain: &str,
    head_seq: i64,
    head_hash: String,
) -> Vec<ChainedRecord> {
    let mut seq = head_seq;
    let mut prev = head_hash;
    records
        .into_iter()
        .map(|record| {
            seq += 1;
            let hash = chain_hash(&prev, chain, seq, &record);
            ChainedRecord {
                id: 0,
                chain: chain.to_owned(),
                seq,
                record,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
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

    const CHAIN: &str = "0193a4b2-7c1d-7000-8000-000000000001";

    #[test]
    fn the_hash_covers_every_field_the_chain_the_place_and_the_previous_hash() {
        let r = record();
        let base = chain_hash(GENESIS_HASH, CHAIN, 1, &r);
        assert_eq!(base.len(), 64);
        assert_eq!(base, chain_hash(GENESIS_HASH, CHAIN, 1, &r));
        assert_ne!(base, chain_hash(GENESIS_HASH, CHAIN, 2, &r));
        assert_ne!(base, chain_hash(GENESIS_HASH, "another", 1, &r));
        assert_ne!(base, chain_hash(&base, CHAIN, 1, &r));
        let mut edited = r.clone();
        edited.fields.push("claims:claim_number".into());
        assert_ne!(base, chain_hash(GENESIS_HASH, CHAIN, 1, &edited));
        let mut edited = r.clone();
        edited.status = 404;
        assert_ne!(base, chain_hash(GENESIS_HASH, CHAIN, 1, &edited));
        let mut edited = r;
        edited.client_ip = Some("10.0.0.1".into());
        assert_ne!(base, chain_hash(GENESIS_HASH, CHAIN, 1, &edited));
    }

    /// Records written before chains keep the hash they were written with: version 1, over
    /// the id (now their `seq`) and no chain.
    #[test]
    fn legacy_records_keep_their_version_one_hash() {
        let r = record();
        let hash = chain_hash(GENESIS_HASH, LEGACY_CHAIN, 7, &r);
        let mut hasher = Sha256::new();
        hasher.update(GENESIS_HASH.as_bytes());
        hasher.update(b"\n");
        let body = serde_json::to_string(&Canonical {
            v: 1,
            chain: None,
            id: Some(7),
            seq: None,
            at: r.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: &r.request_id,
            client_id: r.client_id.as_deref(),
            grant_id: r.grant_id.as_deref(),
            customer_id: r.customer_id.as_deref(),
            resource: &r.resource,
            resource_id: r.resource_id.as_deref(),
            record_ids: &r.record_ids,
            fields: &r.fields,
            outcome: r.outcome.as_str(),
            status: r.status,
            client_ip: r.client_ip.as_deref(),
        })
        .unwrap();
        // Exactly the layout version 1 was written with: `v`, then `id`, then the record.
        assert!(body.starts_with(r#"{"v":1,"id":7,"at":""#), "{body}");
        hasher.update(body.as_bytes());
        assert_eq!(hash, hex(&hasher.finalize()));
    }
}
