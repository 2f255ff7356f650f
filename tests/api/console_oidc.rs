//! Console sign-in through a workforce OpenID provider (`[console_login]`).
//!
//! Two providers: the certified `oidc-provider` package started by node on loopback
//! (`tests/oidc/provider.mjs`; its tests are skipped, saying why, without node or
//! `tests/oidc/node_modules` — `npm ci --prefix tests/oidc`), and a small in-test provider
//! (wiremock: discovery, keys, token endpoint) whose ID tokens each break one rule, for what
//! a real provider cannot be made to do.

use crate::helpers::{
    TestApp, browser, cookie_value, location, query_param, set_cookie, spawn_app_with,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyhole::config::ConsoleLogin;
use keyhole::secrets::Secret;
use keyhole::store::OidcIdentity;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLIENT_ID: &str = "keyhole-console";
const CLIENT_SECRET: &str = "keyhole-console-test-secret-0123456789";
const GROUP: &str = "security-team";

fn console_login(issuer: &str) -> ConsoleLogin {
    ConsoleLogin {
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET.into()),
        scopes: "openid email profile".into(),
        reauthenticate_after_minutes: 10,
        required_group: GROUP.into(),
        groups_claim: "groups".into(),
    }
}

// ----- the certified provider, on node -----------------------------------------------------

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether node and the provider's packages are here; prints why not.
fn provider_available() -> bool {
    if !oidc_dir().join("node_modules/oidc-provider").is_dir() {
        eprintln!("skipped: tests/oidc/node_modules is missing (run `npm ci --prefix tests/oidc`)");
        return false;
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("skipped: node is not installed");
            false
        }
    }
}

/// The node process, ended with the test.
struct RealProvider {
    child: Child,
    issuer: String,
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(keyhole_port: u16) -> RealProvider {
    let port = crate::helpers::free_port();
    let mut child = Command::new("node")
        .arg(oidc_dir().join("provider.mjs"))
        .arg(port.to_string())
        .arg(keyhole_port.to_string())
        .current_dir(oidc_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading, so the provider never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    assert!(
        line.starts_with("ready "),
        "the provider did not start: {line:?}"
    );
    RealProvider {
        child,
        issuer: format!("http://127.0.0.1:{port}"),
    }
}

/// A Keyhole whose console signs in at a freshly started certified provider.
async fn app_with_real_provider() -> (TestApp, RealProvider) {
    let mut provider = None;
    let app = spawn_app_with(|s| {
        let started = start_provider(s.listen.port());
        s.console_login = Some(console_login(&started.issuer));
        provider = Some(started);
    })
    .await;
    (app, provider.unwrap())
}

/// The value of an attribute in the first tag that has it.
fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

/// Every hidden input of the page's form.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

/// Plays the person at the provider: follows its redirects and submits its login (any
/// password) and consent forms, until it sends the browser back to Keyhole's callback.
/// Returns that callback URL, not yet visited.
async fn sign_in_at_provider(
    browser: &reqwest::Client,
    app: &TestApp,
    provider: &RealProvider,
    login: &str,
) -> String {
    let start = browser
        .get(app.url("/console/oidc/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let mut next = location(&start);
    assert!(next.starts_with(&provider.issuer), "{next}");
    for _ in 0..20 {
        if next.starts_with(&app.url("/console/oidc/callback")) {
            return next;
        }
        let url = if next.starts_with('/') {
            format!("{}{next}", provider.issuer)
        } else {
            next.clone()
        };
        let response = browser.get(&url).send().await.unwrap();
        if response.status().is_redirection() {
            next = location(&response);
            continue;
        }
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let html = response.text().await.unwrap();
        let action = attribute(&html, "action").expect("a form at the provider");
        let mut form = hidden_inputs(&html);
        if html.contains("name=\"login\"") {
            form.push(("login".into(), login.into()));
            form.push(("password".into(), "anything".into()));
        }
        let action = if action.starts_with('/') {
            format!("{}{action}", provider.issuer)
        } else {
            action
        };
        let submitted = browser.post(&action).form(&form).send().await.unwrap();
        assert!(
            submitted.status().is_redirection(),
            "{action}: {}",
            submitted.status()
        );
        next = location(&submitted);
    }
    panic!("the provider never sent the browser back");
}

async fn account_of(
    app: &TestApp,
    issuer: &str,
    subject: &str,
) -> Option<keyhole::store::ConsoleUser> {
    app.app
        .store
        .console_user_by_oidc(&OidcIdentity {
            issuer: issuer.into(),
            subject: subject.into(),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_in_the_required_group_signs_in_to_the_console_through_the_provider() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let browser = browser();
    let callback = sign_in_at_provider(&browser, &app, &provider, "ana").await;
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(provider.issuer.as_str())
    );
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/console");
    assert!(
        set_cookie(&answer, "kh_console").is_some(),
        "a console session"
    );

    let console = browser.get(app.url("/console")).send().await.unwrap();
    assert_eq!(
        console.status(),
        StatusCode::OK,
        "an authenticated console page"
    );
    let account = account_of(&app, &provider.issuer, "ana")
        .await
        .expect("an account");
    assert_eq!(account.email.as_str(), "ana@harmony.example");

    // The next sign-in finds the same account; the callback cannot be replayed.
    let again = crate::helpers::browser();
    let callback_again = sign_in_at_provider(&again, &app, &provider, "ana").await;
    let answer = again.get(&callback_again).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        account_of(&app, &provider.issuer, "ana").await,
        Some(account)
    );
    let replayed = again.get(&callback_again).send().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN, "single use");
    assert!(set_cookie(&replayed, "kh_console").is_none());
}

#[tokio::test]
async fn a_person_outside_the_group_gets_a_403_page_and_neither_account_nor_session() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let browser = browser();
    let callback = sign_in_at_provider(&browser, &app, &provider, "bo").await;
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&answer, "kh_console").is_none());
    assert!(answer.text().await.unwrap().contains("not in the group"));
    assert_eq!(account_of(&app, &provider.issuer, "bo").await, None);
    let console = browser.get(app.url("/console")).send().await.unwrap();
    assert_eq!(console.status(), StatusCode::SEE_OTHER, "still signed out");
}

#[tokio::test]
async fn an_answer_with_another_state_or_from_another_browser_is_refused() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let browser = browser();
    let callback = sign_in_at_provider(&browser, &app, &provider, "ana").await;

    // Another browser (without the binding cookie) brings the victim's answer.
    let elsewhere = crate::helpers::browser()
        .get(&callback)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&elsewhere, "kh_console").is_none());

    // The right browser with a forged state.
    let state = query_param(&callback, "state").unwrap();
    let forged = callback.replace(&state, "forged-state");
    let answer = browser.get(&forged).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&answer, "kh_console").is_none());
    // The forged answer spent the pending sign-in: the real one now finds nothing either.
    let late = browser.get(&callback).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::FORBIDDEN);
    assert_eq!(account_of(&app, &provider.issuer, "ana").await, None);
}

#[tokio::test]
async fn console_passwords_are_refused_while_the_provider_is_configured() {
    if !provider_available() {
        return;
    }
    let (app, _provider) = app_with_real_provider().await;
    let page = browser()
        .get(app.url("/console/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.replace("&#x2f;", "/")
            .contains("/console/oidc/login?next=%2Fconsole"),
        "{page}"
    );
    let posted = browser()
        .post(app.url("/console/login"))
        .form(&[
            ("email", "ana@harmony.example"),
            ("password", "whatever-it-is"),
            ("csrf_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&posted, "kh_console").is_none());
}

// ----- without node: outages, bounds, and an in-test provider that misbehaves -------------

#[tokio::test]
async fn an_unreachable_provider_gives_a_503_page_that_says_so() {
    let closed = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let app = spawn_app_with(|s| s.console_login = Some(console_login(&closed))).await;
    let response = browser()
        .get(app.url("/console/oidc/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.text().await.unwrap().contains("cannot be reached"));
}

#[tokio::test]
async fn the_oidc_routes_are_not_there_without_console_login() {
    let app = spawn_app_with(|_| {}).await;
    for path in [
        "/console/oidc/login",
        "/console/oidc/callback?code=a&state=b",
    ] {
        let response = browser().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// An in-test provider: discovery, an Ed25519 key set, and a token endpoint that answers
/// whatever ID token the test made.
struct FakeProvider {
    server: MockServer,
    signing: ed25519_dalek::SigningKey,
}

impl FakeProvider {
    async fn start(algorithms: &[&str]) -> Self {
        let server = MockServer::start().await;
        let seed: [u8; 32] = rand_seed();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let issuer = server.uri();
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "id_token_signing_alg_values_supported": algorithms,
                "code_challenge_methods_supported": ["S256"],
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [{
                "kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes()),
            }]})))
            .mount(&server)
            .await;
        Self { server, signing }
    }

    fn issuer(&self) -> String {
        self.server.uri()
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let der = self.signing.to_pkcs8_der().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
    }

    fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The claims of a good ID token for this sign-in.
    fn claims(&self, nonce: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer(), "aud": CLIENT_ID, "sub": "fake-ana", "nonce": nonce,
            "iat": now, "exp": now + 300, "auth_time": now - 5,
            "email": "fake-ana@harmony.example", "email_verified": true, "groups": [GROUP],
        })
    }

    async fn answer_with(&self, id_token: &str) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": id_token,
            })))
            .mount(&self.server)
            .await;
    }
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&uuid::Uuid::new_v4().as_bytes().repeat(2));
    seed
}

/// Starts a console sign-in at the fake provider, has it answer with the token `make` builds
/// from the nonce, and brings the answer back. Returns the callback's answer and the app.
async fn sign_in_at_fake(
    algorithms: &[&str],
    make: impl FnOnce(&FakeProvider, &str) -> String,
) -> (reqwest::Response, TestApp, FakeProvider) {
    let fake = FakeProvider::start(algorithms).await;
    let issuer = fake.issuer();
    let app = spawn_app_with(|s| s.console_login = Some(console_login(&issuer))).await;
    let browser = browser();
    let start = browser
        .get(app.url("/console/oidc/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let authorize = location(&start);
    assert!(
        authorize.starts_with(&format!("{issuer}/auth?")),
        "{authorize}"
    );
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("600"));
    let binding = cookie_value(&set_cookie(&start, "kh_console_oidc").unwrap());
    assert!(!binding.is_empty());
    let nonce = query_param(&authorize, "nonce").unwrap();
    let state = query_param(&authorize, "state").unwrap();
    fake.answer_with(&make(&fake, &nonce)).await;
    let callback = format!(
        "{}?code=the-code&state={state}",
        app.url("/console/oidc/callback")
    );
    let answer = browser.get(&callback).send().await.unwrap();
    (answer, app, fake)
}

/// The answer was refused and left nothing behind.
async fn assert_refused(answer: reqwest::Response, app: &TestApp, fake: &FakeProvider) {
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&answer, "kh_console").is_none(), "no session");
    let page = answer.text().await.unwrap();
    assert!(page.contains("could not be completed"), "{page}");
    assert_eq!(
        account_of(app, &fake.issuer(), "fake-ana").await,
        None,
        "no account"
    );
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

#[tokio::test]
async fn the_in_test_provider_signs_a_person_in_when_its_token_is_good() {
    let (answer, app, fake) =
        sign_in_at_fake(&["EdDSA"], |f, nonce| f.sign("k1", &f.claims(nonce))).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&answer, "kh_console").is_some());
    assert!(account_of(&app, &fake.issuer(), "fake-ana").await.is_some());
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let (answer, app, fake) =
        sign_in_at_fake(&["EdDSA"], |f, _| f.sign("k1", &f.claims("another-nonce"))).await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        f.sign(
            "k1",
            &with(f.claims(nonce), "iss", json!("https://evil.example")),
        )
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        f.sign("k1", &with(f.claims(nonce), "aud", json!("another-client")))
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        let past = chrono::Utc::now().timestamp() - 3600;
        f.sign(
            "k1",
            &with(
                with(f.claims(nonce), "exp", json!(past)),
                "iat",
                json!(past - 300),
            ),
        )
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_signed_with_an_unknown_key_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        let other = ed25519_dalek::SigningKey::from_bytes(&rand_seed());
        let der = other.to_pkcs8_der().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k2".into());
        jsonwebtoken::encode(
            &header,
            &f.claims(nonce),
            &EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap()
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_unsigned_id_token_alg_none_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(f.claims(nonce).to_string());
        format!("{header}.{body}.")
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_hmac_signed_with_the_providers_public_key_is_refused() {
    // The provider even advertises HS256: the attacker's token is "valid" for a relying party
    // that keys HMAC with whatever the key set holds.
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA", "HS256"], |f, nonce| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &f.claims(nonce),
            &EncodingKey::from_secret(&f.public_key()),
        )
        .unwrap()
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn overlong_callback_parameters_are_refused_before_anything_else() {
    let fake = FakeProvider::start(&["EdDSA"]).await;
    let issuer = fake.issuer();
    let app = spawn_app_with(|s| s.console_login = Some(console_login(&issuer))).await;
    let long = "a".repeat(513);
    for query in [
        format!("code={long}&state=s"),
        format!("code=c&state={long}"),
    ] {
        let response = browser()
            .get(app.url(&format!("/console/oidc/callback?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_provider_error_is_a_plain_page_that_echoes_nothing() {
    let (answer, _app, _fake) = {
        let fake = FakeProvider::start(&["EdDSA"]).await;
        let issuer = fake.issuer();
        let app = spawn_app_with(|s| s.console_login = Some(console_login(&issuer))).await;
        let browser = browser();
        let start = browser
            .get(app.url("/console/oidc/login"))
            .send()
            .await
            .unwrap();
        let state = query_param(&location(&start), "state").unwrap();
        let callback = format!(
            "{}?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}",
            app.url("/console/oidc/callback")
        );
        (browser.get(&callback).send().await.unwrap(), app, fake)
    };
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let page = answer.text().await.unwrap();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("alert(1)"), "{page}");
}

/// Each start parks a pending sign-in in shared state for ten minutes, for anyone who asks:
/// one address may not fill it. A forged `X-Forwarded-For` buys no fresh allowance.
#[tokio::test]
async fn one_address_cannot_park_sign_ins_without_end() {
    let fake = FakeProvider::start(&["EdDSA"]).await;
    let issuer = fake.issuer();
    let app = spawn_app_with(|s| s.console_login = Some(console_login(&issuer))).await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.url("/console/oidc/login"))
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(statuses[0], StatusCode::SEE_OTHER);
    assert_eq!(
        statuses.last().copied(),
        Some(StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(!statuses.contains(&StatusCode::INTERNAL_SERVER_ERROR));
}
