//! The OpenID providers that the sign-in tests (`console_oidc.rs`, `portal_oidc.rs`) sign in at:
//!
//! - [`RealProvider`]: the certified `oidc-provider` package started by node on loopback
//!   (`tests/oidc/provider.mjs`), one per test; tests that need it are skipped, saying why,
//!   without node or `tests/oidc/node_modules` (`npm ci --prefix tests/oidc`).
//!   [`sign_in_at_provider`] plays the person there.
//! - [`FakeProvider`]: a small in-test provider (wiremock: discovery, an Ed25519 key set, a token
//!   endpoint) that answers whatever ID token the test made, for what a real provider cannot be
//!   made to do.

use crate::helpers::{TestApp, cookie_value, location, query_param, set_cookie};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

// ----- the certified provider, on node -----------------------------------------------------

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether node and the provider's packages are here; prints why not.
pub fn provider_available() -> bool {
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
pub struct RealProvider {
    child: Child,
    pub issuer: String,
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the provider for the Keyhole listening at `keyhole_port` (its clients' redirect URIs
/// name that port).
pub fn start_provider(keyhole_port: u16) -> RealProvider {
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

/// The value of an attribute in the first tag that has it.
pub fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

/// Every hidden input of the page's form.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

/// Sends the browser to Keyhole's `start` (a path, or a whole URL such as a partner's
/// authorization request) and returns where Keyhole sent it: the provider's authorization
/// endpoint, checked.
pub async fn start_sign_in(
    browser: &reqwest::Client,
    app: &TestApp,
    provider_issuer: &str,
    start: &str,
) -> String {
    let url = if start.starts_with('/') {
        app.url(start)
    } else {
        start.to_owned()
    };
    let response = browser.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{url}");
    let next = location(&response);
    assert!(next.starts_with(provider_issuer), "{next}");
    next
}

/// Plays the person at the provider from `next` (a URL at the provider): follows its redirects
/// and submits its forms — the login (as `login`, any password), the consent, and the
/// sign-out confirmation ("yes") — until it sends the browser to a URL starting with
/// `until`. Returns that URL, not yet visited.
pub async fn play_at_provider(
    browser: &reqwest::Client,
    provider: &RealProvider,
    mut next: String,
    until: &str,
    login: &str,
) -> String {
    for _ in 0..20 {
        if next.starts_with(until) {
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
        if html.contains("name=\"logout\"") {
            form.push(("logout".into(), "yes".into()));
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
    panic!("the provider never sent the browser to {until}");
}

/// Starts a sign-in at Keyhole's `start` and plays the person `login` at the provider, until
/// it sends the browser back to Keyhole's `callback_path`. Returns that callback URL, not yet
/// visited.
pub async fn sign_in_at_provider(
    browser: &reqwest::Client,
    app: &TestApp,
    provider: &RealProvider,
    start: &str,
    callback_path: &str,
    login: &str,
) -> String {
    let next = start_sign_in(browser, app, &provider.issuer, start).await;
    play_at_provider(browser, provider, next, &app.url(callback_path), login).await
}

// ----- the in-test provider ----------------------------------------------------------------

/// An in-test provider: discovery, an Ed25519 key set (one key, `kid` `k1`), and a token
/// endpoint that answers whatever ID token the test made.
pub struct FakeProvider {
    server: MockServer,
    signing: ed25519_dalek::SigningKey,
    /// What the token endpoint answers any code no [`FakeProvider::answer_with`] claimed.
    fallback: Arc<Mutex<String>>,
}

/// The token endpoint's answer to any other code: whatever ID token the test set last.
struct FallbackAnswer(Arc<Mutex<String>>);

impl Respond for FallbackAnswer {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "at", "token_type": "Bearer", "expires_in": 60,
            "id_token": *self.0.lock(),
        }))
    }
}

/// A sign-in Keyhole started at the fake provider: what it sent the browser there with.
pub struct FakeSignIn {
    /// The authorization URL at the provider.
    pub authorize: String,
    pub nonce: String,
    pub state: String,
    /// The value of the cookie that binds the sign-in to the browser.
    pub binding: String,
}

impl FakeProvider {
    /// A provider that advertises the ID-token signing `algorithms`.
    pub async fn start(algorithms: &[&str]) -> Self {
        Self::start_with(algorithms, json!({})).await
    }

    /// The same, with `extra` keys in its discovery document (an `end_session_endpoint`).
    pub async fn start_with(algorithms: &[&str], extra: Value) -> Self {
        let server = MockServer::start().await;
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand_seed());
        let issuer = server.uri();
        let mut discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "id_token_signing_alg_values_supported": algorithms,
            "code_challenge_methods_supported": ["S256"],
        });
        if let (Some(doc), Some(extra)) = (discovery.as_object_mut(), extra.as_object()) {
            doc.extend(extra.clone());
        }
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(discovery))
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
        let fallback = Arc::new(Mutex::new(String::new()));
        // Below the per-code answers (priority 5): only codes none of them claims get here.
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(FallbackAnswer(fallback.clone()))
            .with_priority(10)
            .mount(&server)
            .await;
        Self {
            server,
            signing,
            fallback,
        }
    }

    /// The wiremock server, for a test that makes the provider misbehave.
    pub fn server(&self) -> &MockServer {
        &self.server
    }

    /// From now on the token endpoint answers any code (that no `answer_with` claimed) with
    /// `id_token`.
    pub fn answer_any_code_with(&self, id_token: &str) {
        *self.fallback.lock() = id_token.to_owned();
    }

    pub fn issuer(&self) -> String {
        self.server.uri()
    }

    /// How many requests the provider has had at `path`.
    pub async fn requests_to(&self, at: &str) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == at)
            .count()
    }

    /// Signed (EdDSA) by the provider's key, with `kid` in the header.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        sign_ed25519(&self.signing, kid, claims)
    }

    /// The provider's public key: what an HMAC confusion attack keys its MAC with.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The registered claims of a good ID token for this sign-in, at `now`: the issuer,
    /// `client_id` as the audience, `sub`, the nonce, and a sign-in five seconds ago.
    pub fn claims(&self, client_id: &str, sub: &str, nonce: &str, now: DateTime<Utc>) -> Value {
        let now = now.timestamp();
        json!({
            "iss": self.issuer(), "aud": client_id, "sub": sub, "nonce": nonce,
            "iat": now, "exp": now + 300, "auth_time": now - 5,
        })
    }

    /// The token endpoint answers the code `code` (once) with `id_token`.
    pub async fn answer_with(&self, code: &str, id_token: &str) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains(format!("code={code}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": id_token,
            })))
            .up_to_n_times(1)
            .mount(&self.server)
            .await;
    }

    /// Sends the browser to Keyhole's `start` (a path or a whole URL), checks that Keyhole sent
    /// it here with PKCE S256 and a binding cookie named `binding_cookie`, and returns what it
    /// came with.
    pub async fn begin(
        &self,
        browser: &reqwest::Client,
        app: &TestApp,
        start: &str,
        binding_cookie: &str,
    ) -> FakeSignIn {
        let url = if start.starts_with('/') {
            app.url(start)
        } else {
            start.to_owned()
        };
        let response = browser.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{url}");
        let authorize = location(&response);
        assert!(
            authorize.starts_with(&format!("{}/auth?", self.issuer())),
            "{authorize}"
        );
        assert_eq!(
            query_param(&authorize, "code_challenge_method").as_deref(),
            Some("S256")
        );
        let binding = cookie_value(&set_cookie(&response, binding_cookie).expect("a binding"));
        assert!(!binding.is_empty());
        FakeSignIn {
            nonce: query_param(&authorize, "nonce").unwrap(),
            state: query_param(&authorize, "state").unwrap(),
            authorize,
            binding,
        }
    }

    /// Has the token endpoint answer a fresh code with `id_token`, and returns the callback URL
    /// at Keyhole's `callback_path` that brings that code and `state` back (not yet visited).
    pub async fn answer(
        &self,
        app: &TestApp,
        callback_path: &str,
        state: &str,
        id_token: &str,
    ) -> String {
        let code = uuid::Uuid::new_v4().simple().to_string();
        self.answer_with(&code, id_token).await;
        format!("{}?code={code}&state={state}", app.url(callback_path))
    }
}

/// A token signed (EdDSA) by `key`, with `kid` in the header.
pub fn sign_ed25519(key: &ed25519_dalek::SigningKey, kid: &str, claims: &Value) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

/// A token signed by a key the provider never published, naming `kid` (its own `k1`, or one
/// it does not have).
pub fn signed_by_a_stranger(kid: &str, claims: &Value) -> String {
    sign_ed25519(
        &ed25519_dalek::SigningKey::from_bytes(&rand_seed()),
        kid,
        claims,
    )
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// An HS256 token keyed with the provider's public key, naming its key `k1`.
pub fn hmac_with_public_key(fake: &FakeProvider, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(&fake.public_key()),
    )
    .unwrap()
}

pub fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&uuid::Uuid::new_v4().as_bytes().repeat(2));
    seed
}

/// `claims` with `name` set to `value`.
pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

/// `claims` without `name`.
pub fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}
