//! The customer portal: overview, history, revocation, downloads, and isolation between
//! customers.

use crate::helpers::*;
use oauth2::TokenResponse;
use reqwest::StatusCode;

async fn app_with_sample_upstream() -> TestApp {
    spawn_app_with_sample_upstream(|_| {}).await
}

async fn signed_in(app: &TestApp, who: (&str, &str, &str)) -> reqwest::Client {
    app.signed_in(who).await
}

async fn page(browser: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let response = browser.get(url).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn grant_link(html: &str) -> String {
    let start = html.find("/portal/grants/").expect("a grant link");
    html[start..start + "/portal/grants/".len() + 36].to_owned()
}

#[tokio::test]
async fn the_overview_and_history_tell_the_customer_who_read_what() {
    let app = app_with_sample_upstream().await;
    let token = app.tokens(&["claims:status", "claims:claim_number"]).await;
    let access = token.access_token().secret();
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims").await,
        StatusCode::OK
    );
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-2002")
            .await,
        StatusCode::NOT_FOUND
    );

    let alice = signed_in(&app, ALICE).await;
    let (status, html) = page(&alice, &app.url("/portal")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Fone Shop"), "{html}");
    assert!(html.contains("Claim status") && html.contains("Claim number"));
    assert!(
        html.contains("2 times"),
        "two reads, the refusal is not a read: {html}"
    );
    assert!(!html.contains("scope") && !html.contains("JWT"));

    let (status, html) = page(&alice, &app.url(&grant_link(&html))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Fone Shop read claims C-1001"), "{html}");
    assert!(html.contains("Fone Shop read the list of your claims"));
    assert!(html.contains("Fone Shop tried to read claims C-2002: refused"));
}

#[tokio::test]
async fn revoking_asks_first_then_stops_the_partner_at_once() {
    let app = app_with_sample_upstream().await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );

    let alice = signed_in(&app, ALICE).await;
    let (_, html) = page(&alice, &app.url("/portal")).await;
    let grant = grant_link(&html);
    let (status, confirm) = page(&alice, &app.url(&format!("{grant}/revoke"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains("Stop sharing with Fone Shop?"));
    let csrf = hidden(&confirm, "csrf_token").unwrap();

    let forged = alice
        .post(app.url(&format!("{grant}/revoke")))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );

    let done = alice
        .post(app.url(&format!("{grant}/revoke")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );
    let (_, result) = page(&alice, &app.url(&location(&done))).await;
    assert!(
        result.contains("can no longer see your information"),
        "{result}"
    );
    let (_, overview) = page(&alice, &app.url("/portal")).await;
    assert!(overview.contains("You ended this on"), "{overview}");
}

#[tokio::test]
async fn another_customers_grant_is_not_found_and_cannot_be_revoked() {
    let app = app_with_sample_upstream().await;
    let token = app.tokens(&["claims:status"]).await;
    let alice = signed_in(&app, ALICE).await;
    let (_, html) = page(&alice, &app.url("/portal")).await;
    let grant = grant_link(&html);

    let bob = signed_in(&app, BOB).await;
    let (_, bob_home) = page(&bob, &app.url("/portal")).await;
    let bob_csrf = hidden(&bob_home, "csrf_token").unwrap();
    for path in [
        grant.clone(),
        format!("{grant}/revoke"),
        "/portal/grants/not-a-grant".into(),
    ] {
        let (status, _) = page(&bob, &app.url(&path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let attempt = bob
        .post(app.url(&format!("{grant}/revoke")))
        .form(&[("csrf_token", bob_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(attempt.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.partner_status(token.access_token().secret(), "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK,
        "Alice's grant is untouched"
    );
}

#[tokio::test]
async fn the_access_history_downloads_as_csv_and_json() {
    let app = app_with_sample_upstream().await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    app.partner_status(access, "/partner/v1/claims/C-1001")
        .await;
    app.partner_status(access, "/partner/v1/claims/C-2001")
        .await;
    let alice = signed_in(&app, ALICE).await;

    let csv = alice
        .get(app.url("/portal/access-history.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("at,partner,grant_id,resource,record_id"));
    assert!(csv.contains("claims:status") && csv.contains("not_found"));

    let json: Vec<serde_json::Value> = alice
        .get(app.url("/portal/access-history.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["partner"], "Fone Shop");

    // Bob's download holds nothing of Alice's.
    let bob = signed_in(&app, BOB).await;
    let bob_json: Vec<serde_json::Value> = bob
        .get(app.url("/portal/access-history.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(bob_json.is_empty());
}

#[tokio::test]
async fn expired_grants_are_shown_as_ended_and_stop_working() {
    let app = app_with_sample_upstream().await;
    app.tokens(&["claims:status"]).await;
    app.clock.advance(chrono::Duration::days(91));
    let alice = signed_in(&app, ALICE).await;
    let (_, html) = page(&alice, &app.url("/portal")).await;
    assert!(html.contains("Expired on"), "{html}");
    assert!(html.contains("You are not sharing anything with anyone."));
}

#[tokio::test]
async fn portal_pages_need_a_session() {
    let app = spawn_app().await;
    for path in ["/portal", "/portal/access-history.csv", "/portal/grants/x"] {
        let response = http().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&response).starts_with("/portal/login?next="));
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_slowed_down() {
    let app = spawn_app().await;
    let browser = browser();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let response = app
            .submit_sign_in(
                &browser,
                &app.url("/portal/login"),
                ALICE.1,
                "wrong-password",
            )
            .await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 429]);
    // The right password waits too, once the account has used up its failures.
    let response = app
        .submit_sign_in(&browser, &app.url("/portal/login"), ALICE.1, ALICE.2)
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_history_is_paginated_newest_first() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.grant_burst = 100;
        s.rate_limits.partner_burst = 100;
    })
    .await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    // 55 reads: the first page shows the newest 50 (C-1002 last), the second the oldest 5.
    for _ in 0..54 {
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await;
    }
    app.partner_status(access, "/partner/v1/claims/C-1002")
        .await;
    let alice = signed_in(&app, ALICE).await;
    let (_, home) = page(&alice, &app.url("/portal")).await;
    let grant = grant_link(&home);
    let (_, first) = page(&alice, &app.url(&grant)).await;
    assert_eq!(first.matches("<tr").count() - 1, 50, "header row plus 50");
    let newest = first.find("claims C-1002").unwrap();
    let older = first.find("claims C-1001").unwrap();
    assert!(newest < older, "newest first");
    let start = first.find("?before=").expect("a link to older entries");
    let end = first[start..].find('"').unwrap() + start;
    let (_, second) = page(&alice, &app.url(&format!("{grant}{}", &first[start..end]))).await;
    assert_eq!(second.matches("<tr").count() - 1, 5);
    assert!(!second.contains("?before="), "no page after the last");
}

#[tokio::test]
async fn sessions_end_after_their_absolute_lifetime_and_cookies_are_locked_down() {
    let app = spawn_app().await;
    let browser = browser();
    let response = app
        .submit_sign_in(&browser, &app.url("/portal/login"), ALICE.1, ALICE.2)
        .await;
    let cookie = set_cookie(&response, "kh_session").expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain http on loopback: {cookie}"
    );
    assert_eq!(page(&browser, &app.url("/portal")).await.0, StatusCode::OK);

    app.clock
        .advance(chrono::Duration::hours(8) + chrono::Duration::seconds(1));
    let response = browser.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "signed out after 8 hours"
    );
}

#[tokio::test]
async fn the_access_history_csv_defuses_formulas_a_partner_put_in_its_path() {
    let app = app_with_sample_upstream().await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    let status = app
        .partner_status(
            access,
            "/partner/v1/claims/=HYPERLINK(%22https:%2F%2Fevil%22)",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let alice = signed_in(&app, ALICE).await;
    let csv = alice
        .get(app.url("/portal/access-history.csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains(",'=HYPERLINK("), "{csv}");
    for line in csv.lines() {
        for cell in line.split(',') {
            assert!(!cell.trim_start_matches('"').starts_with('='), "{line}");
        }
    }
}

#[tokio::test]
async fn a_forged_x_forwarded_for_does_not_escape_the_sign_in_limit_per_address() {
    let app = spawn_app().await;
    let browser = browser();
    let mut last = 0;
    for i in 0..31 {
        // A different account each time: only the address limit can stop this.
        let email = format!("nobody{i}@example.com");
        let forged = format!("203.0.113.{i}");
        let response = app
            .submit_sign_in_from(
                &browser,
                &app.url("/portal/login"),
                &email,
                "guess",
                Some(&forged),
            )
            .await;
        last = response.status().as_u16();
    }
    assert_eq!(last, 429, "the 31st failure from one address is refused");
}

#[tokio::test]
async fn successful_sign_ins_do_not_count_toward_the_limit() {
    let app = spawn_app().await;
    for _ in 0..8 {
        let browser = browser();
        let response = app
            .submit_sign_in(&browser, &app.url("/portal/login"), ALICE.1, ALICE.2)
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
}

#[tokio::test]
async fn failed_sign_ins_are_counted_across_instances() {
    if redis_url().is_none() {
        eprintln!("skipped: KEYHOLE_REDIS_URL names no Redis server");
        return;
    }
    let app = spawn_app().await;
    let b = app.second_instance().await;
    for base in [&app.base, &b, &app.base, &b, &app.base] {
        let browser = browser();
        let response = app
            .submit_sign_in(&browser, &format!("{base}/portal/login"), ALICE.1, "wrong")
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let browser = browser();
    let response = app
        .submit_sign_in(&browser, &format!("{b}/portal/login"), ALICE.1, "wrong")
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Behind TLS the cookies are `__Host-` cookies: Secure, Path=/, no Domain, so neither a
/// sibling subdomain nor a plain-http answer can plant or overwrite them. The test server
/// itself speaks plain http, so the test carries the cookies by hand, as a browser would over
/// https.
#[tokio::test]
async fn over_https_the_portal_cookies_take_the_host_prefix_and_the_flow_still_works() {
    let app = spawn_app_with(|s| s.public_url.set_scheme("https").unwrap()).await;
    let client = http();

    let response = client.get(app.url("/portal/login")).send().await.unwrap();
    let csrf_cookie = set_cookie(&response, "__Host-kh_login_csrf")
        .expect("the sign-in form's CSRF cookie has the __Host- prefix");
    for attribute in ["Secure", "HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(csrf_cookie.contains(attribute), "{csrf_cookie}");
    }
    assert!(!csrf_cookie.contains("Domain"), "{csrf_cookie}");
    let html = response.text().await.unwrap();
    let login_form = [
        ("email", ALICE.1.to_owned()),
        ("password", ALICE.2.to_owned()),
        ("csrf_token", hidden(&html, "csrf_token").unwrap()),
        ("next", "/portal".to_owned()),
    ];

    // The unprefixed name is not what the server reads behind TLS.
    let refused = client
        .post(app.url("/portal/login"))
        .header(
            "cookie",
            format!("kh_login_csrf={}", cookie_value(&csrf_cookie)),
        )
        .form(&login_form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let response = client
        .post(app.url("/portal/login"))
        .header(
            "cookie",
            format!("__Host-kh_login_csrf={}", cookie_value(&csrf_cookie)),
        )
        .form(&login_form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&response, "__Host-kh_session").expect("a __Host- session cookie");
    for attribute in ["Secure", "HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Domain"), "{session}");
    let cleared =
        set_cookie(&response, "__Host-kh_login_csrf").expect("the CSRF cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let session = format!("__Host-kh_session={}", cookie_value(&session));

    let overview = client
        .get(app.url("/portal"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    let unprefixed = client
        .get(app.url("/portal"))
        .header("cookie", session.trim_start_matches("__Host-"))
        .send()
        .await
        .unwrap();
    assert_eq!(unprefixed.status(), StatusCode::SEE_OTHER, "not signed in");

    // Consent, with the same cookie.
    let (auth_url, state, _verifier) = app.authorize_url(&["claims:status"]);
    let response = client
        .get(&auth_url)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    let response = client
        .post(app.url("/oauth/authorize"))
        .header("cookie", &session)
        .form(&[
            (
                "consent_id",
                hidden(&html, "consent_id").expect("a consent page"),
            ),
            ("csrf_token", hidden(&html, "csrf_token").unwrap()),
            ("decision", "allow".to_owned()),
            ("field", "claims:status".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = location(&response);
    assert!(
        location.starts_with(&app.partner.redirect_uri),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert!(query_param(&location, "code").is_some(), "{location}");

    let response = client
        .post(app.url("/portal/logout"))
        .header("cookie", &session)
        .form(&[("csrf_token", hidden(&html, "csrf_token").unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cleared =
        set_cookie(&response, "__Host-kh_session").expect("the session cookie is cleared");
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Secure"),
        "{cleared}"
    );
}

#[tokio::test]
async fn failed_sign_ins_from_one_address_do_not_lock_the_customer_out_at_hers() {
    // Behind a trusted proxy on loopback, so each request can name its client address.
    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let attempt = |from: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.submit_sign_in_from(
                &browser(),
                &app.url("/portal/login"),
                ALICE.1,
                password,
                Some(from),
            )
            .await
            .status()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(attempt("203.0.113.66", "guess").await.as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 429]);
    // Alice, at her own address, signs in.
    assert_eq!(
        attempt("198.51.100.9", ALICE.2).await,
        StatusCode::SEE_OTHER
    );
}

/// A sign-out ends the session even while other requests are using it: a request in flight
/// used to write the session back after the sign-out deleted it. Six pollers keep one cookie
/// busy while it signs out, eight times over, on a Redis of the test's own (where the window
/// between a request's read and its write is a round trip wide).
#[tokio::test]
async fn sign_out_ends_a_session_that_concurrent_requests_are_using() {
    let Some(binary) = crate::outages::redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let redis = crate::outages::Redis::start(binary);
    let app = spawn_app_with(|s| s.redis_url = Some(redis.url())).await;
    let portal = |cookie: String| {
        let url = app.url("/portal");
        async move {
            http()
                .get(url)
                .header("cookie", format!("kh_session={cookie}"))
                .send()
                .await
                .map(|r| r.status())
        }
    };
    for trial in 0..8 {
        let (alice, cookie) = app.session_of(ALICE).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pollers = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (stop, url, cookie) = (stop.clone(), app.url("/portal"), cookie.clone());
            pollers.spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = http()
                        .get(&url)
                        .header("cookie", format!("kh_session={cookie}"))
                        .send()
                        .await;
                }
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        app.sign_out(&alice).await;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        while pollers.join_next().await.is_some() {}
        assert_eq!(
            portal(cookie).await.unwrap(),
            StatusCode::SEE_OTHER,
            "trial {trial}: the signed-out cookie still opens the portal"
        );
    }
}
