//! The token, revocation and introspection endpoints.

use crate::helpers::*;
// The oauth2 crate refuses to revoke over plain http (RFC 7009 §2 wants TLS), and these
// servers listen on loopback http, so revocation requests are posted by hand.
use oauth2::{AuthorizationCode, TokenResponse};
use reqwest::StatusCode;
use serde_json::Value;

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let response = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &authorized.code),
                ("redirect_uri", &app.partner.redirect_uri),
                ("code_verifier", &"x".repeat(43)),
            ],
        )
        .await;
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
}

#[tokio::test]
async fn a_missing_pkce_verifier_is_refused() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let response = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &authorized.code),
                ("redirect_uri", &app.partner.redirect_uri),
            ],
        )
        .await;
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}

#[tokio::test]
async fn a_code_used_twice_revokes_what_the_first_use_issued() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let first = app
        .oauth_client()
        .exchange_code(AuthorizationCode::new(authorized.code.clone()))
        .set_pkce_verifier(authorized.verifier)
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(
        app.introspect(first.access_token().secret()).await["active"],
        true
    );

    // After the grace window for retries (`grace.rs` covers the inside).
    app.clock.advance(chrono::Duration::seconds(6));
    let second = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &authorized.code),
                ("redirect_uri", &app.partner.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(
        error_of(second).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    assert_eq!(
        app.introspect(first.access_token().secret()).await["active"],
        false
    );
    let refresh = app
        .oauth_client()
        .exchange_refresh_token(first.refresh_token().unwrap())
        .request_async(&http())
        .await;
    assert!(
        refresh.is_err(),
        "the first refresh token died with the grant"
    );
}

#[tokio::test]
async fn a_code_issued_to_another_client_is_refused() {
    let app = spawn_app().await;
    let other = app.add_partner("Fix Point", &["claims:status"]).await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let response = http()
        .post(app.url("/oauth/token"))
        .basic_auth(&other.client_id, Some(&other.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", authorized.code.as_str()),
            ("redirect_uri", app.partner.redirect_uri.as_str()),
            ("code_verifier", authorized.verifier.secret().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_grant() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status"]).await;
    let client = app.oauth_client();
    let old_refresh = first.refresh_token().unwrap().clone();

    let second = client
        .exchange_refresh_token(&old_refresh)
        .request_async(&http())
        .await
        .unwrap();
    let new_refresh = second.refresh_token().unwrap().clone();
    assert_ne!(new_refresh.secret(), old_refresh.secret(), "rotated on use");
    assert_eq!(
        app.introspect(second.access_token().secret()).await["active"],
        true
    );

    // The spent token comes back after the grace window for retries: a thief or a bug;
    // either way the grant ends.
    app.clock.advance(chrono::Duration::seconds(6));
    let replay = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", old_refresh.secret()),
            ],
        )
        .await;
    assert_eq!(
        error_of(replay).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    assert_eq!(
        app.introspect(second.access_token().secret()).await["active"],
        false
    );
    let after = client
        .exchange_refresh_token(&new_refresh)
        .request_async(&http())
        .await;
    assert!(
        after.is_err(),
        "the newest refresh token died with the grant"
    );
}

#[tokio::test]
async fn refresh_can_narrow_but_not_widen_the_scope() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status", "claims:claim_number"]).await;
    let narrowed = app
        .oauth_client()
        .exchange_refresh_token(first.refresh_token().unwrap())
        .add_scope(oauth2::Scope::new("claims:status".into()))
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(
        app.introspect(narrowed.access_token().secret()).await["scope"],
        "claims:status"
    );

    let widened = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", narrowed.refresh_token().unwrap().secret()),
                ("scope", "claims:status claims:status_updated_at"),
            ],
        )
        .await;
    assert_eq!(
        error_of(widened).await,
        (StatusCode::BAD_REQUEST, "invalid_scope".into())
    );
}

#[tokio::test]
async fn client_secret_post_works_too() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let token = app
        .oauth_client()
        .set_auth_type(oauth2::AuthType::RequestBody)
        .exchange_code(AuthorizationCode::new(authorized.code))
        .set_pkce_verifier(authorized.verifier)
        .request_async(&http())
        .await
        .unwrap();
    assert!(!token.access_token().secret().is_empty());
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", authorized.code.as_str()),
        ("redirect_uri", app.partner.redirect_uri.as_str()),
        ("code_verifier", authorized.verifier.secret().as_str()),
    ];
    let basic = http()
        .post(app.url("/oauth/token"))
        .basic_auth(&app.partner.client_id, Some("kh_cs_wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(
        basic.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        error_of(basic).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );

    let mut post_form = form.to_vec();
    post_form.push(("client_id", &app.partner.client_id));
    post_form.push(("client_secret", "kh_cs_wrong"));
    let post = http()
        .post(app.url("/oauth/token"))
        .form(&post_form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(post).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );

    let unknown = http()
        .post(app.url("/oauth/token"))
        .basic_auth("nobody", Some("x"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(unknown).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );

    // None of that spent the code: the right secret still redeems it.
    let ok = app.post_form("/oauth/token", &form).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_token_requests_get_rfc6749_errors() {
    let app = spawn_app().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("grant_type", "password"), ("username", "a")],
            "unsupported_grant_type",
        ),
        (&[], "invalid_request"),
        (&[("grant_type", "authorization_code")], "invalid_request"),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "kh_rt_nope"),
            ],
            "invalid_grant",
        ),
        (
            &[
                ("grant_type", "authorization_code"),
                ("grant_type", "refresh_token"),
            ],
            "invalid_request",
        ),
    ];
    for (form, expected) in cases {
        let (status, error) = error_of(app.post_form("/oauth/token", form).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(&error, expected, "{form:?}");
    }
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_grant() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    app.revoke(token.refresh_token().unwrap().secret(), "refresh_token")
        .await;
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        false
    );
    let refresh = app
        .oauth_client()
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http())
        .await;
    assert!(refresh.is_err());
}

#[tokio::test]
async fn revoking_an_access_token_ends_only_that_token() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    app.revoke(token.access_token().secret(), "access_token")
        .await;
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        false
    );
    // The grant lives on: the refresh token still gives a new, active access token.
    let next = app
        .oauth_client()
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(
        app.introspect(next.access_token().secret()).await["active"],
        true
    );
}

#[tokio::test]
async fn revoking_an_unknown_token_answers_200_and_changes_nothing() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    let response = app
        .post_form("/oauth/revoke", &[("token", "garbage")])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        true
    );
}

#[tokio::test]
async fn a_partner_cannot_revoke_or_introspect_another_partners_tokens() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    let other = app.add_partner("Fix Point", &["claims:status"]).await;
    for path in ["/oauth/revoke", "/oauth/introspect"] {
        for t in [
            token.access_token().secret(),
            token.refresh_token().unwrap().secret(),
        ] {
            let response = http()
                .post(app.url(path))
                .basic_auth(&other.client_id, Some(&other.client_secret))
                .form(&[("token", t.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            if path == "/oauth/introspect" {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body, serde_json::json!({ "active": false }));
            }
        }
    }
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        true
    );
}

#[tokio::test]
async fn introspection_reports_refresh_tokens_and_needs_client_auth() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    let info = app
        .introspect(token.refresh_token().unwrap().secret())
        .await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "refresh_token");

    let anonymous = http()
        .post(app.url("/oauth/introspect"))
        .form(&[("token", token.access_token().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_grant_issues_nothing_and_introspects_inactive() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    app.clock.advance(chrono::Duration::days(91));
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        false
    );
    let refresh = app
        .oauth_client()
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http())
        .await;
    assert!(refresh.is_err());
}

#[tokio::test]
async fn the_access_token_expires_after_its_ttl() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    app.clock.advance(chrono::Duration::seconds(299));
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        true
    );
    app.clock.advance(chrono::Duration::seconds(10));
    assert_eq!(
        app.introspect(token.access_token().secret()).await["active"],
        false
    );
}

#[tokio::test]
async fn token_refresh_with_the_refresh_token_of_another_client_is_refused() {
    let app = spawn_app().await;
    let token = app.tokens(&["claims:status"]).await;
    let other = app.add_partner("Fix Point", &["claims:status"]).await;
    let response = http()
        .post(app.url("/oauth/token"))
        .basic_auth(&other.client_id, Some(&other.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                token.refresh_token().unwrap().secret().as_str(),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    // The foreign attempt neither spent the token nor ended the grant.
    let own = app
        .oauth_client()
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(
        app.introspect(own.access_token().secret()).await["active"],
        true
    );
}

// ----- issue 11: codes are checked before they are spent -----------------------------------

async fn exchange_raw(
    app: &TestApp,
    partner: &Partner,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    http()
        .post(app.url("/oauth/token"))
        .basic_auth(&partner.client_id, Some(&partner.client_secret))
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

#[tokio::test]
async fn a_wrong_code_verifier_does_not_burn_the_code() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let wrong = exchange_raw(&app, &app.partner, &authorized.code, &"x".repeat(43)).await;
    assert_eq!(
        error_of(wrong).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    let right = exchange_raw(
        &app,
        &app.partner,
        &authorized.code,
        authorized.verifier.secret(),
    )
    .await;
    assert_eq!(right.status(), StatusCode::OK);
    let body: Value = right.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(access).await["active"], true);
}

#[tokio::test]
async fn another_clients_replay_of_a_spent_code_does_not_revoke_the_grant() {
    let app = spawn_app().await;
    let other = app.add_partner("Fix Point", &["claims:status"]).await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let first = exchange_raw(&app, &app.partner, &authorized.code, &verifier).await;
    assert_eq!(first.status(), StatusCode::OK);
    let body: Value = first.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let replay = exchange_raw(&app, &other, &authorized.code, &verifier).await;
    assert_eq!(
        error_of(replay).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    assert_eq!(
        app.introspect(&access).await["active"],
        true,
        "another client cannot end Alice's grant"
    );
}

/// A code exchange while the refresh-token table is away, so storing the new refresh token
/// fails after the code was spent.
async fn exchange_while_storage_fails(
    app: &TestApp,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(&app.app.settings.database_url)
        .await
        .unwrap();
    db.execute_unprepared("ALTER TABLE refresh_tokens RENAME TO refresh_tokens_away")
        .await
        .unwrap();
    let response = exchange_raw(app, &app.partner, code, verifier).await;
    db.execute_unprepared("ALTER TABLE refresh_tokens_away RENAME TO refresh_tokens")
        .await
        .unwrap();
    response
}

#[tokio::test]
async fn a_code_survives_a_database_failure_during_its_exchange() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    // Storing the refresh token fails: nothing is issued.
    let failed = exchange_while_storage_fails(&app, &authorized.code, &verifier).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    // The retry is a first use, not a replay that revokes the grant.
    let retry = exchange_raw(&app, &app.partner, &authorized.code, &verifier).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let body: Value = retry.json().await.unwrap();
    assert_eq!(
        app.introspect(body["access_token"].as_str().unwrap()).await["active"],
        true
    );
}

#[tokio::test]
async fn a_code_given_back_after_a_failure_keeps_its_original_expiry() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    app.clock.advance(chrono::Duration::seconds(50));
    let failed = exchange_while_storage_fails(&app, &authorized.code, &verifier).await;
    assert!(failed.status().is_server_error());
    // Past the code's first 60 s: expired, and not a replay that would end the grant.
    app.clock.advance(chrono::Duration::seconds(15));
    let late = exchange_raw(&app, &app.partner, &authorized.code, &verifier).await;
    assert_eq!(
        error_of(late).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(&app.app.settings.database_url)
        .await
        .unwrap();
    let revoked = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM grants WHERE revoked_at IS NOT NULL",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(revoked, 0, "the late retry revoked nothing");
}

/// Every live revoked access token is a row the grant's status refill reads back, so their
/// number per grant is bounded: a partner that revokes more than 100 of one grant's tokens
/// within their lifetime loses the grant.
#[tokio::test]
async fn revoking_more_than_a_hundred_tokens_of_one_grant_ends_the_grant() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let tokens = app.tokens(&["claims:status"]).await;
    let mut access = tokens.access_token().secret().clone();
    let mut refresh = tokens.refresh_token().unwrap().secret().clone();
    for i in 0..=keyhole::oauth::revocation::MAX_LIVE_REVOKED {
        app.revoke(&access, "access_token").await;
        let next: serde_json::Value = app
            .post_form(
                "/oauth/token",
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            )
            .await
            .json()
            .await
            .unwrap();
        let (Some(a), Some(r)) = (
            next["access_token"].as_str(),
            next["refresh_token"].as_str(),
        ) else {
            // The grant ended with the last revocation: only the one over the bound may.
            assert_eq!(i, keyhole::oauth::revocation::MAX_LIVE_REVOKED, "{next}");
            assert_eq!(next["error"], "invalid_grant");
            return;
        };
        (access, refresh) = (a.to_owned(), r.to_owned());
    }
    panic!("the grant outlived more than the bound of revoked tokens");
}
