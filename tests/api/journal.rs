//! The journal as the access log's durability point: a crash drill against the real binary
//! (`kill -9` mid-load, a torn tail, a restart), the importer's idempotence, and a database
//! outage that partner calls ride through.

use crate::helpers::*;
use keyhole::access_log::verify_chain;
use oauth2::TokenResponse;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `keyhole serve` binary over the test app's database, signing keys and checkpoint key,
/// with a journal of its own: a second instance of the same deployment, as a separate process
/// that can be killed.
struct Gateway {
    child: Option<Child>,
    port: u16,
    metrics_port: u16,
    journal: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(app: &TestApp, upstream: &str, journal: std::path::PathBuf) -> Self {
        let mut gateway = Self {
            child: None,
            port: free_port(),
            metrics_port: free_port(),
            log: app.dir().join("gateway.log"),
            journal,
        };
        gateway.restart(app, upstream);
        gateway
    }

    fn restart(&mut self, app: &TestApp, upstream: &str) {
        let settings = &app.app.settings;
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyhole"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYHOLE_") {
                command.env_remove(&name);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = command
            .current_dir(app.dir())
            .env("RUST_LOG", "info")
            .env("KEYHOLE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env(
                "KEYHOLE_METRICS_LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            // The test app's issuer: its tokens are good here too.
            .env("KEYHOLE_PUBLIC_URL", &app.base)
            .env("KEYHOLE_DATABASE_URL", &settings.database_url)
            .env("KEYHOLE_UPSTREAM__BASE_URL", upstream)
            .env(
                "KEYHOLE_KEYS__ENCRYPTION_KEY_FILE",
                settings.keys.encryption_key_file.as_ref().unwrap(),
            )
            .env(
                "KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE",
                &settings.access_log.checkpoint_key_file,
            )
            .env("KEYHOLE_ACCESS_LOG__JOURNAL_DIR", &self.journal)
            // Far above the drill's rate: every refusal here would be a rate limit, not a crash.
            .env("KEYHOLE_RATE_LIMITS__PARTNER_PER_SECOND", "1000000")
            .env("KEYHOLE_RATE_LIMITS__PARTNER_BURST", "1000000")
            .env("KEYHOLE_RATE_LIMITS__GRANT_PER_SECOND", "1000000")
            .env("KEYHOLE_RATE_LIMITS__GRANT_BURST", "1000000")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(child) = self.child.as_mut() {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the gateway exited: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn metrics(&self) -> String {
        http()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `kill -9`: no flush, no final checkpoint, whatever was mid-write stays mid-write.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and the graceful shutdown it starts.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Reads with distinct request ids from `workers` clients until `stop`; returns the ids of
/// every call that came back `200` with its data.
async fn load(url: String, token: String, workers: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (url, token, stop) = (url.clone(), token.clone(), stop.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("drill-{worker}-{n}");
                let Ok(response) = client
                    .get(&url)
                    .bearer_auth(&token)
                    .header("X-Request-Id", &id)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                else {
                    continue;
                };
                let status = response.status();
                // Received means the whole body arrived.
                if let Ok(body) = response.text().await
                    && status == StatusCode::OK
                    && body.contains("\"status\"")
                {
                    answered.push(id);
                }
            }
            answered
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.unwrap());
    }
    all
}

/// Appends half a frame to the newest segment, as a crash in the middle of a write leaves it.
fn tear(journal: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut segments: Vec<_> = std::fs::read_dir(journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    // A header announcing 300 bytes, followed by 10 of them.
    let mut torn = 300u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xAB; 4]);
    torn.extend_from_slice(b"{\"id\":0,\"c");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    file.write_all(&torn).unwrap();
    torn.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_drill_every_answered_read_has_exactly_one_record_after_kill_9_and_a_restart() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keyhole::sample_upstream::start(listener, 2).unwrap());
    let app = spawn_app_with(|s| s.upstream.base_url = upstream.parse().unwrap()).await;
    let token = app
        .tokens(&["claims:status"])
        .await
        .access_token()
        .secret()
        .clone();
    let journal = app.dir().join("drill-journal");
    let mut gateway = Gateway::start(&app, &upstream, journal.clone());
    let read = gateway.url("/partner/v1/claims/C-1001");
    assert_eq!(
        http()
            .get(&read)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Load, and kill -9 in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn(load(read.clone(), token.clone(), 16, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.kill();
    stop.store(true, Ordering::Relaxed);
    let answered = calls.await.unwrap();
    assert!(
        answered.len() > 50,
        "the load got only {} answers",
        answered.len()
    );
    let torn = tear(&journal);

    // The restart cuts the torn tail, reports it, and imports the journal before serving.
    gateway.restart(&app, &upstream);
    let metrics = gateway.metrics().await;
    assert!(
        metric(&metrics, "keyhole_access_log_journal_torn_bytes_total")
            .is_some_and(|b| b >= torn as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "keyhole_access_log_import_lag_records"),
        Some(0.0)
    );
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    assert!(log.contains("torn tail"), "{log}");
    // The chain goes on after the cut.
    for _ in 0..5 {
        let response = http().get(&read).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    gateway.stop();

    let mut per_request: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    loop {
        let page = app.app.store.access_log_after(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        for record in page {
            *per_request.entry(record.record.request_id).or_default() += 1;
        }
    }
    for id in &answered {
        assert_eq!(
            per_request.get(id),
            Some(&1),
            "read {id} was answered with data, so it must have exactly one record"
        );
    }
    assert!(
        per_request.values().all(|n| *n == 1),
        "a record was imported twice"
    );
    let report = verify_chain(&app.app.store, &app.app.checkpoint_key.public_keys(), None)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.chains.len() >= 2, "{report:?}");
}

/// Runs `check` until it holds, for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen in time");
}

/// With PostgreSQL stopped, a partner whose token, grant and partner are already known keeps
/// reading: every record is durable in the journal, the lag shows in metrics and readiness,
/// and once the database is back every record arrives, once, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_database_down_reads_go_on_and_every_record_arrives_once_it_is_back() {
    let Some(bin) = crate::outages::pg_bin() else {
        eprintln!("skipped: no PostgreSQL binaries (set TEST_PG_BIN)");
        return;
    };
    let pg = crate::outages::Postgres::init(bin);
    let url = pg.url();
    let app = spawn_app_with_sample_upstream(|s| s.database_url = url).await;
    let token = app
        .tokens(&["claims:status"])
        .await
        .access_token()
        .secret()
        .clone();
    assert_eq!(
        app.partner_status(&token, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    app.app.access_log.settled().await;
    let before = app
        .app
        .store
        .access_log_after(0, 10_000)
        .await
        .unwrap()
        .len();

    pg.stop();
    let mut during = Vec::new();
    for n in 0..20 {
        let id = format!("outage-{n}");
        let response = http()
            .get(app.url("/partner/v1/claims/C-1001"))
            .bearer_auth(&token)
            .header("X-Request-Id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "read {n} during the outage"
        );
        during.push(id);
    }
    let ready = http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["access_log"]["import_lag_records"], 20, "{body}");
    // /metrics needs an admin token, which needs the database: render what it would show.
    let mut text = String::new();
    keyhole::metrics::Metrics::render_access_log(
        &mut text,
        app.app.access_log.status(),
        &app.app.metrics,
    );
    assert_eq!(
        metric(&text, "keyhole_access_log_import_lag_records"),
        Some(20.0),
        "{text}"
    );

    pg.start();
    eventually("the import", || async {
        app.app.access_log.status().import_lag() == 0
    })
    .await;
    let records = app.app.store.access_log_after(0, 10_000).await.unwrap();
    assert_eq!(records.len(), before + 20);
    for id in &during {
        assert_eq!(
            records
                .iter()
                .filter(|r| r.record.request_id == *id)
                .count(),
            1,
            "{id}"
        );
    }
    let report = verify_chain(&app.app.store, &app.app.checkpoint_key.public_keys(), None)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

/// Two instances over one database write two chains at once, without a lock between them, and
/// both verify (on PostgreSQL in `.ci/run`; on SQLite the database serialises the writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_write_two_chains_concurrently_and_both_verify() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.grant_per_second = 1e6;
        s.rate_limits.grant_burst = 1_000_000;
    })
    .await;
    let (second, other) = app.another_instance().await;
    assert_ne!(app.app.access_log.chain(), other.access_log.chain());
    let token = app
        .tokens(&["claims:status"])
        .await
        .access_token()
        .secret()
        .clone();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..40 {
        let base = if n % 2 == 0 {
            app.base.clone()
        } else {
            second.clone()
        };
        let token = token.clone();
        calls.spawn(async move {
            http()
                .get(format!("{base}/partner/v1/claims/C-1001"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    app.app.access_log.settled().await;
    other.access_log.settled().await;
    let report = verify_chain(&app.app.store, &app.app.checkpoint_key.public_keys(), None)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    for chain in [app.app.access_log.chain(), other.access_log.chain()] {
        let mine = report.chains.iter().find(|c| c.chain == chain).unwrap();
        assert_eq!(mine.records, 20, "{report:?}");
    }
}

/// `durability = "database"`: the record is in the database before the answer leaves.
#[tokio::test]
async fn in_database_mode_the_record_is_committed_before_the_answer() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.access_log.durability = keyhole::config::Durability::Database;
    })
    .await;
    let token = app
        .tokens(&["claims:status"])
        .await
        .access_token()
        .secret()
        .clone();
    let response = http()
        .get(app.url("/partner/v1/claims/C-1001"))
        .bearer_auth(&token)
        .header("X-Request-Id", "db-mode-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // No settling: it is there already.
    let newest = app.app.store.access_log_newest().await.unwrap().unwrap();
    assert_eq!(newest.record.request_id, "db-mode-1");
    assert_eq!(newest.chain, app.app.access_log.chain());
    assert!(
        !app.dir().join("journal").exists(),
        "no journal in database mode"
    );
}
