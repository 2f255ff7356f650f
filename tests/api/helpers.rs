#![allow(dead_code)]

use actix_web::web;
use chrono::Utc;
use keyhole::app::App;
use keyhole::cli::{PartnerAdd, add_partner};
use keyhole::clock::ManualClock;
use keyhole::config::{KeysSettings, Settings};
use keyhole::domain::UpstreamCustomerId;
use keyhole::secrets::{hash_password, random_token, token_hash};
use keyhole::startup::{Application, Options};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    IntrospectionUrl, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RevocationUrl, Scope,
    TokenUrl,
};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use std::net::TcpListener;
use std::sync::Arc;

pub const ALICE: (&str, &str, &str) = ("CU-1001", "alice@example.com", "alice-password-1");
pub const BOB: (&str, &str, &str) = ("CU-2002", "bob@example.com", "bob-password-22");
pub const ALL_FIELDS: &[&str] = &[
    "claims:status",
    "claims:status_updated_at",
    "claims:claim_number",
];

pub type OAuthClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointSet, EndpointSet, EndpointSet>;

#[derive(Clone)]
pub struct Partner {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

pub struct TestApp {
    pub base: String,
    /// The private metrics listener's port, when `metrics_listen` is set (port 0 picks one).
    pub metrics_port: Option<u16>,
    pub app: web::Data<App>,
    pub clock: ManualClock,
    pub partner: Partner,
    _dir: tempfile::TempDir,
}

/// A fresh world: database, keys, clock, one partner and two customers.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut settings = Settings {
        listen: listener.local_addr().unwrap(),
        public_url: base.parse().unwrap(),
        database_url: database_url(&dir).await,
        redis_url: redis_url(),
        // One Redis serves every test: each test gets keys of its own.
        state_key_prefix: format!("kh-test-{}:", uuid::Uuid::new_v4().simple()),
        keys: KeysSettings {
            encryption_key_file: Some(dir.path().join("keys.key")),
            encryption_key: None,
        },
        ..Settings::default()
    };
    // Each app its own checkpoint key and journal, in its own directory (never the working
    // directory).
    settings.access_log.checkpoint_key_file = dir.path().join("checkpoint.key");
    settings.access_log.journal_dir = dir.path().join("journal");
    adjust(&mut settings);
    let clock = ManualClock::new(Utc::now());
    let application = Application::build(
        settings,
        Options {
            clock: Arc::new(clock.clone()),
            workers: Some(2),
            listener: Some(listener),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = application.app();
    let metrics_port = application.metrics_port();
    tokio::spawn(application.run_until_stopped());

    for (id, email, password) in [ALICE, BOB] {
        app.store
            .insert_customer(
                &UpstreamCustomerId::parse(id).unwrap(),
                email,
                hash_password(password).unwrap(),
                Utc::now(),
            )
            .await
            .unwrap();
    }
    let mut test = TestApp {
        base,
        metrics_port,
        app,
        clock,
        partner: Partner {
            client_id: String::new(),
            client_secret: String::new(),
            redirect_uri: String::new(),
        },
        _dir: dir,
    };
    test.partner = test.add_partner("Fone Shop", ALL_FIELDS).await;
    test
}

/// An app in front of the built-in sample claims API (Alice: C-1001, C-1002; Bob: C-2001,
/// C-2002).
pub async fn spawn_app_with_sample_upstream(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keyhole::sample_upstream::start(listener, 1).unwrap());
    spawn_app_with(|s| {
        s.upstream.base_url = url.parse().unwrap();
        adjust(s);
    })
    .await
}

/// A port free at the time of asking, for servers the test must start by address (and may
/// restart on the same port). It is picked below Linux's ephemeral range (32768 and up), which
/// is where every `bind(0)` and outgoing connection of the other tests lands: a port found free
/// there could be taken by one of them before the server binds it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 30000");
}

/// Shared state on Redis when `KEYHOLE_REDIS_URL` names a server (as `.ci/run` sets it),
/// in-process otherwise.
pub fn redis_url() -> Option<String> {
    std::env::var("KEYHOLE_REDIS_URL")
        .ok()
        .filter(|url| url.starts_with("redis://"))
}

/// SQLite in the test's own directory by default. When `KEYHOLE_DATABASE_URL` names a
/// PostgreSQL server (as `.ci/run` sets it), a fresh database on it for this test alone.
pub async fn database_url(dir: &tempfile::TempDir) -> String {
    use sea_orm::ConnectionTrait;
    match std::env::var("KEYHOLE_DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            let admin = sea_orm::Database::connect(url.clone()).await.unwrap();
            let name = format!("kh_test_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap();
            admin.close().await.unwrap();
            let mut scratch = url::Url::parse(&url).unwrap();
            scratch.set_path(&format!("/{name}"));
            scratch.to_string()
        }
        _ => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("keyhole.db").display()
        ),
    }
}

/// A client that never follows redirects: tests look at every `Location` themselves.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A customer's browser: keeps cookies, follows nothing.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// The `Set-Cookie` header that sets `name`, if the response has one.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// The value a `Set-Cookie` header sets.
pub fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

/// The value of a hidden form input.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&#x2f;", "/"),
    )
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub struct ConsentPage {
    pub consent_id: String,
    pub csrf_token: String,
    pub html: String,
}

pub struct Authorized {
    pub code: String,
    pub state: String,
    pub verifier: PkceCodeVerifier,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The test's own directory: its SQLite database and key files.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The key that encrypts this app's signing keys, read from its key file.
    pub fn encryption_key(&self) -> keyhole::tokens::EncryptionKey {
        let path = self.app.settings.keys.encryption_key_file.as_ref().unwrap();
        keyhole::tokens::EncryptionKey::read_file(path).unwrap()
    }

    /// The SQLite database file, or `None` when the test runs on PostgreSQL.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        let path = self.dir().join("keyhole.db");
        self.app
            .settings
            .database_url
            .starts_with("sqlite:")
            .then_some(path)
    }

    /// A second gateway instance over the same database, shared state and clock, as behind a
    /// load balancer: same issuer, its own port, the same checkpoint key file (as every
    /// instance of one deployment must have). Returns its base URL.
    pub async fn second_instance(&self) -> String {
        self.second_instance_app().await.0
    }

    /// `second_instance`, with its `App` too (its own access log: its own journal and chain).
    pub async fn second_instance_app(&self) -> (String, web::Data<App>) {
        self.second_instance_app_with(|_| {}).await
    }

    /// `second_instance_app`, with `adjust` applied to its settings (a copy of this one's).
    pub async fn second_instance_app_with(
        &self,
        adjust: impl FnOnce(&mut Settings),
    ) -> (String, web::Data<App>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut settings = self.app.settings.clone();
        settings.listen = listener.local_addr().unwrap();
        // Every instance writes a chain of its own, from a journal of its own (a journal
        // directory is locked by the instance that uses it).
        settings.access_log.journal_dir = self
            .dir()
            .join(format!("journal-{}", uuid::Uuid::new_v4().simple()));
        adjust(&mut settings);
        let application = Application::build(
            settings,
            Options {
                clock: Arc::new(self.clock.clone()),
                workers: Some(2),
                listener: Some(listener),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let app = application.app();
        tokio::spawn(application.run_until_stopped());
        (base, app)
    }

    /// Every record in the database, in import order, once this instance's journal is imported
    /// (partner calls are answered once their record is in the journal; the importer copies it
    /// into the database right after).
    pub async fn log_records(&self) -> Vec<keyhole::access_log::ChainedRecord> {
        self.app.access_log.settled().await;
        self.app.store.access_log_after(0, 100_000).await.unwrap()
    }

    /// Verifies every chain in the database, once this instance's journal is imported.
    pub async fn verify_log(&self) -> keyhole::access_log::VerifyReport {
        self.app.access_log.settled().await;
        keyhole::access_log::verify_chain(
            &self.app.store,
            &self.app.checkpoint_key.public_keys(),
            None,
            None,
        )
        .await
        .unwrap()
    }

    /// This instance's chain.
    pub fn chain(&self) -> String {
        self.app.access_log.chain().to_owned()
    }

    pub async fn add_partner(&self, name: &str, fields: &[&str]) -> Partner {
        let redirect_uri = format!("http://127.0.0.1:9/{}/callback", name.len());
        let add = PartnerAdd {
            name: name.into(),
            redirect_uris: vec![redirect_uri.clone()],
            fields: fields.iter().map(|f| f.to_string()).collect(),
            client_id: None,
            rate: None,
            burst: None,
            grant_rate: None,
            ..Default::default()
        };
        let (client_id, client_secret) = add_partner(&self.app.store, &self.app.catalog, &add)
            .await
            .unwrap();
        let client_secret = client_secret.unwrap_or_default();
        Partner {
            client_id: client_id.to_string(),
            client_secret,
            redirect_uri,
        }
    }

    pub fn oauth_client_for(&self, partner: &Partner) -> OAuthClient {
        BasicClient::new(ClientId::new(partner.client_id.clone()))
            .set_client_secret(ClientSecret::new(partner.client_secret.clone()))
            .set_auth_uri(AuthUrl::new(self.url("/oauth/authorize")).unwrap())
            .set_token_uri(TokenUrl::new(self.url("/oauth/token")).unwrap())
            .set_introspection_url(IntrospectionUrl::new(self.url("/oauth/introspect")).unwrap())
            .set_revocation_url(RevocationUrl::new(self.url("/oauth/revoke")).unwrap())
            .set_redirect_uri(RedirectUrl::new(partner.redirect_uri.clone()).unwrap())
    }

    pub fn oauth_client(&self) -> OAuthClient {
        self.oauth_client_for(&self.partner)
    }

    /// An authorization URL with PKCE S256, as the oauth2 crate builds it.
    pub fn authorize_url(&self, scopes: &[&str]) -> (String, CsrfToken, PkceCodeVerifier) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .oauth_client()
            .authorize_url(CsrfToken::new_random)
            .add_scopes(scopes.iter().map(|s| Scope::new(s.to_string())))
            .set_pkce_challenge(challenge)
            .url();
        (url.to_string(), state, verifier)
    }

    /// Signs in through the form the authorize endpoint shows; returns the `next` redirect.
    /// Fetches the sign-in form at `page_url` and submits it; returns the answer.
    pub async fn submit_sign_in(
        &self,
        browser: &reqwest::Client,
        page_url: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        self.submit_sign_in_from(browser, page_url, email, password, None)
            .await
    }

    /// The same, with an `X-Forwarded-For` naming the client (believed only from a trusted
    /// proxy).
    pub async fn submit_sign_in_from(
        &self,
        browser: &reqwest::Client,
        page_url: &str,
        email: &str,
        password: &str,
        forwarded_for: Option<&str>,
    ) -> reqwest::Response {
        let page = browser.get(page_url).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("Sign in"),
            "expected the sign-in page: {html}"
        );
        let mut post = browser.post(self.url("/portal/login"));
        if let Some(forwarded_for) = forwarded_for {
            post = post.header("x-forwarded-for", forwarded_for);
        }
        post.form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", &hidden(&html, "csrf_token").unwrap()),
            ("next", &hidden(&html, "next").unwrap()),
        ])
        .send()
        .await
        .unwrap()
    }

    /// Signs in through the form that `auth_url` shows.
    pub async fn sign_in(
        &self,
        browser: &reqwest::Client,
        auth_url: &str,
        who: (&str, &str, &str),
    ) {
        let response = self.submit_sign_in(browser, auth_url, who.1, who.2).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "sign-in failed");
    }

    /// A customer signed in to the portal: the browser, and its session cookie's value (to
    /// replay after the browser has dropped it).
    pub async fn session_of(&self, who: (&str, &str, &str)) -> (reqwest::Client, String) {
        let browser = browser();
        let signed_in = self
            .submit_sign_in(&browser, &self.url("/portal/login"), who.1, who.2)
            .await;
        let cookie = set_cookie(&signed_in, "kh_session").expect("a session cookie");
        (browser, cookie_value(&cookie))
    }

    /// Signs the browser's customer out through the portal's form.
    pub async fn sign_out(&self, browser: &reqwest::Client) {
        let html = browser
            .get(self.url("/portal"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let response = browser
            .post(self.url("/portal/logout"))
            .form(&[("csrf_token", hidden(&html, "csrf_token").unwrap())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }

    /// A partner API call with a bearer token; only the status matters to the caller.
    pub async fn partner_status(&self, token: &str, path: &str) -> StatusCode {
        self.bearer_get(token, path).await.status()
    }

    /// A browser signed in through the portal's own sign-in page.
    pub async fn signed_in(&self, who: (&str, &str, &str)) -> reqwest::Client {
        let browser = browser();
        self.sign_in(&browser, &self.url("/portal/login"), who)
            .await;
        browser
    }

    /// A GET with a bearer token (partner, admin or garbage).
    pub async fn bearer_get(&self, token: &str, path: &str) -> reqwest::Response {
        http()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn consent_page(&self, browser: &reqwest::Client, auth_url: &str) -> ConsentPage {
        let response = browser.get(auth_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        ConsentPage {
            consent_id: hidden(&html, "consent_id").expect("a consent page"),
            csrf_token: hidden(&html, "csrf_token").unwrap(),
            html,
        }
    }

    pub async fn decide(
        &self,
        browser: &reqwest::Client,
        page: &ConsentPage,
        decision: &str,
        fields: &[&str],
    ) -> reqwest::Response {
        let mut form = vec![
            ("consent_id", page.consent_id.as_str()),
            ("csrf_token", page.csrf_token.as_str()),
            ("decision", decision),
        ];
        form.extend(fields.iter().map(|f| ("field", *f)));
        browser
            .post(self.url("/oauth/authorize"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Alice consents to `granted` of the `requested` fields; returns the code.
    pub async fn authorize_as(
        &self,
        who: (&str, &str, &str),
        requested: &[&str],
        granted: &[&str],
    ) -> Authorized {
        let (auth_url, state, verifier) = self.authorize_url(requested);
        let browser = browser();
        self.sign_in(&browser, &auth_url, who).await;
        let page = self.consent_page(&browser, &auth_url).await;
        let response = self.decide(&browser, &page, "allow", granted).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = location(&response);
        assert!(
            location.starts_with(&self.partner.redirect_uri),
            "{location}"
        );
        assert_eq!(
            query_param(&location, "state").as_deref(),
            Some(state.secret().as_str())
        );
        assert_eq!(
            query_param(&location, "iss").as_deref(),
            Some(self.base.as_str())
        );
        Authorized {
            code: query_param(&location, "code").expect("a code"),
            state: state.secret().clone(),
            verifier,
        }
    }

    /// The whole flow: consent for `fields`, then the code exchange by the oauth2 crate.
    pub async fn tokens(&self, fields: &[&str]) -> oauth2::basic::BasicTokenResponse {
        let authorized = self.authorize_as(ALICE, fields, fields).await;
        self.oauth_client()
            .exchange_code(AuthorizationCode::new(authorized.code))
            .set_pkce_verifier(authorized.verifier)
            .request_async(&http())
            .await
            .unwrap()
    }

    /// A raw form POST with HTTP Basic client authentication.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        http()
            .post(self.url(path))
            .basic_auth(&self.partner.client_id, Some(&self.partner.client_secret))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// RFC 7009 revocation with a type hint; revocation always answers 200.
    pub async fn revoke(&self, token: &str, hint: &str) {
        let response = self
            .post_form(
                "/oauth/revoke",
                &[("token", token), ("token_type_hint", hint)],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        let response = self
            .post_form("/oauth/introspect", &[("token", token)])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }
}

// ----- partners with their own settings (added for the partner API tests) ------------------

impl TestApp {
    /// Registers a partner like `add_partner`, with `adjust` applied to the `partner add`
    /// arguments first (e.g. to set `--rate/--burst/--grant-rate/--grant-burst`).
    pub async fn add_partner_with(
        &self,
        name: &str,
        fields: &[&str],
        adjust: impl FnOnce(&mut PartnerAdd),
    ) -> Partner {
        let redirect_uri = format!("http://127.0.0.1:9/{}/callback", name.len());
        let mut add = PartnerAdd {
            name: name.into(),
            redirect_uris: vec![redirect_uri.clone()],
            fields: fields.iter().map(|f| f.to_string()).collect(),
            client_id: None,
            rate: None,
            burst: None,
            grant_rate: None,
            ..Default::default()
        };
        adjust(&mut add);
        let (client_id, client_secret) = add_partner(&self.app.store, &self.app.catalog, &add)
            .await
            .unwrap();
        let client_secret = client_secret.unwrap_or_default();
        Partner {
            client_id: client_id.to_string(),
            client_secret,
            redirect_uri,
        }
    }

    /// `authorize_as` for any partner: `who` consents to `granted` of the `requested` fields.
    pub async fn authorize_for(
        &self,
        partner: &Partner,
        who: (&str, &str, &str),
        requested: &[&str],
        granted: &[&str],
    ) -> Authorized {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .oauth_client_for(partner)
            .authorize_url(CsrfToken::new_random)
            .add_scopes(requested.iter().map(|s| Scope::new(s.to_string())))
            .set_pkce_challenge(challenge)
            .url();
        let auth_url = url.to_string();
        let browser = browser();
        self.sign_in(&browser, &auth_url, who).await;
        let page = self.consent_page(&browser, &auth_url).await;
        let response = self.decide(&browser, &page, "allow", granted).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = location(&response);
        assert!(location.starts_with(&partner.redirect_uri), "{location}");
        assert_eq!(
            query_param(&location, "state").as_deref(),
            Some(state.secret().as_str())
        );
        Authorized {
            code: query_param(&location, "code").expect("a code"),
            state: state.secret().clone(),
            verifier,
        }
    }

    /// `tokens` for any partner: Alice consents to `fields`, the partner exchanges the code.
    pub async fn tokens_for(
        &self,
        partner: &Partner,
        fields: &[&str],
    ) -> oauth2::basic::BasicTokenResponse {
        let authorized = self.authorize_for(partner, ALICE, fields, fields).await;
        self.oauth_client_for(partner)
            .exchange_code(AuthorizationCode::new(authorized.code))
            .set_pkce_verifier(authorized.verifier)
            .request_async(&http())
            .await
            .unwrap()
    }
}

impl TestApp {
    pub async fn admin_token(&self, name: &str) -> String {
        let token = random_token("kh_adm_").unwrap();
        self.app
            .store
            .insert_admin_token(name, token_hash(token.expose()), Utc::now())
            .await
            .unwrap();
        token.expose().to_owned()
    }

    pub async fn admin_get(&self, token: &str, path: &str) -> reqwest::Response {
        self.bearer_get(token, path).await
    }

    /// An admin GET that must succeed, and its JSON.
    pub async fn admin_json(&self, token: &str, path: &str) -> serde_json::Value {
        let response = self.admin_get(token, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// An admin POST (suspend, reinstate, revoke).
    pub async fn admin_post(&self, token: &str, path: &str) -> reqwest::Response {
        http()
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The admin audit trail, newest first.
    pub async fn audit_trail(&self, token: &str) -> Vec<serde_json::Value> {
        let trail = self.admin_json(token, "/admin/v1/audit").await;
        trail["items"].as_array().unwrap().clone()
    }

    /// `/metrics` as an operator reads it on the main listener: with an admin token.
    pub async fn metrics(&self) -> String {
        let token = self.admin_token("metrics").await;
        let response = self.admin_get(&token, "/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }
}

/// A console user's browser after sign-in (with the password already changed from the
/// one-time one), and the CSRF token its forms carry.
pub struct ConsoleBrowser {
    pub client: reqwest::Client,
    pub csrf_token: String,
    pub email: String,
}

/// The real password console tests choose after the one-time one.
pub const CONSOLE_PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    /// A console account, as `keyhole admin user add` makes it; returns its one-time password.
    pub async fn add_console_user(&self, email: &str) -> String {
        let one_time = keyhole::secrets::random_token("").unwrap();
        let hash = keyhole::secrets::hash_password(one_time.expose()).unwrap();
        self.app
            .store
            .insert_console_user(
                &keyhole::domain::Email::parse(email).unwrap(),
                hash,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        one_time.expose().to_owned()
    }

    /// Posts the console's sign-in form from a fresh copy of the page.
    pub async fn console_sign_in(
        &self,
        browser: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let html = browser
            .get(self.url("/console/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        browser
            .post(self.url("/console/login"))
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf_token", &hidden(&html, "csrf_token").unwrap()),
                ("next", &hidden(&html, "next").unwrap()),
            ])
            .send()
            .await
            .unwrap()
    }

    /// A new console user, signed in, with a real password chosen.
    pub async fn console_browser(&self, email: &str) -> ConsoleBrowser {
        let one_time = self.add_console_user(email).await;
        let client = self.console_browser_after_sign_in(email, &one_time).await;
        let html = client
            .get(self.url("/console"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ConsoleBrowser {
            client,
            csrf_token: hidden(&html, "csrf_token").expect("the overview's sign-out form"),
            email: email.to_owned(),
        }
    }

    /// A browser signed in with an account's one-time password that has chosen
    /// [`CONSOLE_PASSWORD`].
    pub async fn console_browser_after_sign_in(
        &self,
        email: &str,
        one_time: &str,
    ) -> reqwest::Client {
        let client = browser();
        let signed_in = self.console_sign_in(&client, email, one_time).await;
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&signed_in), "/console/password");
        let form = client
            .get(self.url("/console/password"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let set = client
            .post(self.url("/console/password"))
            .form(&[
                ("csrf_token", hidden(&form, "csrf_token").unwrap().as_str()),
                ("password", CONSOLE_PASSWORD),
                ("confirm", CONSOLE_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), StatusCode::SEE_OTHER, "setting the password");
        assert_eq!(location(&set), "/console", "setting the password");
        client
    }
}

/// `keyhole demo` as a separate process, in an empty directory of its own, on free ports, with
/// no `KEYHOLE_` variable from the test's environment but those in `env`. Killed when dropped.
pub struct DemoProcess {
    pub port: u16,
    /// The walkthrough it printed, from "Keyhole demo is running" to "Press Ctrl-C".
    pub walkthrough: Vec<String>,
    pub dir: tempfile::TempDir,
    child: std::process::Child,
}

impl DemoProcess {
    /// Starts the demo and waits (at most a minute) for its whole walkthrough; `None` when it
    /// did not start.
    pub fn start(env: &[(&str, &str)]) -> Option<Self> {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let (port, upstream) = (free_port(), free_port());
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyhole"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYHOLE_") {
                command.env_remove(&name);
            }
        }
        let mut child = command
            .current_dir(dir.path())
            .env("KEYHOLE_LISTEN", format!("127.0.0.1:{port}"))
            .env("KEYHOLE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env(
                "KEYHOLE_UPSTREAM__BASE_URL",
                format!("http://127.0.0.1:{upstream}"),
            )
            .envs(env.iter().copied())
            .arg("demo")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = DemoProcess {
            port,
            walkthrough: Vec::new(),
            dir,
            child,
        };
        let started = std::time::Instant::now();
        let mut running = false;
        while started.elapsed() < std::time::Duration::from_secs(60) {
            match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(line) if line.contains("Press Ctrl-C") => return running.then_some(demo),
                Ok(line) if line.contains("Keyhole demo is running") => running = true,
                Ok(line) if running => demo.walkthrough.push(line),
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The first whitespace-separated word after `marker` in the walkthrough.
    pub fn word_after(&self, marker: &str) -> Option<String> {
        self.walkthrough.iter().find_map(|line| {
            let (_, rest) = line.split_once(marker)?;
            rest.split_whitespace().next().map(str::to_owned)
        })
    }

    /// The line after the one that contains `marker`, trimmed.
    pub fn line_after(&self, marker: &str) -> Option<String> {
        let at = self.walkthrough.iter().position(|l| l.contains(marker))?;
        self.walkthrough.get(at + 1).map(|l| l.trim().to_owned())
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
