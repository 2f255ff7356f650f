//! Red-team tests of customer sign-in through the insurer's OpenID provider
//! (`[customer_login]`, issue 14): each test is an attack that once worked (or a property an
//! attack tried and found holding), against a small in-test provider (wiremock: discovery,
//! an Ed25519 key set, a token endpoint answering whatever ID token the test made).
//!
//! The provider is the shared one (`oidc_providers.rs`), wrapped with the portal's client.

use crate::helpers::{TestApp, browser, cookie_value, location, query_param, set_cookie};
use crate::oidc_providers::FakeProvider as SharedFake;
use crate::portal_oidc::{CLIENT_ID, CUSTOMER_ID_CLAIM as CLAIM, customer_login};
use keyhole::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The shared in-test provider (`oidc_providers.rs`), with the portal's client and a customer.
struct FakeProvider(SharedFake);

impl FakeProvider {
    async fn start() -> Self {
        Self(SharedFake::start(&["EdDSA"]).await)
    }

    async fn start_with(extra: Value) -> Self {
        Self(SharedFake::start_with(&["EdDSA"], extra).await)
    }

    fn issuer(&self) -> String {
        self.0.issuer()
    }

    fn server(&self) -> &wiremock::MockServer {
        self.0.server()
    }

    fn sign(&self, claims: &Value) -> String {
        self.0.sign("k1", claims)
    }

    /// A good ID token for customer CU-1001 (a built-in account of the test app) at `now`.
    fn claims(&self, nonce: &str, now: i64) -> Value {
        let now = chrono::DateTime::from_timestamp(now, 0).unwrap();
        let mut claims = self.0.claims(CLIENT_ID, "carla", nonce, now);
        claims["email"] = json!("carla@example.com");
        claims["name"] = json!("Carla Customer");
        claims[CLAIM] = json!("CU-1001");
        claims
    }

    /// The token endpoint answers with this ID token from now on.
    async fn answer_with(&self, id_token: &str) {
        self.0.answer_any_code_with(id_token);
    }
}

/// A Keyhole whose customers sign in at `fake`.
async fn app_at(fake: &FakeProvider) -> TestApp {
    let issuer = fake.issuer();
    crate::helpers::spawn_app_with(|s| s.customer_login = Some(customer_login(&issuer))).await
}

/// A sign-in that was sent to the provider: where to, and its nonce and state.
struct Started {
    nonce: String,
    state: String,
}

/// Visits `path` (expected to send the browser to the provider) and reads the sign-in off the
/// redirect.
async fn start(
    app: &TestApp,
    fake: &FakeProvider,
    browser: &reqwest::Client,
    path: &str,
) -> Started {
    let response = browser.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
    let authorization_url = location(&response);
    assert!(
        authorization_url.starts_with(&format!("{}/auth?", fake.issuer())),
        "{path}: {authorization_url}"
    );
    assert!(set_cookie(&response, "kh_portal_oidc").is_some());
    Started {
        nonce: query_param(&authorization_url, "nonce").unwrap(),
        state: query_param(&authorization_url, "state").unwrap(),
    }
}

/// Brings the provider's answer (with the token `id_token`) back to the callback.
async fn finish(
    app: &TestApp,
    fake: &FakeProvider,
    browser: &reqwest::Client,
    started: &Started,
    id_token: &str,
) -> reqwest::Response {
    fake.answer_with(id_token).await;
    browser
        .get(format!(
            "{}?code=the-code&state={}",
            app.url("/portal/oidc/callback"),
            started.state
        ))
        .send()
        .await
        .unwrap()
}

/// A browser signed in at the provider through `path`, with the claims `edit` makes of a good
/// token's; returns the callback's answer.
async fn sign_in_with(
    app: &TestApp,
    fake: &FakeProvider,
    browser: &reqwest::Client,
    path: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> reqwest::Response {
    let started = start(app, fake, browser, path).await;
    let mut claims = fake.claims(&started.nonce, app.clock.now().timestamp());
    if let Some(map) = claims.as_object_mut() {
        edit(map);
    }
    finish(app, fake, browser, &started, &fake.sign(&claims)).await
}

/// The path of a partner's authorization request for `claims:status` with `state`.
fn authorize_path(app: &TestApp, state: &str) -> String {
    let (challenge, _) = oauth2::PkceCodeChallenge::new_random_sha256();
    let mut url = url::Url::parse(&app.url("/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app.partner.client_id)
        .append_pair("redirect_uri", &app.partner.redirect_uri)
        .append_pair("scope", "claims:status")
        .append_pair("state", state)
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256");
    format!("{}?{}", url.path(), url.query().unwrap())
}

/// Whether CU-1001 (a built-in account of the test app) was tied to a provider identity.
async fn linked(app: &TestApp) -> bool {
    let id = keyhole::domain::UpstreamCustomerId::parse("CU-1001").unwrap();
    let customer = app.app.store.customer_by_upstream_id(&id).await.unwrap();
    customer.is_some_and(|c| c.oidc.is_some())
}

// ----- findings ---------------------------------------------------------------------------

/// `auth_time` decides how long a session may consent, revoke and download without another
/// sign-in. One in the future (a provider's bug, or its clock) made the session "recent" for
/// as long as it lay ahead: a plain sign-in with `auth_time` a day ahead still downloaded the
/// history 14 minutes later. An absurd one (`1e300`) passed the `max_age` check by saturating
/// and then left a session with no sign-in time at all, which sent the customer back to the
/// provider on every consent. Both are refused like any other broken ID token, with nothing
/// stored; a few seconds of skew still pass.
#[tokio::test]
async fn an_auth_time_in_the_future_is_refused_and_changes_nothing() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let now = app.clock.now().timestamp();
    for (path, auth_time) in [
        ("/portal/login".to_owned(), json!(now + 86_400)),
        (authorize_path(&app, "st"), json!(now + 86_400)),
        (authorize_path(&app, "st"), json!(1e300)),
    ] {
        let browser = browser();
        let answer = sign_in_with(&app, &fake, &browser, &path, |c| {
            c.insert("auth_time".into(), auth_time.clone());
        })
        .await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{path} {auth_time}");
        assert!(set_cookie(&answer, "kh_session").is_none(), "no session");
        let page = answer.text().await.unwrap();
        assert!(page.contains("could not be completed"), "{page}");
        assert!(!linked(&app).await, "nothing stored");
    }

    // Clock skew within the ID token's leeway still signs in.
    let browser = browser();
    let answer = sign_in_with(&app, &fake, &browser, "/portal/login", |c| {
        c.insert("auth_time".into(), json!(now + 10));
    })
    .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&answer, "kh_session").is_some());
    // ... and that sign-in ages like any other.
    app.clock.advance(chrono::Duration::minutes(14));
    let download = browser
        .get(app.url("/portal/access-history.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        download.status(),
        StatusCode::SEE_OTHER,
        "back to the provider"
    );
    assert!(location(&download).starts_with(&fake.issuer()));
}

/// A session whose stored sign-in time lies in the future (one started before the ID token's
/// `auth_time` was checked, or with the clock moved back) is not "recent": the rule fails
/// closed.
#[tokio::test]
async fn a_session_whose_sign_in_time_lies_ahead_is_not_recent() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let browser = browser();
    let answer = sign_in_with(&app, &fake, &browser, "/portal/login", |_| {}).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookie = cookie_value(&set_cookie(&answer, "kh_session").unwrap());
    let hash = keyhole::secrets::token_hash(&cookie);
    let state = &app.app.state;
    let mut session: keyhole::state::Session = state.session(&hash).await.unwrap().unwrap();
    session.auth_time = Some(app.clock.now() + chrono::Duration::days(1));
    state
        .put_session(&hash, &session, std::time::Duration::from_secs(900))
        .await
        .unwrap();
    let download = browser
        .get(app.url("/portal/access-history.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        download.status(),
        StatusCode::SEE_OTHER,
        "back to the provider"
    );
    assert!(location(&download).starts_with(&fake.issuer()));
}

/// The ID-token check forgives 30 s of clock skew on `auth_time` against `max_age`; the
/// session's recency rule forgave none. A consent sign-in the check accepted at the edge was
/// sent straight back to the provider, which (its clock a little behind ours) answered with the
/// same `auth_time`: a redirect loop until the start limit (429).
#[tokio::test]
async fn a_fresh_sign_in_the_id_token_check_accepted_reaches_the_consent_page() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let browser = browser();
    let path = authorize_path(&app, "st");
    let now = app.clock.now().timestamp();
    let answer = sign_in_with(&app, &fake, &browser, &path, |c| {
        c.insert("auth_time".into(), json!(now - 600 - 20));
    })
    .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), path);
    let consent = browser.get(app.url(&path)).send().await.unwrap();
    assert_eq!(
        consent.status(),
        StatusCode::OK,
        "the consent page, not the provider"
    );
    assert!(crate::helpers::hidden(&consent.text().await.unwrap(), "consent_id").is_some());
}

/// A partner may send a `state` of up to 512 bytes ("room for any signed or encrypted value it
/// needs"). The way back to the consent page was parked only when the whole request fit in
/// 512 characters, and silently dropped otherwise: after signing in at the provider the
/// customer landed on the portal's overview and the partner never heard back. Now requests of
/// any valid size come back; an absurdly long link gets a plain 400 page and parks nothing.
#[tokio::test]
async fn a_partner_request_with_a_long_state_comes_back_to_consent() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let browser = browser();
    let path = authorize_path(&app, &"s/+=".repeat(128));
    assert!(path.len() > 1000, "{}", path.len());
    let answer = sign_in_with(&app, &fake, &browser, &path, |_| {}).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), path);
    let consent = browser.get(app.url(&path)).send().await.unwrap();
    assert_eq!(consent.status(), StatusCode::OK);

    let padded = format!("{path}&pad={}", "x".repeat(10_000));
    let response = crate::helpers::browser()
        .get(app.url(&padded))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        set_cookie(&response, "kh_portal_oidc").is_none(),
        "nothing parked"
    );
    assert!(response.text().await.unwrap().contains("too long"));
}

/// `next` is parked across the trip to the provider and becomes the callback's `Location`. A
/// line break in it (`/portal/login?next=/portal%0d%0a…`) made that header invalid: the
/// customer signed in at the provider and got a 500 (with a session cookie on it). The
/// console's `safe_next` had been mended for exactly this; the portal's had not.
#[tokio::test]
async fn a_next_with_a_line_break_lands_on_the_portal_not_on_a_500() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    for next in [
        "%2Fportal%0D%0ASet-Cookie:%20x=y",
        "%2Fportal%00",
        "%2Fportal%7F",
    ] {
        let browser = browser();
        let answer = sign_in_with(
            &app,
            &fake,
            &browser,
            &format!("/portal/login?next={next}"),
            |_| {},
        )
        .await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(location(&answer), "/portal", "{next}");
    }
}

/// Sign-out posts the portal page's form and is answered with a redirect to the provider's
/// `end_session_endpoint`; browsers apply the page's CSP `form-action` to that redirect. The
/// page allowed only the issuer's origin, so a provider whose end-session endpoint lives on
/// another origin (discovery allows any https address for it, e.g. a provider whose login
/// pages sit on another host than its issuer) had its sign-out blocked by the browser: the
/// Keyhole session ended, the provider's did not — on a shared device the next person is
/// signed straight back in.
#[tokio::test]
async fn sign_out_may_reach_an_end_session_endpoint_on_another_origin() {
    let port = crate::helpers::free_port();
    let end_session = format!("http://localhost:{port}/logout");
    let fake = FakeProvider::start_with(json!({ "end_session_endpoint": end_session })).await;
    let app = app_at(&fake).await;
    let browser = browser();
    let answer = sign_in_with(&app, &fake, &browser, "/portal/login", |_| {}).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let page = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let form_action = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("form-action"))
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let signed_out = browser
        .post(app.url("/portal/logout"))
        .form(&[(
            "csrf_token",
            crate::helpers::hidden(&html, "csrf_token").unwrap(),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let target = url::Url::parse(&location(&signed_out)).unwrap();
    let origin = target.origin().ascii_serialization();
    assert_eq!(origin, format!("http://localhost:{port}"));
    assert!(
        form_action.split(' ').any(|source| source == origin),
        "{form_action} lets the browser follow the sign-out to {origin}"
    );
}

/// A customer who presses "Sign out" after the session has expired (idle, 15 minutes) was told
/// "You are signed out" but was not sent on to the provider's end-session endpoint (only a
/// live session with its CSRF token was), so their session at the provider lived on: on a
/// shared device the next person visiting the portal was signed straight in as them. A post
/// the browser marks as coming from our own page (`Sec-Fetch-Site: same-origin`, which no page
/// can forge) now goes on to the provider too; a cross-site post still does not.
#[tokio::test]
async fn sign_out_after_the_session_expired_still_ends_the_provider_session() {
    let end_session = "http://localhost:9/logout";
    let fake = FakeProvider::start_with(json!({ "end_session_endpoint": end_session })).await;
    let app = app_at(&fake).await;
    let browser = browser();
    let answer = sign_in_with(&app, &fake, &browser, "/portal/login", |_| {}).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let html = browser
        .get(app.url("/portal"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::helpers::hidden(&html, "csrf_token").unwrap();
    app.clock.advance(chrono::Duration::minutes(20));
    // The session's idle timeout is the shared state's time to live: end it as it would end.
    let cookie = cookie_value(&set_cookie(&answer, "kh_session").unwrap());
    app.app
        .state
        .delete_session::<keyhole::state::Session>(&keyhole::secrets::token_hash(&cookie))
        .await
        .unwrap();

    for (site, expected) in [
        ("cross-site", "/portal/signed-out".to_owned()),
        ("same-site", "/portal/signed-out".to_owned()),
        (
            "same-origin",
            format!("{end_session}?client_id={CLIENT_ID}"),
        ),
    ] {
        let signed_out = browser
            .post(app.url("/portal/logout"))
            .header("sec-fetch-site", site)
            .header("origin", "null")
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_out.status(), StatusCode::SEE_OTHER, "{site}");
        assert!(
            location(&signed_out).starts_with(&expected),
            "{site}: {}",
            location(&signed_out)
        );
    }
}

/// The discovery document is fetched again after an hour, under a lock that queues every
/// sign-in start, callback and sign-out behind the fetch. When the provider stopped answering
/// (a dropped route, not a refused connection), each of those waited for its own 5-second
/// fetch in turn: three customers took 15 s, a queue of them never ended, and the "503 page
/// that says so" came after minutes if at all. A fetch that found the provider unreachable now
/// stands for a while: the ones queued behind it use the document from before (or get the 503
/// at once when there is none) instead of trying again one by one.
#[tokio::test]
async fn an_unresponsive_provider_costs_one_timeout_not_one_per_customer() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    // A first sign-in fetches the discovery document.
    start(&app, &fake, &browser(), "/portal/login").await;
    // The provider stops answering; the document ages past its hour.
    fake.server().reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(30)))
        .mount(fake.server())
        .await;
    app.clock.advance(chrono::Duration::minutes(61));
    let began = std::time::Instant::now();
    let starts = (0..3).map(|_| async {
        let response = browser()
            .get(app.url("/portal/login"))
            .send()
            .await
            .unwrap();
        response.status()
    });
    let statuses = futures_util::future::join_all(starts).await;
    let took = began.elapsed();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::SEE_OTHER),
        "the document from before still serves: {statuses:?}"
    );
    assert!(took < std::time::Duration::from_secs(9), "took {took:?}");

    // Never fetched at all: one timeout, then a 503 for everyone at once.
    let silent = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(30)))
        .mount(&silent)
        .await;
    let issuer = silent.uri();
    let app =
        crate::helpers::spawn_app_with(|s| s.customer_login = Some(customer_login(&issuer))).await;
    let began = std::time::Instant::now();
    let starts = (0..3).map(|_| async {
        browser()
            .get(app.url("/portal/login"))
            .send()
            .await
            .unwrap()
            .status()
    });
    let statuses = futures_util::future::join_all(starts).await;
    let took = began.elapsed();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(took < std::time::Duration::from_secs(9), "took {took:?}");
}

// ----- what was tried and held ------------------------------------------------------------

/// Login CSRF: the attacker signs in at the provider as themselves and sends the victim's
/// browser to the callback with the attacker's code and state. The victim's browser has no
/// pending sign-in, or its own with another state: refused, and a session the victim already
/// had is left as it was.
#[tokio::test]
async fn held_an_attackers_answer_in_the_victims_browser_signs_no_one_in() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let victim = browser();
    let answer = sign_in_with(&app, &fake, &victim, "/portal/login", |_| {}).await;
    let victim_cookie = cookie_value(&set_cookie(&answer, "kh_session").unwrap());
    // The victim has a sign-in of their own under way, too.
    start(&app, &fake, &victim, "/portal/login").await;

    let attacker = browser();
    let theirs = start(&app, &fake, &attacker, "/portal/login").await;
    let mut claims = fake.claims(&theirs.nonce, app.clock.now().timestamp());
    claims["sub"] = json!("mallory");
    claims[CLAIM] = json!("CU-9999");
    fake.answer_with(&fake.sign(&claims)).await;
    let planted = victim
        .get(format!(
            "{}?code=the-code&state={}",
            app.url("/portal/oidc/callback"),
            theirs.state
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&planted, "kh_session").is_none());
    let hash = keyhole::secrets::token_hash(&victim_cookie);
    let session: Option<keyhole::state::Session> = app.app.state.session(&hash).await.unwrap();
    assert!(session.is_some(), "the victim's session is untouched");
    let mallory = keyhole::domain::UpstreamCustomerId::parse("CU-9999").unwrap();
    assert!(
        app.app
            .store
            .customer_by_upstream_id(&mallory)
            .await
            .unwrap()
            .is_none()
    );
}

/// The console's and the portal's pending sign-ins are apart: a binding and state started at
/// one callback find nothing at the other, and a replayed answer finds nothing either.
#[tokio::test]
async fn held_console_and_portal_sign_ins_do_not_mix_and_answers_do_not_replay() {
    let fake = FakeProvider::start().await;
    let issuer = fake.issuer();
    let app = crate::helpers::spawn_app_with(|s| {
        s.customer_login = Some(customer_login(&issuer));
        // The same client at the same provider, so that only the purpose tells them apart.
        let mut console = crate::console_oidc::console_login(&issuer);
        console.client_id = CLIENT_ID.into();
        s.console_login = Some(console);
    })
    .await;
    let plain = crate::helpers::http();
    for (start_path, cookie, other_callback, other_cookie) in [
        (
            "/console/oidc/login",
            "kh_console_oidc",
            "/portal/oidc/callback",
            "kh_portal_oidc",
        ),
        (
            "/portal/login",
            "kh_portal_oidc",
            "/console/oidc/callback",
            "kh_console_oidc",
        ),
    ] {
        let started = plain.get(app.url(start_path)).send().await.unwrap();
        assert_eq!(started.status(), StatusCode::SEE_OTHER, "{start_path}");
        let binding = cookie_value(&set_cookie(&started, cookie).unwrap());
        let state = query_param(&location(&started), "state").unwrap();
        let nonce = query_param(&location(&started), "nonce").unwrap();
        let mut claims = fake.claims(&nonce, app.clock.now().timestamp());
        claims["groups"] = json!(["security-team"]);
        fake.answer_with(&fake.sign(&claims)).await;
        let crossed = plain
            .get(format!("{}?code=c&state={state}", app.url(other_callback)))
            .header("cookie", format!("{other_cookie}={binding}"))
            .send()
            .await
            .unwrap();
        assert_eq!(crossed.status(), StatusCode::FORBIDDEN, "{start_path}");
        assert!(set_cookie(&crossed, "kh_session").is_none());
        assert!(set_cookie(&crossed, "kh_console").is_none());
    }

    // A portal answer taken once is not taken again.
    let browser = browser();
    let started = start(&app, &fake, &browser, "/portal/login").await;
    let claims = fake.claims(&started.nonce, app.clock.now().timestamp());
    let token = fake.sign(&claims);
    let cookie_jar_answer = finish(&app, &fake, &browser, &started, &token).await;
    assert_eq!(cookie_jar_answer.status(), StatusCode::SEE_OTHER);
    let replayed = finish(&app, &fake, &browser, &started, &token).await;
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN);
}

/// A partner's authorization request reaches the provider with our parameters only: its own
/// `prompt`, `login_hint`, `max_age` or `redirect_uri` for the provider go nowhere, and
/// consent always asks for a fresh sign-in.
#[tokio::test]
async fn held_a_partner_cannot_steer_the_trip_to_the_provider() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let path = format!(
        "{}&prompt=none&login_hint=victim&max_age=999999&nonce=n&acr_values=weak",
        authorize_path(&app, "st")
    );
    let response = browser().get(app.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let to = location(&response);
    assert!(to.starts_with(&format!("{}/auth?", fake.issuer())), "{to}");
    let url = url::Url::parse(&to).unwrap();
    let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    for absent in ["prompt", "login_hint", "acr_values"] {
        assert!(!keys.iter().any(|k| k == absent), "{to}");
    }
    assert_eq!(query_param(&to, "max_age").as_deref(), Some("600"));
    assert_eq!(query_param(&to, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(
        query_param(&to, "redirect_uri"),
        Some(app.url("/portal/oidc/callback"))
    );
    assert_ne!(query_param(&to, "nonce").as_deref(), Some("n"));
    assert_eq!(keys.iter().filter(|k| *k == "max_age").count(), 1);
}

/// Hostile claim values: a customer id that is a number, a list, padded, overlong or with a
/// line break is refused with the customer-service page and nothing stored; a name that is
/// huge, has markup or control characters is bounded, stripped and escaped.
#[tokio::test]
async fn held_hostile_claims_are_refused_or_tamed() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    for bad in [
        json!(1001),
        json!(["CU-1001"]),
        json!(" CU-1001"),
        json!("CU-1001\n"),
        json!("C".repeat(65)),
        json!(null),
        json!("CU-1001/../x"),
    ] {
        let answer = sign_in_with(&app, &fake, &browser(), "/portal/login", |c| {
            c.insert(CLAIM.into(), bad.clone());
        })
        .await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{bad}");
        assert!(set_cookie(&answer, "kh_session").is_none());
        assert!(answer.text().await.unwrap().contains("customer service"));
        assert!(!linked(&app).await, "{bad}");
    }
    let browser = browser();
    let name = format!("<b>Carla</b>\u{7}\r\n{}", "x".repeat(10_000));
    let answer = sign_in_with(&app, &fake, &browser, "/portal/login", |c| {
        c.insert("name".into(), json!(name));
    })
    .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let html = browser
        .get(app.url("/portal"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("&lt;b&gt;Carla&lt;&#x2f;b&gt;xxx"),
        "escaped, stripped"
    );
    assert!(!html.contains("<b>Carla"));
    assert!(!html.contains(&"x".repeat(201)), "bounded");
    // The built-in account it took over no longer signs in by address.
    assert!(linked(&app).await);
    assert!(
        app.app
            .store
            .customer_by_email(crate::helpers::ALICE.1)
            .await
            .unwrap()
            .is_none()
    );
}

/// A session from before `auth_time` existed (absent from its stored form) is not recent:
/// revocation and the download send the customer to the provider first.
#[tokio::test]
async fn held_a_session_without_a_sign_in_time_is_not_recent() {
    let fake = FakeProvider::start().await;
    let app = app_at(&fake).await;
    let browser = browser();
    let answer = sign_in_with(&app, &fake, &browser, "/portal/login", |_| {}).await;
    let cookie = cookie_value(&set_cookie(&answer, "kh_session").unwrap());
    let hash = keyhole::secrets::token_hash(&cookie);
    let state = &app.app.state;
    let session: keyhole::state::Session = state.session(&hash).await.unwrap().unwrap();
    let mut old = serde_json::to_value(&session).unwrap();
    old.as_object_mut().unwrap().remove("auth_time");
    let old: keyhole::state::Session = serde_json::from_value(old).unwrap();
    state
        .put_session(&hash, &old, std::time::Duration::from_secs(900))
        .await
        .unwrap();
    for path in ["/portal/access-history.json", "/portal/grants/x/revoke"] {
        let response = browser.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&response).starts_with(&fake.issuer()), "{path}");
    }
    let overview = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(
        overview.status(),
        StatusCode::OK,
        "reading needs no fresh sign-in"
    );
}
