//! The journal as the access log's durability point: a crash drill against the real binary
//! (`kill -9` mid-load, a torn tail, a restart), and the commit-before-answer mode. The
//! database outage that journal mode rides through is in `outages.rs`, two instances writing
//! two chains in `instances.rs`, the importer's idempotence next to it (`access_log/import.rs`).

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

    /// `/metrics` on its private listener, which may come up a moment after the main one.
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        for _ in 0..100 {
            if let Ok(response) = http().get(&url).send().await {
                return response.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no metrics listener");
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
    let report = verify_chain(
        &app.app.store,
        &app.app.checkpoint_key.public_keys(),
        None,
        None,
    )
    .await
    .unwrap();
    assert!(report.ok, "{report:?}");
    // One chain, the binary's, the same before and after the crash; the chain-id file kept it.
    assert_eq!(report.chains.len(), 1, "{report:?}");
    assert!(report.records as usize >= answered.len() + 6, "{report:?}");
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
