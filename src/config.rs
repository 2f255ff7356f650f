//! Settings: built-in defaults, then an optional `keyhole.toml`, then `KEYHOLE_*` variables
//! (`__` between nesting levels). Invalid settings fail at start and name the key.

use crate::domain::catalog::{Catalog, ResourceConfig, default_resources};
use crate::oidc::{
    DEFAULT_REAUTHENTICATE_AFTER_MINUTES, DEFAULT_SCOPES, ProviderSettings, is_token,
};
use crate::secrets::Secret;
use crate::store::{SqliteLocation, sqlite_location};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::{Host, Url};

/// The most an access token may live: long enough to poll, short enough that a stolen one dies
/// quickly even if nobody revokes it.
pub const MAX_ACCESS_TOKEN_TTL_SECONDS: u32 = 300;

/// The longest grace window for a retried refresh or code exchange. Okta's upper bound too:
/// beyond a minute a "retry" is no longer an HTTP client's timeout but a second use.
pub const MAX_REUSE_GRACE_SECONDS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("invalid configuration: `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("invalid configuration: {0}")]
    Catalog(#[from] crate::domain::CatalogError),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        Self::Parse(Box::new(e))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_public_url")]
    pub public_url: Url,
    #[serde(default = "default_database_url")]
    pub database_url: String,
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prepended to every shared-state key, so deployments (or tests) can share one Redis.
    #[serde(default = "default_state_key_prefix")]
    pub state_key_prefix: String,
    #[serde(default = "default_grant_lifetime_days")]
    pub grant_lifetime_days: u32,
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_seconds: u32,
    /// For this long after a refresh token or code was first used, its own client presenting
    /// it again (a retry after a lost answer) gets the same answer instead of having the grant
    /// revoked for reuse. 0 turns the window off.
    #[serde(default = "default_reuse_grace_seconds")]
    pub reuse_grace_seconds: u32,
    #[serde(default)]
    pub rate_limits: RateLimits,
    #[serde(default)]
    pub upstream: Upstream,
    #[serde(default)]
    pub session: SessionSettings,
    /// Security-console sessions: the people behind them can suspend partners, so they end
    /// sooner when idle than a customer's.
    #[serde(default = "SessionSettings::console")]
    pub console_session: SessionSettings,
    /// The security team's workforce OpenID provider; while set, console passwords are
    /// refused and people sign in there.
    #[serde(default)]
    pub console_login: Option<ConsoleLogin>,
    /// Customer sign-in through the insurer's OpenID provider; built-in passwords are then off.
    #[serde(default)]
    pub customer_login: Option<CustomerLogin>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// HTTP worker threads; absent = one per core. Fewer workers than cores can be cheaper per
    /// call when the load generator, the upstream or the database share the machine.
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
    #[serde(default)]
    pub access_log: AccessLogSettings,
    #[serde(default)]
    pub alerts: AlertSettings,
    /// FAPI 2.0: every partner must push its authorization requests (`POST /oauth/par`), not
    /// only those registered with `--require-par`.
    #[serde(default)]
    pub require_par: bool,
    /// DPoP proofs (RFC 9449): how fresh they must be, and whether the server's nonce is needed.
    #[serde(default)]
    pub dpop: DpopSettings,
    #[serde(default = "default_resources")]
    pub resources: BTreeMap<String, ResourceConfig>,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer, a TLS terminator). Anyone
    /// else's header counts for nothing: the TCP peer is the source address.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A second listener that serves `/metrics` without a token, for a private scrape
    /// network. On the main listener `/metrics` needs an admin token.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub keys: KeysSettings,
    /// Lets a plain-http `public_url` serve beyond loopback, where session cookies would
    /// cross the network without `Secure`. For a closed test network only.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Lets the gateway start although its database or key files are open to other users
    /// (with a warning at every start).
    #[serde(default)]
    pub allow_insecure_file_permissions: bool,
}

/// The key that encrypts the token-signing keys in the database. It must not live in the
/// database: a copy of the database (a backup, a dump) alone must not let anyone sign tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSettings {
    /// A file holding the key (base64 of 32 bytes), created owner-only on first start when
    /// absent. Absent from the settings = `keyhole-keys.key` beside the SQLite database file.
    pub encryption_key_file: Option<PathBuf>,
    /// The key itself (base64 of 32 bytes), e.g. from a secret manager as
    /// `KEYHOLE_KEYS__ENCRYPTION_KEY`, instead of a file.
    pub encryption_key: Option<Secret>,
}

/// Where the key that encrypts the signing keys comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionKeySource {
    File(PathBuf),
    Value(Secret),
    /// For an in-memory database, which dies with the process, so may its key.
    Ephemeral,
}

/// The file name of the default key file, beside the SQLite database file.
pub const DEFAULT_ENCRYPTION_KEY_FILE: &str = "keyhole-keys.key";

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub partner_per_second: f64,
    pub partner_burst: u32,
    pub grant_per_second: f64,
    pub grant_burst: u32,
    /// Calls without a valid token, per source address, on every surface that takes a
    /// bearer token (partner API, security team API): a flood of junk can neither grow the
    /// log nor the audit trail.
    #[serde(default = "default_unauthenticated_per_second")]
    pub unauthenticated_per_second: f64,
    #[serde(default = "default_unauthenticated_burst")]
    pub unauthenticated_burst: u32,
}

fn default_unauthenticated_per_second() -> f64 {
    5.0
}
fn default_unauthenticated_burst() -> u32 {
    20
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            partner_per_second: 50.0,
            partner_burst: 100,
            grant_per_second: 2.0,
            grant_burst: 10,
            unauthenticated_per_second: default_unauthenticated_per_second(),
            unauthenticated_burst: default_unauthenticated_burst(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub base_url: Url,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            base_url: parse_url("http://127.0.0.1:8081"),
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

/// Customer portal sessions: an idle timeout and an absolute one.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub idle_minutes: u32,
    pub absolute_hours: u32,
}

impl SessionSettings {
    pub fn console() -> Self {
        Self {
            idle_minutes: 10,
            absolute_hours: 10,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_minutes: 15,
            absolute_hours: 8,
        }
    }
}

/// `[customer_login]`: customers sign in through the insurer's own OpenID provider instead of
/// built-in accounts. The keys of `ProviderSettings`, plus which claim is the customer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomerLogin {
    pub issuer: String,
    pub client_id: String,
    /// `KEYHOLE_CUSTOMER_LOGIN__CLIENT_SECRET`.
    pub client_secret: Secret,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: String,
    /// Consent, revocation and the history download need a sign-in at most this old; an older
    /// one sends the customer back to the provider with `max_age`.
    #[serde(default = "default_reauthenticate_after_minutes")]
    pub reauthenticate_after_minutes: u32,
    /// The ID-token claim that carries the insurer's customer id (`CU-1001`).
    #[serde(default = "default_customer_id_claim")]
    pub customer_id_claim: String,
}

fn default_customer_id_claim() -> String {
    "sub".into()
}

impl CustomerLogin {
    pub fn provider(&self) -> ProviderSettings {
        ProviderSettings {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self.scopes.clone(),
            reauthenticate_after_minutes: self.reauthenticate_after_minutes,
        }
    }

    /// How old a sign-in may be for consent, revocation and the download.
    pub fn reauthenticate_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.reauthenticate_after_minutes) * 60)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "customer_login",
            problem,
        };
        self.provider()
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        if !is_token(&self.customer_id_claim, 128) {
            return Err(invalid("`customer_id_claim` must be a claim name".into()));
        }
        Ok(())
    }
}

/// `[console_login]`: console sign-in through the security team's workforce OpenID provider.
/// The keys of `ProviderSettings` (spelled out: serde cannot refuse unknown keys through
/// `flatten`), plus who may enter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleLogin {
    pub issuer: String,
    pub client_id: String,
    /// `KEYHOLE_CONSOLE_LOGIN__CLIENT_SECRET`.
    pub client_secret: Secret,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: String,
    /// Every console sign-in asks the provider for a sign-in at most this old (`max_age`).
    #[serde(default = "default_reauthenticate_after_minutes")]
    pub reauthenticate_after_minutes: u32,
    /// Only people whose groups claim lists this group get in.
    pub required_group: String,
    /// The ID-token claim that lists the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

impl ConsoleLogin {
    pub fn provider(&self) -> ProviderSettings {
        ProviderSettings {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self.scopes.clone(),
            reauthenticate_after_minutes: self.reauthenticate_after_minutes,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "console_login",
            problem,
        };
        self.provider()
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        if !is_token(&self.groups_claim, 128) {
            return Err(invalid("`groups_claim` must be a claim name".into()));
        }
        if self.required_group.trim().is_empty() || self.required_group.len() > 256 {
            return Err(invalid(
                "`required_group` must name a group (1 to 256 characters)".into(),
            ));
        }
        Ok(())
    }
}

fn default_oidc_scopes() -> String {
    DEFAULT_SCOPES.to_owned()
}
fn default_reauthenticate_after_minutes() -> u32 {
    DEFAULT_REAUTHENTICATE_AFTER_MINUTES
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}

/// Signed checkpoints of the access log's hash chain, and how long records are kept.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSettings {
    /// The head of the chain is signed at least every this many records…
    pub checkpoint_every: u32,
    /// …and, when records were added, at least this often, so that deleting the newest
    /// records is detectable after at most this long.
    pub checkpoint_interval_seconds: u32,
    /// `keyhole log prune` refuses to remove records younger than this. The default is the
    /// seven years the insurer's privacy statement names for statutory records.
    pub retention_days: u32,
    /// The Ed25519 key that signs checkpoints and exports, in a file of its own (PKCS#8 PEM,
    /// mode 0600, created on first start): kept out of the database, so that whoever can
    /// rewrite the database cannot re-sign what they rewrote. Relative paths start from the
    /// working directory, as the default SQLite database does.
    pub checkpoint_key_file: PathBuf,
    /// `keyhole admin audit prune` refuses to remove admin-call records younger than this;
    /// absent, the access log's `retention_days`, since the audit trail is the record of who
    /// read that log.
    pub audit_retention_days: Option<u32>,
    /// Where a record is durable before its answer may leave: see [`Durability`].
    pub durability: Durability,
    /// This instance's journal (`durability = "journal"`): segment files, the chain id and a
    /// lock, all owner-only. Each instance needs a directory of its own, on a disk that
    /// survives a restart.
    pub journal_dir: PathBuf,
}

/// The durability point of an access-log record.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Appended to the instance's journal with a group `fdatasync`, copied into the database
    /// within seconds; on start, what is not yet there is copied first.
    #[default]
    Journal,
    /// Committed to the database before the answer leaves, for instances without a
    /// persistent disk of their own.
    Database,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval_seconds: 60,
            retention_days: 2557,
            checkpoint_key_file: PathBuf::from("keyhole-checkpoint.key"),
            audit_retention_days: None,
            durability: Durability::Journal,
            journal_dir: PathBuf::from("keyhole-journal"),
        }
    }
}

impl AccessLogSettings {
    pub fn audit_retention_days(&self) -> u32 {
        self.audit_retention_days.unwrap_or(self.retention_days)
    }

    /// The latest time a checkpoint anchoring a pruned log may have been signed: records go
    /// only once older than the retention period, and their checkpoint followed them within
    /// the checkpoint interval (a day of slack on top).
    pub fn anchor_signed_before(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.retention_days))
            + chrono::Duration::seconds(i64::from(self.checkpoint_interval_seconds))
            + chrono::Duration::days(1)
    }
}

/// One anomaly rule: it fires when a partner's count in the window reaches `threshold`; with
/// `suspend`, the partner is also suspended at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub threshold: u64,
    #[serde(default)]
    pub suspend: bool,
}

impl AlertRule {
    const fn new(threshold: u64) -> Self {
        Self {
            threshold,
            suspend: false,
        }
    }
}

/// How DPoP proofs (RFC 9449) are judged.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DpopSettings {
    /// A proof's `iat` may lie this many seconds before or after our clock; its `jti` is
    /// remembered (in shared state, by every instance) for twice as long.
    pub iat_window_seconds: u32,
    /// Every proof must carry a nonce this server issued (`DPoP-Nonce`, `use_dpop_nonce`):
    /// proofs made in advance, by a client whose clock is wrong or by whoever stole one, stop
    /// working when the nonce changes.
    pub require_nonce: bool,
}

impl Default for DpopSettings {
    fn default() -> Self {
        Self {
            iat_window_seconds: 60,
            require_nonce: false,
        }
    }
}

/// The anomaly report's rules and their thresholds, all over the last `window_minutes`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    pub window_minutes: u32,
    /// Distinct customers whose data one partner read.
    pub distinct_customers: AlertRule,
    /// Refused calls (`not_found`, `denied`, `invalid_token`) of one partner.
    pub refused_calls: AlertRule,
    /// Calls for records or fields beyond the partner's grants (`denied`).
    pub beyond_grants: AlertRule,
    /// Reads at hours of the day (UTC) in which the partner made less than
    /// `unusual_hour_share` of its reads over the previous `baseline_days`.
    pub unusual_hours: AlertRule,
    pub baseline_days: u32,
    pub unusual_hour_share: f64,
    /// Partners with fewer reads than this in the baseline have no usual hours yet.
    pub baseline_min_reads: u64,
    /// How often the rules run in the background to apply automatic suspension.
    pub evaluate_every_seconds: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            window_minutes: 60,
            distinct_customers: AlertRule::new(200),
            refused_calls: AlertRule::new(100),
            beyond_grants: AlertRule::new(20),
            unusual_hours: AlertRule::new(20),
            baseline_days: 28,
            unusual_hour_share: 0.01,
            baseline_min_reads: 500,
            evaluate_every_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn parse_url(s: &str) -> Url {
    // Only ever called with the literals below, which the tests parse.
    Url::parse(s).unwrap_or_else(|_| unreachable!("built-in URL literal"))
}
fn default_public_url() -> Url {
    parse_url("http://127.0.0.1:8080")
}
fn default_database_url() -> String {
    "sqlite://keyhole.db?mode=rwc".to_owned()
}
fn default_state_key_prefix() -> String {
    "kh:".to_owned()
}
fn default_grant_lifetime_days() -> u32 {
    90
}
fn default_access_token_ttl() -> u32 {
    MAX_ACCESS_TOKEN_TTL_SECONDS
}
fn default_reuse_grace_seconds() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_connect_timeout_ms() -> u64 {
    500
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: default_public_url(),
            database_url: default_database_url(),
            redis_url: None,
            state_key_prefix: default_state_key_prefix(),
            grant_lifetime_days: default_grant_lifetime_days(),
            access_token_ttl_seconds: default_access_token_ttl(),
            reuse_grace_seconds: default_reuse_grace_seconds(),
            rate_limits: RateLimits::default(),
            upstream: Upstream::default(),
            session: SessionSettings::default(),
            console_session: SessionSettings::console(),
            console_login: None,
            customer_login: None,
            log_format: LogFormat::default(),
            workers: None,
            access_log: AccessLogSettings::default(),
            alerts: AlertSettings::default(),
            require_par: false,
            dpop: DpopSettings::default(),
            resources: default_resources(),
            trusted_proxies: Vec::new(),
            metrics_listen: None,
            keys: KeysSettings::default(),
            allow_insecure_http: false,
            allow_insecure_file_permissions: false,
        }
    }
}

impl Settings {
    /// Loads the file (when given, it must exist) and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file, Env::prefixed("KEYHOLE_").split("__")))
    }

    fn figment(file: Option<&Path>, env: Env) -> Figment {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(env)
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.access_token_ttl_seconds == 0
            || self.access_token_ttl_seconds > MAX_ACCESS_TOKEN_TTL_SECONDS
        {
            return invalid("access_token_ttl_seconds", "must be between 1 and 300");
        }
        if self.reuse_grace_seconds > MAX_REUSE_GRACE_SECONDS {
            return invalid("reuse_grace_seconds", "must be between 0 and 60");
        }
        if !(1..=300).contains(&self.dpop.iat_window_seconds) {
            return invalid("dpop.iat_window_seconds", "must be between 1 and 300");
        }
        if !(1..=3650).contains(&self.grant_lifetime_days) {
            return invalid("grant_lifetime_days", "must be between 1 and 3650");
        }
        if !matches!(self.public_url.scheme(), "http" | "https")
            || self.public_url.host_str().is_none()
        {
            return invalid("public_url", "must be an absolute http(s) URL");
        }
        if self.public_url.query().is_some() || self.public_url.fragment().is_some() {
            return invalid("public_url", "must not have a query or fragment");
        }
        if self.public_url.scheme() == "http" && !self.allow_insecure_http && !self.only_local() {
            return invalid(
                "public_url",
                "is plain http while the gateway is reachable beyond this machine (`listen` or \
                 the URL's host is not loopback): sign-in sessions would cross the network \
                 unencrypted. Use an https public_url (TLS in front of the gateway), or set \
                 allow_insecure_http = true (KEYHOLE_ALLOW_INSECURE_HTTP) on a closed test network",
            );
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return invalid("database_url", "must be a sqlite:// or postgres:// URL");
        }
        if self
            .redis_url
            .as_deref()
            .is_some_and(|url| !url.starts_with("redis://"))
        {
            return invalid("redis_url", "must be a redis:// URL");
        }
        if self.state_key_prefix.is_empty()
            || self.state_key_prefix.len() > 64
            || self.state_key_prefix.chars().any(char::is_whitespace)
        {
            return invalid(
                "state_key_prefix",
                "must be 1 to 64 characters without spaces",
            );
        }
        if !matches!(self.upstream.base_url.scheme(), "http" | "https") {
            return invalid("upstream.base_url", "must be an http(s) URL");
        }
        if self.upstream.timeout_ms == 0 || self.upstream.connect_timeout_ms == 0 {
            return invalid("upstream.timeout_ms", "timeouts must be positive");
        }
        let rl = &self.rate_limits;
        if !(rl.partner_per_second > 0.0
            && rl.grant_per_second > 0.0
            && rl.unauthenticated_per_second > 0.0)
            || rl.partner_burst == 0
            || rl.grant_burst == 0
            || rl.unauthenticated_burst == 0
        {
            return invalid("rate_limits", "rates and bursts must be positive");
        }
        if self.session.idle_minutes == 0 || self.session.absolute_hours == 0 {
            return invalid("session", "timeouts must be positive");
        }
        if self.console_session.idle_minutes == 0 || self.console_session.absolute_hours == 0 {
            return invalid("console_session", "timeouts must be positive");
        }
        if let Some(console_login) = &self.console_login {
            console_login.validate()?;
        }
        if let Some(customer_login) = &self.customer_login {
            customer_login.validate()?;
        }
        let log = &self.access_log;
        if log.checkpoint_every == 0 || log.checkpoint_interval_seconds == 0 {
            return invalid("access_log", "checkpoint intervals must be positive");
        }
        if !(1..=36_500).contains(&log.retention_days) {
            return invalid("access_log.retention_days", "must be between 1 and 36500");
        }
        if !(1..=36_500).contains(&log.audit_retention_days()) {
            return invalid(
                "access_log.audit_retention_days",
                "must be between 1 and 36500",
            );
        }
        if log.checkpoint_key_file.as_os_str().is_empty() {
            return invalid("access_log.checkpoint_key_file", "must name a file");
        }
        if log.durability == Durability::Journal && log.journal_dir.as_os_str().is_empty() {
            return invalid("access_log.journal_dir", "must name a directory");
        }
        let alerts = &self.alerts;
        if !(1..=525_600).contains(&alerts.window_minutes)
            || !(1..=3650).contains(&alerts.baseline_days)
            || alerts.evaluate_every_seconds == 0
        {
            return invalid(
                "alerts",
                "window_minutes must be 1 to 525600, baseline_days 1 to 3650, evaluate_every_seconds positive",
            );
        }
        for (key, rule) in [
            ("alerts.distinct_customers", alerts.distinct_customers),
            ("alerts.refused_calls", alerts.refused_calls),
            ("alerts.beyond_grants", alerts.beyond_grants),
            ("alerts.unusual_hours", alerts.unusual_hours),
        ] {
            if rule.threshold == 0 {
                return invalid(key, "threshold must be at least 1");
            }
        }
        if !(0.0..1.0).contains(&alerts.unusual_hour_share) {
            return invalid(
                "alerts.unusual_hour_share",
                "must be at least 0 and below 1",
            );
        }
        Catalog::build(&self.resources)?;
        self.encryption_key_source()?;
        Ok(())
    }

    /// Both where the gateway listens and where browsers reach it are this machine.
    fn only_local(&self) -> bool {
        let host_is_loopback = match self.public_url.host() {
            Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        self.listen.ip().is_loopback() && host_is_loopback
    }

    /// The key that encrypts the signing keys: the value, else the file, else the default
    /// file beside a SQLite database. A PostgreSQL deployment has no such place and usually
    /// several instances, which must share one key, so it names the key explicitly.
    pub fn encryption_key_source(&self) -> Result<EncryptionKeySource, ConfigError> {
        let invalid = |key, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_owned(),
        };
        match (&self.keys.encryption_key, &self.keys.encryption_key_file) {
            (Some(_), Some(_)) => Err(invalid(
                "keys",
                "set encryption_key or encryption_key_file, not both",
            )),
            (Some(value), None) => {
                crate::tokens::EncryptionKey::from_base64(value.expose()).map_err(|_| {
                    invalid(
                        "keys.encryption_key",
                        "must be the base64 of 32 random bytes",
                    )
                })?;
                Ok(EncryptionKeySource::Value(value.clone()))
            }
            (None, Some(path)) if path.as_os_str().is_empty() => {
                Err(invalid("keys.encryption_key_file", "must not be empty"))
            }
            (None, Some(path)) => Ok(EncryptionKeySource::File(path.clone())),
            (None, None) => match sqlite_location(&self.database_url) {
                Some(SqliteLocation::Memory) => Ok(EncryptionKeySource::Ephemeral),
                Some(SqliteLocation::File { path, .. }) => Ok(EncryptionKeySource::File(
                    path.with_file_name(DEFAULT_ENCRYPTION_KEY_FILE),
                )),
                None => Err(invalid(
                    "keys.encryption_key_file",
                    "is required with a PostgreSQL database_url, with the same key on every \
                     instance (or set keys.encryption_key, KEYHOLE_KEYS__ENCRYPTION_KEY)",
                )),
            },
        }
    }

    /// The issuer: `public_url` without a trailing slash (RFC 8414 §2).
    pub fn issuer(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// The partner API, the audience of every access token.
    pub fn audience(&self) -> String {
        format!("{}/partner", self.issuer())
    }

    /// Cookies get `Secure` and the `__Host-` prefix whenever the public URL is https (plain
    /// http is refused beyond loopback unless `allow_insecure_http`).
    pub fn cookies_secure(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        Ok(Catalog::build(&self.resources)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn load_toml(toml: &str) -> Result<Settings, ConfigError> {
        Settings::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    #[test]
    fn defaults_are_valid() {
        let s = load_toml("").unwrap();
        assert_eq!(s.access_token_ttl_seconds, 300);
        assert_eq!(s.audience(), "http://127.0.0.1:8080/partner");
        assert!(s.catalog().unwrap().resource("claims").is_some());
        Settings::default().validate().unwrap();
    }

    #[test]
    fn a_too_long_token_lifetime_names_the_key() {
        let err = load_toml("access_token_ttl_seconds = 3600").unwrap_err();
        assert!(
            err.to_string().contains("access_token_ttl_seconds"),
            "{err}"
        );
    }

    #[test]
    fn the_reuse_grace_window_defaults_to_five_seconds_and_is_at_most_a_minute() {
        assert_eq!(load_toml("").unwrap().reuse_grace_seconds, 5);
        assert_eq!(
            load_toml("reuse_grace_seconds = 0")
                .unwrap()
                .reuse_grace_seconds,
            0,
            "0 turns it off"
        );
        assert_eq!(
            load_toml("reuse_grace_seconds = 60")
                .unwrap()
                .reuse_grace_seconds,
            60
        );
        let err = load_toml("reuse_grace_seconds = 61").unwrap_err();
        assert!(err.to_string().contains("`reuse_grace_seconds`"), "{err}");
    }

    #[test]
    fn zero_workers_is_refused_and_a_worker_count_is_kept() {
        let err = load_toml("workers = 0").unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
        assert_eq!(
            load_toml("workers = 1").unwrap().workers.map(|w| w.get()),
            Some(1)
        );
        assert_eq!(load_toml("").unwrap().workers, None);
    }

    #[test]
    fn alert_rules_take_a_threshold_and_optional_containment() {
        let s = load_toml(
            "[alerts]\nwindow_minutes = 5\ndistinct_customers = { threshold = 3, suspend = true }",
        )
        .unwrap();
        assert_eq!(s.alerts.window_minutes, 5);
        assert_eq!(
            s.alerts.distinct_customers,
            AlertRule {
                threshold: 3,
                suspend: true
            }
        );
        assert!(!s.alerts.refused_calls.suspend);
        let err = load_toml("[access_log]\ncheckpoint_every = 0").unwrap_err();
        assert!(err.to_string().contains("access_log"), "{err}");
    }

    #[test]
    fn an_http_public_url_off_loopback_is_refused_unless_allowed() {
        for toml in [
            "listen = \"0.0.0.0:8080\"\npublic_url = \"http://127.0.0.1:8080\"",
            "listen = \"0.0.0.0:8080\"\npublic_url = \"http://partners.example\"",
            "public_url = \"http://partners.example\"",
        ] {
            let err = load_toml(toml).unwrap_err().to_string();
            assert!(err.contains("`public_url`"), "{toml}: {err}");
            assert!(err.contains("allow_insecure_http"), "{toml}: {err}");
            let allowed = load_toml(&format!("allow_insecure_http = true\n{toml}")).unwrap();
            assert!(!allowed.cookies_secure());
        }
        let behind_tls =
            load_toml("listen = \"0.0.0.0:8080\"\npublic_url = \"https://partners.example\"")
                .unwrap();
        assert!(behind_tls.cookies_secure());
        load_toml("listen = \"127.0.0.1:8080\"\npublic_url = \"http://localhost:8080\"").unwrap();
        load_toml("listen = \"[::1]:8080\"\npublic_url = \"http://[::1]:8080\"").unwrap();
    }

    #[test]
    fn an_unknown_key_is_an_error() {
        let err = load_toml("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn a_malformed_value_names_the_key() {
        let err = load_toml("[upstream]\nbase_url = \"not a url\"").unwrap_err();
        assert!(err.to_string().contains("base_url"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn nested_keys_come_from_double_underscore_variables() {
        figment::Jail::expect_with(|jail| {
            // Not the caller's KEYHOLE_* (CI sets a PostgreSQL database_url).
            jail.clear_env();
            jail.set_env("KEYHOLE_UPSTREAM__BASE_URL", "http://127.0.0.1:9999");
            jail.set_env("KEYHOLE_GRANT_LIFETIME_DAYS", "30");
            jail.set_env("KEYHOLE_REUSE_GRACE_SECONDS", "30");
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let s = Settings::from_figment(figment).map_err(|e| e.to_string())?;
            assert_eq!(s.upstream.base_url.as_str(), "http://127.0.0.1:9999/");
            assert_eq!(s.grant_lifetime_days, 30);
            assert_eq!(s.reuse_grace_seconds, 30);
            assert_eq!(
                s.access_log.audit_retention_days(),
                2557,
                "the log's by default"
            );
            jail.set_env(
                "KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE",
                "/etc/keyhole/ck.key",
            );
            jail.set_env("KEYHOLE_ACCESS_LOG__AUDIT_RETENTION_DAYS", "400");
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let s = Settings::from_figment(figment).map_err(|e| e.to_string())?;
            assert_eq!(
                s.access_log.checkpoint_key_file,
                PathBuf::from("/etc/keyhole/ck.key")
            );
            assert_eq!(s.access_log.audit_retention_days(), 400);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_encryption_key_comes_from_the_environment_a_file_or_beside_the_database() {
        let key = crate::tokens::EncryptionKey::generate()
            .unwrap()
            .to_base64();
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("KEYHOLE_KEYS__ENCRYPTION_KEY", key.as_str());
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let s = Settings::from_figment(figment).map_err(|e| e.to_string())?;
            assert_eq!(
                s.encryption_key_source().unwrap(),
                EncryptionKeySource::Value(Secret::new(key.to_string()))
            );
            assert!(
                !format!("{s:?}").contains(key.as_str()),
                "never in a debug print"
            );

            jail.set_env("KEYHOLE_KEYS__ENCRYPTION_KEY", "c2hvcnQ=");
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(err.contains("keys.encryption_key"), "{err}");
            assert!(!err.contains("c2hvcnQ="), "the value is not echoed: {err}");
            Ok(())
        });
        let s = load_toml("database_url = \"sqlite:///var/lib/keyhole/k.db?mode=rwc\"").unwrap();
        assert_eq!(
            s.encryption_key_source().unwrap(),
            EncryptionKeySource::File("/var/lib/keyhole/keyhole-keys.key".into())
        );
        let s = load_toml("[keys]\nencryption_key_file = \"/etc/keyhole/k.key\"").unwrap();
        assert_eq!(
            s.encryption_key_source().unwrap(),
            EncryptionKeySource::File("/etc/keyhole/k.key".into())
        );
        let s = load_toml("database_url = \"sqlite::memory:\"").unwrap();
        assert_eq!(
            s.encryption_key_source().unwrap(),
            EncryptionKeySource::Ephemeral
        );
        let err = load_toml("database_url = \"postgres://db/keyhole\"").unwrap_err();
        assert!(
            err.to_string().contains("keys.encryption_key_file"),
            "{err}"
        );
        let err = load_toml(&format!(
            "[keys]\nencryption_key_file = \"k.key\"\nencryption_key = \"{}\"",
            key.as_str()
        ))
        .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn customer_login_takes_defaults_its_secret_from_the_environment_and_names_bad_keys() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "KEYHOLE_CUSTOMER_LOGIN__ISSUER",
                "https://id.harmony.example",
            );
            jail.set_env("KEYHOLE_CUSTOMER_LOGIN__CLIENT_ID", "keyhole");
            jail.set_env("KEYHOLE_CUSTOMER_LOGIN__CLIENT_SECRET", "from-the-vault");
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let s = Settings::from_figment(figment).map_err(|e| e.to_string())?;
            let login = s.customer_login.clone().unwrap();
            assert_eq!(login.client_secret.expose(), "from-the-vault");
            assert_eq!(login.customer_id_claim, "sub");
            assert_eq!(login.scopes, "openid email profile");
            assert_eq!(
                login.reauthenticate_after(),
                std::time::Duration::from_secs(600)
            );
            assert!(!format!("{s:?}").contains("from-the-vault"));
            Ok(())
        });
        assert!(load_toml("").unwrap().customer_login.is_none());
        let base = "[customer_login]\nclient_id = \"k\"\nclient_secret = \"s\"\n";
        for (extra, named) in [
            ("issuer = \"http://id.harmony.example\"", "`issuer`"),
            (
                "issuer = \"https://id.harmony.example\"\ncustomer_id_claim = \"has space\"",
                "`customer_id_claim`",
            ),
            (
                "issuer = \"https://id.harmony.example\"\nreauthenticate_after_minutes = 0",
                "`reauthenticate_after_minutes`",
            ),
        ] {
            let err = load_toml(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`customer_login`") && err.contains(named),
                "{err}"
            );
        }
        let err = load_toml(&format!(
            "{base}issuer = \"https://x.example\"\ncustomer_claim = \"x\""
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("customer_claim"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_secret_that_is_not_a_string_is_refused_without_being_shown() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "KEYHOLE_CUSTOMER_LOGIN__ISSUER",
                "https://id.harmony.example",
            );
            jail.set_env("KEYHOLE_CUSTOMER_LOGIN__CLIENT_ID", "keyhole");
            for secret in ["918273645501", "-73645501", "7.25e3", "true"] {
                jail.set_env("KEYHOLE_CUSTOMER_LOGIN__CLIENT_SECRET", secret);
                let figment = Figment::from(Serialized::defaults(Settings::default()))
                    .merge(Env::prefixed("KEYHOLE_").split("__"));
                let err = Settings::from_figment(figment).unwrap_err().to_string();
                assert!(err.contains("is not shown"), "{err}");
                for shown in [secret, "7250", "73645501"] {
                    assert!(!err.contains(shown), "{err}");
                }
            }
            // Quoted, the digits are the secret.
            jail.set_env("KEYHOLE_CUSTOMER_LOGIN__CLIENT_SECRET", "\"918273645501\"");
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let s = Settings::from_figment(figment).map_err(|e| e.to_string())?;
            assert_eq!(
                s.customer_login.unwrap().client_secret.expose(),
                "918273645501"
            );
            Ok(())
        });
        let err = load_toml(
            "[customer_login]\nissuer = \"https://id.harmony.example\"\nclient_id = \"k\"\n\
             client_secret = 918273645501\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("918273645501"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn console_login_takes_defaults_its_secret_from_the_environment_and_names_bad_keys() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "KEYHOLE_CONSOLE_LOGIN__ISSUER",
                "https://login.harmony.example",
            );
            jail.set_env("KEYHOLE_CONSOLE_LOGIN__CLIENT_ID", "keyhole-console");
            jail.set_env("KEYHOLE_CONSOLE_LOGIN__CLIENT_SECRET", "from-the-vault");
            jail.set_env("KEYHOLE_CONSOLE_LOGIN__REQUIRED_GROUP", "security-team");
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("KEYHOLE_").split("__"));
            let s = Settings::from_figment(figment).map_err(|e| e.to_string())?;
            let login = s.console_login.clone().unwrap();
            assert_eq!(login.client_secret.expose(), "from-the-vault");
            assert_eq!(login.scopes, "openid email profile");
            assert_eq!(login.groups_claim, "groups");
            assert_eq!(login.reauthenticate_after_minutes, 10);
            assert!(!format!("{s:?}").contains("from-the-vault"));
            Ok(())
        });
        assert!(load_toml("").unwrap().console_login.is_none());
        let base =
            "[console_login]\nclient_id = \"k\"\nclient_secret = \"s\"\nrequired_group = \"sec\"\n";
        for (extra, named) in [
            ("issuer = \"http://login.harmony.example\"", "`issuer`"),
            (
                "issuer = \"https://login.harmony.example\"\nscopes = \"email\"",
                "`scopes`",
            ),
            (
                "issuer = \"https://login.harmony.example\"\ngroups_claim = \"\"",
                "`groups_claim`",
            ),
        ] {
            let err = load_toml(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`console_login`") && err.contains(named),
                "{err}"
            );
        }
        let err = load_toml(&format!(
            "{base}issuer = \"https://x.example\"\nrequired_gruop = \"x\""
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("required_gruop"), "{err}");
        load_toml(&format!("{base}issuer = \"http://127.0.0.1:9000\"")).unwrap();
    }

    #[test]
    fn a_configured_catalog_replaces_the_default() {
        let s = load_toml(
            r#"
            [resources.vehicle_orders]
            item_path = "/orders/{id}"
            list_path = "/customers/{customer_id}/orders"
            owner_pointer = "/owner"
            [resources.vehicle_orders.fields.stage]
            pointer = "/stage"
            label = "Order stage"
            "#,
        )
        .unwrap();
        let catalog = s.catalog().unwrap();
        assert!(catalog.resource("vehicle_orders").is_some());
        assert!(catalog.resource("claims").is_none());
    }
}
