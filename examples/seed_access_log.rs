//! Seeds an access log with N realistic, correctly chained records, to measure the security
//! team's queries at scale (README, "Access-log queries at 10 million records"):
//!
//! ```sh
//! cargo run --release --example seed_access_log -- sqlite:///tmp/kh10m.db?mode=rwc 10000000
//! ```
//!
//! 200 partners, 500 000 customers, 1 000 000 grants, a year of traffic, the outcome mix of a
//! healthy gateway (mostly `ok`, a few per cent refused). The seeder trades durability for
//! speed (`synchronous = OFF`); it is a benchmark fixture, not a way to write real records.
//! It writes through `Store::insert_access_records`, which keeps the console's running totals
//! as it goes; a database seeded before they existed gets them from `Store::rebuild_rollups`.

use chrono::{Duration, Utc};
use keyhole::access_log::{AccessRecord, ChainedRecord, GENESIS_HASH, Outcome, chain_hash};
use keyhole::store::Store;
use sea_orm::ConnectionTrait;

/// A small deterministic generator (xorshift), so two seeded databases are alike.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FIELDS: [&str; 3] = [
    "claims:status",
    "claims:status_updated_at",
    "claims:claim_number",
];

fn outcome(rng: &mut Rng) -> Outcome {
    match rng.below(1000) {
        0..=799 => Outcome::Ok,
        800..=899 => Outcome::NotModified,
        900..=929 => Outcome::Denied,
        930..=969 => Outcome::NotFound,
        970..=989 => Outcome::RateLimited,
        990..=994 => Outcome::InvalidToken,
        _ => Outcome::UpstreamError,
    }
}

/// The seeder's chain (one per writer; the seeder is one writer), the same on every run so a
/// second run continues it.
const SEED_CHAIN: &str = "00000000-0000-7000-8000-000000005eed";

fn grant_id(n: u64) -> String {
    // A stable UUID-shaped id per grant number.
    format!("00000000-0000-4000-8000-{n:012x}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite:///tmp/kh10m.db?mode=rwc".into());
    let total: i64 = args.next().map_or(Ok(10_000_000), |n| n.parse())?;
    let store = Store::connect(&url).await?.dedicated(&url).await?;
    let db = store.connection();
    if url.starts_with("sqlite") {
        db.execute_unprepared("PRAGMA synchronous = OFF").await?;
        db.execute_unprepared("PRAGMA cache_size = -1000000")
            .await?;
    }
    let (mut id, mut prev) = store
        .chain_head(SEED_CHAIN)
        .await?
        .unwrap_or((0, GENESIS_HASH.to_owned()));
    let start = Utc::now() - Duration::days(365);
    let step_us = 365 * 24 * 3600 * 1_000_000 / total.max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let began = std::time::Instant::now();
    while id < total {
        let mut batch = Vec::with_capacity(500);
        for _ in 0..500.min(total - id) {
            id += 1;
            let grant = rng.below(1_000_000);
            let customer = grant % 500_000;
            let client = grant % 200;
            let outcome = outcome(&mut rng);
            let disclosed = matches!(outcome, Outcome::Ok | Outcome::NotModified);
            let list = rng.below(10) == 0;
            let claim = format!("C-{}", customer * 4 + rng.below(4));
            let fields: Vec<String> = if disclosed {
                let mask = 1 + rng.below(7);
                (0..3)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| FIELDS[i].to_owned())
                    .collect()
            } else {
                Vec::new()
            };
            let record = AccessRecord {
                at: start + Duration::microseconds(id * step_us),
                request_id: format!("seed-{id}"),
                client_id: Some(format!("partner-{client:03}")),
                grant_id: Some(grant_id(grant)),
                customer_id: Some(format!("CU-{customer}")),
                resource: "claims".into(),
                resource_id: (!list).then(|| claim.clone()),
                record_ids: if disclosed { vec![claim] } else { Vec::new() },
                fields,
                outcome,
                status: match outcome {
                    Outcome::Ok => 200,
                    Outcome::NotModified => 304,
                    Outcome::Denied => 403,
                    Outcome::NotFound => 404,
                    Outcome::RateLimited => 429,
                    Outcome::InvalidToken => 401,
                    Outcome::UpstreamError => 502,
                    Outcome::Unavailable => 503,
                },
                client_ip: Some(format!("10.0.{}.{}", client / 250, client % 250)),
            }
            .normalised();
            let hash = chain_hash(&prev, SEED_CHAIN, id, &record);
            batch.push(ChainedRecord {
                id: 0,
                chain: SEED_CHAIN.to_owned(),
                seq: id,
                record,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        store.insert_access_records(batch).await?;
        if id % 50_000 == 0 {
            // The gateway never lets SQLite checkpoint inside a commit; here, rewind the
            // write-ahead log often or it grows by gigabytes.
            db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await?;
        }
        if id % 1_000_000 == 0 {
            eprintln!("{id} records, {:.0} s", began.elapsed().as_secs_f64());
        }
    }
    db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
        .await?;
    eprintln!(
        "done: {id} records in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
