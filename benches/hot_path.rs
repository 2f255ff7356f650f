#![allow(clippy::expect_used)]
//! Functions on the partner hot path: token verification (cold and cached), projection
//! (borrowed, and the `Value` tree it replaced), the gate, record building, the access-log
//! hash, and the rate limiter.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use keyhole::access_log::{AccessRecord, GENESIS_HASH, Outcome, chain_hash};
use keyhole::clock::SystemClock;
use keyhole::config::RateLimits;
use keyhole::domain::catalog::default_resources;
use keyhole::domain::{Catalog, ClientId, FieldSet, GrantId};
use keyhole::proxy::projection::{parse, project};
use keyhole::proxy::{PartnerRateLimiter, ProxyCaches};
use keyhole::state::{
    GateCheck, GateLimit, GrantStatus, MemoryBackend, RedisBackend, StateBackend,
};
use keyhole::store::{PartnerRates, Store};
use keyhole::tokens::{AccessClaims, EncryptionKey, KeyRing, Verifier};
use redis::aio::MultiplexedConnection;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

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
        cnf: None,
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
    let owner = record["customer_id"].as_str().expect("owner").to_owned();
    let raw = serde_json::to_vec(&record).expect("json");
    // Before issue 12: the whole record as a `Value` tree, pointers, a `Map`, serialised.
    c.bench_function("parse_and_project_claim (Value tree, before)", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_slice(black_box(&raw)).expect("json");
            let owned = value
                .pointer(&resource.owner_pointer)
                .and_then(|v| v.as_str())
                == Some(owner.as_str());
            let mut body = serde_json::Map::new();
            let id = value.pointer(&resource.id_pointer).cloned().expect("id");
            body.insert("id".to_owned(), id);
            for field in &fields {
                if let Some(v) = value.pointer(&field.pointer) {
                    body.insert(field.scope.field().to_owned(), v.clone());
                }
            }
            let disclosed: Vec<String> = fields.iter().map(|f| f.scope.to_string()).collect();
            (owned, disclosed, serde_json::to_vec(&body).expect("json"))
        })
    });
    c.bench_function("parse_and_project_claim (borrowed)", |b| {
        b.iter(|| {
            let value = parse(black_box(&raw)).expect("json");
            let mut disclosed = [false; 2];
            let mut out = Vec::with_capacity(256);
            let id = project(resource, &fields, value, &owner, &mut disclosed, &mut out)
                .expect("projected");
            (id, out)
        })
    });

    // The gate on the in-process backend: grant, partner and token status plus both shared
    // limits under one lock (on Redis the same is one EVALSHA round trip).
    let backend = MemoryBackend::default();
    let (grant_key, partner_key, jti_key) = ("kh:grant:g", "kh:partner:p", "kh:jti:j");
    rt.block_on(async {
        let status = serde_json::to_vec(&GrantStatus::Active {
            expires_at: now + chrono::Duration::days(1),
        })
        .expect("json");
        let hour = Duration::from_secs(3600);
        backend.put(grant_key, status, hour).await.expect("put");
        backend
            .put(partner_key, b"\"active\"".to_vec(), hour)
            .await
            .expect("put");
    });
    let open_limit = |key| GateLimit {
        key,
        interval: Duration::from_nanos(1),
        burst: 1_000_000,
    };
    let check = GateCheck {
        grant_key,
        partner_key,
        jti_key,
        proof: None,
        now,
        limits: Some([open_limit("kh:rl:grant:g"), open_limit("kh:rl:partner:p")]),
    };
    c.bench_function("gate (memory backend, status + both limits)", |b| {
        b.iter(|| rt.block_on(backend.gate(black_box(&check))).expect("gate"))
    });
    let status_only = GateCheck {
        limits: None,
        ..check
    };
    c.bench_function("gate (memory backend, status only: one instance)", |b| {
        b.iter(|| {
            rt.block_on(backend.gate(black_box(&status_only)))
                .expect("gate")
        })
    });

    // The record a call builds for the log (the strings it must own).
    let grant_id = GrantId::random();
    let source: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    c.bench_function("access_record_build", |b| {
        b.iter(|| AccessRecord {
            at: now,
            request_id: black_box("0192f7a0-7d4e-7c3b-9f3e-2b1a0c9d8e7f").to_owned(),
            client_id: Some(claims.client_id.to_string()),
            grant_id: Some(grant_id.to_string()),
            customer_id: Some(black_box("CU-1001").to_owned()),
            resource: keyhole::domain::bounded(black_box("claims")),
            resource_id: Some(keyhole::domain::bounded(black_box("C-1001"))),
            record_ids: vec!["C-1001".to_owned()],
            fields: fields.iter().map(|f| f.scope_name.clone()).collect(),
            outcome: Outcome::Ok,
            status: 200,
            client_ip: Some(black_box(source).to_string()),
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
    let limits = limiter.limits(&PartnerRates::default());
    c.bench_function("rate_limit_check (grant + partner)", |b| {
        b.iter(|| limiter.check(&client, grant, black_box(&limits)))
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
    if let Ok(url) = std::env::var("KEYHOLE_REDIS_URL") {
        redis_gate(c, &rt, &url);
    }
}

/// The gate script as it was before values carried an epoch (issue 17), re-created here so
/// the cost of the epoch check is measured in the same binary and run.
const GATE_BEFORE_EPOCHS_LUA: &str = r#"
local function gcra(k0, a0)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local n = #KEYS - k0 + 1
  local tats = {}
  for i = 1, n do
    local interval = tonumber(ARGV[a0 + 2 * i - 2])
    local burst = tonumber(ARGV[a0 + 2 * i - 1])
    local tat = tonumber(redis.call('GET', KEYS[k0 + i - 1]) or now)
    if tat < now then tat = now end
    local over = tat - now - interval * (burst - 1)
    if over > 0 then return {0, i - 1, string.format('%.0f', over)} end
    tats[i] = tat
  end
  local out = {1}
  for i = 1, n do
    local interval = tonumber(ARGV[a0 + 2 * i - 2])
    local burst = tonumber(ARGV[a0 + 2 * i - 1])
    local tat = tats[i] + interval
    redis.call('SET', KEYS[k0 + i - 1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    out[#out + 1] = math.floor((interval * burst - (tat - now)) / interval)
  end
  return out
end

local function epoch(s)
  local y, mo, d, h, mi, sec, frac =
    string.match(s, '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)%.?(%d*)Z$')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local secs = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
  return secs, tonumber(string.sub(frac .. '000000000', 1, 9))
end
local function grant_active(raw, now_s, now_ns)
  if not raw then return false end
  local ok, g = pcall(cjson.decode, raw)
  if not ok or type(g) ~= 'table' or g.status ~= 'active' or type(g.expires_at) ~= 'string' then
    return false
  end
  local s, ns = epoch(g.expires_at)
  if not s then return false end
  return s > now_s or (s == now_s and ns > now_ns)
end
local grant = redis.call('GET', KEYS[1])
local partner = redis.call('GET', KEYS[2])
local revoked = redis.call('EXISTS', KEYS[3])
if #KEYS < 5 or revoked == 1 or partner ~= '"active"'
  or not grant_active(grant, tonumber(ARGV[1]), tonumber(ARGV[2])) then
  return {grant, partner, revoked, -1}
end
local out = {grant, partner, 0}
local verdict = gcra(4, 3)
for i = 1, #verdict do out[#out + 1] = verdict[i] end
return out
"#;

/// Redis's own time per EVALSHA since the last `CONFIG RESETSTAT`, in µs.
fn redis_usec_per_call(rt: &tokio::runtime::Runtime, conn: &mut MultiplexedConnection) -> f64 {
    let info: String = rt
        .block_on(redis::cmd("INFO").arg("commandstats").query_async(conn))
        .expect("info");
    info.lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The gate on Redis (when `KEYHOLE_REDIS_URL` names one): one round trip, before and after
/// the epoch check, with Redis's own time per call printed after each.
fn redis_gate(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    let now = Utc::now();
    let backend = rt
        .block_on(RedisBackend::connect(url, "kh-bench:"))
        .expect("redis");
    let mut conn = rt
        .block_on(
            redis::Client::open(url)
                .expect("url")
                .get_multiplexed_async_connection(),
        )
        .expect("connection");
    let status = serde_json::to_vec(&GrantStatus::Active {
        expires_at: now + chrono::Duration::days(1),
    })
    .expect("json");
    let hour = Duration::from_secs(3600);
    rt.block_on(async {
        backend
            .put("kh-bench:grant:g", status.clone(), hour)
            .await
            .expect("put");
        backend
            .put("kh-bench:partner:p", b"\"active\"".to_vec(), hour)
            .await
            .expect("put");
        redis::pipe()
            .set("kh-before:grant:g", status)
            .set("kh-before:partner:p", "\"active\"")
            .query_async::<()>(&mut conn)
            .await
            .expect("set");
    });
    let before = redis::Script::new(GATE_BEFORE_EPOCHS_LUA);
    let mut invocation = before.prepare_invoke();
    invocation
        .key("kh-before:grant:g")
        .key("kh-before:partner:p")
        .key("kh-before:jti:j")
        .key("kh-before:rl:grant:g")
        .key("kh-before:rl:partner:p")
        .arg(now.timestamp())
        .arg(now.timestamp_subsec_nanos())
        .arg(1)
        .arg(1_000_000)
        .arg(1)
        .arg(1_000_000);
    rt.block_on(
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut conn),
    )
    .expect("resetstat");
    c.bench_function("gate (Redis round trip, before epochs)", |b| {
        b.iter(|| {
            rt.block_on(invocation.invoke_async::<redis::Value>(&mut conn))
                .expect("gate")
        })
    });
    eprintln!(
        "  Redis time per gate call, before epochs: {:.2} µs",
        redis_usec_per_call(rt, &mut conn)
    );
    let open_limit = |key| GateLimit {
        key,
        interval: Duration::from_micros(1),
        burst: 1_000_000,
    };
    let check = GateCheck {
        grant_key: "kh-bench:grant:g",
        partner_key: "kh-bench:partner:p",
        jti_key: "kh-bench:jti:j",
        proof: None,
        now,
        limits: Some([
            open_limit("kh-bench:rl:grant:g"),
            open_limit("kh-bench:rl:partner:p"),
        ]),
    };
    rt.block_on(
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut conn),
    )
    .expect("resetstat");
    c.bench_function("gate (Redis round trip, epoch-stamped)", |b| {
        b.iter(|| {
            let reply = rt.block_on(backend.gate(black_box(&check))).expect("gate");
            assert!(reply.limits.is_some(), "the statuses must read as fresh");
            reply
        })
    });
    eprintln!(
        "  Redis time per gate call, epoch-stamped: {:.2} µs",
        redis_usec_per_call(rt, &mut conn)
    );
}

/// What a DPoP-bound call pays beyond a Bearer call: one proof checked (header and claims
/// parsed, the key built from its JWK and thumbprinted, one signature verified, the nonce
/// absent). The proofs are made before timing, one per key type.
fn dpop(c: &mut Criterion) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::signature::Signer;
    use sha2::Digest;

    let issuer = "https://keyhole.example";
    let path = "/partner/v1/claims";
    let token = "eyJ.access.token";
    let now = Utc::now();
    let dpop = keyhole::dpop::Dpop::new(
        &keyhole::config::DpopSettings::default(),
        issuer.into(),
        zeroize::Zeroizing::new([7; 32]),
    );
    let claims = serde_json::json!({
        "htm": "GET",
        "htu": format!("{issuer}{path}"),
        "iat": now.timestamp(),
        "jti": "4a5f0b1e-8c1d-4a57-9d8e-1f2a3b4c5d6e",
        "ath": URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes())),
    });
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));

    let p256 = p256::ecdsa::SigningKey::from_bytes(&[3u8; 32].into()).expect("p256 key");
    let point = p256.verifying_key().to_encoded_point(false);
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
        "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
    }});
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let signature: p256::ecdsa::Signature = p256.sign(message.as_bytes());
    let es256 = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));

    let ed = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {
        "kty": "OKP", "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(ed.verifying_key().as_bytes()),
    }});
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let signature = ed25519_dalek::Signer::sign(&ed, message.as_bytes());
    let eddsa = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));

    for (name, proof) in [("ES256", es256), ("EdDSA", eddsa)] {
        c.bench_function(&format!("dpop proof check ({name})"), |b| {
            b.iter(|| {
                let uri = dpop.resource_uri(black_box(path)).expect("uri");
                dpop.check(black_box(&proof), "GET", &uri, Some(token), now)
                    .expect("valid proof")
            })
        });
    }
}

criterion_group!(benches, bench, dpop);
criterion_main!(benches);
