//! A self-contained export of a range of the log, checkable offline: JSON Lines holding a
//! header, the public keys, the signed checkpoints of the range, then the records oldest
//! first. `keyhole log verify FILE` needs nothing else — no database, no network.

use super::checkpoint::PublicKeys;
use super::record::ChainedRecord;
use super::verify::{Anchor, BrokenLink, VerifyReport, Walker};
use crate::store::{Store, StoredCheckpoint};
use crate::tokens::public_jwk;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

pub const FORMAT: &str = "keyhole-access-log-export";
const PAGE: u64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The id range the file holds: contiguous, so the chain can be walked through it.
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
}

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header(Header),
    Key(serde_json::Value),
    Checkpoint(StoredCheckpoint),
    Record(Box<ChainedRecord>),
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub records: u64,
    pub checkpoints: usize,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
}

fn write_line(out: &mut impl Write, line: &Line) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes the records whose time lies in `[from, to)` — with any records committed between
/// them, since ids, not times, make the chain — and everything needed to check them.
pub async fn export(
    store: &Store,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    out: &mut impl Write,
) -> anyhow::Result<ExportSummary> {
    let bounds = store.access_log_id_bounds(from, to).await?;
    write_line(
        out,
        &Line::Header(Header {
            format: FORMAT.into(),
            version: 1,
            exported_at: now,
            from,
            to,
            first_id: bounds.map(|b| b.0),
            last_id: bounds.map(|b| b.1),
        }),
    )?;
    for key in store.all_signing_keys().await? {
        write_line(out, &Line::Key(public_jwk(&key)))?;
    }
    let Some((first, last)) = bounds else {
        return Ok(ExportSummary {
            records: 0,
            checkpoints: 0,
            first_id: None,
            last_id: None,
        });
    };
    // The checkpoint just before the range anchors its first record.
    let checkpoints = store.checkpoints_between(first - 1, last).await?;
    for checkpoint in &checkpoints {
        write_line(out, &Line::Checkpoint(checkpoint.clone()))?;
    }
    let mut records = 0;
    let mut after = first - 1;
    while after < last {
        let page = store.access_log_between(after, last, PAGE).await?;
        let Some(tail) = page.last() else { break };
        after = tail.id;
        for record in page {
            write_line(out, &Line::Record(Box::new(record)))?;
            records += 1;
        }
    }
    out.flush()?;
    Ok(ExportSummary {
        records,
        checkpoints: checkpoints.len(),
        first_id: Some(first),
        last_id: Some(last),
    })
}

/// What an offline check found: the chain report, and how much of it no checkpoint covers.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    #[serde(flatten)]
    pub chain: VerifyReport,
    /// Records after the last signed checkpoint: chained, but a signature does not vouch
    /// for them yet.
    pub unsigned_tail: u64,
}

/// Checks an export: its chain, every checkpoint's signature against the keys it carries, and
/// that the header's range is complete. Reads line by line; memory holds only the keys and
/// the checkpoints.
pub fn verify_file(input: impl BufRead) -> anyhow::Result<FileReport> {
    let malformed = |n: usize, what: &str| anyhow::anyhow!("line {}: {what}", n + 1);
    let mut lines = input.lines().enumerate();
    let header = match lines.next() {
        Some((_, line)) => match serde_json::from_str::<Line>(&line?) {
            Ok(Line::Header(h)) if h.format == FORMAT && h.version == 1 => h,
            _ => anyhow::bail!("not a Keyhole access-log export (version 1)"),
        },
        None => anyhow::bail!("the file is empty"),
    };
    let mut jwks = Vec::new();
    let mut checkpoints = Vec::new();
    let mut first = None;
    for (n, line) in lines.by_ref() {
        match serde_json::from_str::<Line>(&line?).map_err(|e| malformed(n, &e.to_string()))? {
            Line::Header(_) => return Err(malformed(n, "a second header")),
            Line::Key(jwk) => jwks.push(jwk),
            Line::Checkpoint(c) => checkpoints.push(c),
            Line::Record(record) => {
                first = Some(record);
                break;
            }
        }
    }
    let keys = PublicKeys::from_jwks(&jwks).map_err(anyhow::Error::msg)?;
    let latest = checkpoints.iter().max_by_key(|c| c.record_id).cloned();
    let starts_late = match (&first, header.first_id) {
        (Some(first), Some(expected)) => first.id != expected,
        (None, Some(_)) => true,
        _ => false,
    };
    let mut walker = Walker::new(&keys, checkpoints, Anchor::Optional);
    let mut last_seen = None;
    let mut broken = None;
    let mut next = first;
    while let Some(record) = next.take() {
        if let Err(link) = walker.push(&record) {
            broken = Some(link);
            break;
        }
        last_seen = Some(record.id);
        let Some((n, line)) = lines.next() else { break };
        match serde_json::from_str::<Line>(&line?).map_err(|e| malformed(n, &e.to_string()))? {
            Line::Record(record) => next = Some(record),
            _ => {
                return Err(malformed(
                    n,
                    "keys and checkpoints must precede the records",
                ));
            }
        }
    }
    if broken.is_none() && starts_late {
        broken = Some(BrokenLink {
            id: header.first_id.unwrap_or(0),
            reason: "the file lacks the first records of its range".into(),
        });
    }
    if broken.is_none() && last_seen != header.last_id {
        broken = Some(BrokenLink {
            id: last_seen.map_or(header.first_id.unwrap_or(0), |id| id + 1),
            reason: format!(
                "the file ends at record {} but its header says {}",
                last_seen.map_or("none".into(), |id| id.to_string()),
                header.last_id.map_or("none".into(), |id| id.to_string()),
            ),
        });
    }
    let chain = match broken {
        Some(link) => walker.report(Some(link)),
        None => walker.finish(latest.as_ref()),
    };
    let unsigned_tail = match (chain.signed_through, last_seen) {
        (_, None) => 0,
        (Some(signed), Some(last)) => u64::try_from(last - signed).unwrap_or(0),
        (None, Some(_)) => chain.records,
    };
    Ok(FileReport {
        chain,
        unsigned_tail,
    })
}
