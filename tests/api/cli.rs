//! The real `keyhole` binary, run as an operator would, against a database of its own.

use crate::helpers::{CONSOLE_PASSWORD, DemoProcess, browser, hidden};
use crate::private_key_jwt::{Key, jwks};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyhole::domain::ClientId;
use keyhole::secrets::token_hash;
use keyhole::store::{PartnerKeys, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::{Command, Output};

/// A scratch directory with the database and the checkpoint key the commands share.
struct Cli {
    dir: tempfile::TempDir,
    database_url: String,
    key_file: std::path::PathBuf,
}

impl Cli {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let key_file = dir.path().join("checkpoint.key");
        Self {
            dir,
            database_url,
            key_file,
        }
    }

    /// The checkpoint key, created as the gateway's first start would.
    fn checkpoint_key(&self) -> keyhole::access_log::CheckpointKey {
        keyhole::access_log::CheckpointKey::load_or_create(&self.key_file)
            .unwrap()
            .0
    }

    /// The binary with a clean configuration: no `KEYHOLE_*` or `RUST_LOG` from the caller's
    /// environment, only this test's database and checkpoint key file.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyhole"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYHOLE_") {
                command.env_remove(&name);
            }
        }
        command
            .env_remove("RUST_LOG")
            .env("KEYHOLE_DATABASE_URL", &self.database_url)
            .env("KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE", &self.key_file)
            .env(
                "KEYHOLE_KEYS__ENCRYPTION_KEY_FILE",
                self.encryption_key_file(),
            )
            .args(args);
        command
    }

    /// This test's key that encrypts the signing keys.
    fn encryption_key_file(&self) -> std::path::PathBuf {
        self.dir.path().join("keys.key")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed and print exactly one JSON object.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            describe(&output)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            stdout.trim_end().lines().count(),
            1,
            "{args:?} must print one line of JSON: {stdout:?}"
        );
        let value: Value = serde_json::from_str(stdout.trim_end())
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout:?}"));
        assert!(value.is_object(), "{value}");
        value
    }

    /// Runs a command that must fail; returns its stderr.
    fn failure(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "{args:?} should have failed: {}",
            describe(&output)
        );
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !stderr.trim().is_empty(),
            "{args:?} failed without a message"
        );
        stderr
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const FIX_POINT: &[&str] = &[
    "partner",
    "add",
    "--name",
    "Fix Point",
    "--redirect-uri",
    "https://fix.example/cb",
    "--fields",
    "claims:status",
    "--json",
];

#[tokio::test]
async fn partner_add_prints_the_secret_once_and_stores_only_its_hash() {
    let cli = Cli::new();
    let printed = cli.json(FIX_POINT);
    let client_id = printed["client_id"].as_str().unwrap();
    let secret = printed["client_secret"].as_str().unwrap();
    assert!(client_id.starts_with("fix-point-"), "{client_id}");
    assert!(secret.starts_with("kh_cs_"), "{secret}");
    assert!(secret.len() > "kh_cs_".len() + 40, "{secret}");

    let store = Store::connect(&cli.database_url).await.unwrap();
    let partner = store
        .partner(&ClientId::parse(client_id).unwrap())
        .await
        .unwrap()
        .expect("the partner is stored");
    assert_eq!(partner.name, "Fix Point");
    assert_eq!(partner.redirect_uris, vec!["https://fix.example/cb"]);
    assert_eq!(partner.fields.to_string(), "claims:status");
    assert_ne!(partner.secret_hash, secret);
    assert!(!partner.secret_hash.contains(secret));
    assert_eq!(partner.secret_hash, token_hash(secret));

    // A second partner of the same name gets its own id and secret.
    let again = cli.json(FIX_POINT);
    assert_ne!(again["client_id"], printed["client_id"]);
    assert_ne!(again["client_secret"], printed["client_secret"]);
}

#[test]
fn partner_add_refuses_a_field_outside_the_catalog() {
    let cli = Cli::new();
    let mut args = FIX_POINT.to_vec();
    let fields = args.iter().position(|a| *a == "--fields").unwrap();
    args[fields + 1] = "claims:iban";
    let stderr = cli.failure(&args);
    assert!(stderr.contains("claims:iban"), "{stderr}");
}

#[test]
fn partner_add_refuses_a_plain_http_redirect_uri_off_loopback() {
    let cli = Cli::new();
    let mut args = FIX_POINT.to_vec();
    let uri = args.iter().position(|a| *a == "--redirect-uri").unwrap();
    args[uri + 1] = "http://evil.example/cb";
    let stderr = cli.failure(&args);
    assert!(stderr.contains("http://evil.example/cb"), "{stderr}");
    assert!(stderr.contains("https"), "{stderr}");
}

/// `FIX_POINT` without `--json`, for the human-readable output.
fn fix_point_plain() -> Vec<&'static str> {
    FIX_POINT
        .iter()
        .copied()
        .filter(|a| *a != "--json")
        .collect()
}

/// A JWKS file in the CLI's scratch directory.
fn jwks_file(cli: &Cli, jwks: &Value) -> String {
    let path = cli
        .dir
        .path()
        .join(format!("{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, jwks.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn partner_add_with_a_jwks_file_registers_its_public_keys_and_prints_no_secret() {
    let cli = Cli::new();
    let (es, ed) = (Key::es256("es-1"), Key::ed25519("ed-1"));
    let set = jwks(&[&es, &ed]);
    let file = jwks_file(&cli, &set);
    let args = [FIX_POINT, &["--jwks-file", &file]].concat();
    let output = cli.run(&args);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let printed: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(printed["token_endpoint_auth_method"], "private_key_jwt");
    assert!(printed.get("client_secret").is_none(), "{printed}");
    assert!(!stdout.contains("kh_cs_"), "{stdout}");

    let store = Store::connect(&cli.database_url).await.unwrap();
    let client_id = ClientId::parse(printed["client_id"].as_str().unwrap()).unwrap();
    let partner = store.partner(&client_id).await.unwrap().unwrap();
    assert_eq!(partner.keys, Some(PartnerKeys::Set(set.to_string())));

    // The same for a person reading it.
    let plain = cli.run(&[fix_point_plain().as_slice(), &["--jwks-file", &file]].concat());
    assert!(plain.status.success(), "{}", describe(&plain));
    let human = String::from_utf8(plain.stdout).unwrap();
    assert!(human.contains("private_key_jwt"), "{human}");
    assert!(
        !human.contains("kh_cs_") && !human.contains("client_secret"),
        "{human}"
    );
}

#[tokio::test]
async fn partner_add_with_a_jwks_uri_needs_https_off_loopback() {
    let cli = Cli::new();
    let printed = cli.json(&[FIX_POINT, &["--jwks-uri", "https://fix.example/jwks.json"]].concat());
    assert!(printed.get("client_secret").is_none(), "{printed}");
    let store = Store::connect(&cli.database_url).await.unwrap();
    let client_id = ClientId::parse(printed["client_id"].as_str().unwrap()).unwrap();
    let partner = store.partner(&client_id).await.unwrap().unwrap();
    assert_eq!(
        partner.keys,
        Some(PartnerKeys::Uri(
            "https://fix.example/jwks.json".parse().unwrap()
        ))
    );
    for bad in [
        "http://fix.example/jwks.json",
        "https://user:pw@fix.example/jwks.json",
    ] {
        let stderr = cli.failure(&[FIX_POINT, &["--jwks-uri", bad]].concat());
        assert!(stderr.contains("--jwks-uri"), "{stderr}");
    }
}

#[tokio::test]
async fn partner_add_refuses_a_jwks_file_with_private_key_material_without_printing_it() {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let cli = Cli::new();
    let secret =
        p256::SecretKey::from_slice(&keyhole::secrets::random_bytes::<32>().unwrap()).unwrap();
    let point = secret.public_key().to_encoded_point(false);
    let d = URL_SAFE_NO_PAD.encode(secret.to_bytes());
    let private = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "es-1",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        "d": d,
    }]});
    let output = cli.run(&[FIX_POINT, &["--jwks-file", &jwks_file(&cli, &private)]].concat());
    assert!(!output.status.success(), "{}", describe(&output));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("private"), "{said}");
    assert!(
        !said.contains(&d),
        "the private key is never printed: {said}"
    );
    let store = Store::connect(&cli.database_url).await.unwrap();
    assert!(store.partners().await.unwrap().is_empty());
}

#[tokio::test]
async fn partner_add_refuses_an_hmac_key_without_printing_it() {
    let cli = Cli::new();
    let k = URL_SAFE_NO_PAD.encode(b"a shared secret of thirty-two by");
    let hmac = json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "h", "k": k}]});
    let output = cli.run(&[FIX_POINT, &["--jwks-file", &jwks_file(&cli, &hmac)]].concat());
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("symmetric"), "{stderr}");
    assert!(!stderr.contains(&k), "{stderr}");
    let store = Store::connect(&cli.database_url).await.unwrap();
    assert!(store.partners().await.unwrap().is_empty());

    // A key set that is fine apart from a repeated kid is refused too.
    let twice = jwks(&[&Key::es256("k"), &Key::ed25519("k")]);
    let stderr = cli.failure(&[FIX_POINT, &["--jwks-file", &jwks_file(&cli, &twice)]].concat());
    assert!(stderr.contains("used twice"), "{stderr}");
}

#[test]
fn partner_add_refuses_both_jwks_flags() {
    let cli = Cli::new();
    let file = jwks_file(&cli, &jwks(&[&Key::es256("es-1")]));
    let stderr = cli.failure(
        &[
            FIX_POINT,
            &[
                "--jwks-file",
                &file,
                "--jwks-uri",
                "https://fix.example/jwks.json",
            ],
        ]
        .concat(),
    );
    assert!(
        stderr.contains("--jwks-uri") && stderr.contains("--jwks-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("kh_cs_"), "{stderr}");
}

#[test]
fn customer_add_creates_an_account_and_refuses_a_second_with_the_same_email() {
    let cli = Cli::new();
    let printed = cli.json(&[
        "customer",
        "add",
        "--id",
        "CU-9",
        "--email",
        "c@example.com",
        "--password",
        "long-enough-pw",
        "--json",
    ]);
    assert_eq!(printed["customer_id"], "CU-9");
    assert_eq!(printed["email"], "c@example.com");
    assert!(
        !printed.to_string().contains("long-enough-pw"),
        "the password is never echoed: {printed}"
    );

    for email in ["c@example.com", "C@Example.COM"] {
        let stderr = cli.failure(&[
            "customer",
            "add",
            "--id",
            "CU-10",
            "--email",
            email,
            "--password",
            "long-enough-pw",
            "--json",
        ]);
        assert!(stderr.contains("already exists"), "{stderr}");
    }
}

#[test]
fn customer_add_refuses_a_short_password() {
    let cli = Cli::new();
    let stderr = cli.failure(&[
        "customer",
        "add",
        "--id",
        "CU-9",
        "--email",
        "c@example.com",
        "--password",
        "short",
    ]);
    assert!(stderr.contains("--password"), "{stderr}");
}

#[tokio::test]
async fn admin_token_create_prints_a_token_once_and_stores_only_its_hash() {
    let cli = Cli::new();
    let printed = cli.json(&["admin", "token", "create", "--name", "soc", "--json"]);
    assert_eq!(printed["name"], "soc");
    let token = printed["token"].as_str().unwrap();
    assert!(token.starts_with("kh_adm_"), "{token}");

    // Nothing in the database holds the token itself.
    let bytes = std::fs::read(cli.dir.path().join("k.db")).unwrap();
    let wal = std::fs::read(cli.dir.path().join("k.db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(
            !file.windows(token.len()).any(|w| w == token.as_bytes()),
            "the raw admin token is stored"
        );
    }
}

#[tokio::test]
async fn keys_rotate_prints_the_new_kid_and_when_it_starts_signing() {
    let cli = Cli::new();
    let before = chrono::Utc::now();
    let first = cli.json(&["keys", "rotate", "--json"]);
    let second = cli.json(&["keys", "rotate", "--json"]);
    let after = chrono::Utc::now();
    // It signs once every running instance has loaded it: a minute on.
    let signs_from = chrono::DateTime::parse_from_rfc3339(second["signs_from"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let delay = chrono::Duration::from_std(keyhole::tokens::ACTIVATION_DELAY).unwrap();
    assert!(signs_from >= before + delay, "{second}");
    assert!(
        signs_from <= after + delay + chrono::Duration::seconds(1),
        "{second}"
    );
    let text = String::from_utf8(cli.run(&["keys", "rotate"]).stdout).unwrap();
    assert!(text.contains("signs from 20"), "{text}");
    let (first, second) = (
        first["kid"].as_str().unwrap().to_owned(),
        second["kid"].as_str().unwrap().to_owned(),
    );
    assert!(!first.is_empty());
    assert_ne!(first, second);

    let store = Store::connect(&cli.database_url).await.unwrap();
    let keys = store
        .signing_keys(chrono::Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    // The third rotation's key is the newest; each key is retired when the next one signs.
    let newest: Vec<_> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
    assert_eq!(newest.len(), 1, "{keys:?}");
    let key = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap();
    assert_eq!(key(&second).activates_at, Some(signs_from));
    assert_eq!(key(&first).retired_at, key(&second).activates_at);
    assert_eq!(key(&second).retired_at, newest[0].activates_at);
}

#[test]
fn keys_rewrap_moves_every_signing_key_to_a_new_encryption_key() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    cli.json(&["keys", "rotate", "--json"]);
    cli.json(&["keys", "rotate", "--json"]);
    let new_key = cli.dir.path().join("new.key");
    let new_arg = new_key.to_str().unwrap();
    let report = cli.json(&["keys", "rewrap", "--new-key-file", new_arg, "--json"]);
    // The first key of all, then one per rotation.
    assert_eq!(report["rewrapped"], 3, "{report}");
    let mode = std::fs::metadata(&new_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The old key no longer opens them, and is not silently replaced.
    let stderr = cli.failure(&["keys", "rotate"]);
    assert!(stderr.contains("cannot be decrypted"), "{stderr}");

    // The new key does, from the file or from the environment.
    let with_new_file = |args: &[&str]| {
        cli.command(args)
            .env("KEYHOLE_KEYS__ENCRYPTION_KEY_FILE", &new_key)
            .output()
            .unwrap()
    };
    let output = with_new_file(&["keys", "rotate", "--json"]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = with_new_file(&["keys", "rewrap", "--new-key-file", new_arg]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already configured"),
        "{}",
        describe(&output)
    );
    let value = std::fs::read_to_string(&new_key).unwrap();
    let output = cli
        .command(&["keys", "rotate", "--json"])
        .env_remove("KEYHOLE_KEYS__ENCRYPTION_KEY_FILE")
        .env("KEYHOLE_KEYS__ENCRYPTION_KEY", value.trim())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn an_out_of_range_setting_from_the_environment_names_the_key() {
    let cli = Cli::new();
    let output = cli
        .command(&["migrate"])
        .env("KEYHOLE_ACCESS_TOKEN_TTL_SECONDS", "3600")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("access_token_ttl_seconds"), "{stderr}");
    assert!(
        !cli.dir.path().join("k.db").exists(),
        "nothing was touched before the configuration was checked"
    );

    // The same command with a valid configuration succeeds.
    let output = cli.run(&["migrate"]);
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn an_unknown_key_in_the_config_file_is_named() {
    let cli = Cli::new();
    let path = cli.dir.path().join("keyhole.toml");
    std::fs::write(&path, "acess_token_ttl_seconds = 60\n").unwrap();
    let output = cli
        .command(&["--config", path.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("acess_token_ttl_seconds"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let cli = Cli::new();
    let path = cli.dir.path().join("absent.toml");
    let stderr = cli.failure(&["--config", path.to_str().unwrap(), "migrate"]);
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[tokio::test]
async fn admin_tokens_are_listed_without_secrets_and_revoked_by_id() {
    let cli = Cli::new();
    let created = cli.json(&["admin", "token", "create", "--name", "soc", "--json"]);
    cli.json(&["admin", "token", "create", "--name", "audit", "--json"]);
    let listed = cli.json(&["admin", "token", "list", "--json"]);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        !listed
            .to_string()
            .contains(created["token"].as_str().unwrap())
    );
    let id = created["id"].as_str().unwrap();
    cli.json(&["admin", "token", "revoke", id, "--json"]);
    let listed = cli.json(&["admin", "token", "list", "--json"]);
    let soc = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert!(soc["revoked_at"].is_string());
    assert!(
        cli.failure(&["admin", "token", "revoke", id])
            .contains("no active admin token")
    );
}

#[tokio::test]
async fn log_export_is_verified_offline_and_a_tampered_file_fails() {
    use keyhole::access_log::checkpoint;
    use keyhole::clock::SystemClock;
    let cli = Cli::new();
    let store = Store::connect(&cli.database_url).await.unwrap();
    let chain = seed_reads(&store, 6).await;
    let clock: keyhole::clock::SharedClock = std::sync::Arc::new(SystemClock);
    let key = cli.checkpoint_key();
    let (seq, hash) = store.chain_head(&chain).await.unwrap().unwrap();
    assert_eq!(seq, 6);
    checkpoint::checkpoint(
        &store,
        &key,
        "http://keyhole.test",
        &clock,
        &chain,
        seq,
        &hash,
    )
    .await
    .unwrap();

    let file = cli.dir.path().join("export.jsonl");
    let file_arg = file.to_str().unwrap();
    let summary = cli.json(&[
        "log",
        "export",
        "--from",
        "2020-01-01",
        "--output",
        file_arg,
    ]);
    assert_eq!(summary["records"], 6);
    assert_eq!(summary["checkpoints"], 1);
    assert_eq!(
        summary["chains"],
        serde_json::json!([{"chain": chain, "first_seq": 1, "last_seq": 6}])
    );

    // Offline: the database is gone.
    drop(store);
    std::fs::remove_file(cli.dir.path().join("k.db")).unwrap();
    let report = cli.json(&["log", "verify", file_arg, "--json"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], 6);
    assert_eq!(report["chains"][0]["chain"], chain.as_str(), "{report}");
    assert_eq!(report["chains"][0]["signed_through"], 6, "{report}");

    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"status\":200", "\"status\":404", 1)).unwrap();
    let output = cli.run(&["log", "verify", file_arg]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("BROKEN in chain {chain} at record 1")),
        "{stdout}"
    );
}

#[tokio::test]
async fn log_prune_refuses_to_cut_into_the_retention_period() {
    let cli = Cli::new();
    let stderr = cli.failure(&["log", "prune", "--before", "2026-01-01"]);
    assert!(stderr.contains("retention"), "{stderr}");
    let nothing = cli.json(&["log", "prune", "--before", "2001-01-01", "--json"]);
    assert_eq!(nothing["removed"], 0);
    assert!(
        cli.failure(&["log", "prune", "--before", "last tuesday"])
            .contains("RFC 3339")
    );
}

/// Reads appended to the CLI's database through the library, as a gateway with
/// `durability = "database"` would, in a chain of their own; returns the chain.
async fn seed_reads(store: &Store, count: usize) -> String {
    use keyhole::access_log::{AccessLog, AccessRecord, GENESIS_HASH, Outcome};
    let chain = uuid::Uuid::now_v7().to_string();
    let log = AccessLog::start_database(
        store.clone(),
        &chain,
        (0, GENESIS_HASH.into()),
        Default::default(),
    )
    .unwrap();
    for i in 0..count {
        log.append(AccessRecord {
            at: chrono::Utc::now(),
            request_id: format!("r{i}"),
            client_id: Some("fone-shop".into()),
            grant_id: None,
            customer_id: Some("CU-1001".into()),
            resource: "claims".into(),
            resource_id: Some("C-1001".into()),
            record_ids: vec!["C-1001".into()],
            fields: vec!["claims:status".into()],
            outcome: Outcome::Ok,
            status: 200,
            client_ip: None,
        })
        .await
        .unwrap();
    }
    log.close();
    chain
}

#[tokio::test]
async fn an_export_taken_right_after_activity_verifies() {
    let cli = Cli::new();
    let store = Store::connect(&cli.database_url).await.unwrap();
    // The gateway's first start made its checkpoint key; no checkpoint was signed yet, so
    // the export itself must vouch for every record.
    cli.checkpoint_key();
    seed_reads(&store, 4).await;
    let file = cli.dir.path().join("export.jsonl");
    let file_arg = file.to_str().unwrap();
    cli.json(&["log", "export", "--output", file_arg]);
    let report = cli.json(&["log", "verify", file_arg, "--json"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], 4);
    assert_eq!(report["chains"][0]["signed_through"], 4, "{report}");
    assert_eq!(report["chains"][0]["unsigned_tail"], 0, "{report}");
    assert_eq!(report["unsigned_tail"], 0);
}

#[tokio::test]
async fn a_cut_export_does_not_verify_even_with_pinned_keys() {
    use keyhole::access_log::checkpoint;
    use keyhole::clock::SystemClock;
    let cli = Cli::new();
    let store = Store::connect(&cli.database_url).await.unwrap();
    let chain = seed_reads(&store, 10).await;
    let clock: keyhole::clock::SharedClock = std::sync::Arc::new(SystemClock);
    let key = cli.checkpoint_key();
    let kid = key.kid().to_owned();
    for seq in [6, 10] {
        let record = store
            .access_log_between(&chain, seq - 1, seq, 1)
            .await
            .unwrap();
        checkpoint::checkpoint(
            &store,
            &key,
            "http://keyhole.test",
            &clock,
            &chain,
            seq,
            &record[0].hash,
        )
        .await
        .unwrap();
    }
    let file = cli.dir.path().join("export.jsonl");
    let file_arg = file.to_str().unwrap();
    cli.json(&["log", "export", "--output", file_arg]);
    let pinned = ["log", "verify", file_arg, "--trust-kid", &kid, "--json"];
    assert_eq!(cli.json(&pinned)["ok"], true);

    // Records 7 to 10, the checkpoints after record 6 and whatever follows them are cut
    // off, and the unsigned header is edited to match what is left.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut cut = Vec::new();
    for line in text.lines() {
        let mut value: Value = serde_json::from_str(line).unwrap();
        if let Some(header) = value.get_mut("header") {
            assert_eq!(header["chains"][0]["last_seq"], 10, "{header}");
            header["chains"][0]["last_seq"] = 6.into();
        }
        let seq = value
            .get("record")
            .map(|r| &r["seq"])
            .or_else(|| value.get("checkpoint").map(|c| &c["seq"]))
            .and_then(Value::as_i64);
        let is_record_or_key = value.get("record").is_some()
            || value.get("checkpoint").is_some()
            || value.get("header").is_some()
            || value.get("key").is_some();
        if is_record_or_key && seq.is_none_or(|seq| seq <= 6) {
            cut.push(value.to_string());
        }
    }
    std::fs::write(&file, cut.join("\n") + "\n").unwrap();
    for args in [&pinned[..], &["log", "verify", file_arg]] {
        let output = cli.run(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("BROKEN in chain {chain} at record 7"))
                || stdout.contains(r#""ok":false"#),
            "{}",
            describe(&output)
        );
        assert!(stdout.contains("signed end"), "{}", describe(&output));
    }
}

#[test]
fn log_checkpoint_key_prints_the_public_key_of_an_owner_only_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    let path = cli.dir.path().join("own.key");
    let printed = |cli: &Cli| {
        let output = cli
            .command(&["log", "checkpoint-key", "--json"])
            .env("KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE", &path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let first = printed(&cli);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the key file is created readable by its owner only"
    );
    let kid = first["kid"].as_str().unwrap();
    let jwk = &first["jwk"];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["kid"], kid);
    assert!(jwk.get("d").is_none(), "never the private key: {first}");
    let x = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["x"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        kid,
        keyhole::tokens::thumbprint(&x),
        "the kid is the RFC 7638 thumbprint"
    );
    // The same file, the same key; and nothing of it is in the database.
    assert_eq!(printed(&cli)["kid"], kid);
    let db = std::fs::read(cli.dir.path().join("k.db")).unwrap_or_default();
    let secret = std::fs::read(&path).unwrap();
    assert!(!secret.is_empty());
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_slice()));
}

#[test]
fn a_checkpoint_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    let path = cli.dir.path().join("exposed.key");
    let output = cli
        .command(&["log", "checkpoint-key"])
        .env("KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE", &path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        &["log", "checkpoint-key"][..],
        &["log", "export"],
        &["serve"],
    ] {
        let mut child = cli
            .command(args)
            .env("KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE", &path)
            .env("KEYHOLE_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // `serve` that does not refuse would run until killed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
        }
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success(), "{args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("exposed.key") && stderr.contains("chmod 600"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn admin_audit_prune_removes_only_entries_past_their_retention() {
    use keyhole::store::AdminAuditEntry;
    let cli = Cli::new();
    let store = Store::connect(&cli.database_url).await.unwrap();
    let now = chrono::Utc::now();
    for days in [3000, 2800, 10] {
        store
            .insert_admin_audit(AdminAuditEntry {
                at: now - chrono::Duration::days(days),
                request_id: format!("r{days}"),
                token_id: None,
                token_name: Some("sec".into()),
                method: "GET".into(),
                path: "/admin/v1/access-log".into(),
                query_sha256: None,
                status: 200,
                client_ip: None,
                console_user_id: None,
                console_user_email: None,
                reason: None,
            })
            .await
            .unwrap();
    }
    // The default retention is the access log's: seven years.
    let stderr = cli.failure(&["admin", "audit", "prune", "--before", "2026-01-01"]);
    assert!(stderr.contains("retention"), "{stderr}");
    let before = (now - chrono::Duration::days(2900))
        .format("%Y-%m-%d")
        .to_string();
    let pruned = cli.json(&["admin", "audit", "prune", "--before", &before, "--json"]);
    assert_eq!(pruned["removed"], 1, "{pruned}");
    let left: Vec<String> = store
        .admin_audit(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.request_id)
        .collect();
    assert_eq!(left, ["r10", "r2800"]);

    // A shorter audit retention of its own lets more go.
    let output = cli
        .command(&[
            "admin",
            "audit",
            "prune",
            "--before",
            &now.format("%Y-%m-%d").to_string(),
            "--json",
        ])
        .env("KEYHOLE_ACCESS_LOG__AUDIT_RETENTION_DAYS", "30")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "inside 30 days: {}",
        describe(&output)
    );
    let before = (now - chrono::Duration::days(30)).to_rfc3339();
    let output = cli
        .command(&["admin", "audit", "prune", "--before", &before, "--json"])
        .env("KEYHOLE_ACCESS_LOG__AUDIT_RETENTION_DAYS", "30")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let left = store.admin_audit(None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.request_id, "r10");
}

/// `keyhole demo` in an empty directory, with no configuration but free ports: it starts,
/// serves, and every file it leaves there (the access-log journal's too) is closed to other
/// users.
#[tokio::test]
async fn the_demo_starts_in_an_empty_directory_and_leaves_only_owner_only_files() {
    use std::os::unix::fs::PermissionsExt;
    let demo = DemoProcess::start(&[]).expect("the demo did not start");
    let port = demo.port;
    let dir = &demo.dir;
    let walkthrough = demo.walkthrough.clone();
    // The console's one-time password, on the line after the one that announces it.
    let one_time = demo
        .line_after("with the one-time password")
        .and_then(|l| l.split_whitespace().next().map(str::to_owned));
    let overview = match &one_time {
        Some(password) => demo_console_overview(port, password).await,
        None => None,
    };
    let jwks = reqwest::get(format!("http://127.0.0.1:{port}/.well-known/jwks.json"))
        .await
        .ok();
    let jwks: Option<Value> = match jwks {
        Some(response) => response.json().await.ok(),
        None => None,
    };
    // Every file, and what the directories (the access-log journal's) hold.
    let mut files = Vec::new();
    let mut dirs = vec![dir.path().to_owned()];
    while let Some(current) = dirs.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            let name = entry
                .path()
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string();
            if metadata.is_dir() {
                dirs.push(entry.path());
            }
            files.push((
                name,
                metadata.is_dir(),
                metadata.permissions().mode() & 0o777,
            ));
        }
    }
    drop(demo);
    assert!(one_time.is_some(), "a console sign-in: {walkthrough:?}");
    let overview = overview.expect("the console's overview after the demo's sign-in");
    assert!(
        overview.contains("quick-fix-repairs") && overview.contains("beyond_grants"),
        "the seeded history fires an alert: {overview}"
    );
    assert!(overview.contains("<svg"), "charts: {overview}");
    let jwks = jwks.expect("the demo serves its JWKS");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    assert!(
        files.iter().any(|(name, _, _)| name == "keyhole.db"),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|(name, dir, _)| *dir && name == "keyhole-journal"),
        "the journal, beside the database: {files:?}"
    );
    for (name, dir, mode) in &files {
        let owner_only = if *dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, owner_only, "{name} has mode {mode:o}");
    }
}

/// Signs in to the demo's console with its one-time password, chooses a password, and returns
/// the overview's HTML.
async fn demo_console_overview(port: u16, one_time: &str) -> Option<String> {
    let base = format!("http://127.0.0.1:{port}");
    let browser = browser();
    let login = browser
        .get(format!("{base}/console/login"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let signed_in = browser
        .post(format!("{base}/console/login"))
        .form(&[
            ("email", keyhole::demo::DEMO_CONSOLE_USER),
            ("password", one_time),
            ("csrf_token", &hidden(&login, "csrf_token")?),
            ("next", "/console"),
        ])
        .send()
        .await
        .ok()?;
    if signed_in.status() != StatusCode::SEE_OTHER {
        return None;
    }
    let form = browser
        .get(format!("{base}/console/password"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    browser
        .post(format!("{base}/console/password"))
        .form(&[
            ("csrf_token", hidden(&form, "csrf_token")?.as_str()),
            ("password", CONSOLE_PASSWORD),
            ("confirm", CONSOLE_PASSWORD),
        ])
        .send()
        .await
        .ok()?;
    browser
        .get(format!("{base}/console"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Issue 13's first step: a console account with a one-time password, shown once and stored
/// only as an argon2 hash; one account per address; a malformed address is refused.
#[tokio::test]
async fn admin_user_add_prints_a_one_time_password_and_stores_only_its_hash() {
    let cli = Cli::new();
    let printed = cli.json(&[
        "admin",
        "user",
        "add",
        "--email",
        " Ana.Lyst@Harmony.Example ",
        "--json",
    ]);
    assert_eq!(printed["email"], "ana.lyst@harmony.example");
    assert!(
        printed["sign_in"]
            .as_str()
            .unwrap()
            .ends_with("/console/login"),
        "{printed}"
    );
    let password = printed["one_time_password"].as_str().unwrap();
    assert!(password.len() >= 40, "{password}");
    let bytes = std::fs::read(cli.dir.path().join("k.db")).unwrap();
    let wal = std::fs::read(cli.dir.path().join("k.db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(
            !file
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "the one-time password is stored in the clear"
        );
    }
    assert!(
        cli.failure(&[
            "admin",
            "user",
            "add",
            "--email",
            "ana.lyst@harmony.example"
        ])
        .contains("already exists")
    );
    assert!(
        cli.failure(&["admin", "user", "add", "--email", "not an address"])
            .contains("is not an e-mail address")
    );
}
