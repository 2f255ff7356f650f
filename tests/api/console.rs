//! The security console: sign-in, sessions, the gate in front of every page, and the pages.

use crate::helpers::{
    CONSOLE_PASSWORD, browser, hidden, http, location, spawn_app, spawn_app_with,
};
use reqwest::StatusCode;

#[tokio::test]
async fn a_one_time_password_opens_nothing_but_the_password_page() {
    let app = spawn_app().await;
    let one_time = app.add_console_user("ana@harmony.example").await;
    let client = browser();
    let signed_in = app
        .console_sign_in(&client, "Ana@Harmony.example", &one_time)
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_in), "/console/password");
    for path in ["/console", "/console/access-log", "/console/partners"] {
        let page = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&page), "/console/password", "{path}");
    }
    let form = client
        .get(app.url("/console/password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&form, "csrf_token").unwrap();
    for (password, confirm, why) in [
        ("short", "short", "too short"),
        (CONSOLE_PASSWORD, "something else entirely", "differs"),
        (one_time.as_str(), one_time.as_str(), "the one-time one"),
    ] {
        let refused = client
            .post(app.url("/console/password"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("password", password),
                ("confirm", confirm),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{why}");
    }
    let set = client
        .post(app.url("/console/password"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("password", CONSOLE_PASSWORD),
            ("confirm", CONSOLE_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::SEE_OTHER);
    let overview = client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    // The one-time password no longer signs in; the new one does.
    let again = app
        .console_sign_in(&browser(), "ana@harmony.example", &one_time)
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let real = app
        .console_sign_in(&browser(), "ana@harmony.example", CONSOLE_PASSWORD)
        .await;
    assert_eq!(real.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&real), "/console");
}

#[tokio::test]
async fn failed_console_sign_ins_are_throttled() {
    let app = spawn_app().await;
    app.add_console_user("ana@harmony.example").await;
    let client = browser();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = app
            .console_sign_in(&client, "ana@harmony.example", "wrong password!")
            .await;
        statuses.push(r.status());
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // Past the limit every attempt is refused, whatever the password.
    let console = app.console_browser("bob@harmony.example").await;
    let right_but_throttled = app
        .console_sign_in(&browser(), "ana@harmony.example", CONSOLE_PASSWORD)
        .await;
    assert_eq!(right_but_throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(console);
}

#[tokio::test]
async fn console_sessions_end_when_idle_and_at_their_absolute_limit() {
    let app = spawn_app_with(|s| {
        s.console_session.idle_minutes = 10;
        s.console_session.absolute_hours = 1;
    })
    .await;
    let console = app.console_browser("ana@harmony.example").await;
    for _ in 0..5 {
        app.clock.advance(chrono::Duration::minutes(9));
        let page = console
            .client
            .get(app.url("/console"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
    app.clock.advance(chrono::Duration::minutes(16));
    let page = console
        .client
        .get(app.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::SEE_OTHER,
        "past the absolute limit"
    );
    assert!(location(&page).starts_with("/console/login?next="));
}

#[tokio::test]
async fn signing_out_ends_the_console_session() {
    let app = spawn_app().await;
    let console = app.console_browser("ana@harmony.example").await;
    let forged = console
        .client
        .post(app.url("/console/logout"))
        .form(&[("csrf_token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let out = console
        .client
        .post(app.url("/console/logout"))
        .form(&[("csrf_token", console.csrf_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let page = console
        .client
        .get(app.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn console_requests_are_audited_under_the_persons_name() {
    let app = spawn_app().await;
    let console = app.console_browser("ana@harmony.example").await;
    let page = console
        .client
        .get(app.url("/console?probe=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let audit = app.app.store.admin_audit(None, 50).await.unwrap();
    let (_, entry) = audit
        .iter()
        .find(|(_, e)| e.query_sha256.is_some())
        .expect("the overview with a query, on record");
    assert_eq!(
        entry.console_user_email.as_deref(),
        Some("ana@harmony.example")
    );
    assert!(entry.console_user_id.is_some());
    assert_eq!(entry.path, "/console");
    assert_eq!(entry.status, 200);
    assert_eq!(entry.token_id, None);
}

#[tokio::test]
async fn without_a_console_session_every_page_is_refused() {
    let app = spawn_app().await;
    let customer = app.signed_in(crate::helpers::ALICE).await;
    let tokens = app.tokens(&["claims:status"]).await;
    let partner_token = oauth2::TokenResponse::access_token(&tokens)
        .secret()
        .clone();
    for path in ["/console", "/console/password", "/console/access-log"] {
        for (who, client) in [("nobody", http()), ("a customer", customer.clone())] {
            let page = client.get(app.url(path)).send().await.unwrap();
            assert_eq!(page.status(), StatusCode::SEE_OTHER, "{who} {path}");
            assert!(
                location(&page).starts_with("/console/login"),
                "{who} {path}"
            );
        }
        let with_token = http()
            .get(app.url(path))
            .bearer_auth(&partner_token)
            .send()
            .await
            .unwrap();
        assert_eq!(with_token.status(), StatusCode::SEE_OTHER, "partner {path}");
        let posted = customer
            .post(app.url(path))
            .form(&[("csrf_token", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            posted.status(),
            StatusCode::FORBIDDEN,
            "customer POST {path}"
        );
    }
}
