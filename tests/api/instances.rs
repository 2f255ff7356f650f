//! Several gateway instances over one database and one Redis, as behind a load balancer.
//! These need shared state that is shared: they run when `KEYHOLE_REDIS_URL` names a Redis
//! server (as `.ci/run` sets it) and say so when skipped — all but the access-log test, which
//! shares only the database and runs in every mode.

use crate::helpers::*;
use keyhole::clock::Clock;
use oauth2::{AuthorizationCode, TokenResponse};
use reqwest::StatusCode;

fn redis_or_skip(test: &str) -> bool {
    if redis_url().is_none() {
        eprintln!("skipped {test}: KEYHOLE_REDIS_URL names no Redis server");
        return false;
    }
    true
}

#[tokio::test]
async fn a_code_from_instance_a_is_redeemed_once_across_a_and_b() {
    if !redis_or_skip("a_code_from_instance_a_is_redeemed_once_across_a_and_b") {
        return;
    }
    // Without the grace window, every racer but the winner is a replay.
    let a = spawn_app_with(|s| s.reuse_grace_seconds = 0).await;
    let b = a.second_instance().await;
    let (issued, _) = race_one_code(&a, &b).await;
    // At most one redemption wins, on either instance; the replays revoke what it issued
    // (RFC 6749 §4.1.2), so no token from this code works — whichever instance is asked.
    assert!(issued.len() <= 1, "{} redemptions succeeded", issued.len());
    let grants = a
        .app
        .store
        .grants_of_customer(alice_id(&a).await)
        .await
        .unwrap();
    assert!(matches!(
        grants[0].state,
        keyhole::store::GrantState::Revoked {
            by: keyhole::store::RevokedBy::CodeReuse,
            ..
        }
    ));
    for token in issued {
        for base in [&a.base, &b] {
            assert_eq!(introspect_at(&a, base, &token).await["active"], false);
        }
    }
}

#[tokio::test]
async fn racing_exchanges_of_one_code_across_a_and_b_get_the_same_tokens_inside_the_window() {
    if !redis_or_skip(
        "racing_exchanges_of_one_code_across_a_and_b_get_the_same_tokens_inside_the_window",
    ) {
        return;
    }
    let a = spawn_app().await;
    let b = a.second_instance().await;
    let (issued, refused) = race_one_code(&a, &b).await;
    assert_eq!(refused, 0, "a retry inside the window is not refused");
    assert_eq!(issued.len(), 8);
    assert!(issued.windows(2).all(|w| w[0] == w[1]), "one answer");
    let grants = a
        .app
        .store
        .grants_of_customer(alice_id(&a).await)
        .await
        .unwrap();
    assert_eq!(grants[0].state, keyhole::store::GrantState::Active);
    for base in [&a.base, &b] {
        assert_eq!(introspect_at(&a, base, &issued[0]).await["active"], true);
    }
}

async fn introspect_at(app: &TestApp, base: &str, token: &str) -> serde_json::Value {
    http()
        .post(format!("{base}/oauth/introspect"))
        .basic_auth(&app.partner.client_id, Some(&app.partner.client_secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()
}

/// Eight exchanges of one fresh code at once, alternating between instance A and B; the
/// access tokens issued, and how many were refused.
async fn race_one_code(a: &TestApp, b: &str) -> (Vec<String>, usize) {
    let authorized = a
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = authorized.verifier.secret().clone();
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.to_owned()
        };
        let (code, verifier) = (authorized.code.clone(), verifier.clone());
        let partner = a.partner.clone();
        racers.spawn(async move {
            http()
                .post(format!("{base}/oauth/token"))
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
        });
    }
    let (mut issued, mut refused) = (Vec::new(), 0);
    while let Some(response) = racers.join_next().await {
        let response = response.unwrap();
        if response.status() == StatusCode::OK {
            let body: serde_json::Value = response.json().await.unwrap();
            issued.push(body["access_token"].as_str().unwrap().to_owned());
        } else {
            refused += 1;
        }
    }
    (issued, refused)
}

async fn alice_id(app: &TestApp) -> keyhole::domain::CustomerId {
    let upstream = keyhole::domain::UpstreamCustomerId::parse(ALICE.0).unwrap();
    app.app
        .store
        .customer_by_upstream_id(&upstream)
        .await
        .unwrap()
        .unwrap()
        .id
}

#[tokio::test]
async fn a_grant_revoked_through_a_is_refused_by_b_on_the_next_call() {
    if !redis_or_skip("a_grant_revoked_through_a_is_refused_by_b_on_the_next_call") {
        return;
    }
    let a = spawn_app_with_sample_upstream(|_| {}).await;
    let b = a.second_instance().await;
    let tokens = a.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret();
    let call = |base: String| async move {
        http()
            .get(format!("{base}/partner/v1/claims/C-1001"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(call(b.clone()).await, StatusCode::OK);
    // Through A: the partner revokes its refresh token, which ends the grant.
    a.revoke(tokens.refresh_token().unwrap().secret(), "refresh_token")
        .await;
    assert_eq!(call(b.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(a.base.clone()).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_rate_limit_is_global_across_instances() {
    if !redis_or_skip("the_rate_limit_is_global_across_instances") {
        return;
    }
    let a = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.grant_per_second = 0.01;
        s.rate_limits.grant_burst = 4;
    })
    .await;
    let b = a.second_instance().await;
    let tokens = a.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret();
    let mut allowed = 0;
    for i in 0..10 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.to_owned()
        };
        let status = http()
            .get(format!("{base}/partner/v1/claims/C-1001"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status();
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    // Each instance alone would allow 4 (8 in all); together they allow 4.
    assert_eq!(allowed, 4);
}

#[tokio::test]
async fn calls_refused_for_a_suspended_partner_spend_none_of_the_shared_limit() {
    if !redis_or_skip("calls_refused_for_a_suspended_partner_spend_none_of_the_shared_limit") {
        return;
    }
    let a = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.grant_per_second = 0.01;
        s.rate_limits.grant_burst = 3;
    })
    .await;
    let b = a.second_instance().await;
    let tokens = a.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret();
    let call = |base: String| async move {
        http()
            .get(format!("{base}/partner/v1/claims/C-1001"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
    };
    let client = keyhole::domain::ClientId::parse(&a.partner.client_id).unwrap();
    let suspend = |status| keyhole::oauth::grants::set_partner_status(&a.app, &client, status);
    suspend(keyhole::store::PartnerStatus::Suspended)
        .await
        .unwrap();
    // Through B, which spends its own local allowance but none of the shared one.
    for _ in 0..3 {
        assert_eq!(call(b.clone()).await, StatusCode::UNAUTHORIZED);
    }
    suspend(keyhole::store::PartnerStatus::Active)
        .await
        .unwrap();
    // Through A: the shared grant limit still holds its whole burst of three.
    for _ in 0..3 {
        assert_eq!(call(a.base.clone()).await, StatusCode::OK);
    }
    assert_eq!(call(a.base.clone()).await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_session_from_a_works_on_b_and_consent_finishes_there() {
    if !redis_or_skip("a_session_from_a_works_on_b_and_consent_finishes_there") {
        return;
    }
    let a = spawn_app().await;
    let b = a.second_instance().await;
    let browser = browser();
    let (auth_url, _, verifier) = a.authorize_url(&["claims:status"]);
    a.sign_in(&browser, &auth_url, ALICE).await;
    // The cookie is the host's, whichever instance set it; B knows the session.
    let portal = browser.get(format!("{b}/portal")).send().await.unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    assert!(portal.text().await.unwrap().contains("Sign out"));
    // Consent shown by A, decided on B.
    let page = a.consent_page(&browser, &auth_url).await;
    let response = browser
        .post(format!("{b}/oauth/authorize"))
        .form(&[
            ("consent_id", page.consent_id.as_str()),
            ("csrf_token", page.csrf_token.as_str()),
            ("decision", "allow"),
            ("field", "claims:status"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let code = query_param(&location(&response), "code").unwrap();
    let tokens = a
        .oauth_client()
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await;
    assert!(tokens.is_ok(), "{tokens:?}");
}

/// Each instance writes a chain of its own, so two instances never race for one: under
/// concurrent load through both, every call is answered, each chain verifies on its own, and
/// tampering with one chain is reported in that chain while the other still verifies.
/// (No shared state needed: only the database is shared, so this runs in every mode.)
#[tokio::test]
async fn two_instances_write_two_chains_concurrently_and_both_verify() {
    use sea_orm::ConnectionTrait;
    let a = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.grant_per_second = 10_000.0;
        s.rate_limits.grant_burst = 10_000;
        s.rate_limits.partner_per_second = 10_000.0;
        s.rate_limits.partner_burst = 10_000;
    })
    .await;
    let (b, b_app) = a.second_instance_app().await;
    assert_ne!(
        a.chain(),
        b_app.access_log.chain(),
        "one chain per instance"
    );
    let access = a
        .tokens(&["claims:status"])
        .await
        .access_token()
        .secret()
        .clone();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.to_owned()
        };
        let access = access.clone();
        calls.spawn(async move {
            http()
                .get(format!("{base}/partner/v1/claims/C-1001"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(
            status.unwrap(),
            StatusCode::OK,
            "no call may lose a race for a chain"
        );
    }
    b_app.access_log.settled().await;
    let report = a.verify_log().await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 300);
    let mut expected = vec![a.chain(), b_app.access_log.chain().to_owned()];
    expected.sort();
    let chains: Vec<&str> = report.chains.iter().map(|c| c.chain.as_str()).collect();
    assert_eq!(chains, expected, "{report:?}");
    for chain in &report.chains {
        assert!(chain.ok, "{chain:?}");
        assert_eq!(chain.records, 150, "{chain:?}");
    }

    // A record deleted from B's chain breaks B's chain, and only it.
    let b_chain = b_app.access_log.chain().to_owned();
    a.app
        .store
        .connection()
        .execute_unprepared(&format!(
            "DELETE FROM access_log WHERE chain = '{b_chain}' AND seq = 75"
        ))
        .await
        .unwrap();
    let report = a.verify_log().await;
    assert!(!report.ok, "{report:?}");
    let link = report.first_broken.clone().unwrap();
    assert_eq!((link.chain.as_str(), link.seq), (b_chain.as_str(), 76));
    for chain in &report.chains {
        assert_eq!(chain.ok, chain.chain != b_chain, "{chain:?}");
    }
}

/// `POST {base}{path}` with the partner's client credentials, as the partner would send it to
/// whichever instance the load balancer picks.
async fn partner_post(
    a: &TestApp,
    base: &str,
    path: &str,
    form: &[(&str, &str)],
) -> serde_json::Value {
    let response = http()
        .post(format!("{base}{path}"))
        .basic_auth(&a.partner.client_id, Some(&a.partner.client_secret))
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path} on {base}");
    response.json().await.unwrap()
}

/// A refresh through `base`: the new access token, and the refresh token for the next one.
async fn refresh_at(a: &TestApp, base: &str, refresh: &str) -> (String, String) {
    let body = partner_post(
        a,
        base,
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    let field = |name: &str| body[name].as_str().unwrap().to_owned();
    (field("access_token"), field("refresh_token"))
}

/// The token works on `base`: a partner call answers 200 and introspection says active.
async fn assert_accepted_at(a: &TestApp, base: &str, token: &str) {
    let status = http()
        .get(format!("{base}/partner/v1/claims/C-1001"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK, "a partner call on {base}");
    let body = partner_post(a, base, "/oauth/introspect", &[("token", token)]).await;
    assert_eq!(body["active"], true, "introspection on {base}: {body}");
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// `keys rotate` publishes the new key before any instance signs with it: B, which has not
/// reloaded its keys since, accepts what A issues right after the rotation; once the key is
/// active, A and B both sign with it at the same moment, without waiting for a reload.
/// (Only the database is shared: this runs in every mode.)
#[tokio::test]
async fn a_key_rotated_through_a_signs_only_once_b_has_had_time_to_trust_it() {
    let a = spawn_app_with_sample_upstream(|_| {}).await;
    let (b, b_app) = a.second_instance_app().await;
    let first = a.tokens(&["claims:status"]).await;
    let old = a.app.keys.current_kid();
    assert_eq!(b_app.keys.current_kid(), old);

    // What `keyhole keys rotate` does, here through A's key ring.
    let rotation = a.app.keys.rotate().await.unwrap();
    let new = rotation.kid.clone();
    assert_ne!(new, old);
    let (token, refresh) = refresh_at(&a, &a.base, first.refresh_token().unwrap().secret()).await;
    assert_eq!(
        kid_of(&token),
        old,
        "A signs with the old key until the new one is active"
    );
    assert_accepted_at(&a, &b, &token).await;

    // B's reload timer picks the new key up well before it is active (done by hand here: the
    // test's clock does not drive the timer).
    b_app.keys.reload().await.unwrap();
    a.clock
        .advance(rotation.signs_from - a.clock.now() - chrono::Duration::milliseconds(1));
    assert_eq!(a.app.keys.current_kid(), old);
    assert_eq!(b_app.keys.current_kid(), old);
    a.clock.advance(chrono::Duration::milliseconds(1));
    let (from_a, refresh) = refresh_at(&a, &a.base, &refresh).await;
    let (from_b, _) = refresh_at(&a, &b, &refresh).await;
    assert_eq!(kid_of(&from_a), new, "A switched at the activation time");
    assert_eq!(
        kid_of(&from_b),
        new,
        "B switched at the same moment, without a reload"
    );
    assert_accepted_at(&a, &b, &from_a).await;
    assert_accepted_at(&a, &a.base, &from_b).await;
}
