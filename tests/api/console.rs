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
    let sign_ins: Vec<_> = audit
        .iter()
        .filter(|(_, e)| e.path == "/console/login" && e.method == "POST")
        .collect();
    assert_eq!(sign_ins.len(), 1, "the sign-in, on record: {audit:?}");
    assert_eq!(
        sign_ins[0].1.console_user_email.as_deref(),
        Some("ana@harmony.example")
    );
}

impl crate::helpers::ConsoleBrowser {
    async fn get(&self, app: &crate::helpers::TestApp, path: &str) -> (StatusCode, String) {
        let r = self.client.get(app.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.text().await.unwrap())
    }

    async fn post(
        &self,
        app: &crate::helpers::TestApp,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.client
            .post(app.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// Partner calls with Alice's token: a few reads and one refusal, so the log has both.
async fn some_traffic(app: &crate::helpers::TestApp) -> String {
    let tokens = app.tokens(&["claims:status"]).await;
    let access = oauth2::TokenResponse::access_token(&tokens)
        .secret()
        .clone();
    for _ in 0..3 {
        assert_eq!(
            app.partner_status(&access, "/partner/v1/claims/C-1001")
                .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-2001")
            .await,
        StatusCode::NOT_FOUND
    );
    access
}

#[tokio::test]
async fn the_access_log_search_filters_pages_exports_and_shows_a_record() {
    let app = crate::helpers::spawn_app_with_sample_upstream(|_| {}).await;
    some_traffic(&app).await;
    let console = app.console_browser("ana@harmony.example").await;
    let client = &app.partner.client_id;

    let (status, html) = console
        .get(
            &app,
            &format!("/console/access-log?client_id={client}&customer_id=&outcome=ok&field="),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<td>ok (200)</td>").count(), 3, "{html}");
    assert!(!html.contains("not_found ("), "{html}");
    assert!(html.contains(&format!("href=\"/console/partners/{client}\"")));
    assert!(html.contains("href=\"/console/access-log?customer_id=CU-1001\""));
    assert!(html.contains("href=\"/console/grants/"));

    let (status, html) = console
        .get(&app, "/console/access-log?outcome=not-an-outcome")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("outcome"), "{html}");

    let export = console
        .client
        .get(app.url(&format!(
            "/console/access-log/export.csv?client_id={client}&outcome=ok"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert!(
        export.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = export.text().await.unwrap();
    assert_eq!(csv.lines().count(), 4, "a header and three reads: {csv}");

    let records = app.log_records().await;
    let newest = records.iter().max_by_key(|r| r.id).unwrap();
    let (status, html) = console
        .get(&app, &format!("/console/access-log/{}", newest.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&newest.hash));
    assert!(html.contains(&newest.prev_hash));
    for odd in ["0", "-1", "abc", "99999999", "1e3"] {
        let (status, _) = console
            .get(&app, &format!("/console/access-log/{odd}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{odd}");
    }
}

#[tokio::test]
async fn search_pages_follow_the_cursor_without_repeats() {
    let app = crate::helpers::spawn_app_with_sample_upstream(|_| {}).await;
    let tokens = app.tokens(&["claims:status"]).await;
    let access = oauth2::TokenResponse::access_token(&tokens)
        .secret()
        .clone();
    for _ in 0..60 {
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await;
    }
    let console = app.console_browser("ana@harmony.example").await;
    let client = &app.partner.client_id;
    let (_, first) = console
        .get(&app, &format!("/console/access-log?client_id={client}"))
        .await;
    let next = first
        .split("href=\"/console/access-log?")
        .filter_map(|s| s.split('"').next())
        .find(|q| q.contains("cursor="))
        .expect("a link to older records")
        .replace("&amp;", "&");
    assert!(next.contains("client_id="), "{next}");
    let (status, second) = console
        .get(&app, &format!("/console/access-log?{next}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids = |html: &str| -> Vec<String> {
        html.split("aria-label=\"Record ")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!(a.len(), 50);
    assert_eq!(b.len(), 10);
    assert!(a.iter().all(|id| !b.contains(id)));
}

#[tokio::test]
async fn suspending_from_the_console_needs_a_reason_and_stops_the_next_partner_call() {
    let app = crate::helpers::spawn_app_with_sample_upstream(|_| {}).await;
    let access = some_traffic(&app).await;
    let console = app.console_browser("ana@harmony.example").await;
    let client = app.partner.client_id.clone();

    let (status, html) = console.get(&app, "/console/partners").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&client));
    let (status, html) = console
        .get(&app, &format!("/console/partners/{client}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("/console/partners/{client}/suspend")));
    let (status, html) = console
        .get(&app, &format!("/console/partners/{client}/suspend"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"reason\""));

    let path = format!("/console/partners/{client}/suspend");
    let forged = console
        .post(
            &app,
            &path,
            &[("csrf_token", "forged"), ("reason", "abuse")],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let no_reason = console
        .post(
            &app,
            &path,
            &[("csrf_token", &console.csrf_token), ("reason", " ")],
        )
        .await;
    assert_eq!(no_reason.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK,
        "nothing changed"
    );

    let done = console
        .post(
            &app,
            &path,
            &[
                ("csrf_token", &console.csrf_token),
                ("reason", "reads far beyond its grants"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );
    let audit = app.app.store.admin_audit(None, 100).await.unwrap();
    let (_, entry) = audit
        .iter()
        .find(|(_, e)| e.reason.is_some())
        .expect("the suspension's audit row");
    assert_eq!(entry.reason.as_deref(), Some("reads far beyond its grants"));
    assert_eq!(entry.path, path);
    assert_eq!(entry.method, "POST");
    assert_eq!(
        entry.console_user_email.as_deref(),
        Some("ana@harmony.example")
    );

    let reinstated = console
        .post(
            &app,
            &format!("/console/partners/{client}/reinstate"),
            &[("csrf_token", &console.csrf_token), ("reason", "cleared")],
        )
        .await;
    assert_eq!(reinstated.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    for unknown in ["nobody", "..", "a%2Fb"] {
        let (status, _) = console
            .get(&app, &format!("/console/partners/{unknown}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    }
}

#[tokio::test]
async fn revoking_a_grant_from_the_console_records_the_security_team() {
    let app = crate::helpers::spawn_app_with_sample_upstream(|_| {}).await;
    let access = some_traffic(&app).await;
    let console = app.console_browser("ana@harmony.example").await;
    let grant = app.log_records().await[0].record.grant_id.clone().unwrap();
    let (status, html) = console.get(&app, &format!("/console/grants/{grant}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("claims:status"));
    assert!(html.contains("Consent given"));
    assert!(html.contains(&format!("/console/grants/{grant}/revoke")));
    let revoked = console
        .post(
            &app,
            &format!("/console/grants/{grant}/revoke"),
            &[
                ("csrf_token", &console.csrf_token),
                ("reason", "customer called"),
            ],
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );
    let (_, html) = console.get(&app, &format!("/console/grants/{grant}")).await;
    assert!(html.contains("security_team"), "{html}");
    for odd in ["not-a-grant", "00000000-0000-4000-8000-000000000000"] {
        let (status, _) = console.get(&app, &format!("/console/grants/{odd}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{odd}");
    }
}

#[tokio::test]
async fn every_console_post_checks_the_csrf_token_and_changes_nothing_without_it() {
    let app = crate::helpers::spawn_app_with_sample_upstream(|_| {}).await;
    let access = some_traffic(&app).await;
    let console = app.console_browser("ana@harmony.example").await;
    let client = app.partner.client_id.clone();
    let grant = app.log_records().await[0].record.grant_id.clone().unwrap();
    for path in [
        "/console/logout".to_owned(),
        "/console/password".to_owned(),
        format!("/console/partners/{client}/suspend"),
        format!("/console/partners/{client}/reinstate"),
        format!("/console/grants/{grant}/revoke"),
    ] {
        for token in [None, Some(""), Some("forged")] {
            let mut form = vec![
                ("reason", "a reason"),
                ("password", CONSOLE_PASSWORD),
                ("confirm", CONSOLE_PASSWORD),
            ];
            if let Some(token) = token {
                form.push(("csrf_token", token));
            }
            let r = console.post(&app, &path, &form).await;
            assert!(
                matches!(r.status(), StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST),
                "{path} {token:?}: {}",
                r.status()
            );
        }
        // A form posted from another origin is refused even with the right token.
        let cross = console
            .client
            .post(app.url(&path))
            .header("origin", "https://evil.example")
            .form(&[
                ("csrf_token", console.csrf_token.as_str()),
                ("reason", "x y z"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    let (status, _) = console.get(&app, "/console").await;
    assert_eq!(status, StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn every_console_page_is_refused_without_a_console_session() {
    let app = crate::helpers::spawn_app_with_sample_upstream(|_| {}).await;
    let access = some_traffic(&app).await;
    let customer = app.signed_in(crate::helpers::ALICE).await;
    let client = app.partner.client_id.clone();
    let grant = app.log_records().await[0].record.grant_id.clone().unwrap();
    let id = app.log_records().await[0].id;
    let admin = keyhole::secrets::random_token("kh_adm_").unwrap();
    app.app
        .store
        .insert_admin_token(
            "sec",
            keyhole::secrets::token_hash(admin.expose()),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let gets = [
        "/console".to_owned(),
        "/console/password".to_owned(),
        "/console/access-log?outcome=ok".to_owned(),
        "/console/access-log/export.csv".to_owned(),
        format!("/console/access-log/{id}"),
        "/console/partners".to_owned(),
        format!("/console/partners/{client}"),
        format!("/console/partners/{client}/suspend"),
        format!("/console/partners/{client}/reinstate"),
        format!("/console/grants/{grant}"),
        format!("/console/grants/{grant}/revoke"),
    ];
    for path in &gets {
        let callers = [
            ("nobody", http().get(app.url(path))),
            ("a customer", customer.get(app.url(path))),
            (
                "a partner token",
                http().get(app.url(path)).bearer_auth(&access),
            ),
            (
                "an admin token",
                http().get(app.url(path)).bearer_auth(admin.expose()),
            ),
        ];
        for (who, request) in callers {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{who} {path}");
            assert!(location(&r).starts_with("/console/login"), "{who} {path}");
            assert!(!r.text().await.unwrap().contains("CU-1001"), "{who} {path}");
        }
    }
    for path in [
        "/console/logout".to_owned(),
        "/console/password".to_owned(),
        format!("/console/partners/{client}/suspend"),
        format!("/console/partners/{client}/reinstate"),
        format!("/console/grants/{grant}/revoke"),
    ] {
        for (who, request) in [
            ("nobody", http().post(app.url(&path))),
            ("a customer", customer.post(app.url(&path))),
            (
                "a partner token",
                http().post(app.url(&path)).bearer_auth(&access),
            ),
        ] {
            let r = request
                .form(&[("csrf_token", "x"), ("reason", "because")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{who} POST {path}");
        }
    }
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK,
        "nothing was suspended or revoked"
    );
}

#[tokio::test]
async fn console_pages_let_the_browser_name_their_origin_on_form_posts() {
    let app = spawn_app().await;
    let console = app.console_browser("ana@harmony.example").await;
    // Under `no-referrer` a browser sends `Origin: null` with a form post, which the gate
    // refuses: the console's own pages must allow the origin to go to this origin.
    let page = console
        .client
        .get(app.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let null_origin = console
        .client
        .post(app.url("/console/logout"))
        .header("origin", "null")
        .form(&[("csrf_token", console.csrf_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(null_origin.status(), StatusCode::FORBIDDEN, "still refused");
    let same_origin = console
        .client
        .post(app.url("/console/logout"))
        .header("origin", app.base.as_str())
        .form(&[("csrf_token", console.csrf_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), StatusCode::SEE_OTHER);
}

/// A session someone else holds (a stolen password, a one-time password read over a
/// shoulder) must not outlive the password it signed in with: not a session on the one-time
/// password, which could otherwise choose a new password without knowing the real one, nor one
/// on an old real password.
#[tokio::test]
async fn choosing_a_password_ends_every_other_session_of_the_account() {
    let app = spawn_app().await;
    let one_time = app.add_console_user("ana@harmony.example").await;
    let intruder = browser();
    let signed_in = app
        .console_sign_in(&intruder, "ana@harmony.example", &one_time)
        .await;
    assert_eq!(location(&signed_in), "/console/password");
    let intruder_form = intruder
        .get(app.url("/console/password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let intruder_csrf = hidden(&intruder_form, "csrf_token").unwrap();
    // Ana signs in with the same one-time password and chooses her password.
    let ana = app
        .console_browser_after_sign_in("ana@harmony.example", &one_time)
        .await;
    // The intruder's one-time session may no longer choose a password in her place.
    let takeover = intruder
        .post(app.url("/console/password"))
        .form(&[
            ("csrf_token", intruder_csrf.as_str()),
            ("password", "the intruder's own password"),
            ("confirm", "the intruder's own password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&takeover),
        "/console/login",
        "took the account over"
    );
    let page = intruder.get(app.url("/console")).send().await.unwrap();
    assert_eq!(location(&page), "/console/login?next=%2Fconsole");
    assert_eq!(
        app.console_sign_in(&browser(), "ana@harmony.example", CONSOLE_PASSWORD)
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    // A second session on the real password ends when Ana changes it in her first one.
    let other = browser();
    app.console_sign_in(&other, "ana@harmony.example", CONSOLE_PASSWORD)
        .await;
    assert_eq!(
        other
            .get(app.url("/console"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let form = ana
        .get(app.url("/console/password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let changed = ana
        .post(app.url("/console/password"))
        .form(&[
            ("csrf_token", hidden(&form, "csrf_token").unwrap().as_str()),
            ("current", CONSOLE_PASSWORD),
            ("password", "another long enough password"),
            ("confirm", "another long enough password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ana.get(app.url("/console")).send().await.unwrap().status(),
        StatusCode::OK,
        "the session that changed it goes on"
    );
    let stale = other.get(app.url("/console")).send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::SEE_OTHER);
    assert!(location(&stale).starts_with("/console/login"));
}

/// Changing the password asks for the current one: a borrowed session (an unlocked laptop, a
/// stolen cookie) must not guess it without limit and so outlive itself with a new password.
#[tokio::test]
async fn guesses_at_the_current_password_are_throttled() {
    let app = spawn_app().await;
    let ana = app.console_browser("ana@harmony.example").await;
    let form = ana
        .client
        .get(app.url("/console/password"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&form, "csrf_token").unwrap();
    let change = |current: &'static str| {
        ana.client
            .post(app.url("/console/password"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("current", current),
                ("password", "another long enough password"),
                ("confirm", "another long enough password"),
            ])
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(change("a wrong guess at it").await.unwrap().status());
    }
    assert_eq!(statuses[0], StatusCode::BAD_REQUEST);
    assert_eq!(
        statuses.last().copied(),
        Some(StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Past the limit even the right password waits.
    let right = change(CONSOLE_PASSWORD).await.unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A `next` with a line break is not a console path: the person still lands in the console
/// (the redirect's header cannot hold it, and failing there answered 500 after a sign-in).
#[tokio::test]
async fn a_next_with_control_characters_goes_to_the_overview() {
    let app = spawn_app().await;
    let one_time = app.add_console_user("ana@harmony.example").await;
    app.console_browser_after_sign_in("ana@harmony.example", &one_time)
        .await;
    let client = browser();
    let html = client
        .get(app.url("/console/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer = client
        .post(app.url("/console/login"))
        .form(&[
            ("email", "ana@harmony.example"),
            ("password", CONSOLE_PASSWORD),
            ("csrf_token", &hidden(&html, "csrf_token").unwrap()),
            ("next", "/console\r\nX-Injected: 1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/console");
    assert!(answer.headers().get("x-injected").is_none());
}
