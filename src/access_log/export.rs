//! A self-contained export of a range of the log, checkable offline: JSON Lines holding a
//! header, the checkpoint key's public key, the signed checkpoints of the range, the records
//! oldest first, and last a signed end. `keyhole log verify FILE` needs nothing else — no
//! database, no network.
//!
//! The end is what makes a cut detectable: the exporter signs, with the checkpoint key, the
//! header (range, ids, time), the hash of the last record and the number of records. Without
//! it, removing the last records and checkpoints and editing the unsigned header would leave a
//! file whose every remaining record is still covered by some checkpoint. Verification fails
//! on a file without a valid end, so every record of a file that verifies is signed.

use super::checkpoint::PublicKeys;
use super::key::CheckpointKey;
use super::record::ChainedRecord;
use super::verify::{Anchor, BrokenLink, VerifyReport, Walker};
use crate::store::{Store, StoredCheckpoint};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

pub const FORMAT: &str = "keyhole-access-log-export";
/// Version 2 ends with a signed end; version 1 files cannot show that they are complete.
const VERSION: u32 = 2;
/// The JWS `typ` of an export's end, so a checkpoint or token can never pass for one.
pub const END_TYP: &str = "keyhole-log-export+jwt";
const PAGE: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The last line: the checkpoint key's signature over [`EndClaims`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    pub kid: String,
    pub signature: String,
}

/// What the end signs: the header as written, and what the file holds after it.
#[derive(Debug, Serialize, Deserialize)]
struct EndClaims {
    iss: String,
    header: Header,
    records: u64,
    last_hash: Option<String>,
}

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header(Header),
    Key(serde_json::Value),
    Checkpoint(StoredCheckpoint),
    Record(Box<ChainedRecord>),
    End(End),
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub records: u64,
    pub checkpoints: usize,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// The checkpoint key that signed the end.
    pub kid: String,
}

fn write_line(out: &mut impl Write, line: &Line) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes the records whose time lies in `[from, to)` — with any records committed between
/// them, since ids, not times, make the chain — and everything needed to check them: the
/// checkpoint key's public key, then each record followed by its signed checkpoint when it has
/// one (the checkpoint just before the range first, as the anchor of its first record), then
/// the end, signed with `key`.
///
/// The exporter walks what it writes exactly as `verify_file` will, and signs the end only if
/// the walk holds: the end vouches for records no checkpoint covers yet, so it must never bless
/// a log someone has already tampered with. On a broken link the file is written to the end,
/// without its signed end (it will not verify), and the export fails.
pub async fn export(
    store: &Store,
    key: &CheckpointKey,
    issuer: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    out: &mut impl Write,
) -> anyhow::Result<ExportSummary> {
    let bounds = store.access_log_id_bounds(from, to).await?;
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: now,
        from,
        to,
        first_id: bounds.map(|b| b.0),
        last_id: bounds.map(|b| b.1),
    };
    write_line(out, &Line::Header(header.clone()))?;
    write_line(out, &Line::Key(key.public_jwk()))?;
    let keys = key.public_keys();
    let mut walker = Walker::new(&keys, Anchor::Optional);
    let mut broken: Option<BrokenLink> = None;
    let mut summary = ExportSummary {
        records: 0,
        checkpoints: 0,
        first_id: header.first_id,
        last_id: header.last_id,
        kid: key.kid().to_owned(),
    };
    if let Some((first, last)) = bounds {
        let mut after = first - 1;
        for anchor in store.checkpoints_between(after, after).await? {
            if let Err(link) = walker.checkpoint(&anchor) {
                broken.get_or_insert(link);
            }
            write_line(out, &Line::Checkpoint(anchor))?;
            summary.checkpoints += 1;
        }
        while after < last {
            let page = store.access_log_checked_between(after, last, PAGE).await?;
            let Some((tail, _)) = page.last() else { break };
            let mut checkpoints = store
                .checkpoints_between(after + 1, *tail)
                .await?
                .into_iter()
                .peekable();
            after = *tail;
            for (id, record) in page {
                let record = match record {
                    Ok(record) => record,
                    // A row that is not as written cannot be exported as it is stored.
                    Err(reason) => anyhow::bail!(
                        "the access log is broken at record {id}: {reason}; the export stops there, without its signed end"
                    ),
                };
                if broken.is_none()
                    && let Err(link) = walker.push(&record)
                {
                    broken = Some(link);
                }
                write_line(out, &Line::Record(Box::new(record)))?;
                summary.records += 1;
                while let Some(c) = checkpoints.next_if(|c| c.record_id <= id) {
                    if broken.is_none()
                        && let Err(link) = walker.checkpoint(&c)
                    {
                        broken = Some(link);
                    }
                    write_line(out, &Line::Checkpoint(c))?;
                    summary.checkpoints += 1;
                }
            }
        }
    }
    if let Some(link) = broken {
        out.flush()?;
        anyhow::bail!(
            "the access log is broken at record {}: {}; the file was written without its signed end, so it will not verify",
            link.id,
            link.reason
        );
    }
    let claims = EndClaims {
        iss: issuer.to_owned(),
        header,
        records: summary.records,
        last_hash: walker.head().map(|(_, hash)| hash.to_owned()),
    };
    let (kid, signature) = key.sign_jws(END_TYP, &claims)?;
    write_line(out, &Line::End(End { kid, signature }))?;
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

/// Checks an export line by line: the chain, every checkpoint's signature, that the header's
/// range is complete, and the signed end — without which nothing shows the file was not cut
/// short. `trusted`: the key ids (RFC 7638 thumbprints) the auditor trusts, as `keyhole log
/// checkpoint-key` prints them; without them a forger could sign with a key of their own, so
/// the report says the keys were not pinned.
pub fn verify_file(input: impl BufRead, trusted: Option<&[String]>) -> anyhow::Result<FileReport> {
    let malformed = |n: usize, what: &str| anyhow::anyhow!("line {}: {what}", n + 1);
    let mut lines = input.lines().enumerate();
    let header = match lines.next() {
        Some((_, line)) => match serde_json::from_str::<Line>(&line?) {
            Ok(Line::Header(h)) if h.format == FORMAT && h.version == VERSION => h,
            Ok(Line::Header(h)) if h.format == FORMAT => anyhow::bail!(
                "an export of version {}: only version {VERSION} files carry a signed end that shows they are complete; export again",
                h.version
            ),
            _ => anyhow::bail!("not a Keyhole access-log export"),
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
    let mut end = None;
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
            Line::End(e) => {
                end = Some(e);
                Ok(())
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
            if end.is_some() {
                return Err(malformed(n, "a line after the signed end"));
            }
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
    if broken.is_none() {
        match check_end(&keys, end.as_ref(), &header, &walker) {
            Ok(()) => walker.signed_to_the_end(),
            Err(link) => broken = Some(link),
        }
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

/// The end must be signed by a trusted key over exactly this header, the number of records
/// walked and the last one's hash; a break is reported at the first id after the file's last.
fn check_end(
    keys: &PublicKeys,
    end: Option<&End>,
    header: &Header,
    walker: &Walker,
) -> Result<(), BrokenLink> {
    let broken = |reason: &str| BrokenLink {
        id: walker
            .last_id()
            .or(header.first_id.map(|id| id - 1))
            .map_or(1, |id| id.saturating_add(1)),
        reason: reason.to_owned(),
    };
    let end = end.ok_or_else(|| {
        broken("the file has no signed end: it was cut short, or the export did not finish")
    })?;
    let claims: EndClaims = keys
        .verify_jws(END_TYP, &end.kid, &end.signature)
        .map_err(|reason| broken(&format!("the signed end is invalid: {reason}")))?;
    if claims.header != *header {
        return Err(broken("the header differs from the one the export signed"));
    }
    if claims.records != walker.records()
        || claims.last_hash.as_deref() != walker.head().map(|(_, h)| h)
    {
        return Err(broken(
            "the file's records differ from those the export signed",
        ));
    }
    Ok(())
}
