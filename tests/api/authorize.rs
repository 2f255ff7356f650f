//! The authorization endpoint: sign-in, consent, and every way a request can be refused.

use crate::helpers::*;
use oauth2::{AuthorizationCode, TokenResponse};
use reqwest::StatusCode;

#[tokio::test]
async fn a_partner_gets_a_token_carrying_only_the_consented_fields() {
    let app = spawn_app().await;
    let token = app
        .tokens(&["claims:status", "claims:status_updated_at"])
        .await;

    assert_eq!(token.expires_in().unwrap().as_secs(), 300);
    let scopes: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, vec!["claims:status", "claims:status_updated_at"]);
    let info = app.introspect(token.access_token().secret()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["scope"], "claims:status claims:status_updated_at");
    assert_eq!(info["client_id"], app.partner.client_id.as_str());
    assert_eq!(info["iss"], app.base.as_str());
    assert!(token.refresh_token().is_some());
}

#[tokio::test]
async fn the_consent_page_names_each_field_in_plain_language() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status", "claims:claim_number"]);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let response = browser.get(&auth_url).send().await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let html = response.text().await.unwrap();
    assert!(html.contains("Fone Shop"));
    assert!(html.contains("Claim status"));
    assert!(html.contains("Where your claim stands"));
    assert!(html.contains("Claim number"));
    assert!(
        !html.contains("When the status last changed"),
        "a field that was not requested"
    );
    assert!(html.contains("90 days"));
    assert_eq!(html.matches("type=\"checkbox\"").count(), 2);
}

#[tokio::test]
async fn the_customer_can_narrow_the_fields() {
    let app = spawn_app().await;
    let authorized = app
        .authorize_as(
            ALICE,
            &["claims:status", "claims:claim_number"],
            &["claims:status"],
        )
        .await;
    let token = app
        .oauth_client()
        .exchange_code(AuthorizationCode::new(authorized.code))
        .set_pkce_verifier(authorized.verifier)
        .request_async(&http())
        .await
        .unwrap();
    let info = app.introspect(token.access_token().secret()).await;
    assert_eq!(info["scope"], "claims:status");
}

#[tokio::test]
async fn the_customer_cannot_widen_the_fields() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let page = app.consent_page(&browser, &auth_url).await;
    let response = app
        .decide(
            &browser,
            &page,
            "allow",
            &["claims:status", "claims:claim_number"],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deny_sends_access_denied_with_state_and_iss() {
    let app = spawn_app().await;
    let (auth_url, state, _) = app.authorize_url(&["claims:status"]);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let page = app.consent_page(&browser, &auth_url).await;
    let response = app
        .decide(&browser, &page, "deny", &["claims:status"])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = location(&response);
    assert!(location.starts_with(&app.partner.redirect_uri));
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(app.base.as_str())
    );
    assert!(query_param(&location, "code").is_none());
}

#[tokio::test]
async fn unticking_every_field_is_a_denial() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let page = app.consent_page(&browser, &auth_url).await;
    let response = app.decide(&browser, &page, "allow", &[]).await;
    assert_eq!(
        query_param(&location(&response), "error").as_deref(),
        Some("access_denied")
    );
}

/// Builds an authorize URL by hand, for requests the oauth2 crate would never send.
fn raw_authorize(app: &TestApp, params: &[(&str, &str)]) -> String {
    url::Url::parse_with_params(&app.url("/oauth/authorize"), params)
        .unwrap()
        .to_string()
}

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn base_params(app: &TestApp) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", app.partner.client_id.clone()),
        ("redirect_uri", app.partner.redirect_uri.clone()),
        ("scope", "claims:status".into()),
        ("state", "s-1".into()),
        ("code_challenge", CHALLENGE.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn with(
    params: &[(&'static str, String)],
    key: &str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = params.iter().filter(|(k, _)| *k != key).cloned().collect();
    if let Some(value) = value {
        let key = params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(k, _)| *k)
            .unwrap_or("extra");
        out.push((key, value.to_owned()));
    }
    out
}

async fn get(url: &str) -> reqwest::Response {
    http().get(url).send().await.unwrap()
}

fn as_refs<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn expect_error_redirect(app: &TestApp, params: &[(&'static str, String)], error: &str) {
    let response = get(&raw_authorize(app, &as_refs(params))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = location(&response);
    assert!(
        location.starts_with(&app.partner.redirect_uri),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some(error),
        "{location}"
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("s-1"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(app.base.as_str())
    );
}

#[tokio::test]
async fn a_missing_pkce_challenge_is_refused() {
    let app = spawn_app().await;
    let params = base_params(&app);
    expect_error_redirect(
        &app,
        &with(&params, "code_challenge", None),
        "invalid_request",
    )
    .await;
    expect_error_redirect(
        &app,
        &with(&params, "code_challenge_method", None),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_plain_pkce_challenge_is_refused() {
    let app = spawn_app().await;
    let params = base_params(&app);
    expect_error_redirect(
        &app,
        &with(&params, "code_challenge_method", Some("plain")),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_scope_outside_the_partners_set_is_refused() {
    let app = spawn_app().await;
    let params = base_params(&app);
    // Registered for other fields, and a field the catalog does not even have.
    expect_error_redirect(
        &app,
        &with(&params, "scope", Some("claims:repair_stage")),
        "invalid_scope",
    )
    .await;
    expect_error_redirect(
        &app,
        &with(&params, "scope", Some("claims:iban")),
        "invalid_scope",
    )
    .await;
    expect_error_redirect(&app, &with(&params, "scope", None), "invalid_scope").await;
}

#[tokio::test]
async fn a_wrong_response_type_is_refused() {
    let app = spawn_app().await;
    let params = base_params(&app);
    expect_error_redirect(
        &app,
        &with(&params, "response_type", Some("token")),
        "unsupported_response_type",
    )
    .await;
}

#[tokio::test]
async fn an_unregistered_redirect_uri_gets_an_error_page_not_a_redirect() {
    let app = spawn_app().await;
    let params = base_params(&app);
    let registered = app.partner.redirect_uri.clone();
    for uri in [
        "https://evil.example/callback".to_owned(),
        format!("{registered}/extra"),
        format!("{registered}?x=1"),
        registered.to_uppercase(),
    ] {
        let response = get(&raw_authorize(
            &app,
            &as_refs(&with(&params, "redirect_uri", Some(&uri))),
        ))
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert!(response.headers().get("location").is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("return address is not registered"), "{html}");
    }
    let response = get(&raw_authorize(
        &app,
        &as_refs(&with(&params, "redirect_uri", None)),
    ))
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unknown_client_gets_an_error_page_not_a_redirect() {
    let app = spawn_app().await;
    let params = base_params(&app);
    for client in ["nobody", "../../etc", ""] {
        let response = get(&raw_authorize(
            &app,
            &as_refs(&with(&params, "client_id", Some(client))),
        ))
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("location").is_none());
    }
}

#[tokio::test]
async fn the_consent_post_without_its_csrf_token_is_refused() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let page = app.consent_page(&browser, &auth_url).await;
    for csrf in ["", "wrong-token"] {
        let response = browser
            .post(app.url("/oauth/authorize"))
            .form(&[
                ("consent_id", page.consent_id.as_str()),
                ("csrf_token", csrf),
                ("decision", "allow"),
                ("field", "claims:status"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // Without the field entirely, too.
    let response = browser
        .post(app.url("/oauth/authorize"))
        .form(&[
            ("consent_id", page.consent_id.as_str()),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The refused posts changed nothing: the real form still works once.
    let response = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(query_param(&location(&response), "code").is_some());
    let again = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    assert_eq!(
        again.status(),
        StatusCode::FORBIDDEN,
        "a consent decision is single-use"
    );
}

/// Bob posting Alice's consent id is refused, and spends nothing: Alice's own decision still
/// goes through (it used to be spent before its owner was checked, so hers was refused too).
#[tokio::test]
async fn another_customers_consent_request_cannot_be_decided() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let alice = browser();
    app.sign_in(&alice, &auth_url, ALICE).await;
    let alice_page = app.consent_page(&alice, &auth_url).await;

    let bob = browser();
    app.sign_in(&bob, &auth_url, BOB).await;
    let bob_page = app.consent_page(&bob, &auth_url).await;
    let stolen = ConsentPage {
        consent_id: alice_page.consent_id.clone(),
        csrf_token: bob_page.csrf_token.clone(),
        html: String::new(),
    };
    let response = app.decide(&bob, &stolen, "allow", &["claims:status"]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let response = app
        .decide(&alice, &alice_page, "allow", &["claims:status"])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(query_param(&location(&response), "code").is_some());
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_without_a_session() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let browser = browser();
    let response = app
        .submit_sign_in(&browser, &auth_url, ALICE.1, "not-her-password")
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let html = browser
        .get(&auth_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Sign in"), "still not signed in");
}

#[tokio::test]
async fn sign_in_without_the_csrf_cookie_is_refused() {
    let app = spawn_app().await;
    let response = http()
        .post(app.url("/portal/login"))
        .form(&[
            ("email", ALICE.1),
            ("password", ALICE.2),
            ("csrf_token", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

// ----- issue 11: bounded consent requests ---------------------------------------------------

#[tokio::test]
async fn a_customer_can_park_only_so_many_consent_requests() {
    let app = spawn_app().await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let mut statuses = Vec::new();
    for _ in 0..22 {
        let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
        statuses.push(
            browser
                .get(&auth_url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses[..20].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(&statuses[20..], &[429, 429], "{statuses:?}");
    // Signing in again buys nothing: the cap is the customer's.
    let again = app.signed_in(ALICE).await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    assert_eq!(
        again.get(&auth_url).send().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another customer is not affected.
    let bob = app.signed_in(BOB).await;
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    assert_eq!(
        bob.get(&auth_url).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_oversized_state_is_refused_and_not_echoed() {
    let app = spawn_app().await;
    let params = with(&base_params(&app), "state", Some(&"s".repeat(513)));
    let response = get(&raw_authorize(&app, &as_refs(&params))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = location(&response);
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&location, "state"), None);
}
