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
/// them, since ids, not times, make the chain — and everything needed to check them: the
/// public keys, then each record followed by its signed checkpoint when it has one (the
/// checkpoint just before the range first, as the anchor of its first record).
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
    let mut summary = ExportSummary {
        records: 0,
        checkpoints: 0,
        first_id: bounds.map(|b| b.0),
        last_id: bounds.map(|b| b.1),
    };
    let Some((first, last)) = bounds else {
        return Ok(summary);
    };
    let mut after = first - 1;
    for anchor in store.checkpoints_between(after, after).await? {
        write_line(out, &Line::Checkpoint(anchor))?;
        summary.checkpoints += 1;
    }
    while after < last {
        let page = store.access_log_between(after, last, PAGE).await?;
        let Some(tail) = page.last() else { break };
        let mut checkpoints = store
            .checkpoints_between(after + 1, tail.id)
            .await?
            .into_iter()
            .peekable();
        after = tail.id;
        for record in page {
            let id = record.id;
            write_line(out, &Line::Record(Box::new(record)))?;
            summary.records += 1;
            while let Some(c) = checkpoints.next_if(|c| c.record_id <= id) {
                write_line(out, &Line::Checkpoint(c))?;
                summary.checkpoints += 1;
            }
        }
    }
    out.flush()?;
    Ok(summary)
}

/// What an offline check found.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    #[serde(flatten)]
    pub chain: VerifyReport,
    /// The keys checkpoints were checked against: pinned by the auditor, or (when none were
    /// pinned) every key the file carries — which proves consistency, not origin.
    pub keys: Vec<String>,
    pub keys_pinned: bool,
}

/// Checks an export line by line: the chain, every checkpoint's signature, and that the
/// header's range is complete. `trusted`: the key ids (RFC 7638 thumbprints) the auditor
/// trusts, e.g. from the gateway's JWKS; without them a forger could sign with a key of their
/// own, so the report says the keys were not pinned.
pub fn verify_file(input: impl BufRead, trusted: Option<&[String]>) -> anyhow::Result<FileReport> {
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
    let mut body = None;
    for (n, line) in lines.by_ref() {
        match serde_json::from_str::<Line>(&line?).map_err(|e| malformed(n, &e.to_string()))? {
            Line::Key(jwk) => jwks.push(jwk),
            Line::Header(_) => return Err(malformed(n, "a second header")),
            other => {
                body = Some(other);
                break;
            }
        }
    }
    let keys = PublicKeys::from_jwks(&jwks, trusted).map_err(anyhow::Error::msg)?;
    let mut walker = Walker::new(&keys, Anchor::Optional);
    let mut first_id = None;
    let mut latest_signed = None;
    let mut broken = None;
    while let Some(line) = body.take() {
        let step = match line {
            Line::Record(record) => {
                first_id.get_or_insert(record.id);
                walker.push(&record)
            }
            Line::Checkpoint(c) => {
                latest_signed = latest_signed.max(Some(c.record_id));
                walker.checkpoint(&c)
            }
            Line::Header(_) | Line::Key(_) => {
                anyhow::bail!("keys must precede the records and checkpoints")
            }
        };
        if let Err(link) = step {
            broken = Some(link);
            break;
        }
        if let Some((n, line)) = lines.next() {
            body = Some(
                serde_json::from_str::<Line>(&line?).map_err(|e| malformed(n, &e.to_string()))?,
            );
        }
    }
    if broken.is_none() && first_id != header.first_id {
        broken = Some(BrokenLink {
            id: header.first_id.unwrap_or(0),
            reason: "the file lacks the first records of its range".into(),
        });
    }
    if broken.is_none() && walker.last_id() != header.last_id {
        broken = Some(BrokenLink {
            id: walker.last_id().map_or(0, |id| id.saturating_add(1)),
            reason: format!(
                "the file ends at record {} but its header says {}",
                walker.last_id().map_or("none".into(), |id| id.to_string()),
                header.last_id.map_or("none".into(), |id| id.to_string()),
            ),
        });
    }
    let kids = keys.kids();
    let chain = match broken {
        Some(link) => walker.report(Some(link)),
        None => walker.finish(latest_signed),
    };
    Ok(FileReport {
        chain,
        keys: kids,
        keys_pinned: trusted.is_some(),
    })
}
