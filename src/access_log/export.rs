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
/// Version 3 holds one part per chain and ends with a signed end; version 1 files cannot show
/// that they are complete, version 2 ones hold the one chain there was before issue 12.
const VERSION: u32 = 3;
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
    /// The part of each chain the file holds: contiguous, so each chain can be walked through
    /// it.
    pub chains: Vec<ChainRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRange {
    pub chain: String,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// The last line: the checkpoint key's signature over [`EndClaims`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    pub kid: String,
    pub signature: String,
}

/// What the end signs: the header as written, and what the file holds after it, per chain.
#[derive(Debug, Serialize, Deserialize)]
struct EndClaims {
    iss: String,
    header: Header,
    chains: Vec<ChainEnd>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ChainEnd {
    chain: String,
    records: u64,
    last_hash: Option<String>,
}

impl ChainEnd {
    fn of(walker: &Walker) -> Self {
        Self {
            chain: walker.chain().to_owned(),
            records: walker.records(),
            last_hash: walker.head().map(|(_, hash)| hash.to_owned()),
        }
    }
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
    pub chains: Vec<ChainRange>,
    /// The checkpoint key that signed the end.
    pub kid: String,
}

fn write_line(out: &mut impl Write, line: &Line) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes, chain by chain, the records whose time lies in `[from, to)` — with any records of
/// the chain between them, since the chain, not time, orders them — and everything needed to
/// check them: the checkpoint key's public key, then each record followed by its signed
/// checkpoint when it has one (the checkpoint just before a chain's part first, as the anchor
/// of its first record), then the end, signed with `key`.
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
    let mut chains = Vec::new();
    for chain in store.access_log_chains().await? {
        if let Some((first_seq, last_seq)) = store.access_log_seq_bounds(&chain, from, to).await? {
            chains.push(ChainRange {
                chain,
                first_seq,
                last_seq,
            });
        }
    }
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: now,
        from,
        to,
        chains: chains.clone(),
    };
    write_line(out, &Line::Header(header.clone()))?;
    write_line(out, &Line::Key(key.public_jwk()))?;
    let keys = key.public_keys();
    let mut summary = ExportSummary {
        records: 0,
        checkpoints: 0,
        chains,
        kid: key.kid().to_owned(),
    };
    let mut ends = Vec::new();
    for range in &header.chains {
        let mut walker = Walker::new(&keys, Anchor::Optional, &range.chain);
        if let Err(link) = export_chain(store, range, &mut walker, &mut summary, out).await? {
            out.flush()?;
            anyhow::bail!(
                "the access log is broken in chain {} at record {}: {}; the file was written without its signed end, so it will not verify",
                link.chain,
                link.seq,
                link.reason
            );
        }
        ends.push(ChainEnd::of(&walker));
    }
    let claims = EndClaims {
        iss: issuer.to_owned(),
        header,
        chains: ends,
    };
    let (kid, signature) = key.sign_jws(END_TYP, &claims)?;
    write_line(out, &Line::End(End { kid, signature }))?;
    out.flush()?;
    Ok(summary)
}

/// Writes one chain's part; the inner result is the walk's first broken link, if any (the
/// part is written to its end regardless).
async fn export_chain(
    store: &Store,
    range: &ChainRange,
    walker: &mut Walker<'_>,
    summary: &mut ExportSummary,
    out: &mut impl Write,
) -> anyhow::Result<Result<(), BrokenLink>> {
    let chain = range.chain.as_str();
    let mut broken: Option<BrokenLink> = None;
    let mut after = range.first_seq - 1;
    for anchor in store.checkpoints_between(chain, after, after).await? {
        if let Err(link) = walker.checkpoint(&anchor) {
            broken.get_or_insert(link);
        }
        write_line(out, &Line::Checkpoint(anchor))?;
        summary.checkpoints += 1;
    }
    while after < range.last_seq {
        let page = store
            .access_log_checked_between(chain, after, range.last_seq, PAGE)
            .await?;
        let Some(tail) = page.last().map(|r| r.seq) else {
            break;
        };
        let mut checkpoints = store
            .checkpoints_between(chain, after + 1, tail)
            .await?
            .into_iter()
            .peekable();
        after = tail;
        for row in page {
            let record = match row.record {
                Ok(record) => record,
                // A row that is not as written cannot be exported as it is stored.
                Err(reason) => anyhow::bail!(
                    "the access log is broken in chain {chain} at record {}: {reason}; the export stops there, without its signed end",
                    row.seq
                ),
            };
            if broken.is_none()
                && let Err(link) = walker.push(&record)
            {
                broken = Some(link);
            }
            write_line(out, &Line::Record(Box::new(record)))?;
            summary.records += 1;
            while let Some(c) = checkpoints.next_if(|c| c.seq <= row.seq) {
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
    Ok(broken.map_or(Ok(()), Err))
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
    // A walker per chain the header names; a record or checkpoint of any other chain breaks.
    let mut walkers: Vec<(Walker, Option<i64>, Option<i64>)> = header
        .chains
        .iter()
        .map(|r| (Walker::new(&keys, Anchor::Optional, &r.chain), None, None))
        .collect();
    let index = |chain: &str| header.chains.iter().position(|r| r.chain == chain);
    let mut end = None;
    let mut broken = None;
    while let Some(line) = body.take() {
        let step = match line {
            Line::Record(record) => match index(&record.chain) {
                Some(i) => {
                    let (walker, first, _) = &mut walkers[i];
                    first.get_or_insert(record.seq);
                    walker.push(&record)
                }
                None => Err(outside(&record.chain, record.seq)),
            },
            Line::Checkpoint(c) => match index(&c.chain) {
                Some(i) => {
                    let (walker, _, latest) = &mut walkers[i];
                    *latest = (*latest).max(Some(c.seq));
                    walker.checkpoint(&c)
                }
                None => Err(outside(&c.chain, c.seq)),
            },
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
    if broken.is_none() {
        broken = header
            .chains
            .iter()
            .zip(&walkers)
            .find_map(|(range, (walker, first, _))| incomplete(range, walker, *first));
    }
    if broken.is_none() {
        match check_end(&keys, end.as_ref(), &header, &walkers) {
            Ok(()) => walkers
                .iter_mut()
                .for_each(|(w, _, _)| w.signed_to_the_end()),
            Err(link) => broken = Some(link),
        }
    }
    let kids = keys.kids();
    let mut reports = Vec::with_capacity(walkers.len());
    for (walker, _, latest) in walkers {
        let report = match &broken {
            Some(link) if link.chain == walker.chain() => walker.report(Some(link.clone())),
            _ => walker.finish(latest),
        };
        reports.push(report);
    }
    let mut chain = VerifyReport::of(reports);
    // A break outside every chain of the header (or in none of them) still fails the file.
    if let Some(link) = broken
        && chain.first_broken.is_none()
    {
        chain.ok = false;
        chain.first_broken = Some(link);
    }
    Ok(FileReport {
        chain,
        keys: kids,
        keys_pinned: trusted.is_some(),
    })
}

fn outside(chain: &str, seq: i64) -> BrokenLink {
    BrokenLink {
        id: None,
        chain: chain.to_owned(),
        seq,
        reason: "a line of a chain the header does not name".into(),
    }
}

/// Whether the file holds exactly the part of the chain its header names.
fn incomplete(range: &ChainRange, walker: &Walker, first: Option<i64>) -> Option<BrokenLink> {
    let link = |seq: i64, reason: String| BrokenLink {
        id: None,
        chain: range.chain.clone(),
        seq,
        reason,
    };
    if first != Some(range.first_seq) {
        return Some(link(
            range.first_seq,
            "the file lacks the first records of its range".into(),
        ));
    }
    if walker.last_seq() != Some(range.last_seq) {
        let last = walker.last_seq().unwrap_or(range.first_seq - 1);
        return Some(link(
            last.saturating_add(1),
            format!(
                "the file ends at record {last} but its header says {}",
                range.last_seq
            ),
        ));
    }
    None
}

/// The end must be signed by a trusted key over exactly this header and, per chain, the
/// number of records walked and the last one's hash; a break is reported after the file's last
/// record.
fn check_end(
    keys: &PublicKeys,
    end: Option<&End>,
    header: &Header,
    walkers: &[(Walker, Option<i64>, Option<i64>)],
) -> Result<(), BrokenLink> {
    let broken = |reason: &str| {
        let (chain, seq) = walkers.last().map_or((String::new(), 1), |(w, _, _)| {
            (
                w.chain().to_owned(),
                w.last_seq().unwrap_or(0).saturating_add(1),
            )
        });
        BrokenLink {
            id: None,
            chain,
            seq,
            reason: reason.to_owned(),
        }
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
    let walked: Vec<ChainEnd> = walkers.iter().map(|(w, _, _)| ChainEnd::of(w)).collect();
    if claims.chains != walked {
        return Err(broken(
            "the file's records differ from those the export signed",
        ));
    }
    Ok(())
}
