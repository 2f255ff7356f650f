//! What the red team found in issue 16's change (405 for known paths, stated constraints,
//! plain cursors), each pinned by a test that failed before its fix.

use crate::helpers::{ALL_FIELDS, http, spawn_app, spawn_app_with_sample_upstream};
use base64::Engine;
use oauth2::TokenResponse;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::Value;

/// An offset carried `9999-12-31T23:59:59-00:01` into year 10000, which passed the check and
/// then compared wrongly with the stored times (as text on SQLite): `from` found every record,
/// `to` none. Such times are now refused, and so are grant cursors past year 5138.
#[tokio::test]
async fn times_past_year_9999_are_refused_not_answered_wrongly() {
    let app = spawn_app().await;
    let admin = app.admin_token("red").await;
    for query in [
        "from=9999-12-31T23:59:59-00:01",
        "to=9999-12-31T23:59:59-00:01",
    ] {
        let path = format!("/admin/v1/access-log?{}", query.replace(':', "%3A"));
        let response = app.admin_get(&admin, &path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let cursor = "253402300800.000000000.0190a5e8-0000-7000-8000-000000000000";
    let response = app
        .admin_get(&admin, &format!("/admin/v1/grants?cursor={cursor}"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// `unavailable` is an outcome the log records and the server filters by, but the document's
/// pattern left it out. The pattern is now checked against every outcome.
#[tokio::test]
async fn the_documented_outcomes_are_every_outcome() {
    let document: Value =
        serde_json::from_str(&keyhole::http::openapi::document().unwrap()).unwrap();
    let parameters = document["paths"]["/admin/v1/access-log"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let outcome = parameters.iter().find(|p| p["name"] == "outcome").unwrap();
    let pattern = outcome["schema"]["pattern"].as_str().unwrap();
    let listed: Vec<&str> = pattern
        .trim_start_matches("^(")
        .trim_end_matches(")$")
        .split('|')
        .collect();
    let all: Vec<&str> = keyhole::access_log::Outcome::ALL
        .iter()
        .map(|o| o.as_str())
        .collect();
    assert_eq!(listed, all);
    let app = spawn_app().await;
    let admin = app.admin_token("red").await;
    let response = app
        .admin_get(&admin, "/admin/v1/access-log?outcome=unavailable")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The CSV export took any `limit` (even 2^64 − 1) though the document bounds it by 1000.
#[tokio::test]
async fn a_csv_export_takes_the_documented_limits_only() {
    let app = spawn_app().await;
    let admin = app.admin_token("red").await;
    for (limit, status) in [
        ("5000", StatusCode::BAD_REQUEST),
        ("18446744073709551615", StatusCode::BAD_REQUEST),
        ("0", StatusCode::BAD_REQUEST),
        ("1000", StatusCode::OK),
    ] {
        let response = http()
            .get(app.url(&format!("/admin/v1/access-log?limit={limit}")))
            .bearer_auth(&admin)
            .header("accept", "text/csv")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "limit={limit}");
    }
}

/// A reinstatement spelled `/%72einstate` was served (the router decodes unreserved
/// characters) but recorded in the audit trail, and looked up for `405`, under the spelling it
/// came in: a search of the trail for the action missed it.
#[tokio::test]
async fn an_encoded_path_is_audited_and_refused_as_the_router_reads_it() {
    let app = spawn_app().await;
    let admin = app.admin_token("red").await;
    let encoded = format!("/admin/v1/partners/{}/%72einstate", app.partner.client_id);
    let response = app.admin_post(&admin, &encoded).await;
    assert_eq!(response.status(), StatusCode::OK);
    let trail = app.audit_trail(&admin).await;
    let paths: Vec<&str> = trail.iter().filter_map(|e| e["path"].as_str()).collect();
    let plain = format!("/admin/v1/partners/{}/reinstate", app.partner.client_id);
    assert!(paths.contains(&plain.as_str()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("%72")), "{paths:?}");

    let response = http()
        .delete(app.url("/oauth/%74oken"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
}

/// Every method but GET under `/partner/v1/` was `405`, also for paths that are neither a list
/// nor a record.
#[tokio::test]
async fn only_partner_api_paths_get_405() {
    let app = spawn_app().await;
    let refused = http()
        .delete(app.url("/partner/v1/claims/C-1001"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.headers()["allow"], "GET, HEAD");
    let unknown = http()
        .delete(app.url("/partner/v1/nope/a/b/c"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// With two `Authorization` headers the first one counted: a valid Basic header followed by a
/// bogus one authenticated. Which header counts should not depend on who reads them, so two
/// are refused — at the back channel as `invalid_request`, on the partner API as no token.
#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            app.partner.client_id, app.partner.client_secret
        ))
    );
    let response = http()
        .post(app.url("/oauth/introspect"))
        .header(AUTHORIZATION, basic.as_str())
        .header(AUTHORIZATION, "Basic eDp5")
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    let tokens = app.tokens(ALL_FIELDS).await;
    let bearer = format!("Bearer {}", tokens.access_token().secret());
    let response = http()
        .get(app.url("/partner/v1/claims"))
        .header(AUTHORIZATION, bearer.as_str())
        .header(AUTHORIZATION, "Bearer nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let alone = app
        .bearer_get(tokens.access_token().secret(), "/partner/v1/claims")
        .await;
    assert_eq!(alone.status(), StatusCode::OK);
}

/// `Authorization: basic …` was `401`: the scheme is case-insensitive.
#[tokio::test]
async fn the_basic_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        app.partner.client_id, app.partner.client_secret
    ));
    let response = http()
        .post(app.url("/oauth/introspect"))
        .header(AUTHORIZATION, format!("basic {credentials}"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["active"], false);
}

/// `HEAD` was `405` on every GET path, though RFC 9110 §9.1 has every general-purpose server
/// answer it (uptime checks use it). It is the GET's answer without its content: on the
/// partner API a logged read (its `ETag` tells whether the record changed); in the admin audit
/// trail, a `HEAD`.
#[tokio::test]
async fn head_is_answered_as_get_without_the_content() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    // The raw exchange: headers, and not one byte of content.
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: keyhole\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let (head, content) = raw.split_once("\r\n\r\n").unwrap();
    assert!(content.is_empty(), "no content after the headers: {raw}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );

    let tokens = app.tokens(ALL_FIELDS).await;
    let before = app.log_records().await.len();
    let response = http()
        .head(app.url("/partner/v1/claims/C-1001"))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("etag").is_some());
    assert_eq!(app.log_records().await.len(), before + 1, "a logged read");

    let admin = app.admin_token("head").await;
    let response = http()
        .head(app.url("/admin/v1/partners"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let trail = app.audit_trail(&admin).await;
    let heads = trail
        .iter()
        .filter(|e| e["method"] == "HEAD" && e["path"] == "/admin/v1/partners")
        .count();
    assert_eq!(heads, 1, "{trail:?}");

    let refused = http().put(app.url("/healthz")).send().await.unwrap();
    assert_eq!(refused.headers()["allow"], "GET, HEAD");
}
