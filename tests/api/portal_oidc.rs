//! Customer sign-in through the insurer's OpenID provider (`[customer_login]`, issue 14): the
//! consent flow, the portal's sign-in and sign-out, the recent-sign-in rule for consent,
//! revocation and the download, and every way an answer from the provider can be wrong.
//!
//! Two providers (`oidc_providers.rs`): the certified `oidc-provider` package started by node
//! on loopback (client `keyhole-portal`; accounts `carla` = CU-1001 and `erik`, who has no
//! customer id; its tests are skipped, saying why, without node or `tests/oidc/node_modules`),
//! and a small in-test provider whose ID tokens each break one rule.
//! Every refusal is checked for what it must not leave behind: a session cookie, a working
//! session, a customer row (made or changed).

use crate::helpers::{
    ALICE, TestApp, browser, cookie_value, free_port, hidden, http, location, query_param,
    set_cookie, spawn_app_with_sample_upstream,
};
use crate::oidc_providers::{
    FakeProvider, FakeSignIn, RealProvider, hmac_with_public_key, play_at_provider,
    provider_available, sign_in_at_provider, signed_by_a_stranger, start_provider, start_sign_in,
    unsigned, with, without,
};
use chrono::{DateTime, Utc};
use keyhole::clock::Clock;
use keyhole::config::CustomerLogin;
use keyhole::domain::UpstreamCustomerId;
use keyhole::secrets::Secret;
use keyhole::store::{GrantState, OidcIdentity};
use oauth2::{AuthorizationCode, TokenResponse};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{Value, json};

pub(crate) const CLIENT_ID: &str = "keyhole-portal";
const CLIENT_SECRET: &str = "keyhole-portal-test-secret-0123456789";
pub(crate) const CUSTOMER_ID_CLAIM: &str = "harmony_customer_id";
const REAUTHENTICATE_AFTER_MINUTES: u32 = 10;
const START: &str = "/portal/login";
const CALLBACK: &str = "/portal/oidc/callback";
const SIGNED_OUT: &str = "/portal/signed-out";
const SESSION_COOKIE: &str = "kh_session";
const BINDING_COOKIE: &str = "kh_portal_oidc";

/// What the person reads when the provider's answer is not a good sign-in.
const NOT_COMPLETED: &str = "This sign-in could not be completed";
/// What the person reads when the provider signed them in without a usable customer id.
const NO_CUSTOMER_NUMBER: &str = "Please contact Harmony customer service";
/// What the person reads when a form was posted on a sign-in that has aged.
const NEEDS_RECENT_SIGN_IN: &str = "this needs a recent sign-in";

pub(crate) fn customer_login(issuer: &str) -> CustomerLogin {
    CustomerLogin {
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET.into()),
        scopes: "openid email profile".into(),
        reauthenticate_after_minutes: REAUTHENTICATE_AFTER_MINUTES,
        customer_id_claim: CUSTOMER_ID_CLAIM.into(),
    }
}

/// Every customer row, by id: compared before and after a refusal, so that nothing made and
/// nothing changed (a taken-over built-in account, a linked identity) goes unnoticed.
async fn customer_rows(app: &TestApp) -> Vec<entity::customers::Model> {
    let db = sea_orm::Database::connect(&app.app.settings.database_url)
        .await
        .unwrap();
    let rows = entity::customers::Entity::find()
        .order_by_asc(entity::customers::Column::Id)
        .all(&db)
        .await
        .unwrap();
    db.close().await.unwrap();
    rows
}

async fn customer_of(
    app: &TestApp,
    issuer: &str,
    subject: &str,
) -> Option<keyhole::store::Customer> {
    app.app
        .store
        .customer_by_oidc(&OidcIdentity {
            issuer: issuer.into(),
            subject: subject.into(),
        })
        .await
        .unwrap()
}

/// The browser has no portal session: the portal sends it to sign in.
async fn assert_no_session(app: &TestApp, browser: &reqwest::Client) {
    let portal = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::SEE_OTHER, "no session");
    assert!(location(&portal).starts_with("/portal/login"));
}

/// The path of the first grant the portal's overview links to.
fn grant_link(html: &str) -> String {
    let start = html.find("/portal/grants/").expect("a grant link");
    html[start..start + "/portal/grants/".len() + 36].to_owned()
}

/// The partner's view of C-1001 with `access`.
async fn claim_c1001(app: &TestApp, access: &str) -> (StatusCode, Option<Value>) {
    let response = app.bearer_get(access, "/partner/v1/claims/C-1001").await;
    let status = response.status();
    (status, response.json().await.ok())
}

// ----- the certified provider, on node -----------------------------------------------------

/// A Keyhole in front of the sample claims API whose customers sign in at a freshly started
/// certified provider.
async fn app_with_real_provider() -> (TestApp, RealProvider) {
    let mut provider = None;
    let app = spawn_app_with_sample_upstream(|s| {
        let started = start_provider(s.listen.port());
        s.customer_login = Some(customer_login(&started.issuer));
        provider = Some(started);
    })
    .await;
    (app, provider.unwrap())
}

#[tokio::test]
async fn a_partner_gets_consent_from_a_customer_who_signs_in_at_the_provider() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let before = customer_rows(&app).await;
    let alice = before
        .iter()
        .find(|c| c.upstream_id == ALICE.0)
        .expect("the built-in account for CU-1001")
        .clone();

    // The partner starts an authorization; the browser goes to the provider, asked for a fresh
    // sign-in.
    let (auth_url, state, verifier) = app.authorize_url(&["claims:status", "claims:claim_number"]);
    let browser = browser();
    let at_provider = start_sign_in(&browser, &app, &provider.issuer, &auth_url).await;
    let max_age = (REAUTHENTICATE_AFTER_MINUTES * 60).to_string();
    assert_eq!(
        query_param(&at_provider, "max_age").as_deref(),
        Some(max_age.as_str())
    );
    assert_eq!(
        query_param(&at_provider, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        query_param(&at_provider, "redirect_uri"),
        Some(app.url(CALLBACK))
    );
    assert_eq!(
        query_param(&at_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );

    // Carla signs in there and comes back to the consent she was giving.
    let callback = play_at_provider(
        &browser,
        &provider,
        at_provider,
        &app.url(CALLBACK),
        "carla",
    )
    .await;
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(provider.issuer.as_str())
    );
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&answer, SESSION_COOKIE).is_some(), "a session");
    let back = location(&answer);
    assert!(back.starts_with("/oauth/authorize?"), "{back}");
    assert_eq!(app.url(&back), auth_url, "back to the same request");

    let page = app.consent_page(&browser, &app.url(&back)).await;
    assert!(page.html.contains("Fone Shop"), "{}", page.html);
    assert!(page.html.contains("Claim number"));
    let decided = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    assert_eq!(decided.status(), StatusCode::SEE_OTHER);
    let to_partner = location(&decided);
    assert!(
        to_partner.starts_with(&app.partner.redirect_uri),
        "{to_partner}"
    );
    assert_eq!(
        query_param(&to_partner, "state").as_deref(),
        Some(state.secret().as_str())
    );
    let tokens = app
        .oauth_client()
        .exchange_code(AuthorizationCode::new(
            query_param(&to_partner, "code").expect("a code"),
        ))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();

    // The partner reads Carla's claim, with the one field she granted.
    let (status, body) = claim_c1001(&app, tokens.access_token().secret()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Some(json!({"id": "C-1001", "status": "in_repair"})));

    // Her customer is found by the provider's issuer and subject: the built-in account for
    // CU-1001, taken over (its password ended), and nothing else made or changed.
    let carla = customer_of(&app, &provider.issuer, "carla")
        .await
        .expect("a customer for carla");
    assert_eq!(carla.upstream_id.as_str(), "CU-1001");
    assert_eq!(carla.id.to_string(), alice.id);
    let after = customer_rows(&app).await;
    assert_eq!(after.len(), before.len(), "no second row for CU-1001");
    let row = after.iter().find(|c| c.id == alice.id).unwrap();
    assert_eq!(row.oidc_issuer.as_deref(), Some(provider.issuer.as_str()));
    assert_eq!(row.oidc_subject.as_deref(), Some("carla"));
    assert_ne!(row.password_hash, alice.password_hash, "the password ended");
    assert_eq!(
        after
            .iter()
            .filter(|c| c.id != alice.id)
            .collect::<Vec<_>>(),
        before
            .iter()
            .filter(|c| c.id != alice.id)
            .collect::<Vec<_>>()
    );

    // Her next sign-in, in another browser, finds the same customer and her grant.
    let again = crate::helpers::browser();
    let callback = sign_in_at_provider(&again, &app, &provider, START, CALLBACK, "carla").await;
    let answer = again.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/portal");
    let portal = again.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    let html = portal.text().await.unwrap();
    assert!(html.contains("Carla Customer"), "greeted by name: {html}");
    assert!(html.contains("Fone Shop"), "her grant: {html}");
    assert_eq!(customer_rows(&app).await, after, "reused, not made again");
}

#[tokio::test]
async fn a_customer_without_a_customer_number_gets_a_403_page_and_neither_session_nor_customer() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let before = customer_rows(&app).await;
    let browser = browser();
    let callback = sign_in_at_provider(&browser, &app, &provider, START, CALLBACK, "erik").await;
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&answer, SESSION_COOKIE).is_none(), "no session");
    let page = answer.text().await.unwrap();
    assert!(page.contains(NO_CUSTOMER_NUMBER), "{page}");
    assert!(customer_of(&app, &provider.issuer, "erik").await.is_none());
    assert_eq!(customer_rows(&app).await, before, "nothing stored");
    assert_no_session(&app, &browser).await;
}

#[tokio::test]
async fn signing_out_ends_the_session_here_and_at_the_provider() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let browser = browser();
    let callback = sign_in_at_provider(&browser, &app, &provider, START, CALLBACK, "carla").await;
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let session = cookie_value(&set_cookie(&answer, SESSION_COOKIE).unwrap());

    let portal = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    // The sign-out form's answer goes on to the provider: its page allows that.
    let csp = portal.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains(&format!("form-action 'self' {}", provider.issuer)),
        "{csp}"
    );
    let csrf = hidden(&portal.text().await.unwrap(), "csrf_token").unwrap();

    // A cross-site post (without the session's CSRF token) signs no one out, here or there.
    let forged = browser
        .post(app.url("/portal/logout"))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get("location").is_none());
    let still = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(still.status(), StatusCode::OK, "still signed in");

    let out = browser
        .post(app.url("/portal/logout"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let end_session = location(&out);
    assert!(
        end_session.starts_with(&format!("{}/session/end?", provider.issuer)),
        "{end_session}"
    );
    assert_eq!(
        query_param(&end_session, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        query_param(&end_session, "post_logout_redirect_uri"),
        Some(app.url(SIGNED_OUT))
    );
    assert!(
        set_cookie(&out, SESSION_COOKIE).is_some(),
        "the cookie is removed"
    );

    // The old cookie opens nothing any more.
    let replayed = http()
        .get(app.url("/portal"))
        .header(COOKIE, format!("{SESSION_COOKIE}={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    assert!(location(&replayed).starts_with("/portal/login"));

    // The provider asks, the person confirms, and lands on the signed-out page.
    let landed = play_at_provider(
        &browser,
        &provider,
        end_session,
        &app.url(SIGNED_OUT),
        "carla",
    )
    .await;
    let page = browser.get(&landed).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("You are signed out"));

    // Signed out there too: the next sign-in asks for the password again.
    let mut next = start_sign_in(&browser, &app, &provider.issuer, START).await;
    let html = loop {
        let response = browser.get(&next).send().await.unwrap();
        if response.status().is_redirection() {
            let to = location(&response);
            assert!(!to.starts_with(&app.url(CALLBACK)), "signed in silently");
            next = if to.starts_with('/') {
                format!("{}{to}", provider.issuer)
            } else {
                to
            };
            continue;
        }
        break response.text().await.unwrap();
    };
    assert!(html.contains("name=\"login\""), "a login form: {html}");
}

// ----- the in-test provider ----------------------------------------------------------------

/// A Keyhole in front of the sample claims API, its customers signing in at a fake provider
/// that advertises `algorithms`; and its customer rows before anything happened.
pub(crate) struct FakeWorld {
    pub(crate) app: TestApp,
    pub(crate) fake: FakeProvider,
    before: Vec<entity::customers::Model>,
}

pub(crate) const FIONA: &str = "fake-fiona";
const FIONA_NUMBER: &str = "CU-3003";

pub(crate) async fn fake_world(algorithms: &[&str]) -> FakeWorld {
    let fake = FakeProvider::start(algorithms).await;
    let issuer = fake.issuer();
    let app =
        spawn_app_with_sample_upstream(|s| s.customer_login = Some(customer_login(&issuer))).await;
    let before = customer_rows(&app).await;
    FakeWorld { app, fake, before }
}

impl FakeWorld {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.app.clock.now()
    }

    /// A good ID token's claims for `sub`, customer `number`, at the app's time.
    pub(crate) fn claims_of(&self, sub: &str, number: &str, nonce: &str) -> Value {
        let mut claims = self.fake.claims(CLIENT_ID, sub, nonce, self.now());
        claims[CUSTOMER_ID_CLAIM] = json!(number);
        claims["name"] = json!("Fiona Fake");
        claims
    }

    /// A good ID token's claims for Fiona (CU-3003, who has no account yet).
    pub(crate) fn claims(&self, nonce: &str) -> Value {
        self.claims_of(FIONA, FIONA_NUMBER, nonce)
    }

    /// Starts a sign-in at `start` in `browser`.
    async fn begin(&self, browser: &reqwest::Client, start: &str) -> FakeSignIn {
        self.fake
            .begin(browser, &self.app, start, BINDING_COOKIE)
            .await
    }

    /// The callback URL that brings `id_token` (through a fresh code) and `state` back.
    async fn callback(&self, state: &str, id_token: &str) -> String {
        self.fake.answer(&self.app, CALLBACK, state, id_token).await
    }

    /// A whole sign-in at the portal's sign-in page in a fresh browser, the provider answering
    /// with the token `make` builds from this world and the nonce.
    pub(crate) async fn sign_in(
        &self,
        make: impl FnOnce(&FakeWorld, &str) -> String,
    ) -> (reqwest::Client, reqwest::Response) {
        let browser = browser();
        let sign_in = self.begin(&browser, START).await;
        let token = make(self, &sign_in.nonce);
        let callback = self.callback(&sign_in.state, &token).await;
        let answer = browser.get(&callback).send().await.unwrap();
        (browser, answer)
    }

    /// A sign-in whose answer is refused with a 403 page saying `says`, leaving no session
    /// cookie, no session, and the customers as they were.
    async fn assert_refused(
        &self,
        case: &str,
        says: &str,
        make: impl FnOnce(&FakeWorld, &str) -> String,
    ) {
        let (browser, answer) = self.sign_in(make).await;
        self.assert_refused_answer(case, says, &browser, answer)
            .await;
    }

    async fn assert_refused_answer(
        &self,
        case: &str,
        says: &str,
        browser: &reqwest::Client,
        answer: reqwest::Response,
    ) {
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{case}");
        assert!(
            set_cookie(&answer, SESSION_COOKIE).is_none(),
            "{case}: no session cookie"
        );
        let page = answer.text().await.unwrap();
        assert!(page.contains(says), "{case}: {page}");
        assert_no_session(&self.app, browser).await;
        assert_eq!(
            customer_rows(&self.app).await,
            self.before,
            "{case}: no customer made or changed"
        );
    }
}

#[tokio::test]
async fn a_good_id_token_from_the_in_test_provider_makes_the_customer_and_a_session() {
    let world = fake_world(&["EdDSA"]).await;
    let (browser, answer) = world
        .sign_in(|w, nonce| w.fake.sign("k1", &w.claims(nonce)))
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/portal");
    assert!(set_cookie(&answer, SESSION_COOKIE).is_some());
    let portal = browser.get(world.app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    assert!(portal.text().await.unwrap().contains("Fiona Fake"));

    let fiona = customer_of(&world.app, &world.fake.issuer(), FIONA)
        .await
        .expect("made at the first sign-in");
    assert_eq!(fiona.upstream_id.as_str(), FIONA_NUMBER);
    let rows = customer_rows(&world.app).await;
    assert_eq!(rows.len(), world.before.len() + 1, "one row made");
    // Keyed by the issuer and subject: the same subject at another issuer is someone else.
    assert!(
        customer_of(&world.app, "https://elsewhere.example", FIONA)
            .await
            .is_none()
    );

    // A sign-in started with a `next` off the site comes back to the portal, and the greeting
    // taken from the ID token is text, not markup.
    let browser = crate::helpers::browser();
    let sign_in = world
        .begin(&browser, "/portal/login?next=%2F%2Fevil.example%2F")
        .await;
    let mut claims = world.claims_of("fake-bob", "CU-2002", &sign_in.nonce);
    claims["name"] = json!("<script>alert(1)</script>");
    let callback = world
        .callback(&sign_in.state, &world.fake.sign("k1", &claims))
        .await;
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/portal");
    let html = browser
        .get(world.app.url("/portal"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
}

#[tokio::test]
async fn a_customer_number_held_by_another_identity_or_a_changed_one_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    let (_, first) = world
        .sign_in(|w, nonce| w.fake.sign("k1", &w.claims(nonce)))
        .await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let made = customer_rows(&world.app).await;

    let world = FakeWorld {
        before: made,
        ..world
    };
    // Another identity at the provider carries Fiona's number.
    world
        .assert_refused(
            "another identity, same number",
            "linked to another sign-in",
            |w, nonce| {
                w.fake
                    .sign("k1", &w.claims_of("fake-impostor", FIONA_NUMBER, nonce))
            },
        )
        .await;
    // Fiona's identity now carries another number (one nobody has, and one Bob's account has).
    for number in ["CU-3004", "CU-2002"] {
        world
            .assert_refused(
                &format!("changed to {number}"),
                "linked to another sign-in",
                |w, nonce| w.fake.sign("k1", &w.claims_of(FIONA, number, nonce)),
            )
            .await;
    }
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    world
        .assert_refused("another nonce", NOT_COMPLETED, |w, _| {
            w.fake.sign("k1", &w.claims("another-nonce"))
        })
        .await;
}

#[tokio::test]
async fn an_answer_with_another_state_without_the_binding_cookie_or_in_another_browser_is_refused()
{
    let world = fake_world(&["EdDSA"]).await;
    let browser = browser();
    let sign_in = world.begin(&browser, START).await;
    let token = world.fake.sign("k1", &world.claims(&sign_in.nonce));
    let callback = world.callback(&sign_in.state, &token).await;

    // Another browser, without the binding cookie, brings the answer.
    let elsewhere = crate::helpers::browser();
    let answer = elsewhere.get(&callback).send().await.unwrap();
    world
        .assert_refused_answer("no binding cookie", NOT_COMPLETED, &elsewhere, answer)
        .await;

    // A browser in the middle of a sign-in of its own (a login-CSRF victim) is made to bring it.
    let victim = crate::helpers::browser();
    world.begin(&victim, START).await;
    let answer = victim.get(&callback).send().await.unwrap();
    world
        .assert_refused_answer("another browser's sign-in", NOT_COMPLETED, &victim, answer)
        .await;

    // The right browser, with a forged state.
    let forged = callback.replace(&sign_in.state, "forged-state");
    assert_ne!(forged, callback);
    let answer = browser.get(&forged).send().await.unwrap();
    world
        .assert_refused_answer("a forged state", NOT_COMPLETED, &browser, answer)
        .await;

    // The forged answer spent the pending sign-in: the real one finds nothing now.
    let answer = browser.get(&callback).send().await.unwrap();
    world
        .assert_refused_answer("after a forged state", NOT_COMPLETED, &browser, answer)
        .await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_or_for_another_audience_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    world
        .assert_refused("another issuer", NOT_COMPLETED, |w, nonce| {
            w.fake.sign(
                "k1",
                &with(w.claims(nonce), "iss", json!("https://evil.example")),
            )
        })
        .await;
    world
        .assert_refused("another audience", NOT_COMPLETED, |w, nonce| {
            w.fake.sign(
                "k1",
                &with(w.claims(nonce), "aud", json!("keyhole-console")),
            )
        })
        .await;
    world
        .assert_refused(
            "our audience among others, no azp",
            NOT_COMPLETED,
            |w, nonce| {
                w.fake.sign(
                    "k1",
                    &with(w.claims(nonce), "aud", json!([CLIENT_ID, "another-client"])),
                )
            },
        )
        .await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    world
        .assert_refused("expired", NOT_COMPLETED, |w, nonce| {
            let past = w.now().timestamp() - 3600;
            let claims = with(w.claims(nonce), "exp", json!(past));
            w.fake.sign("k1", &with(claims, "iat", json!(past - 300)))
        })
        .await;
}

#[tokio::test]
async fn an_id_token_signed_by_a_key_the_provider_never_published_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    world
        .assert_refused("an unknown kid", NOT_COMPLETED, |w, nonce| {
            signed_by_a_stranger("k2", &w.claims(nonce))
        })
        .await;
    world
        .assert_refused(
            "the provider's kid, another key",
            NOT_COMPLETED,
            |w, nonce| signed_by_a_stranger("k1", &w.claims(nonce)),
        )
        .await;
}

#[tokio::test]
async fn an_unsigned_or_hmac_confused_id_token_is_refused() {
    // The provider even advertises HS256: the attacker's token is "valid" for a relying party
    // that keys HMAC with whatever the key set holds.
    let world = fake_world(&["EdDSA", "HS256"]).await;
    world
        .assert_refused("alg none", NOT_COMPLETED, |w, nonce| {
            unsigned(&w.claims(nonce))
        })
        .await;
    world
        .assert_refused(
            "HS256 keyed with the public key",
            NOT_COMPLETED,
            |w, nonce| hmac_with_public_key(&w.fake, &w.claims(nonce)),
        )
        .await;
}

#[tokio::test]
async fn an_id_token_without_a_usable_customer_number_is_refused_and_stores_nothing() {
    let world = fake_world(&["EdDSA"]).await;
    // `sub` has a customer id's shape: a fallback to it would make a customer.
    assert!(UpstreamCustomerId::parse(FIONA).is_ok());
    world
        .assert_refused("no customer-id claim", NO_CUSTOMER_NUMBER, |w, nonce| {
            w.fake
                .sign("k1", &without(w.claims(nonce), CUSTOMER_ID_CLAIM))
        })
        .await;
    for malformed in [
        json!(1001),
        json!("CU 1001"),
        json!(""),
        json!(["CU-1001"]),
        json!("x".repeat(65)),
    ] {
        world
            .assert_refused(
                &format!("customer id {malformed}"),
                NO_CUSTOMER_NUMBER,
                |w, nonce| {
                    w.fake.sign(
                        "k1",
                        &with(w.claims(nonce), CUSTOMER_ID_CLAIM, malformed.clone()),
                    )
                },
            )
            .await;
    }
}

#[tokio::test]
async fn a_replayed_callback_is_refused_and_makes_nothing_new() {
    let world = fake_world(&["EdDSA"]).await;
    let browser = browser();
    let sign_in = world.begin(&browser, START).await;
    let token = world.fake.sign("k1", &world.claims(&sign_in.nonce));
    let callback = world.callback(&sign_in.state, &token).await;
    let first = browser.get(&callback).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&first, SESSION_COOKIE).is_some());
    let made = customer_rows(&world.app).await;
    assert_eq!(made.len(), world.before.len() + 1);

    // The same URL again, in the same browser (whose binding cookie the first answer removed)…
    let again = browser.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&again, SESSION_COOKIE).is_none());
    // …and with the binding cookie too, as someone who copied both would bring it.
    let copied = http()
        .get(&callback)
        .header(COOKIE, format!("{BINDING_COOKIE}={}", sign_in.binding))
        .send()
        .await
        .unwrap();
    assert_eq!(copied.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&copied, SESSION_COOKIE).is_none());
    assert!(copied.text().await.unwrap().contains(NOT_COMPLETED));
    assert_eq!(customer_rows(&world.app).await, made, "nothing new");
}

#[tokio::test]
async fn consent_refuses_a_sign_in_older_than_it_asked_for() {
    let world = fake_world(&["EdDSA"]).await;
    let (auth_url, _, _) = world.app.authorize_url(&["claims:status"]);
    let max_age = i64::from(REAUTHENTICATE_AFTER_MINUTES) * 60;
    for (case, auth_time) in [
        (
            "auth_time older than max_age",
            Some(world.now().timestamp() - max_age - 100),
        ),
        ("no auth_time", None),
    ] {
        let browser = browser();
        let sign_in = world.begin(&browser, &auth_url).await;
        assert_eq!(
            query_param(&sign_in.authorize, "max_age"),
            Some(max_age.to_string()),
            "consent asks for a fresh sign-in"
        );
        let claims = world.claims(&sign_in.nonce);
        let claims = match auth_time {
            Some(at) => with(claims, "auth_time", json!(at)),
            None => without(claims, "auth_time"),
        };
        let callback = world
            .callback(&sign_in.state, &world.fake.sign("k1", &claims))
            .await;
        let answer = browser.get(&callback).send().await.unwrap();
        world
            .assert_refused_answer(case, NOT_COMPLETED, &browser, answer)
            .await;
        // No consent page either: the request sends the browser back to the provider.
        let retry = browser.get(&auth_url).send().await.unwrap();
        assert_eq!(retry.status(), StatusCode::SEE_OTHER, "{case}");
        assert!(location(&retry).starts_with(&world.fake.issuer()));
    }
}

/// An `auth_time` ahead of our clock is a sign-in that has not happened: taken as it is, it
/// would keep the session "recent" for consent, revocation and the download for as long as it
/// is ahead (a day here), whatever `reauthenticate_after_minutes` says.
#[tokio::test]
async fn an_id_token_whose_sign_in_is_in_the_future_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    world
        .assert_refused("auth_time a day ahead", NOT_COMPLETED, |w, nonce| {
            let ahead = w.now().timestamp() + 24 * 3600;
            w.fake
                .sign("k1", &with(w.claims(nonce), "auth_time", json!(ahead)))
        })
        .await;
    // Within the clock skew forgiven, it is a sign-in.
    let (_, answer) = world
        .sign_in(|w, nonce| {
            let ahead = w.now().timestamp() + 10;
            w.fake
                .sign("k1", &with(w.claims(nonce), "auth_time", json!(ahead)))
        })
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
}

// ----- the recent-sign-in rule, with the test's clock ----------------------------------------

/// Past the rule, by the app's clock.
fn age_past_the_rule(world: &FakeWorld) {
    world.app.clock.advance(chrono::Duration::minutes(
        i64::from(REAUTHENTICATE_AFTER_MINUTES) + 1,
    ));
}

/// Sends the browser from `start` to the provider (which must be asked for a fresh sign-in),
/// signs Carla (CU-1001) in there now, and returns where Keyhole sends the browser back to
/// and the new session's cookie value.
async fn fresh_sign_in(
    world: &FakeWorld,
    browser: &reqwest::Client,
    start: &str,
) -> (String, String) {
    let sign_in = world.begin(browser, start).await;
    assert_eq!(
        query_param(&sign_in.authorize, "max_age"),
        Some((REAUTHENTICATE_AFTER_MINUTES * 60).to_string()),
        "{start}: a fresh sign-in asked for"
    );
    let token = world.fake.sign(
        "k1",
        &world.claims_of("fake-carla", "CU-1001", &sign_in.nonce),
    );
    let callback = world.callback(&sign_in.state, &token).await;
    let answer = browser.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&answer, SESSION_COOKIE).expect("a session");
    (location(&answer), cookie_value(&session))
}

#[tokio::test]
async fn consent_on_a_sign_in_past_the_rule_goes_back_to_the_provider_and_a_late_form_is_refused() {
    let world = fake_world(&["EdDSA"]).await;
    let app = &world.app;
    let browser = browser();
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let (back, stale_session) = fresh_sign_in(&world, &browser, &auth_url).await;
    assert_eq!(app.url(&back), auth_url);
    let page = app.consent_page(&browser, &auth_url).await;

    age_past_the_rule(&world);
    // The form shown before is posted now: refused, nothing granted, no code.
    let late = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    assert_eq!(late.status(), StatusCode::FORBIDDEN);
    assert!(late.headers().get("location").is_none(), "no code");
    assert!(late.text().await.unwrap().contains(NEEDS_RECENT_SIGN_IN));
    let carla = customer_of(app, &world.fake.issuer(), "fake-carla")
        .await
        .unwrap();
    assert!(
        app.app
            .store
            .grants_of_customer(carla.id)
            .await
            .unwrap()
            .is_empty(),
        "nothing granted"
    );

    // The session still opens the portal, but a new request sends the browser to the provider
    // for a fresh sign-in; after it, the consent page.
    let portal = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    let (again, _, _) = app.authorize_url(&["claims:status"]);
    let (back, session) = fresh_sign_in(&world, &browser, &again).await;
    assert_eq!(app.url(&back), again);
    assert_ne!(session, stale_session, "a new session");
    let replayed = http()
        .get(app.url("/portal"))
        .header(COOKIE, format!("{SESSION_COOKIE}={stale_session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        replayed.status(),
        StatusCode::SEE_OTHER,
        "the sign-in replaced the old session"
    );
    let page = app.consent_page(&browser, &again).await;
    let allowed = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    assert_eq!(allowed.status(), StatusCode::SEE_OTHER);
    assert!(query_param(&location(&allowed), "code").is_some());
}

#[tokio::test]
async fn revocation_and_the_download_on_a_sign_in_past_the_rule_go_back_to_the_provider() {
    let world = fake_world(&["EdDSA"]).await;
    let app = &world.app;
    let browser = browser();

    // Carla consents for the partner, through a fresh sign-in.
    let (auth_url, _, verifier) = app.authorize_url(&["claims:status"]);
    fresh_sign_in(&world, &browser, &auth_url).await;
    let page = app.consent_page(&browser, &auth_url).await;
    let allowed = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    let code = query_param(&location(&allowed), "code").expect("a code");
    let tokens = app
        .oauth_client()
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();
    let access = tokens.access_token().secret();
    assert_eq!(claim_c1001(app, access).await.0, StatusCode::OK);

    let overview = browser
        .get(app.url("/portal"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let grant = grant_link(&overview);
    let revoke = format!("{grant}/revoke");
    let confirm = browser.get(app.url(&revoke)).send().await.unwrap();
    assert_eq!(confirm.status(), StatusCode::OK, "recent enough");
    let csrf = hidden(&confirm.text().await.unwrap(), "csrf_token").unwrap();
    let csv = browser
        .get(app.url("/portal/access-history.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK, "recent enough");

    age_past_the_rule(&world);
    // The confirmation shown before is posted now: refused, the grant stays.
    let late = browser
        .post(app.url(&revoke))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::FORBIDDEN);
    assert!(late.text().await.unwrap().contains(NEEDS_RECENT_SIGN_IN));
    let carla = customer_of(app, &world.fake.issuer(), "fake-carla")
        .await
        .unwrap();
    let grants = app.app.store.grants_of_customer(carla.id).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].state, GrantState::Active, "still active");
    // The partner's access token has expired meanwhile; its refresh token still works, and the
    // new access token reads the claim.
    let refreshed = app
        .oauth_client()
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .request_async(&http())
        .await
        .expect("the grant is still active");
    let access = refreshed.access_token().secret();
    assert_eq!(claim_c1001(app, access).await.0, StatusCode::OK);

    // The overview needs no recent sign-in; the confirmation and the download do.
    let portal = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    for path in ["/portal/access-history.csv", revoke.as_str()] {
        let response = browser.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        let to = location(&response);
        assert!(
            to.starts_with(&format!("{}/auth?", world.fake.issuer())),
            "{path}: {to}"
        );
        assert_eq!(
            query_param(&to, "max_age"),
            Some((REAUTHENTICATE_AFTER_MINUTES * 60).to_string()),
            "{path}"
        );
    }

    // A fresh sign-in comes back to the confirmation, and the revocation goes through.
    let (back, _) = fresh_sign_in(&world, &browser, &revoke).await;
    assert_eq!(back, revoke);
    let confirm = browser.get(app.url(&revoke)).send().await.unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    let csrf = hidden(&confirm.text().await.unwrap(), "csrf_token").unwrap();
    let done = browser
        .post(app.url(&revoke))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(claim_c1001(app, access).await.0, StatusCode::UNAUTHORIZED);
    let grants = app.app.store.grants_of_customer(carla.id).await.unwrap();
    assert_ne!(grants[0].state, GrantState::Active, "revoked");
}

// ----- passwords, outages ------------------------------------------------------------------

/// A built-in sign-in as a browser would post it: a valid double-submit CSRF pair.
async fn password_sign_in(base: &str, email: &str, password: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/portal/login"))
        .header(COOKIE, "kh_login_csrf=the-csrf-token")
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", "the-csrf-token"),
            ("next", "/portal"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn built_in_passwords_are_refused_while_the_provider_is_configured() {
    let world = fake_world(&["EdDSA"]).await;
    let app = &world.app;
    app.app
        .store
        .insert_customer(
            &UpstreamCustomerId::parse("CU-4004").unwrap(),
            "carol@example.com",
            keyhole::secrets::hash_password("carol-password-4").unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    for (email, password) in [
        ("carol@example.com", "carol-password-4"),
        (ALICE.1, ALICE.2),
    ] {
        let response = password_sign_in(&app.base, email, password).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{email}");
        assert!(set_cookie(&response, SESSION_COOKIE).is_none(), "{email}");
        let page = response.text().await.unwrap();
        assert!(page.contains("sign in with your Harmony account"), "{page}");
    }
    // The sign-in page is the provider's.
    let page = http().get(app.url(START)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert!(location(&page).starts_with(&world.fake.issuer()));

    // The same request signs in where no provider is configured: the refusal above is the
    // provider's rule, not a bad form.
    let built_in = spawn_app_with_sample_upstream(|_| {}).await;
    let response = password_sign_in(&built_in.base, ALICE.1, ALICE.2).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&response, SESSION_COOKIE).is_some());
}

#[tokio::test]
async fn an_unreachable_provider_gives_a_503_page_and_partner_calls_go_on() {
    // A partner holds a token; then the gateway (here: another instance over the same
    // database) runs with an issuer nobody answers at.
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let tokens = app.tokens(&["claims:status"]).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (down, _) = app
        .second_instance_app_with(|s| s.customer_login = Some(customer_login(&closed)))
        .await;

    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let consent = auth_url.replace(&app.base, &down);
    for url in [format!("{down}{START}"), consent] {
        let response = browser().get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
        assert!(set_cookie(&response, BINDING_COOKIE).is_none());
        let page = response.text().await.unwrap();
        assert!(page.contains("cannot be reached"), "{page}");
    }

    let response = http()
        .get(format!("{down}/partner/v1/claims/C-1001"))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "C-1001", "status": "in_repair"})
    );
}

#[tokio::test]
async fn the_providers_routes_are_not_there_without_customer_login() {
    let app = crate::helpers::spawn_app().await;
    for path in ["/portal/oidc/callback?code=a&state=b", SIGNED_OUT] {
        let response = browser().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// Each start parks a pending sign-in in shared state for ten minutes: one address may not
/// park them without end, through the sign-in page or the consent flow, whatever
/// `X-Forwarded-For` it sends.
#[tokio::test]
async fn one_address_cannot_park_sign_ins_without_end() {
    let world = fake_world(&["EdDSA"]).await;
    let (auth_url, _, _) = world.app.authorize_url(&["claims:status"]);
    let mut statuses = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            world.app.url(START)
        } else {
            auth_url.clone()
        };
        let response = http()
            .get(&url)
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

// ----- Back-Channel Logout -------------------------------------------------------------------

pub(crate) const BACKCHANNEL: &str = "/portal/oidc/backchannel-logout";
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl FakeWorld {
    /// A good logout token's claims for `sub` (and `sid`), at the app's time.
    pub(crate) fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let mut claims = json!({
            "iss": self.fake.issuer(), "aud": CLIENT_ID, "iat": self.now().timestamp(),
            "jti": uuid::Uuid::new_v4().to_string(), "events": {LOGOUT_EVENT: {}},
        });
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        claims
    }

    pub(crate) async fn post_logout_token(&self, token: &str) -> reqwest::Response {
        http()
            .post(self.app.url(BACKCHANNEL))
            .form(&[("logout_token", token)])
            .send()
            .await
            .unwrap()
    }

    /// Fiona signs in a fresh browser (her ID token naming provider session `sid`).
    pub(crate) async fn fiona_signs_in(&self, sid: &str) -> reqwest::Client {
        let sid = sid.to_owned();
        let (browser, answer) = self
            .sign_in(move |w, nonce| w.fake.sign("k1", &with(w.claims(nonce), "sid", json!(sid))))
            .await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert!(set_cookie(&answer, SESSION_COOKIE).is_some());
        browser
    }

    pub(crate) async fn signed_in(&self, browser: &reqwest::Client) -> bool {
        let portal = browser.get(self.app.url("/portal")).send().await.unwrap();
        match portal.status() {
            StatusCode::OK => true,
            StatusCode::SEE_OTHER => false,
            other => panic!("/portal answered {other}"),
        }
    }
}

#[tokio::test]
async fn a_logout_token_from_the_provider_ends_every_portal_session_of_that_customer() {
    let world = fake_world(&["EdDSA"]).await;
    let phone = world.fiona_signs_in("sid-phone").await;
    let laptop = world.fiona_signs_in("sid-laptop").await;
    let (someone_else, answer) = world
        .sign_in(|w, nonce| {
            w.fake
                .sign("k1", &w.claims_of("fake-bob", "CU-2002", nonce))
        })
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);

    world.app.clock.advance(chrono::Duration::seconds(5));
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), None));
    let answer = world.post_logout_token(&token).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    assert!(!world.signed_in(&phone).await, "ended");
    assert!(!world.signed_in(&laptop).await, "ended too");
    assert!(
        world.signed_in(&someone_else).await,
        "another customer's stays"
    );

    // Signing in again afterwards works, and the same token played back ends nothing.
    world.app.clock.advance(chrono::Duration::seconds(5));
    let again = world.fiona_signs_in("sid-phone-2").await;
    let replay = world.post_logout_token(&token).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert!(world.signed_in(&again).await, "a replay ends nothing");
}

#[tokio::test]
async fn a_logout_token_naming_only_the_providers_session_finds_its_customer() {
    let world = fake_world(&["EdDSA"]).await;
    let browser = world.fiona_signs_in("sid-7").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let unknown = world
        .fake
        .sign("k1", &world.logout_claims(None, Some("sid-unknown")));
    assert_eq!(
        world.post_logout_token(&unknown).await.status(),
        StatusCode::OK
    );
    assert!(
        world.signed_in(&browser).await,
        "another session id ends nothing"
    );
    let token = world
        .fake
        .sign("k1", &world.logout_claims(None, Some("sid-7")));
    assert_eq!(
        world.post_logout_token(&token).await.status(),
        StatusCode::OK
    );
    assert!(!world.signed_in(&browser).await);
}

#[tokio::test]
async fn logout_tokens_that_do_not_verify_are_refused_and_end_nothing() {
    let world = fake_world(&["EdDSA"]).await;
    let browser = world.fiona_signs_in("sid-1").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let good = world.logout_claims(Some(FIONA), Some("sid-1"));
    let now = world.now().timestamp();
    let cases = [
        (
            "another audience",
            world
                .fake
                .sign("k1", &with(good.clone(), "aud", json!("someone-else"))),
        ),
        (
            "another issuer",
            world.fake.sign(
                "k1",
                &with(good.clone(), "iss", json!("https://elsewhere.example")),
            ),
        ),
        (
            "with a nonce",
            world
                .fake
                .sign("k1", &with(good.clone(), "nonce", json!("n"))),
        ),
        (
            "without the event",
            world.fake.sign("k1", &without(good.clone(), "events")),
        ),
        (
            "without a jti",
            world.fake.sign("k1", &without(good.clone(), "jti")),
        ),
        (
            "too old",
            world
                .fake
                .sign("k1", &with(good.clone(), "iat", json!(now - 3600))),
        ),
        (
            "ahead",
            world
                .fake
                .sign("k1", &with(good.clone(), "iat", json!(now + 3600))),
        ),
        ("unsigned", unsigned(&good)),
        ("by a stranger", signed_by_a_stranger("k1", &good)),
        (
            "hmac with the public key",
            hmac_with_public_key(&world.fake, &good),
        ),
        (
            "an ID token",
            world.fake.sign("k1", &world.claims("any-nonce")),
        ),
        ("not a JWT", "x".repeat(100)),
    ];
    for (case, token) in cases {
        let answer = world.post_logout_token(&token).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{case}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{case}");
        assert!(world.signed_in(&browser).await, "{case}: the session stays");
    }
    let missing = http()
        .post(world.app.url(BACKCHANNEL))
        .form(&[("other", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(world.signed_in(&browser).await);
}

#[tokio::test]
async fn signing_out_at_the_provider_ends_the_portal_session_through_the_back_channel() {
    if !provider_available() {
        return;
    }
    let (app, provider) = app_with_real_provider().await;
    let browser = browser();
    let callback = sign_in_at_provider(&browser, &app, &provider, START, CALLBACK, "carla").await;
    assert_eq!(
        browser.get(&callback).send().await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        browser
            .get(app.url("/portal"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.clock.advance(chrono::Duration::seconds(1));
    // Carla signs out at the insurer, not at Keyhole: the provider tells Keyhole directly.
    let end_session = format!(
        "{}/session/end?client_id={CLIENT_ID}&post_logout_redirect_uri={}",
        provider.issuer,
        percent_encoding::utf8_percent_encode(
            &app.url(SIGNED_OUT),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    play_at_provider(
        &browser,
        &provider,
        end_session,
        &app.url(SIGNED_OUT),
        "carla",
    )
    .await;
    let portal = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::SEE_OTHER, "the session ended");
    assert!(location(&portal).starts_with("/portal/login"));
}
