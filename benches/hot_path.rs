#![allow(clippy::expect_used)]
//! Functions on the partner hot path: token verification (cold and cached), projection,
//! the access-log hash, and the rate limiter.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use keyhole::access_log::{AccessRecord, GENESIS_HASH, Outcome, chain_hash};
use keyhole::clock::SystemClock;
use keyhole::config::RateLimits;
use keyhole::domain::catalog::default_resources;
use keyhole::domain::{Catalog, ClientId, FieldSet, GrantId};
use keyhole::proxy::projection::project;
use keyhole::proxy::{PartnerRateLimiter, ProxyCaches};
use keyhole::store::{PartnerRates, Store};
use keyhole::tokens::{AccessClaims, EncryptionKey, KeyRing, Verifier};
use std::hint::black_box;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    let keys = rt.block_on(async {
        let store = Store::connect(&url).await.expect("store");
        Arc::new(
            KeyRing::load(
                store,
                Arc::new(SystemClock),
                300,
                EncryptionKey::generate().expect("encryption key"),
            )
            .await
            .expect("keys"),
        )
    });
    let issuer = "http://127.0.0.1:8080";
    let verifier = Verifier::new(keys.clone(), issuer, &format!("{issuer}/partner"));
    let now = Utc::now();
    let claims = AccessClaims {
        iss: issuer.into(),
        aud: format!("{issuer}/partner"),
        sub: "x".repeat(43),
        client_id: ClientId::parse("fone-shop").expect("id"),
        grant_id: GrantId::random(),
        scope: FieldSet::parse("claims:status claims:status_updated_at").expect("scope"),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now.timestamp(),
        exp: now.timestamp() + 300,
    };
    let token = keys.sign(&claims).expect("sign");

    c.bench_function("verify_token_cold (EdDSA signature)", |b| {
        b.iter(|| verifier.verify(black_box(&token), now).expect("valid"))
    });
    let caches = ProxyCaches::new(RateLimits::default());
    c.bench_function("verify_token_cached", |b| {
        b.iter(|| {
            caches
                .tokens
                .get_or_verify(black_box(&token), now, |t| verifier.verify(t, now))
                .expect("valid")
        })
    });

    let catalog = Catalog::build(&default_resources()).expect("catalog");
    let resource = catalog.resource("claims").expect("claims");
    let fields = vec![
        &resource.fields["status"],
        &resource.fields["status_updated_at"],
    ];
    let record = keyhole::sample_upstream::claims().remove(0);
    let raw = serde_json::to_vec(&record).expect("json");
    c.bench_function("parse_and_project_claim", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_slice(black_box(&raw)).expect("json");
            let projected = project(resource, &fields, &value).expect("projected");
            serde_json::to_vec(&projected.body).expect("json")
        })
    });

    let access = AccessRecord {
        at: now,
        request_id: uuid::Uuid::now_v7().to_string(),
        client_id: Some("fone-shop".into()),
        grant_id: Some(GrantId::random().to_string()),
        customer_id: Some("CU-1001".into()),
        resource: "claims".into(),
        resource_id: Some("C-1001".into()),
        record_ids: vec!["C-1001".into()],
        fields: vec!["claims:status".into(), "claims:status_updated_at".into()],
        outcome: Outcome::Ok,
        status: 200,
        client_ip: Some("127.0.0.1".into()),
    };
    c.bench_function("access_log_chain_hash", |b| {
        b.iter(|| {
            chain_hash(
                GENESIS_HASH,
                "0193a4b2-7c1d-7000-8000-000000000001",
                black_box(42),
                &access,
            )
        })
    });

    let limiter = PartnerRateLimiter::new(RateLimits {
        partner_per_second: 1e9,
        partner_burst: 1_000_000,
        grant_per_second: 1e9,
        grant_burst: 1_000_000,
        ..RateLimits::default()
    });
    let client = ClientId::parse("fone-shop").expect("id");
    let grant = GrantId::random();
    let rates = PartnerRates::default();
    c.bench_function("rate_limit_check (grant + partner)", |b| {
        b.iter(|| limiter.check(&client, grant, black_box(&rates)))
    });

    // Issue 11: what every request pays to learn its source address, and what a call without
    // a valid token pays for the per-address limit (in-process state; on Redis it is one
    // round trip, like the partner path's shared limits).
    let headers = {
        let mut h = actix_web::http::header::HeaderMap::new();
        h.insert(
            actix_web::http::header::HeaderName::from_static("x-forwarded-for"),
            actix_web::http::header::HeaderValue::from_static("198.51.100.7, 10.0.0.1"),
        );
        h
    };
    let peer: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
    c.bench_function("source_address (untrusted peer)", |b| {
        b.iter(|| keyhole::http::source::resolve(Some(black_box(peer)), &headers, &[]))
    });
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
    c.bench_function("source_address (trusted proxy, X-Forwarded-For)", |b| {
        b.iter(|| keyhole::http::source::resolve(Some(black_box(peer)), &headers, &trusted))
    });
    let state = keyhole::state::SharedState::in_memory();
    let open = RateLimits {
        unauthenticated_per_second: 1e9,
        unauthenticated_burst: 1_000_000,
        ..RateLimits::default()
    };
    c.bench_function("unauthenticated_limit (in-process state)", |b| {
        b.iter(|| {
            rt.block_on(keyhole::unauthenticated::admit(
                &state,
                &open,
                Some(black_box(peer)),
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
