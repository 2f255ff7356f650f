//! Builds the application: binds its own listener (so tests ask for port 0), wires the state,
//! and returns a server that runs until SIGTERM or SIGINT, then drains in-flight requests.

use crate::access_log::CheckpointKey;
use crate::app::App;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{EncryptionKeySource, Settings};
use crate::files::{self, FileError};
use crate::http::{self, demo::DemoPartner, middleware};
use crate::metrics::Metrics;
use crate::oidc::RelyingParty;
use crate::proxy::ProxyCaches;
use crate::state::{MemoryBackend, RedisBackend, SharedState};
use crate::store::{SqliteLocation, Store, sqlite_location};
use crate::tokens::{EncryptionKey, KeyRing, SealError, Verifier, sealing::is_sealed};
use crate::upstream::UpstreamClient;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App as ActixApp, HttpServer, web};
use anyhow::{Context, bail};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tracing_actix_web::TracingLogger;

pub struct Options {
    pub clock: SharedClock,
    pub demo: Option<DemoPartner>,
    pub workers: Option<usize>,
    /// A listener bound by the caller; tests bind port 0 first so `public_url` can name it.
    pub listener: Option<TcpListener>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            demo: None,
            workers: None,
            listener: None,
        }
    }
}

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    metrics_server: Option<Server>,
    app: web::Data<App>,
}

impl Application {
    pub async fn build(settings: Settings, options: Options) -> anyhow::Result<Self> {
        settings.validate()?;
        let catalog = settings.catalog()?;
        // Before anything else is touched: a key file others can read refuses the start.
        let key_file = &settings.access_log.checkpoint_key_file;
        let (checkpoint_key, created) = CheckpointKey::load_or_create(key_file)
            .context("loading the access log's checkpoint key")?;
        if created {
            tracing::info!(
                path = %key_file.display(),
                kid = checkpoint_key.kid(),
                "created the access log's checkpoint key; pin its kid (keyhole log checkpoint-key)"
            );
        }
        let store = open_store(&settings).await?;
        let encryption_key = encryption_key(&settings, &store).await?;
        let dpop = crate::dpop::Dpop::new(
            &settings.dpop,
            settings.issuer(),
            encryption_key.derive("keyhole dpop nonce v1"),
        );
        let state = match &settings.redis_url {
            None => SharedState::new(
                Arc::new(MemoryBackend::default()),
                settings.state_key_prefix.clone(),
            ),
            Some(url) => SharedState::new(
                Arc::new(
                    RedisBackend::connect(url, &settings.state_key_prefix)
                        .await
                        .context("connecting to Redis")?,
                ),
                settings.state_key_prefix.clone(),
            ),
        };
        let keys = Arc::new(
            KeyRing::load(
                store.clone(),
                options.clock.clone(),
                settings.access_token_ttl_seconds,
                encryption_key,
            )
            .await
            .context("loading signing keys")?,
        );
        let verifier = Verifier::new(keys.clone(), &settings.issuer(), &settings.audience());
        let listener = match options.listener {
            Some(listener) => listener,
            None => TcpListener::bind(settings.listen)
                .with_context(|| format!("binding {}", settings.listen))?,
        };
        let port = listener.local_addr()?.port();
        let metrics = Arc::new(Metrics::default());
        let log_store = store
            .dedicated(&settings.database_url)
            .await
            .context("connecting the access-log writer")?;
        let access_log =
            crate::access_log::start::start(&settings.access_log, log_store, metrics.clone())
                .await?;
        let proxy = ProxyCaches::new(settings.rate_limits);
        let console_login = match &settings.console_login {
            Some(login) => {
                let callback = url::Url::parse(&format!(
                    "{}{}",
                    settings.issuer(),
                    crate::http::console::oidc::CALLBACK_PATH
                ))
                .context("the console's sign-in callback URL")?;
                Some(Arc::new(
                    RelyingParty::new(
                        login.provider(),
                        "console",
                        callback,
                        state.clone(),
                        options.clock.clone(),
                    )
                    .context("setting up the console's OpenID sign-in")?,
                ))
            }
            None => None,
        };
        let customer_login = match &settings.customer_login {
            Some(login) => {
                let callback = url::Url::parse(&format!(
                    "{}{}",
                    settings.issuer(),
                    crate::http::portal::oidc::CALLBACK_PATH
                ))
                .context("the portal's sign-in callback URL")?;
                Some(Arc::new(
                    RelyingParty::new(
                        login.provider(),
                        "portal",
                        callback,
                        state.clone(),
                        options.clock.clone(),
                    )
                    .context("setting up the customers' OpenID sign-in")?,
                ))
            }
            None => None,
        };
        let app = web::Data::new(App {
            dpop,
            console_login,
            customer_login,
            access_log,
            checkpoint_key: Arc::new(checkpoint_key),
            proxy,
            settings,
            catalog,
            store,
            state,
            keys: keys.clone(),
            verifier,
            clock: options.clock,
            metrics,
            latest_verification: Default::default(),
            alert_baseline: Default::default(),
            client_keys: crate::oauth::client_assertion::PartnerKeyCache::new()
                .context("setting up the fetch of partners' keys")?,
        });

        tokio::spawn(reload_keys(keys));
        tokio::spawn(crate::oauth::reissue::sweep(
            app.store.clone(),
            app.clock.clone(),
        ));
        tokio::spawn(crate::access_log::checkpoint::run(
            app.store.clone(),
            app.checkpoint_key.clone(),
            app.issuer(),
            app.clock.clone(),
            app.settings.access_log.clone(),
            app.access_log.chain().to_owned(),
            app.access_log.head(),
        ));
        if crate::admin::alerts::any_containment(&app.settings.alerts) {
            tokio::spawn(crate::admin::alerts::run(app.clone()));
        }

        let demo = options.demo.map(web::Data::new);
        let data = app.clone();
        let upstream_settings = data.settings.upstream.clone();
        let workers_setting = data.settings.workers.map(std::num::NonZeroUsize::get);
        let mut server = HttpServer::new(move || {
            let metrics_data = data.clone();
            let mut a = ActixApp::new()
                .app_data(data.clone())
                // One upstream client per worker: awc pools per thread, without locks.
                .app_data(web::Data::new(UpstreamClient::new(&upstream_settings)))
                .configure(http::routes)
                .default_service(web::to(http::routes::unrouted))
                .wrap_fn(move |req, srv| {
                    use actix_web::dev::Service;
                    let started = Instant::now();
                    let metrics = metrics_data.clone();
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await?;
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        metrics.metrics.observe_http(
                            &route,
                            res.status().as_u16(),
                            started.elapsed(),
                        );
                        Ok(res)
                    }
                })
                .wrap(TracingLogger::<middleware::KeyholeRootSpan>::new())
                .wrap(from_fn(middleware::outermost));
            if let Some(demo) = &demo {
                a = a.app_data(demo.clone()).service(http::demo::callback);
            }
            a
        })
        .listen(listener)?
        .shutdown_timeout(30);
        if let Some(workers) = options.workers.or(workers_setting) {
            server = server.workers(workers);
        }
        let (metrics_server, metrics_port) = match app.settings.metrics_listen {
            Some(addr) => {
                let (server, port) = metrics_server(app.clone(), addr)?;
                (Some(server), Some(port))
            }
            None => (None, None),
        };
        Ok(Self {
            port,
            metrics_port,
            server: server.run(),
            metrics_server,
            app,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the private metrics listener, when `metrics_listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn app(&self) -> web::Data<App> {
        self.app.clone()
    }

    /// Serves until SIGTERM/SIGINT (or the server handle stops it), then flushes the log.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|server| {
            let handle = server.handle();
            tokio::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(handle) = metrics {
            handle.stop(true).await;
        }
        let app = &self.app;
        app.access_log.flush().await;
        // What the journal holds reaches the database now if it can, else on the next start.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.access_log.status().import_lag() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Sign the final head, so a deletion of the newest records is detectable at once.
        let head = app.access_log.head().borrow().clone();
        if let Some((seq, hash)) = head
            && let Err(e) = crate::access_log::checkpoint::checkpoint(
                &app.store,
                &app.checkpoint_key,
                &app.issuer(),
                &app.clock,
                app.access_log.chain(),
                seq,
                &hash,
            )
            .await
        {
            tracing::warn!(error = %e, "signing the final checkpoint failed");
        }
        result
    }
}

/// The private listener of `metrics_listen`: `/metrics` without a token, nothing else.
fn metrics_server(
    app: web::Data<App>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(Server, u16)> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding metrics_listen {addr}"))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(app.clone())
            .route("/metrics", web::get().to(http::ops::metrics_open))
            .default_service(web::to(http::not_found))
    })
    .workers(1)
    .listen(listener)?
    .shutdown_timeout(5)
    .run();
    Ok((server, port))
}

/// Refuses a file that other users can read or write, unless the operator allowed it: then
/// it warns at every start.
fn require_owner_only(path: &Path, allow_exposed: bool, holds: &str) -> anyhow::Result<()> {
    match files::check_owner_only(path) {
        Err(FileError::Exposed { path, mode }) if allow_exposed => {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "INSECURE: this file holds {holds} and other users can read or write it; \
                 starting only because allow_insecure_file_permissions = true"
            );
            Ok(())
        }
        other => other.with_context(|| {
            format!(
                "refusing to start: the file holds {holds} (set allow_insecure_file_permissions \
                 = true, KEYHOLE_ALLOW_INSECURE_FILE_PERMISSIONS, to start anyway)"
            )
        }),
    }
}

/// Opens the database the settings name. A SQLite file is created owner-only, and an existing
/// one (or its -wal, -shm or -journal file) that other users can read is refused: it holds
/// customers' password hashes, their access history and the sealed signing keys.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    if let Some(SqliteLocation::File { path, .. }) = sqlite_location(&settings.database_url) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            require_owner_only(
                Path::new(&name),
                settings.allow_insecure_file_permissions,
                "the gateway's database",
            )?;
        }
    }
    Store::connect(&settings.database_url)
        .await
        .context("connecting to the database")
}

/// The key that seals the signing keys in the database. An absent key file is created
/// (owner-only), unless the database already holds sealed keys: then the file was lost or is
/// misnamed, and a new key would only hide that.
pub async fn encryption_key(settings: &Settings, store: &Store) -> anyhow::Result<EncryptionKey> {
    let path = match settings.encryption_key_source()? {
        EncryptionKeySource::Value(value) => {
            return EncryptionKey::from_base64(value.expose()).context("keys.encryption_key");
        }
        EncryptionKeySource::Ephemeral => return Ok(EncryptionKey::generate()?),
        EncryptionKeySource::File(path) => path,
    };
    require_owner_only(
        &path,
        settings.allow_insecure_file_permissions,
        "the key that encrypts the token-signing keys",
    )?;
    let context = || format!("keys.encryption_key_file {}", path.display());
    match EncryptionKey::read_file(&path) {
        Err(SealError::File(FileError::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let sealed = store
                .all_signing_keys()
                .await?
                .iter()
                .filter(|k| is_sealed(&k.private_key))
                .count();
            if sealed > 0 {
                bail!(
                    "keys.encryption_key_file {} does not exist, but the database holds {sealed} \
                     signing keys encrypted under a key: restore that file, or point \
                     keys.encryption_key_file (KEYHOLE_KEYS__ENCRYPTION_KEY_FILE) at it",
                    path.display()
                );
            }
            match EncryptionKey::create_file(&path) {
                Ok(key) => {
                    tracing::info!(path = %path.display(), "created the signing keys' encryption key");
                    Ok(key)
                }
                // Another process starting at the same moment made it first.
                Err(SealError::File(FileError::Io { source, .. }))
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    EncryptionKey::read_file(&path).with_context(context)
                }
                Err(e) => Err(e).with_context(context),
            }
        }
        other => other.with_context(context),
    }
}

async fn reload_keys(keys: Arc<KeyRing>) {
    // A rotated key signs only after `ACTIVATION_DELAY`, long enough for two of these.
    let mut tick = tokio::time::interval(crate::tokens::RELOAD_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = keys.reload().await {
            // Keep signing with the keys we have; the next tick tries again.
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }
}
