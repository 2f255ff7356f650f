//! Pushed authorization requests (RFC 9126): `POST /oauth/par`, then
//! `GET /oauth/authorize?client_id=…&request_uri=…`, once, by the client that pushed.

use crate::helpers::*;
use oauth2::{AuthorizationCode, PkceCodeChallenge, PkceCodeVerifier, TokenResponse};
use reqwest::StatusCode;
use serde_json::Value;

const PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A form as `reqwest` sends it.
type FormFields = Vec<(&'static str, String)>;

/// A valid pushed request for `partner`, as a form.
fn request_for(partner: &Partner, scope: &str, challenge: &str) -> FormFields {
    vec![
        ("response_type", "code".into()),
        ("redirect_uri", partner.redirect_uri.clone()),
        ("scope", scope.into()),
        ("state", "s-pushed".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

/// `form` with `key` replaced by `value` (or removed when `None`).
fn with(form: &[(&'static str, String)], key: &'static str, value: Option<&str>) -> FormFields {
    let mut out: Vec<_> = form.iter().filter(|(k, _)| *k != key).cloned().collect();
    if let Some(value) = value {
        out.push((key, value.to_owned()));
    }
    out
}

/// `POST /oauth/par` with HTTP Basic client authentication as `partner`.
async fn push_as(
    app: &TestApp,
    partner: &Partner,
    form: &[(&'static str, String)],
) -> reqwest::Response {
    http()
        .post(app.url("/oauth/par"))
        .basic_auth(&partner.client_id, Some(&partner.client_secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Pushes a valid request for `scope`; returns the `request_uri` and the PKCE verifier.
async fn pushed(app: &TestApp, partner: &Partner, scope: &str) -> (String, PkceCodeVerifier) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let response = push_as(
        app,
        partner,
        &request_for(partner, scope, challenge.as_str()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    (body["request_uri"].as_str().unwrap().to_owned(), verifier)
}

/// The authorization URL a partner sends the browser to after pushing.
fn authorize_url(app: &TestApp, client_id: &str, request_uri: &str) -> String {
    url::Url::parse_with_params(
        &app.url("/oauth/authorize"),
        [("client_id", client_id), ("request_uri", request_uri)],
    )
    .unwrap()
    .to_string()
}

/// An error page, never a redirect: there is nothing trustworthy to send an error to.
async fn expect_error_page(response: reqwest::Response, says: &str) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains(says), "{html}");
}

/// A `400` (or `401`) in the RFC 6749 §5.2 JSON form, not cached.
async fn expect_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn a_pushed_request_leads_through_sign_in_and_consent_to_tokens() {
    let app = spawn_app().await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let response = push_as(
        &app,
        &app.partner,
        &request_for(
            &app.partner,
            "claims:status claims:claim_number",
            challenge.as_str(),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 60);
    let request_uri = body["request_uri"].as_str().unwrap();
    let random = request_uri.strip_prefix(PREFIX).expect("our URN namespace");
    assert_eq!(random.len(), 43, "{request_uri}");

    // The first visit has no session (sign-in page), the second shows the consent: the
    // request_uri survives the first.
    let auth_url = authorize_url(&app, &app.partner.client_id, request_uri);
    let browser = browser();
    app.sign_in(&browser, &auth_url, ALICE).await;
    let page = app.consent_page(&browser, &auth_url).await;
    assert!(page.html.contains("Claim status"));
    assert!(page.html.contains("Claim number"));
    let response = app
        .decide(&browser, &page, "allow", &["claims:status"])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = location(&response);
    assert!(
        location.starts_with(&app.partner.redirect_uri),
        "{location}"
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("s-pushed"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(app.base.as_str())
    );
    let code = query_param(&location, "code").expect("a code");

    let token = app
        .oauth_client()
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();
    let info = app.introspect(token.access_token().secret()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["scope"], "claims:status");
    assert_eq!(info["client_id"], app.partner.client_id.as_str());
}

#[tokio::test]
async fn a_request_uri_starts_one_consent_only() {
    let app = spawn_app().await;
    let (request_uri, _) = pushed(&app, &app.partner, "claims:status").await;
    let auth_url = authorize_url(&app, &app.partner.client_id, &request_uri);
    let alice = app.signed_in(ALICE).await;
    let page = app.consent_page(&alice, &auth_url).await;

    // A reload, or anyone else with the link, finds it spent.
    expect_error_page(alice.get(&auth_url).send().await.unwrap(), "already used").await;
    let bob = app.signed_in(BOB).await;
    expect_error_page(bob.get(&auth_url).send().await.unwrap(), "already used").await;

    // The consent it started still stands.
    let response = app.decide(&alice, &page, "allow", &["claims:status"]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(query_param(&location(&response), "code").is_some());
}

#[tokio::test]
async fn two_racing_consents_for_one_request_uri_get_one_page_between_them() {
    let app = spawn_app().await;
    let (request_uri, _) = pushed(&app, &app.partner, "claims:status").await;
    let auth_url = authorize_url(&app, &app.partner.client_id, &request_uri);
    let alice = app.signed_in(ALICE).await;
    let bob = app.signed_in(BOB).await;
    let (a, b) = tokio::join!(alice.get(&auth_url).send(), bob.get(&auth_url).send());
    let mut statuses = [a.unwrap().status(), b.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
}

#[tokio::test]
async fn a_request_uri_expires_after_sixty_seconds() {
    let app = spawn_app().await;
    let (first, _) = pushed(&app, &app.partner, "claims:status").await;
    let (second, _) = pushed(&app, &app.partner, "claims:status").await;
    let alice = app.signed_in(ALICE).await;

    app.clock.advance(chrono::Duration::seconds(59));
    let response = alice
        .get(authorize_url(&app, &app.partner.client_id, &first))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "still within its 60 s");

    app.clock.advance(chrono::Duration::seconds(2));
    let response = alice
        .get(authorize_url(&app, &app.partner.client_id, &second))
        .send()
        .await
        .unwrap();
    expect_error_page(response, "expired").await;
}

#[tokio::test]
async fn a_request_uri_works_only_for_the_client_that_pushed_it() {
    let app = spawn_app().await;
    // The same redirect URI and fields as the test's partner: only the binding to the client
    // that pushed can tell them apart.
    let shared_uri = app.partner.redirect_uri.clone();
    let other = app
        .add_partner_with("Fix It Repairs", ALL_FIELDS, |add| {
            add.redirect_uris = vec![shared_uri];
        })
        .await;
    let other = Partner {
        redirect_uri: app.partner.redirect_uri.clone(),
        ..other
    };
    let (request_uri, _) = pushed(&app, &other, "claims:status").await;
    let alice = app.signed_in(ALICE).await;

    let response = alice
        .get(authorize_url(&app, &app.partner.client_id, &request_uri))
        .send()
        .await
        .unwrap();
    expect_error_page(response, "not valid").await;

    // The attempt spent nothing: its own client's link still works.
    let response = alice
        .get(authorize_url(&app, &other.client_id, &request_uri))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("Fix It Repairs"), "{html}");
}

#[tokio::test]
async fn an_unknown_or_malformed_request_uri_gets_an_error_page() {
    let app = spawn_app().await;
    let (request_uri, _) = pushed(&app, &app.partner, "claims:status").await;
    let alice = app.signed_in(ALICE).await;
    let random = request_uri.strip_prefix(PREFIX).unwrap();
    for bad in [
        format!("{PREFIX}{}", "A".repeat(43)),
        // The random part alone, or with more after it, is not the request_uri.
        random.to_owned(),
        format!("{request_uri}x"),
        format!("{request_uri}{}", "x".repeat(10_000)),
        "https://fone.example/request.jwt".to_owned(),
    ] {
        let response = alice
            .get(authorize_url(&app, &app.partner.client_id, &bad))
            .send()
            .await
            .unwrap();
        expect_error_page(response, "not valid").await;
    }
    // None of that spent the real one.
    let response = alice
        .get(authorize_url(&app, &app.partner.client_id, &request_uri))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn query_parameters_beside_request_uri_are_ignored() {
    let app = spawn_app().await;
    let elsewhere = "http://127.0.0.1:9/elsewhere/callback".to_owned();
    let second_uri = elsewhere.clone();
    let partner = app
        .add_partner_with("Two Doors", ALL_FIELDS, |add| {
            add.redirect_uris.push(second_uri);
        })
        .await;
    let (request_uri, verifier) = pushed(&app, &partner, "claims:status").await;

    let mut url = url::Url::parse(&authorize_url(&app, &partner.client_id, &request_uri)).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_uri", &elsewhere)
        .append_pair("scope", "claims:claim_number")
        .append_pair("state", "s-query")
        .append_pair("response_type", "token")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "plain");
    let alice = app.signed_in(ALICE).await;
    let page = app.consent_page(&alice, url.as_str()).await;
    assert!(page.html.contains("Claim status"));
    assert!(!page.html.contains("Claim number"), "the query's scope won");

    let response = app.decide(&alice, &page, "allow", &["claims:status"]).await;
    let location = location(&response);
    assert!(location.starts_with(&partner.redirect_uri), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("s-pushed"));
    // The pushed challenge is the one the code is bound to.
    let token = app
        .oauth_client_for(&partner)
        .exchange_code(AuthorizationCode::new(
            query_param(&location, "code").unwrap(),
        ))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();
    assert!(!token.access_token().secret().is_empty());
}

/// A request in the query from a client that must push: refused by redirect once client and
/// redirect URI are known good, by page before that; pushing works.
async fn expect_pushing_required(app: &TestApp, partner: &Partner) {
    let mut query = request_for(partner, "claims:status", CHALLENGE);
    query.push(("client_id", partner.client_id.clone()));
    let refs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = url::Url::parse_with_params(&app.url("/oauth/authorize"), &refs).unwrap();
    let response = http().get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = location(&response);
    assert!(location.starts_with(&partner.redirect_uri), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert!(
        query_param(&location, "error_description")
            .unwrap()
            .contains("push"),
        "{location}"
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("s-pushed"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(app.base.as_str())
    );

    let unregistered: Vec<(&str, &str)> = refs
        .iter()
        .map(|(k, v)| match *k {
            "redirect_uri" => (*k, "https://evil.example/callback"),
            _ => (*k, *v),
        })
        .collect();
    let url = url::Url::parse_with_params(&app.url("/oauth/authorize"), &unregistered).unwrap();
    expect_error_page(
        http().get(url.as_str()).send().await.unwrap(),
        "not registered",
    )
    .await;

    let (request_uri, _) = pushed(app, partner, "claims:status").await;
    let response = http()
        .get(authorize_url(app, &partner.client_id, &request_uri))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Sign in"));
}

#[tokio::test]
async fn a_partner_registered_with_require_par_must_push() {
    let app = spawn_app().await;
    let strict = app
        .add_partner_with("Strict Partner", ALL_FIELDS, |add| add.require_par = true)
        .await;
    expect_pushing_required(&app, &strict).await;
    // Others still may use the query.
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    let response = http().get(&auth_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_require_par_set_every_partner_must_push_and_metadata_says_so() {
    let app = spawn_app_with(|s| s.require_par = true).await;
    expect_pushing_required(&app, &app.partner).await;
    let metadata: Value = http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["require_pushed_authorization_requests"], true);
}

#[tokio::test]
async fn metadata_names_the_pushed_authorization_request_endpoint() {
    let app = spawn_app().await;
    let metadata: Value = http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["pushed_authorization_request_endpoint"],
        app.url("/oauth/par")
    );
    assert_eq!(metadata["require_pushed_authorization_requests"], false);
}

#[tokio::test]
async fn pushing_needs_client_authentication() {
    let app = spawn_app().await;
    let form = request_for(&app.partner, "claims:status", CHALLENGE);
    let wrong = Partner {
        client_secret: "not-the-secret".into(),
        ..app.partner.clone()
    };
    let response = push_as(&app, &wrong, &form).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"keyhole\""
    );
    expect_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let unknown = Partner {
        client_id: "nobody".into(),
        ..app.partner.clone()
    };
    let response = push_as(&app, &unknown, &form).await;
    expect_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // No authentication at all, even naming the client.
    let response = http()
        .post(app.url("/oauth/par"))
        .form(&with(&form, "client_id", Some(&app.partner.client_id)))
        .send()
        .await
        .unwrap();
    expect_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // client_secret_post works as at the token endpoint.
    let mut post = form.clone();
    post.push(("client_id", app.partner.client_id.clone()));
    post.push(("client_secret", app.partner.client_secret.clone()));
    let response = http()
        .post(app.url("/oauth/par"))
        .form(&post)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_client_id_in_the_form_must_be_the_authenticated_client() {
    let app = spawn_app().await;
    let other = app.add_partner("Fix It Repairs", ALL_FIELDS).await;
    let form = with(
        &request_for(&app.partner, "claims:status", CHALLENGE),
        "client_id",
        Some(&other.client_id),
    );
    let response = push_as(&app, &app.partner, &form).await;
    expect_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Its own client_id is fine.
    let form = with(&form, "client_id", Some(&app.partner.client_id));
    let response = push_as(&app, &app.partner, &form).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_invalid_pushed_request_gets_the_error_the_authorization_endpoint_would_give() {
    let app = spawn_app().await;
    let form = request_for(&app.partner, "claims:status", CHALLENGE);
    let long_state = "s".repeat(513);
    let cases: Vec<(&str, FormFields, &str)> = vec![
        (
            "no PKCE challenge",
            with(&form, "code_challenge", None),
            "invalid_request",
        ),
        (
            "no PKCE method",
            with(&form, "code_challenge_method", None),
            "invalid_request",
        ),
        (
            "plain PKCE",
            with(&form, "code_challenge_method", Some("plain")),
            "invalid_request",
        ),
        (
            "response_type=token",
            with(&form, "response_type", Some("token")),
            "unsupported_response_type",
        ),
        (
            "no response_type",
            with(&form, "response_type", None),
            "unsupported_response_type",
        ),
        (
            "a field the partner was not registered for",
            with(&form, "scope", Some("claims:repair_stage")),
            "invalid_scope",
        ),
        (
            "a field outside the catalog",
            with(&form, "scope", Some("claims:iban")),
            "invalid_scope",
        ),
        ("no scope", with(&form, "scope", None), "invalid_scope"),
        (
            "an unregistered redirect_uri",
            with(
                &form,
                "redirect_uri",
                Some(&format!("{}/extra", app.partner.redirect_uri)),
            ),
            "invalid_request",
        ),
        (
            "no redirect_uri",
            with(&form, "redirect_uri", None),
            "invalid_request",
        ),
        (
            "an oversized state",
            with(&form, "state", Some(&long_state)),
            "invalid_request",
        ),
    ];
    for (what, form, error) in cases {
        let response = push_as(&app, &app.partner, &form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{what}: {body}");
    }

    // A repeated parameter is ambiguous (RFC 9126 §2.1, RFC 6749 §3.1).
    let mut repeated = form.clone();
    repeated.push(("scope", "claims:claim_number".into()));
    let response = push_as(&app, &app.partner, &repeated).await;
    expect_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_pushed_request_cannot_carry_a_request_uri() {
    let app = spawn_app().await;
    let (earlier, _) = pushed(&app, &app.partner, "claims:status").await;
    let form = with(
        &request_for(&app.partner, "claims:status", CHALLENGE),
        "request_uri",
        Some(&earlier),
    );
    let response = push_as(&app, &app.partner, &form).await;
    expect_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_client_may_push_only_so_many_requests_a_minute() {
    let app = spawn_app().await;
    let form = request_for(&app.partner, "claims:status", CHALLENGE);
    for n in 1..=300 {
        let response = push_as(&app, &app.partner, &form).await;
        assert_eq!(response.status(), StatusCode::CREATED, "push {n}");
    }
    let response = push_as(&app, &app.partner, &form).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    // The limit is this client's alone, and the next minute starts afresh.
    let other = app.add_partner("Fix It Repairs", ALL_FIELDS).await;
    let response = push_as(
        &app,
        &other,
        &request_for(&other, "claims:status", CHALLENGE),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    app.clock.advance(chrono::Duration::seconds(60));
    let response = push_as(&app, &app.partner, &form).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
