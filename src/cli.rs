//! The command line: `serve`, `demo`, `migrate`, and the administrative commands that print a
//! secret once (with `--json`, as one JSON object for scripts).

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::{Catalog, ClientId, Email, FieldSet, UpstreamCustomerId};
use crate::secrets::{hash_password, random_token, token_hash};
use crate::startup::{encryption_key, open_store};
use crate::store::{FapiRequirements, NewPartner, PartnerKeys, PartnerRates, Store};
use crate::tokens::{ACTIVATION_DELAY, EncryptionKey, KeyRing, reseal};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "keyhole",
    version,
    about = "Partner-access gateway with delegated authorisation"
)]
pub struct Cli {
    /// Path of a keyhole.toml; every key can also be set as KEYHOLE_<KEY> (`__` between levels).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (production): database and shared state from the configuration.
    Serve,
    /// Run everything on this machine with demo data, and print a walkthrough.
    Demo,
    /// Apply database migrations (serve and demo also do this on start).
    Migrate,
    /// Manage partners (OAuth clients).
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Manage customer portal accounts.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Manage the security team's API tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage token-signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Export, verify and prune the access log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Print the OpenAPI document.
    Openapi,
    /// Serve only the built-in sample claims API (for the demo and load benchmarks).
    SampleUpstream {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

#[derive(Subcommand)]
pub enum PartnerCommand {
    /// Register a confidential client; prints client_id and client_secret once.
    Add(PartnerAdd),
}

#[derive(Args, Default)]
pub struct PartnerAdd {
    #[arg(long)]
    pub name: String,
    /// Registered redirect URI (repeatable); matched exactly.
    #[arg(long = "redirect-uri", required = true)]
    pub redirect_uris: Vec<String>,
    /// The most this partner may ever request, e.g. claims:status,claims:status_updated_at.
    #[arg(long, value_delimiter = ',', required = true)]
    pub fields: Vec<String>,
    /// Chosen client_id (default: derived from the name plus random characters).
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long)]
    pub burst: Option<u32>,
    #[arg(long)]
    pub grant_rate: Option<f64>,
    #[arg(long)]
    pub grant_burst: Option<u32>,
    /// Authorization requests must be pushed first (`POST /oauth/par`, RFC 9126).
    #[arg(long)]
    pub require_par: bool,
    /// Tokens must be DPoP-bound (RFC 9449): a token request without a proof is refused.
    #[arg(long)]
    pub require_dpop: bool,
    /// `private_key_jwt` (RFC 7523) with the keys at this https URI; no secret is issued.
    #[arg(long, conflicts_with = "jwks_file")]
    pub jwks_uri: Option<String>,
    /// `private_key_jwt` (RFC 7523) with the public keys in this JWKS file; no secret is issued.
    #[arg(long)]
    pub jwks_file: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum CustomerCommand {
    /// Create a portal account bound to an upstream customer id.
    Add {
        /// The insurer's customer id, e.g. CU-1001.
        #[arg(long)]
        id: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    #[command(subcommand)]
    Token(AdminTokenCommand),
    /// Accounts of people on the security team, for the console.
    #[command(subcommand)]
    User(AdminUserCommand),
    /// The record of every admin call.
    #[command(subcommand)]
    Audit(AdminAuditCommand),
}

#[derive(Subcommand)]
pub enum AdminUserCommand {
    /// Create a console account; prints a one-time password, to be replaced at the first
    /// sign-in (only its argon2 hash is stored).
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminAuditCommand {
    /// Remove admin-call records older than DATE (at most now minus
    /// `access_log.audit_retention_days`, by default `access_log.retention_days`).
    Prune {
        #[arg(long)]
        before: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminTokenCommand {
    /// Create a bearer token for the security team's API; printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List the tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id; its next call is refused.
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// A date-time in RFC 3339, or a date (midnight UTC).
pub fn parse_instant(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("`{s}` is neither an RFC 3339 date-time nor a YYYY-MM-DD date"))?;
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Write records (by time, RFC 3339 or YYYY-MM-DD), their signed checkpoints, the
    /// checkpoint key's public key and an end signed with it to one file that `keyhole log
    /// verify` checks without the database.
    Export {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// Where to write; `-` for standard output.
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
    },
    /// Check an export offline: the hash chain, every signature, and completeness (its signed
    /// end). Exits 1 when anything is broken or a record is not covered by a signature.
    Verify {
        file: PathBuf,
        /// A checkpoint key id (RFC 7638 thumbprint, as `keyhole log checkpoint-key` prints
        /// it) to trust; repeatable. Without one, the key inside the file is used, which
        /// proves the file consistent but not who signed it.
        #[arg(long = "trust-kid")]
        trust_kids: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove records older than DATE (at most now minus `access_log.retention_days`), up to
    /// the last signed checkpoint before it, so the rest stays verifiable.
    Prune {
        #[arg(long)]
        before: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the public key (JWK and kid) of the checkpoint key, for pinning with `log verify
    /// --trust-kid`; creates the key file (mode 0600) if it does not exist yet.
    CheckpointKey {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key: published at once, it signs once every running instance has
    /// loaded it (within 60 s; the time is printed); the old key signs until then and stays
    /// published until its tokens expire.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt every signing key under the key in FILE (created, owner-only, when absent),
    /// for rotating the encryption key; then point keys.encryption_key_file at FILE (or set
    /// KEYHOLE_KEYS__ENCRYPTION_KEY to its contents) and restart every instance.
    Rewrap {
        #[arg(long = "new-key-file", value_name = "FILE")]
        new_key_file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Redirect URIs must be absolute, without fragment, and https except on loopback.
pub fn check_redirect_uri(uri: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(uri).with_context(|| format!("redirect URI `{uri}` is not a URL"))?;
    if url.fragment().is_some() {
        bail!("redirect URI `{uri}` must not have a fragment");
    }
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!("redirect URI `{uri}` must use https (http only on loopback)"),
    }
}

fn print(json_out: bool, value: serde_json::Value, human: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

/// The keys of a partner registered for `private_key_jwt`, checked: at most one source, an
/// https URI (http only on loopback), or a file holding a JWKS of public keys.
pub fn registered_keys(add: &PartnerAdd) -> anyhow::Result<Option<PartnerKeys>> {
    match (&add.jwks_uri, &add.jwks_file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => bail!("use --jwks-uri or --jwks-file, not both"),
        (Some(uri), None) => Ok(Some(PartnerKeys::Uri(
            crate::oauth::client_assertion::check_jwks_uri(uri).context("--jwks-uri")?,
        ))),
        (None, Some(path)) => {
            let text =
                read_bounded(path).with_context(|| format!("--jwks-file {}", path.display()))?;
            crate::oauth::client_assertion::check_jwks(&text).context("--jwks-file")?;
            Ok(Some(PartnerKeys::Set(text)))
        }
    }
}

/// A JWKS file's text, read no further than one byte past the bound `check_jwks` enforces:
/// a device (`/dev/zero`), a FIFO or a huge file must be refused, not read to its end.
fn read_bounded(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = crate::oauth::client_assertion::MAX_JWKS_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        bail!("the JWKS is larger than {limit} bytes");
    }
    Ok(String::from_utf8(bytes)?)
}

/// Registers a partner; returns its client_id and the secret (shown once), or no secret for
/// a partner registered with keys.
pub async fn add_partner(
    store: &Store,
    catalog: &Catalog,
    add: &PartnerAdd,
) -> anyhow::Result<(ClientId, Option<String>)> {
    for uri in &add.redirect_uris {
        check_redirect_uri(uri)?;
    }
    let fields = FieldSet::parse(&add.fields.join(" ")).context("--fields")?;
    catalog.check(&fields).context("--fields")?;
    let client_id = match &add.client_id {
        Some(id) => ClientId::parse(id)?,
        None => {
            let slug: String = add
                .name
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .split('-')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let suffix = random_token("")?;
            let suffix: String = suffix
                .expose()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect();
            ClientId::parse(&format!(
                "{}-{suffix}",
                slug.chars().take(40).collect::<String>()
            ))?
        }
    };
    for (flag, rate) in [("--rate", add.rate), ("--grant-rate", add.grant_rate)] {
        if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            bail!("{flag} must be a positive number");
        }
    }
    let keys = registered_keys(add)?;
    // A partner with keys gets a secret too, so the column keeps its meaning, but nobody is
    // shown it and client authentication refuses secrets for such a partner anyway.
    let secret = random_token("kh_cs_")?;
    store
        .insert_partner(
            NewPartner {
                client_id: client_id.clone(),
                name: add.name.clone(),
                secret_hash: token_hash(secret.expose()),
                fapi: FapiRequirements {
                    require_par: add.require_par,
                    require_dpop: add.require_dpop,
                },
                redirect_uris: add.redirect_uris.clone(),
                fields,
                rates: PartnerRates {
                    per_second: add.rate,
                    burst: add.burst,
                    grant_per_second: add.grant_rate,
                    grant_burst: add.grant_burst,
                },
                keys: keys.clone(),
            },
            SystemClock.now(),
        )
        .await?;
    Ok((
        client_id,
        keys.is_none().then(|| secret.expose().to_owned()),
    ))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init(settings.log_format);
    match cli.command {
        Command::Serve => {
            let app = crate::startup::Application::build(settings, Default::default()).await?;
            tracing::info!(port = app.port(), "keyhole serving");
            app.run_until_stopped().await?;
        }
        Command::Demo => crate::demo::run(settings).await?,
        Command::Openapi => print!("{}", crate::http::openapi::document()?),
        Command::SampleUpstream { listen, workers } => {
            let listener = std::net::TcpListener::bind(listen)?;
            println!("sample claims API on http://{listen}");
            crate::sample_upstream::start(listener, workers)?.await?;
        }
        Command::Migrate => {
            open_store(&settings).await?;
            println!("migrations applied");
        }
        Command::Partner(PartnerCommand::Add(add)) => {
            let store = open_store(&settings).await?;
            let (client_id, secret) = add_partner(&store, &settings.catalog()?, &add).await?;
            match secret {
                Some(secret) => print(
                    add.json,
                    json!({ "client_id": client_id.as_str(), "client_secret": secret }),
                    format!(
                        "client_id:     {client_id}\nclient_secret: {secret}\n(the secret is shown only now; only its hash is stored)"
                    ),
                ),
                None => print(
                    add.json,
                    json!({ "client_id": client_id.as_str(), "token_endpoint_auth_method": "private_key_jwt" }),
                    format!(
                        "client_id:     {client_id}\n(authenticates with private_key_jwt: an assertion signed by one of its registered keys, aud = {})",
                        settings.issuer()
                    ),
                ),
            }
        }
        Command::Customer(CustomerCommand::Add {
            id,
            email,
            password,
            json,
        }) => {
            if settings.customer_login.is_some() {
                bail!(
                    "customers sign in through the provider in [customer_login]: built-in \
                     accounts are switched off (each customer's account is made at their first \
                     sign-in there)"
                );
            }
            if password.chars().count() < 10 {
                bail!("--password must have at least 10 characters");
            }
            if !email.contains('@') {
                bail!("--email must be an e-mail address");
            }
            let store = open_store(&settings).await?;
            let upstream = UpstreamCustomerId::parse(&id).context("--id")?;
            let customer = store
                .insert_customer(
                    &upstream,
                    &email,
                    hash_password(&password)?,
                    SystemClock.now(),
                )
                .await?;
            print(
                json,
                json!({ "customer_id": upstream.as_str(), "email": customer.email }),
                format!("customer {upstream} can now sign in as {}", customer.email),
            );
        }
        Command::Admin(AdminCommand::Token(AdminTokenCommand::Create { name, json })) => {
            let store = open_store(&settings).await?;
            let token = random_token("kh_adm_")?;
            let id = store
                .insert_admin_token(&name, token_hash(token.expose()), SystemClock.now())
                .await?;
            print(
                json,
                json!({ "id": id, "name": name, "token": token.expose() }),
                format!(
                    "admin token for {name}: {}\n(shown only now; only its hash is stored)",
                    token.expose()
                ),
            );
        }
        Command::Admin(AdminCommand::User(AdminUserCommand::Add { email, json })) => {
            let email = Email::parse(&email)?;
            let store = open_store(&settings).await?;
            let password = random_token("")?;
            let user = store
                .insert_console_user(&email, hash_password(password.expose())?, SystemClock.now())
                .await?;
            let sign_in = format!(
                "{}/console/login",
                settings.public_url.as_str().trim_end_matches('/')
            );
            print(
                json,
                json!({
                    "id": user.id,
                    "email": user.email.as_str(),
                    "one_time_password": password.expose(),
                    "sign_in": sign_in,
                }),
                format!(
                    "console user {email}: one-time password {}\n(shown only now; sign in at \
                     {sign_in} and set your own)",
                    password.expose()
                ),
            );
        }
        Command::Admin(AdminCommand::Token(AdminTokenCommand::List { json })) => {
            let store = open_store(&settings).await?;
            let tokens = store.admin_tokens().await?;
            if json {
                let items: Vec<_> = tokens
                    .iter()
                    .map(|t| json!({ "id": t.id, "name": t.name, "created_at": t.created_at, "revoked_at": t.revoked_at }))
                    .collect();
                println!("{}", json!({ "items": items }));
            } else {
                for t in tokens {
                    let state = t
                        .revoked_at
                        .map_or("active".to_owned(), |at| format!("revoked {at}"));
                    println!("{}  {}  created {}  {state}", t.id, t.name, t.created_at);
                }
            }
        }
        Command::Admin(AdminCommand::Token(AdminTokenCommand::Revoke { id, json })) => {
            let store = open_store(&settings).await?;
            if !store.revoke_admin_token(&id, SystemClock.now()).await? {
                bail!("no active admin token has the id {id}");
            }
            print(
                json,
                json!({ "id": id, "revoked": true }),
                format!("admin token {id} revoked"),
            );
        }
        Command::Admin(AdminCommand::Audit(AdminAuditCommand::Prune { before, json })) => {
            let before = parse_instant(&before)?;
            let store = Store::connect(&settings.database_url).await?;
            let removed = crate::access_log::prune::prune_audit(
                &store,
                before,
                SystemClock.now(),
                settings.access_log.audit_retention_days(),
            )
            .await?;
            print(
                json,
                json!({ "removed": removed }),
                format!("removed {removed} admin-call records from before {before}"),
            );
        }
        Command::Log(command) => run_log(&settings, command).await?,
        Command::Keys(KeysCommand::Rotate { json }) => {
            let store = open_store(&settings).await?;
            let encryption_key = encryption_key(&settings, &store).await?;
            let keys = KeyRing::load(
                store,
                Arc::new(SystemClock),
                settings.access_token_ttl_seconds,
                encryption_key,
            )
            .await?;
            let rotation = keys.rotate().await?;
            let human = format!(
                "new signing key {}: published now, signs from {} (in {} s, once every \
                 running instance has loaded it; the old key signs until then)",
                rotation.kid,
                rotation
                    .signs_from
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ACTIVATION_DELAY.as_secs(),
            );
            print(json, json!(rotation), human);
        }
        Command::Keys(KeysCommand::Rewrap { new_key_file, json }) => {
            rewrap(&settings, &new_key_file, json).await?
        }
    }
    Ok(())
}

/// `keys rewrap`: every signing key from the configured encryption key to the one in
/// `new_key_file`. Running it again is harmless: keys already under the new key stay.
async fn rewrap(settings: &Settings, new_key_file: &Path, json_out: bool) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let current = encryption_key(settings, &store).await?;
    let context = || format!("--new-key-file {}", new_key_file.display());
    let new = if new_key_file.exists() {
        crate::files::check_owner_only(new_key_file).with_context(context)?;
        EncryptionKey::read_file(new_key_file).with_context(context)?
    } else {
        EncryptionKey::create_file(new_key_file).with_context(context)?
    };
    if new.same_as(&current) {
        bail!(
            "{} holds the encryption key already configured: nothing to rotate",
            new_key_file.display()
        );
    }
    let report = reseal(&store, &new, Some(&current)).await?;
    let path = new_key_file.display();
    print(
        json_out,
        json!({
            "new_key_file": path.to_string(),
            "rewrapped": report.rewrapped + report.were_plain,
            "unchanged": report.unchanged,
        }),
        format!(
            "{} signing keys are now encrypted with the key in {path} ({} were already).\n\
             Next: point keys.encryption_key_file at {path} (or set KEYHOLE_KEYS__ENCRYPTION_KEY \
             to its contents) on every instance and restart them; until then they keep \
             signing with the key they loaded. Then destroy the old key and its copies.",
            report.rewrapped + report.were_plain,
            report.unchanged,
        ),
    );
    Ok(())
}

async fn run_log(settings: &Settings, command: LogCommand) -> anyhow::Result<()> {
    use crate::access_log::{CheckpointKey, export, prune};
    let key_file = &settings.access_log.checkpoint_key_file;
    match command {
        LogCommand::Export { from, to, output } => {
            let from = from.as_deref().map(parse_instant).transpose()?;
            let to = to.as_deref().map(parse_instant).transpose()?;
            // Only the gateway's own key may sign an export's end: never one made up here.
            let key = CheckpointKey::load(key_file)?;
            let store = open_store(settings).await?;
            let issuer = settings.issuer();
            let summary = if output.as_os_str() == "-" {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                export::export(&store, &key, &issuer, from, to, SystemClock.now(), &mut out).await?
            } else {
                // It holds customers' ids and partners' addresses: owner-only, like the log.
                let file = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(crate::files::OWNER_ONLY)
                        .open(&output)
                }
                .with_context(|| format!("creating {}", output.display()))?;
                let mut out = std::io::BufWriter::new(file);
                let summary =
                    export::export(&store, &key, &issuer, from, to, SystemClock.now(), &mut out)
                        .await?;
                println!("{}", serde_json::to_string(&summary)?);
                summary
            };
            tracing::info!(records = summary.records, "access log exported");
        }
        LogCommand::Verify {
            file,
            trust_kids,
            json,
        } => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let trusted = (!trust_kids.is_empty()).then_some(trust_kids.as_slice());
            let report = export::verify_file(std::io::BufReader::new(input), trusted)?;
            let chain = &report.chain;
            // Nothing vouches for records no signature covers (the signed end covers them all
            // in a file that verifies; this stays as a second guard).
            let unsigned = chain.unsigned_tail > 0;
            let human = match &chain.first_broken {
                None if unsigned => format!(
                    "UNSIGNED: {} of {} records are covered by no signature",
                    chain.unsigned_tail, chain.records
                ),
                None => format!(
                    "OK: {} records, all signed by {}{}",
                    chain.records,
                    report.keys.join(", "),
                    if report.keys_pinned {
                        ""
                    } else {
                        "\n(key taken from the file itself: pass --trust-kid with the kid `keyhole log checkpoint-key` prints to prove who signed)"
                    }
                ),
                Some(link) => format!(
                    "BROKEN in chain {} at record {}: {} ({} records verified)",
                    link.chain, link.seq, link.reason, chain.records
                ),
            };
            print(json, serde_json::to_value(&report)?, human);
            if !chain.ok || unsigned {
                std::process::exit(1);
            }
        }
        LogCommand::Prune { before, json } => {
            let before = parse_instant(&before)?;
            let store = open_store(settings).await?;
            let report = prune::prune(
                &store,
                before,
                SystemClock.now(),
                settings.access_log.retention_days,
            )
            .await?;
            let human = if report.chains.is_empty() {
                "nothing to remove: no signed checkpoint lies before that date".to_owned()
            } else {
                let through: Vec<String> = report
                    .chains
                    .iter()
                    .map(|c| format!("chain {} through {}", c.chain, c.through_seq))
                    .collect();
                format!(
                    "removed {} records ({})",
                    report.removed,
                    through.join(", ")
                )
            };
            print(json, serde_json::to_value(&report)?, human);
        }
        LogCommand::CheckpointKey { json } => {
            let (key, created) = CheckpointKey::load_or_create(key_file)?;
            let path = key_file.display();
            print(
                json,
                json!({
                    "kid": key.kid(),
                    "jwk": key.public_jwk(),
                    "file": path.to_string(),
                    "created": created,
                }),
                format!(
                    "checkpoint key {}{}\nkid: {}\npublic JWK: {}\n(pin it: keyhole log verify FILE --trust-kid {})",
                    path,
                    if created { " (created now)" } else { "" },
                    key.kid(),
                    key.public_jwk(),
                    key.kid()
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Red team: `--jwks-file` was read whole before its 64 KiB bound was checked, so a
    /// device, a FIFO or a huge file made `partner add` hang or eat memory. A FIFO that writes
    /// one byte past the bound and then stays open shows it: the bound must end the read.
    #[cfg(unix)]
    #[test]
    fn a_jwks_file_is_read_no_further_than_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("jwks.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let writer_path = fifo.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut pipe = std::fs::OpenOptions::new()
                .write(true)
                .open(&writer_path)
                .unwrap();
            let chunk = vec![b' '; 1024];
            for _ in 0..=crate::oauth::client_assertion::MAX_JWKS_BYTES / 1024 {
                if pipe.write_all(&chunk).is_err() {
                    return;
                }
            }
            // Held open (no end of file) until the test is over.
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(20));
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let add = PartnerAdd {
                jwks_file: Some(fifo),
                ..PartnerAdd::default()
            };
            let _ = tx.send(
                registered_keys(&add)
                    .map(|_| ())
                    .map_err(|e| format!("{e:#}")),
            );
        });
        let outcome = rx.recv_timeout(std::time::Duration::from_secs(5));
        let _ = done_tx.send(());
        let _ = writer.join();
        let error = outcome
            .expect("partner add kept reading past the JWKS bound")
            .expect_err("an oversized JWKS file is refused");
        assert!(error.contains("larger than"), "{error}");
    }

    #[test]
    fn redirect_uris_must_be_https_or_loopback() {
        assert!(check_redirect_uri("https://fone.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:9000/cb").is_ok());
        assert!(check_redirect_uri("http://fone.example/cb").is_err());
        assert!(check_redirect_uri("https://fone.example/cb#frag").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("/relative").is_err());
    }
}
