//! Fail closed, then recover by itself: the real Redis and PostgreSQL servers are stopped and
//! started again mid-test. Each test runs its own server (from `TEST_REDIS_SERVER` /
//! `TEST_PG_BIN`, or `redis-server` / Debian's PostgreSQL on this machine) and says so when
//! skipped.

use crate::helpers::*;
use keyhole::access_log::Outcome;
use oauth2::TokenResponse;
use reqwest::StatusCode;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) fn redis_server() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TEST_REDIS_SERVER") {
        return Some(path.into());
    }
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A throwaway Redis on its own port, startable again on the same port. With a directory it
/// loads the snapshot there (`dump.rdb`, written only by an explicit `SAVE`) when it starts.
pub(crate) struct Redis {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl Redis {
    pub(crate) fn start(binary: PathBuf) -> Self {
        Self::start_with(binary, None)
    }

    /// A Redis whose snapshots (`SAVE`) survive its restarts.
    pub(crate) fn start_with_snapshots(binary: PathBuf) -> Self {
        Self::start_with(binary, Some(tempfile::tempdir().unwrap()))
    }

    fn start_with(binary: PathBuf, dir: Option<tempfile::TempDir>) -> Self {
        let mut redis = Self {
            binary,
            port: free_port(),
            child: None,
            dir,
        };
        // A port found free may be taken by another test before the server binds it: then
        // another port.
        for _ in 0..5 {
            if redis.try_start() {
                return redis;
            }
            redis.port = free_port();
        }
        panic!("redis-server did not start");
    }

    /// A Redis started from a copy of `other`'s latest snapshot (`SAVE`): a replica or a backup
    /// that lags behind it.
    pub(crate) fn start_from_snapshot_of(other: &Redis) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let from = other.dir.as_ref().expect("a Redis with snapshots");
        std::fs::copy(from.path().join("dump.rdb"), dir.path().join("dump.rdb")).unwrap();
        Self::start_with(other.binary.clone(), Some(dir))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub(crate) fn restart(&mut self) {
        assert!(self.try_start(), "redis-server did not start");
    }

    /// Starts the server on its port; false when it exits (the port was taken) or never
    /// answers.
    fn try_start(&mut self) -> bool {
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(dir) = &self.dir {
            command.arg("--dir").arg(dir.path());
        }
        let mut child = command.stdout(Stdio::null()).spawn().unwrap();
        for _ in 0..100 {
            // Ours must still be running (a failed bind exits) and answer on the port.
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Something answers; it is ours if ours is still running a moment later (a
                // server that lost the port to another exits at once).
                std::thread::sleep(Duration::from_millis(50));
                if child.try_wait().unwrap().is_some() {
                    return false;
                }
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the server (SIGKILL: it saves nothing on the way out).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ready(app: &TestApp) -> (StatusCode, serde_json::Value) {
    let response = http().get(app.url("/readyz")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Alice consents to `claims:status`; the partner reads once. Its access and refresh tokens.
async fn reading_partner(app: &TestApp) -> (String, String) {
    let tokens = app.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret().clone();
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    (access, tokens.refresh_token().unwrap().secret().clone())
}

/// A partner call during the outage: `503`; its body, to show it carries no data.
async fn refused_call(app: &TestApp, access: &str) -> String {
    let response = http()
        .get(app.url("/partner/v1/claims/C-1001"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    response.text().await.unwrap()
}

async fn refresh_with(app: &TestApp, refresh: &str) -> reqwest::Response {
    app.post_form(
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await
}

/// Once the server is back: ready again, the partner's call answered, its refresh token good.
async fn recovers(app: &TestApp, access: &str, refresh: &str) {
    eventually("readiness", || async {
        ready(app).await.0 == StatusCode::OK
    })
    .await;
    eventually("the partner call", || async {
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await
            == StatusCode::OK
    })
    .await;
    assert_eq!(refresh_with(app, refresh).await.status(), StatusCode::OK);
}

/// Polls until `check` holds, for up to 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen");
}

#[tokio::test]
async fn without_redis_partners_get_503_and_everything_recovers_when_it_returns() {
    let Some(binary) = redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let mut redis = Redis::start(binary);
    let url = redis.url();
    // The upstream must see exactly two calls: one before the outage, one after it.
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/claims/C-1001"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "C-1001", "customer_id": ALICE.0, "status": "in_repair", "iban": "NL00 BANK 0123",
        })))
        .expect(2)
        .mount(&upstream)
        .await;
    let upstream_url = upstream.uri();
    let app = spawn_app_with(|s| {
        s.redis_url = Some(url);
        s.upstream.base_url = upstream_url.parse().unwrap();
    })
    .await;
    let (access, refresh) = reading_partner(&app).await;

    redis.stop();
    let body = refused_call(&app, &access).await;
    assert!(
        !body.contains("in_repair") && !body.contains("status\":\""),
        "{body}"
    );
    // The refusal is on the record, without data.
    let last = app.log_records().await.pop().unwrap();
    let (_, hash) = app
        .app
        .store
        .chain_head(&app.chain())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.hash, hash);
    assert_eq!(last.record.outcome, Outcome::Unavailable);
    assert_eq!(last.record.status, 503);
    assert!(last.record.fields.is_empty());
    // Token issuance fails cleanly, in the OAuth error form.
    let refused = refresh_with(&app, &refresh).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "temporarily_unavailable");
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["shared_state"], "unavailable");
    assert_eq!(body["database"], "ok");

    // Redis returns (empty: it kept nothing); the gateway reconnects by itself and rebuilds
    // what it needs from the database.
    redis.restart();
    recovers(&app, &access, &refresh).await;
    upstream.verify().await;
}

/// After a Redis restart every connection is dead; the first call finds out, drops them all
/// and is answered on a new one (it used to get `503`, as did the next three, one per dead
/// connection, however much later they came).
#[tokio::test]
async fn the_first_calls_after_a_redis_restart_are_answered() {
    let Some(binary) = redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let mut redis = Redis::start(binary);
    let url = redis.url();
    let app = spawn_app_with_sample_upstream(|s| s.redis_url = Some(url)).await;
    let (access, _) = reading_partner(&app).await;
    redis.stop();
    redis.restart();
    for _ in 0..4 {
        assert_eq!(
            app.partner_status(&access, "/partner/v1/claims/C-1001")
                .await,
            StatusCode::OK
        );
    }
    assert_eq!(ready(&app).await.0, StatusCode::OK);
}

fn pg_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TEST_PG_BIN") {
        return Some(path.into());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// A throwaway PostgreSQL cluster of this test's own, stopped and started with `pg_ctl`.
/// PostgreSQL refuses to run as root, so as root it runs as `postgres`.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn command(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool);
            command
        } else {
            Command::new(tool)
        }
    }

    fn init(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let pg = Self {
            bin,
            dir,
            port: free_port(),
        };
        let status = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(pg.dir.path().join("data"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        pg.start();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o", &options, "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed");
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn running_as_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false)
}

/// `durability = "database"`: a record must be in PostgreSQL before its answer leaves, so
/// without PostgreSQL no data leaves; the chain continues unbroken once it returns.
#[tokio::test]
async fn without_postgresql_partners_get_503_and_everything_recovers_when_it_returns() {
    let Some(bin) = pg_bin() else {
        eprintln!("skipped: no PostgreSQL binaries (set TEST_PG_BIN)");
        return;
    };
    let pg = Postgres::init(bin);
    let url = pg.url();
    let app = spawn_app_with_sample_upstream(|s| {
        s.database_url = url;
        s.access_log.durability = keyhole::config::Durability::Database;
    })
    .await;
    let (access, refresh) = reading_partner(&app).await;
    let records_before = app
        .app
        .store
        .chain_head(&app.chain())
        .await
        .unwrap()
        .unwrap()
        .0;

    pg.stop();
    // The record cannot be written, so no data leaves.
    assert!(!refused_call(&app, &access).await.contains("\"status\":\""));
    let refused = refresh_with(&app, &refresh).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["database"], "unavailable");

    pg.start();
    recovers(&app, &access, &refresh).await;
    // The chain continues unbroken across the outage.
    assert!(
        app.app
            .store
            .chain_head(&app.chain())
            .await
            .unwrap()
            .unwrap()
            .0
            > records_before
    );
    let report = app.verify_log().await;
    assert!(report.ok, "{report:?}");
}

/// `durability = "journal"` (the default): a record is durable once in the instance's
/// journal, so partners keep being answered without PostgreSQL, while what needs the database
/// (token issuance, readiness) fails closed. The journal's backlog shows in readiness, and
/// reaches the database, in one unbroken chain, once PostgreSQL returns.
#[tokio::test]
async fn without_postgresql_the_journal_keeps_every_answer_on_record_until_it_returns() {
    let Some(bin) = pg_bin() else {
        eprintln!("skipped: no PostgreSQL binaries (set TEST_PG_BIN)");
        return;
    };
    let pg = Postgres::init(bin);
    let url = pg.url();
    let app = spawn_app_with_sample_upstream(|s| s.database_url = url).await;
    let (access, refresh) = reading_partner(&app).await;
    app.app.access_log.settled().await;
    let records_before = app
        .app
        .store
        .chain_head(&app.chain())
        .await
        .unwrap()
        .unwrap()
        .0;

    pg.stop();
    let during: Vec<String> = (0..3).map(|i| format!("during-outage-{i}")).collect();
    for request_id in &during {
        let response = http()
            .get(app.url("/partner/v1/claims/C-1001"))
            .bearer_auth(&access)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the journal holds its record"
        );
    }
    let refused = refresh_with(&app, &refresh).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["database"], "unavailable");
    assert_eq!(body["access_log"]["writer"], "ok", "{body}");
    assert_eq!(body["access_log"]["import_lag_records"], 3, "{body}");

    pg.start();
    recovers(&app, &access, &refresh).await;
    eventually("the journal's import", || async {
        ready(&app).await.1["access_log"]["import_lag_records"] == 0
    })
    .await;
    // Every answer given during the outage is in the database, in the chain where it was.
    let records = app.log_records().await;
    for request_id in &during {
        let record = records
            .iter()
            .find(|r| r.record.request_id == *request_id)
            .unwrap_or_else(|| panic!("{request_id} is not in the database"));
        assert_eq!(record.chain, app.chain());
        assert!(record.seq > records_before, "{record:?}");
        assert_eq!(record.record.outcome, Outcome::Ok);
    }
    let report = app.verify_log().await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains.len(), 1, "{report:?}");
}
