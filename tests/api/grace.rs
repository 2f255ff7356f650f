//! Issue 17 item 5: an ordinary retry must not end the customer's grant. A second use of a
//! just-rotated refresh token, or of a just-redeemed code, by its own client inside the grace
//! window (`reuse_grace_seconds`, 5 s by default) gets the same answer the first use got; any
//! other reuse still revokes the grant. And the database, not shared state, knows which codes
//! are spent.

use crate::helpers::*;
use keyhole::state::CodeLookup;
use keyhole::store::{GrantState, RevokedBy};
use oauth2::TokenResponse;
use reqwest::StatusCode;
use serde_json::Value;

/// The default window; the tests move the clock around it.
const GRACE: i64 = 5;

async fn alice_grant_state(app: &TestApp) -> GrantState {
    let upstream = keyhole::domain::UpstreamCustomerId::parse(ALICE.0).unwrap();
    let alice = app
        .app
        .store
        .customer_by_upstream_id(&upstream)
        .await
        .unwrap()
        .unwrap()
        .id;
    let grants = app.app.store.grants_of_customer(alice).await.unwrap();
    assert_eq!(grants.len(), 1, "one consent, one grant");
    grants[0].state
}

fn revoked_by(state: GrantState) -> Option<RevokedBy> {
    match state {
        GrantState::Revoked { by, .. } => Some(by),
        GrantState::Active => None,
    }
}

async fn refresh_as(app: &TestApp, partner: &Partner, refresh_token: &str) -> reqwest::Response {
    http()
        .post(app.url("/oauth/token"))
        .basic_auth(&partner.client_id, Some(&partner.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
}

async fn exchange(app: &TestApp, code: &str, verifier: &str) -> reqwest::Response {
    http()
        .post(app.url("/oauth/token"))
        .basic_auth(&app.partner.client_id, Some(&app.partner.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", app.partner.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

/// The body of a successful token answer.
async fn issued(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn refused(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    body["error"].as_str().unwrap_or_default().to_owned()
}

fn pair(body: &Value) -> (String, String, String) {
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
        body["scope"].as_str().unwrap().to_owned(),
    )
}

async fn active(app: &TestApp, access_token: &str) -> bool {
    app.introspect(access_token).await["active"] == true
}

/// `n` token requests at once, each built by `request`; their answers in completion order.
async fn at_once<F, Fut>(n: usize, request: F) -> Vec<reqwest::Response>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response> + Send + 'static,
{
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..n {
        racers.spawn(request());
    }
    let mut answers = Vec::new();
    while let Some(answer) = racers.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_get_the_same_new_pair_and_the_grant_lives() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status"]).await;
    let old = first.refresh_token().unwrap().secret().clone();
    let answers = at_once(4, || {
        let (url, partner, old) = (app.url("/oauth/token"), app.partner.clone(), old.clone());
        async move {
            http()
                .post(url)
                .basic_auth(&partner.client_id, Some(&partner.client_secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &old)])
                .send()
                .await
                .unwrap()
        }
    })
    .await;
    let mut pairs = Vec::new();
    for answer in answers {
        pairs.push(pair(&issued(answer).await));
    }
    assert!(pairs.windows(2).all(|w| w[0] == w[1]), "{pairs:?}");
    let (access, refresh, _) = pairs.remove(0);
    assert_ne!(refresh, old, "rotated");
    assert_eq!(revoked_by(alice_grant_state(&app).await), None);
    assert!(active(&app, &access).await);
    // The new refresh token is the live one: it works afterwards.
    let next = issued(refresh_as(&app, &app.partner, &refresh).await).await;
    assert!(active(&app, next["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn a_retried_refresh_inside_the_window_gets_the_same_pair() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status"]).await;
    let old = first.refresh_token().unwrap().secret().clone();
    let answer = issued(refresh_as(&app, &app.partner, &old).await).await;
    // The partner's client timed out before the answer arrived and retries.
    app.clock.advance(chrono::Duration::seconds(GRACE - 2));
    let retry = issued(refresh_as(&app, &app.partner, &old).await).await;
    assert_eq!(pair(&retry), pair(&answer));
    assert_eq!(
        retry["expires_in"].as_i64().unwrap(),
        answer["expires_in"].as_i64().unwrap() - (GRACE - 2),
        "the same access token, with what is left of its life"
    );
    assert_eq!(revoked_by(alice_grant_state(&app).await), None);
    assert!(active(&app, retry["access_token"].as_str().unwrap()).await);
    let next = refresh_as(&app, &app.partner, retry["refresh_token"].as_str().unwrap()).await;
    issued(next).await;
}

#[tokio::test]
async fn reusing_a_refresh_token_after_the_window_revokes_the_grant() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status"]).await;
    let old = first.refresh_token().unwrap().secret().clone();
    let answer = issued(refresh_as(&app, &app.partner, &old).await).await;
    app.clock.advance(chrono::Duration::seconds(1));
    let retry = issued(refresh_as(&app, &app.partner, &old).await).await;
    assert_eq!(pair(&retry), pair(&answer), "inside the window: forgiven");

    // The window counts from the first use, not from the retry.
    app.clock.advance(chrono::Duration::seconds(GRACE));
    assert_eq!(
        refused(refresh_as(&app, &app.partner, &old).await).await,
        "invalid_grant"
    );
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::RefreshTokenReuse)
    );
    let (access, refresh, _) = pair(&answer);
    assert!(!active(&app, &access).await);
    assert_eq!(
        refused(refresh_as(&app, &app.partner, &refresh).await).await,
        "invalid_grant",
        "the new refresh token died with the grant"
    );
}

#[tokio::test]
async fn another_client_presenting_a_just_rotated_refresh_token_changes_nothing() {
    let app = spawn_app().await;
    let other = app.add_partner("Fix Point", &["claims:status"]).await;
    let first = app.tokens(&["claims:status"]).await;
    let old = first.refresh_token().unwrap().secret().clone();
    let answer = issued(refresh_as(&app, &app.partner, &old).await).await;
    assert_eq!(
        refused(refresh_as(&app, &other, &old).await).await,
        "invalid_grant",
        "no replayed answer for another client"
    );
    assert_eq!(revoked_by(alice_grant_state(&app).await), None);
    let retry = issued(refresh_as(&app, &app.partner, &old).await).await;
    assert_eq!(pair(&retry), pair(&answer));
    assert_eq!(revoked_by(alice_grant_state(&app).await), None);
}

#[tokio::test]
async fn only_the_just_rotated_refresh_token_is_forgiven_not_its_parent() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status"]).await;
    let t0 = first.refresh_token().unwrap().secret().clone();
    let one = issued(refresh_as(&app, &app.partner, &t0).await).await;
    let t1 = one["refresh_token"].as_str().unwrap().to_owned();
    let two = issued(refresh_as(&app, &app.partner, &t1).await).await;
    // Inside the window, the newest spent token is a retry…
    let retry = issued(refresh_as(&app, &app.partner, &t1).await).await;
    assert_eq!(pair(&retry), pair(&two));
    // …but its parent is a token two rotations old: reuse, whatever the clock says.
    assert_eq!(
        refused(refresh_as(&app, &app.partner, &t0).await).await,
        "invalid_grant"
    );
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::RefreshTokenReuse)
    );
    assert!(!active(&app, two["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn a_retry_that_asks_for_another_scope_is_reuse_not_a_retry() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status", "claims:claim_number"]).await;
    let old = first.refresh_token().unwrap().secret().clone();
    let answer = issued(refresh_as(&app, &app.partner, &old).await).await;
    assert_eq!(answer["scope"], "claims:claim_number claims:status");
    let narrowed = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &old),
                ("scope", "claims:status"),
            ],
        )
        .await;
    assert_eq!(refused(narrowed).await, "invalid_grant");
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::RefreshTokenReuse)
    );
}

#[tokio::test]
async fn concurrent_code_exchanges_get_the_same_tokens_and_the_grant_lives() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let answers = at_once(4, || {
        let (url, partner) = (app.url("/oauth/token"), app.partner.clone());
        let (code, verifier) = (authorized.code.clone(), verifier.clone());
        async move {
            http()
                .post(url)
                .basic_auth(&partner.client_id, Some(&partner.client_secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", partner.redirect_uri.as_str()),
                    ("code_verifier", verifier.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    })
    .await;
    let mut pairs = Vec::new();
    for answer in answers {
        pairs.push(pair(&issued(answer).await));
    }
    assert!(pairs.windows(2).all(|w| w[0] == w[1]), "{pairs:?}");
    assert_eq!(revoked_by(alice_grant_state(&app).await), None);
    let (access, refresh, _) = pairs.remove(0);
    assert!(active(&app, &access).await);
    issued(refresh_as(&app, &app.partner, &refresh).await).await;
}

#[tokio::test]
async fn a_code_retried_inside_the_window_gets_the_same_tokens_and_replayed_after_it_revokes() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let answer = issued(exchange(&app, &authorized.code, &verifier).await).await;
    app.clock.advance(chrono::Duration::seconds(GRACE - 1));
    let retry = issued(exchange(&app, &authorized.code, &verifier).await).await;
    assert_eq!(pair(&retry), pair(&answer));
    assert_eq!(revoked_by(alice_grant_state(&app).await), None);

    app.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(
        refused(exchange(&app, &authorized.code, &verifier).await).await,
        "invalid_grant"
    );
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::CodeReuse)
    );
    assert!(!active(&app, answer["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn a_code_retried_with_a_wrong_verifier_inside_the_window_is_a_replay() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let answer = issued(exchange(&app, &authorized.code, &verifier).await).await;
    // A retry sends what the first request sent; this does not.
    assert_eq!(
        refused(exchange(&app, &authorized.code, &"x".repeat(43)).await).await,
        "invalid_grant"
    );
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::CodeReuse)
    );
    assert!(!active(&app, answer["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn a_spent_code_restored_in_shared_state_is_still_a_replay() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let hash = keyhole::secrets::token_hash(&authorized.code);
    let CodeLookup::Issued(entry) = app.app.state.code(&hash).await.unwrap() else {
        panic!("the code is in shared state");
    };
    let answer = issued(exchange(&app, &authorized.code, &verifier).await).await;

    // Redis is rolled back to a snapshot taken before the redemption: the code reads as
    // issued again. The database still knows it was spent.
    app.clock.advance(chrono::Duration::seconds(GRACE + 1));
    app.app
        .state
        .put_code(&hash, entry, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        refused(exchange(&app, &authorized.code, &verifier).await).await,
        "invalid_grant"
    );
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::CodeReuse)
    );
    assert!(!active(&app, answer["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn with_the_window_off_a_retry_revokes_the_grant_as_before() {
    let app = spawn_app_with(|s| s.reuse_grace_seconds = 0).await;
    let first = app.tokens(&["claims:status"]).await;
    let old = first.refresh_token().unwrap().secret().clone();
    let answer = issued(refresh_as(&app, &app.partner, &old).await).await;
    assert_eq!(
        refused(refresh_as(&app, &app.partner, &old).await).await,
        "invalid_grant"
    );
    assert_eq!(
        revoked_by(alice_grant_state(&app).await),
        Some(RevokedBy::RefreshTokenReuse)
    );
    assert!(!active(&app, answer["access_token"].as_str().unwrap()).await);
}
