//! Red team: Back-Channel Logout (`POST /portal/oidc/backchannel-logout`) attacked as anyone on
//! the network, as the provider's other clients, and through the failures the provider is told
//! to retry. The rule throughout: bad input gets a clear error and changes nothing; a logout
//! the provider was told to retry is applied when it does.

use crate::helpers::{http, set_cookie};
use crate::oidc_providers::with;
use crate::portal_oidc::{BACKCHANNEL, FIONA, fake_world};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A token whose `sub` names someone this gateway does not know must not end the sessions its
/// `sid` was remembered for: the provider says *that* person signed out, and the remembered
/// session belongs to someone else (a reused or colliding session id).
#[tokio::test]
async fn redteam_backchannel_an_unknown_sub_does_not_end_the_customer_its_sid_was_remembered_for() {
    let world = fake_world(&["EdDSA"]).await;
    let fiona = world.fiona_signs_in("sid-shared").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let token = world.fake.sign(
        "k1",
        &world.logout_claims(Some("fake-stranger"), Some("sid-shared")),
    );
    let answer = world.post_logout_token(&token).await;
    assert_eq!(answer.status(), StatusCode::OK, "a stranger: nothing to do");
    assert!(
        world.signed_in(&fiona).await,
        "Fiona's session stays: the token named someone else"
    );

    // Her own subject with that sid still ends it; and her subject alone too.
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), Some("sid-shared")));
    assert_eq!(
        world.post_logout_token(&token).await.status(),
        StatusCode::OK
    );
    assert!(!world.signed_in(&fiona).await);
}

/// A `sub` (or `sid`, or `jti`) that is there but is not a 1-255 character string is a broken
/// token, not an absent claim: refused with a 400, and the `sid` next to it ends nothing.
#[tokio::test]
async fn redteam_backchannel_a_malformed_sub_sid_or_jti_is_refused_and_ends_nothing() {
    let world = fake_world(&["EdDSA"]).await;
    let fiona = world.fiona_signs_in("sid-9").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let good = world.logout_claims(Some(FIONA), Some("sid-9"));
    let cases = [
        (
            "an overlong sub",
            with(good.clone(), "sub", json!("x".repeat(300))),
        ),
        ("a numeric sub", with(good.clone(), "sub", json!(42))),
        ("an empty sub", with(good.clone(), "sub", json!(""))),
        ("a null sub", with(good.clone(), "sub", Value::Null)),
        ("a sub array", with(good.clone(), "sub", json!([FIONA]))),
        (
            "an overlong sid",
            with(good.clone(), "sid", json!("s".repeat(300))),
        ),
        ("a numeric sid", with(good.clone(), "sid", json!(9))),
        ("a numeric jti", with(good.clone(), "jti", json!(7))),
    ];
    for (case, mut claims) in cases {
        // Only the broken claim could name anyone: where the sub is broken the sid is Fiona's,
        // and the other way round.
        if case.contains("sid") {
            claims["sub"] = json!(FIONA);
        }
        let token = world.fake.sign("k1", &claims);
        let answer = world.post_logout_token(&token).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{case}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{case}");
        assert!(world.signed_in(&fiona).await, "{case}: the session stays");
    }
}

/// The provider is told to retry (503) when the logout could not be recorded; its retry, the
/// same token, must then end the sessions, not be taken for a replay of a token already
/// applied (200, nothing ended).
#[tokio::test]
async fn redteam_backchannel_a_logout_that_failed_with_503_is_applied_when_the_provider_retries() {
    let world = fake_world(&["EdDSA"]).await;
    let Some(db_file) = world.app.sqlite_file() else {
        eprintln!("skipped: needs the SQLite database to break it");
        return;
    };
    let fiona = world.fiona_signs_in("sid-r").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), None));

    // The database fails the customer lookup (a column gone for a moment).
    rename_column(&db_file, "oidc_subject", "oidc_subject_away").await;
    let answer = world.post_logout_token(&token).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    rename_column(&db_file, "oidc_subject_away", "oidc_subject").await;

    // The provider retries the same token.
    let retry = world.post_logout_token(&token).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert!(
        !world.signed_in(&fiona).await,
        "the retried logout ended the session"
    );
}

/// Renames a column of the customers table in the SQLite file at `path`.
async fn rename_column(path: &std::path::Path, from: &str, to: &str) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "ALTER TABLE customers RENAME COLUMN {from} TO {to}"
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
}

/// A provider session recorded before sessions said how they started (no `via_provider`):
/// with `[customer_login]` every customer session is the provider's, and a sign-out there must
/// end it too.
#[tokio::test]
async fn redteam_backchannel_a_session_from_before_via_provider_ends_too() {
    let world = fake_world(&["EdDSA"]).await;
    let (fiona, answer) = world
        .sign_in(|w, nonce| {
            w.fake
                .sign("k1", &with(w.claims(nonce), "sid", json!("sid-old")))
        })
        .await;
    let cookie = set_cookie(&answer, "kh_session").unwrap();
    let value = crate::helpers::cookie_value(&cookie);
    let hash = keyhole::secrets::token_hash(&value);
    let state = &world.app.app.state;
    let mut session = state
        .session::<keyhole::state::Session>(&hash)
        .await
        .unwrap()
        .unwrap();
    // As a session written before the field existed reads: `#[serde(default)]`.
    let mut old = serde_json::to_value(&session).unwrap();
    old.as_object_mut().unwrap().remove("via_provider");
    session = serde_json::from_value(old).unwrap();
    assert!(!session.via_provider);
    state
        .put_session(&hash, &session, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(world.signed_in(&fiona).await);

    world.app.clock.advance(chrono::Duration::seconds(1));
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), None));
    assert_eq!(
        world.post_logout_token(&token).await.status(),
        StatusCode::OK
    );
    assert!(!world.signed_in(&fiona).await, "ended");
}

/// Bodies that are not one form-encoded `logout_token`: refused with the endpoint's own 400,
/// ending nothing, saying nothing about our parser.
#[tokio::test]
async fn redteam_backchannel_odd_bodies_are_refused_and_end_nothing() {
    let world = fake_world(&["EdDSA"]).await;
    let fiona = world.fiona_signs_in("sid-b").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), None));
    let url = world.app.url(BACKCHANNEL);

    let json_body = http()
        .post(&url)
        .json(&json!({"logout_token": token}))
        .send()
        .await
        .unwrap();
    let duplicated = http()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}&logout_token=x"))
        .send()
        .await
        .unwrap();
    let in_the_query = http()
        .post(format!("{url}?logout_token={token}"))
        .form(&[("other", "x")])
        .send()
        .await
        .unwrap();
    let huge = http()
        .post(&url)
        .form(&[("logout_token", "a".repeat(200 * 1024))])
        .send()
        .await
        .unwrap();
    let no_type = http()
        .post(&url)
        .body(format!("logout_token={token}"))
        .send()
        .await
        .unwrap();
    for (case, answer) in [
        ("JSON", json_body),
        ("two logout_token fields", duplicated),
        ("the token in the query", in_the_query),
        ("no content type", no_type),
    ] {
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(answer.headers()["cache-control"], "no-store", "{case}");
        let body: Value = answer
            .json()
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(body["error"], "invalid_request", "{case}");
        assert!(world.signed_in(&fiona).await, "{case}: the session stays");
    }
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(world.signed_in(&fiona).await);

    // The same token, well formed, still works: nothing above spent it.
    assert_eq!(
        world.post_logout_token(&token).await.status(),
        StatusCode::OK
    );
    assert!(!world.signed_in(&fiona).await);
}

/// Tokens for another client of the same provider (the console's, say), or naming a key the
/// provider never had, are refused; random key ids make the key set be fetched again at most
/// once a minute.
#[tokio::test]
async fn redteam_backchannel_another_clients_token_and_random_key_ids_are_refused_cheaply() {
    let world = fake_world(&["EdDSA"]).await;
    let fiona = world.fiona_signs_in("sid-c").await;
    world.app.clock.advance(chrono::Duration::seconds(1));
    let good = world.logout_claims(Some(FIONA), Some("sid-c"));
    for aud in [json!("keyhole-console"), json!(["keyhole-console"])] {
        let token = world.fake.sign("k1", &with(good.clone(), "aud", aud));
        assert_eq!(
            world.post_logout_token(&token).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    let fetched_before = world.fake.requests_to("/jwks").await;
    for _ in 0..20 {
        let kid = uuid::Uuid::new_v4().to_string();
        let token = world.fake.sign(&kid, &good);
        assert_eq!(
            world.post_logout_token(&token).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    let fetched = world.fake.requests_to("/jwks").await - fetched_before;
    assert!(fetched <= 1, "{fetched} key set fetches");
    assert!(world.signed_in(&fiona).await);
}

/// A sign-out at the provider in the very instant the session started ends it (`>=`); a
/// session started after it stays.
#[tokio::test]
async fn redteam_backchannel_the_same_instant_ends_the_session_and_a_later_sign_in_stays() {
    let world = fake_world(&["EdDSA"]).await;
    let fiona = world.fiona_signs_in("sid-i").await;
    // No clock movement: the mark is the session's own instant.
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), None));
    assert_eq!(
        world.post_logout_token(&token).await.status(),
        StatusCode::OK
    );
    assert!(!world.signed_in(&fiona).await);
    world.app.clock.advance(chrono::Duration::seconds(1));
    let again = world.fiona_signs_in("sid-i2").await;
    assert!(world.signed_in(&again).await);
}
