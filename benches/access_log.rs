#![allow(clippy::expect_used)]
//! The access log's share of a partner call: building and chaining a record, one journal
//! batch (one `write` and one `fdatasync` on this machine's disk), and a whole group commit as
//! 32 concurrent calls see it (the benchmark load's concurrency).

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use keyhole::access_log::journal::Journal;
use keyhole::access_log::{
    AccessLog, AccessRecord, GENESIS_HASH, LogStatus, Outcome, chain_records,
};
use keyhole::metrics::Metrics;
use std::hint::black_box;
use std::sync::Arc;
use tokio::sync::watch;

const CHAIN: &str = "0193a4b2-7c1d-7000-8000-000000000001";

fn record() -> AccessRecord {
    AccessRecord {
        at: Utc::now(),
        request_id: uuid::Uuid::now_v7().to_string(),
        client_id: Some("fone-shop".into()),
        grant_id: Some("0193a4b2-7c1d-7000-8000-0000000000aa".into()),
        customer_id: Some("CU-1001".into()),
        resource: "claims".into(),
        resource_id: Some("C-1001".into()),
        record_ids: vec!["C-1001".into()],
        fields: vec!["claims:status".into(), "claims:status_updated_at".into()],
        outcome: Outcome::Ok,
        status: 200,
        client_ip: Some("127.0.0.1".into()),
    }
}

fn bench(c: &mut Criterion) {
    let one = record();
    c.bench_function("record: chain + encode (one)", |b| {
        b.iter(|| {
            let chained = chain_records([one.clone()], CHAIN, black_box(41), GENESIS_HASH.into());
            keyhole::access_log::encode(&chained[0])
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let payloads: Vec<Vec<u8>> =
        chain_records((0..32).map(|_| record()), CHAIN, 0, GENESIS_HASH.into())
            .iter()
            .map(keyhole::access_log::encode)
            .collect();
    {
        let (mut journal, _) =
            Journal::open(&dir.path().join("raw"), 64 << 20, 1).expect("journal");
        c.bench_function("journal: write + fdatasync (batch of 32)", |b| {
            b.iter(|| journal.append(black_box(&payloads)).expect("append"))
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let log = rt.block_on(async {
        let (journal, _) = Journal::open(&dir.path().join("log"), 64 << 20, 1).expect("journal");
        let (_, imported) = watch::channel(None);
        let (durable, _) = watch::channel(0);
        AccessLog::start_journal(
            journal,
            CHAIN,
            (0, GENESIS_HASH.into()),
            Arc::new(LogStatus::at(0)),
            imported,
            durable,
            Arc::new(Metrics::default()),
        )
        .expect("writer")
    });
    c.bench_function(
        "AccessLog::append, journal mode (32 concurrent calls)",
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let calls: Vec<_> = (0..32)
                        .map(|_| {
                            let log = log.clone();
                            tokio::spawn(async move { log.append(record()).await })
                        })
                        .collect();
                    for call in calls {
                        call.await.expect("task").expect("append");
                    }
                })
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
