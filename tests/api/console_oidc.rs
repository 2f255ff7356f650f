//! Console sign-in through a workforce OpenID provider (`[console_login]`).
//!
//! Two providers (`oidc_providers.rs`): the certified `oidc-provider` package started by node
//! on loopback (its tests are skipped, saying why, without node or `tests/oidc/node_modules` —
//! `npm ci --prefix tests/oidc`), and a small in-test provider whose ID tokens each break one
//! rule, for what a real provider cannot be made to do.

use crate::helpers::{TestApp, browser, location, query_param, set_cookie, spawn_app_with};
use crate::oidc_providers::{
    FakeProvider, RealProvider, hmac_with_public_key, provider_available, sign_in_at_provider,
    signed_by_a_stranger, start_provider, unsigned, with,
};
use keyhole::config::ConsoleLogin;
use keyhole::secrets::Secret;
use keyhole::store::OidcIdentity;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENT_ID: &str = "keyhole-console";
const CLIENT_SECRET: &str = "keyhole-console-test-secret-0123456789";
const GROUP: &str = "security-team";
const START: &str = "/console/oidc/login";
const CALLBACK: &str = "/console/oidc/callback";

pub(crate) fn console_login(issuer: &str) -> ConsoleLogin {
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
    let callback = sign_in_at_provider(&browser, &app, &provider, START, CALLBACK, "ana").await;
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
    let callback_again = sign_in_at_provider(&again, &app, &provider, START, CALLBACK, "ana").await;
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
    let callback = sign_in_at_provider(&browser, &app, &provider, START, CALLBACK, "bo").await;
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
    let callback = sign_in_at_provider(&browser, &app, &provider, START, CALLBACK, "ana").await;

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

/// The claims of a good console ID token for this sign-in.
fn claims(fake: &FakeProvider, nonce: &str) -> Value {
    let mut claims = fake.claims(CLIENT_ID, "fake-ana", nonce, chrono::Utc::now());
    claims["email"] = json!("fake-ana@harmony.example");
    claims["email_verified"] = json!(true);
    claims["groups"] = json!([GROUP]);
    claims
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
    let sign_in = fake.begin(&browser, &app, START, "kh_console_oidc").await;
    assert_eq!(
        query_param(&sign_in.authorize, "max_age").as_deref(),
        Some("600")
    );
    let callback = fake
        .answer(&app, CALLBACK, &sign_in.state, &make(&fake, &sign_in.nonce))
        .await;
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

#[tokio::test]
async fn the_in_test_provider_signs_a_person_in_when_its_token_is_good() {
    let (answer, app, fake) =
        sign_in_at_fake(&["EdDSA"], |f, nonce| f.sign("k1", &claims(f, nonce))).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&answer, "kh_console").is_some());
    assert!(account_of(&app, &fake.issuer(), "fake-ana").await.is_some());
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let (answer, app, fake) =
        sign_in_at_fake(&["EdDSA"], |f, _| f.sign("k1", &claims(f, "another-nonce"))).await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        f.sign(
            "k1",
            &with(claims(f, nonce), "iss", json!("https://evil.example")),
        )
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA"], |f, nonce| {
        f.sign(
            "k1",
            &with(claims(f, nonce), "aud", json!("another-client")),
        )
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
                with(claims(f, nonce), "exp", json!(past)),
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
        signed_by_a_stranger("k2", &claims(f, nonce))
    })
    .await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_unsigned_id_token_alg_none_is_refused() {
    let (answer, app, fake) =
        sign_in_at_fake(&["EdDSA"], |f, nonce| unsigned(&claims(f, nonce))).await;
    assert_refused(answer, &app, &fake).await;
}

#[tokio::test]
async fn an_id_token_hmac_signed_with_the_providers_public_key_is_refused() {
    // The provider even advertises HS256: the attacker's token is "valid" for a relying party
    // that keys HMAC with whatever the key set holds.
    let (answer, app, fake) = sign_in_at_fake(&["EdDSA", "HS256"], |f, nonce| {
        hmac_with_public_key(f, &claims(f, nonce))
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
