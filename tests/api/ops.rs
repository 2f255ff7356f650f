//! Operations and the cross-cutting behaviour every route shares: health, readiness,
//! discovery metadata, the key set, the body cap, request ids, 404s and metrics.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    http().get(app.url(path)).send().await.unwrap()
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("every response carries an X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let response = get(&app, "/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
}

#[tokio::test]
async fn readyz_answers_200_when_the_database_and_shared_state_answer() {
    let app = spawn_app().await;
    let response = get(&app, "/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "database": "ok",
            "shared_state": "ok",
            "access_log": {
                "durability": "journal",
                "chain": app.chain(),
                "writer": "ok",
                "import_lag_records": 0,
            },
        })
    );
}

#[tokio::test]
async fn the_rfc8414_metadata_describes_this_server() {
    let app = spawn_app().await;
    let response = get(&app, "/.well-known/oauth-authorization-server").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with("application/json"));
    let metadata: Value = response.json().await.unwrap();

    assert_eq!(metadata["issuer"], json!(app.base));
    for (member, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(metadata[member], json!(app.url(path)), "{member}");
    }
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        json!(true)
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));

    let scopes: Vec<&str> = metadata["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"claims:status"), "{scopes:?}");
    for scope in &scopes {
        let lower = scope.to_lowercase();
        assert!(
            !lower.contains("iban") && !lower.contains("imei"),
            "{scope} must never be grantable"
        );
    }

    // The advertised key set is really there.
    let jwks = get(&app, "/.well-known/jwks.json").await;
    assert_eq!(jwks.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_jwks_publishes_only_public_ed25519_keys() {
    let app = spawn_app().await;
    let response = get(&app, "/.well-known/jwks.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["kty"], "OKP", "{key}");
        assert_eq!(key["crv"], "Ed25519", "{key}");
        assert_eq!(key["alg"], "EdDSA", "{key}");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()), "{key}");
        assert!(key["x"].as_str().is_some_and(|x| !x.is_empty()), "{key}");
        assert!(key.get("d").is_none(), "private key material in {key}");
    }
    assert_eq!(keys[0]["kid"], json!(app.app.keys.current_kid()));
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413_problem_json() {
    let app = spawn_app().await;
    let body = format!(
        "grant_type=refresh_token&refresh_token={}",
        "x".repeat(70_000)
    );
    assert!(body.len() > 70_000);
    let response = http()
        .post(app.url("/oauth/token"))
        .basic_auth(&app.partner.client_id, Some(&app.partner.client_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(content_type(&response), "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keyhole:problem:payload-too-large");
    assert_eq!(problem["status"], 413);
}

#[tokio::test]
async fn a_well_formed_request_id_is_echoed_back() {
    let app = spawn_app().await;
    let response = http()
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(request_id(&response), "abc-123");
}

#[tokio::test]
async fn a_malformed_request_id_is_replaced_by_a_generated_one() {
    let app = spawn_app().await;
    let too_long = "a".repeat(100);
    for bad in ["abc 123", too_long.as_str(), "a\"b", "<script>", "a/b"] {
        let response = http()
            .get(app.url("/healthz"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = request_id(&response);
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "generated id {id:?}");
    }
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_fresh_one() {
    let app = spawn_app().await;
    let first = request_id(&get(&app, "/healthz").await);
    let second = request_id(&get(&app, "/healthz").await);
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first:?}");
    assert_ne!(first, second, "each request gets its own id");
    // Error responses carry one too.
    assert!(uuid::Uuid::parse_str(&request_id(&get(&app, "/nope").await)).is_ok());
}

#[tokio::test]
async fn an_unknown_path_is_a_404_problem() {
    let app = spawn_app().await;
    let response = get(&app, "/no/such/thing").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(content_type(&response), "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keyhole:problem:not-found");
    assert_eq!(problem["status"], 404);
    assert!(problem["title"].is_string());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(get(&app, "/healthz").await.status(), StatusCode::OK);
    }
    assert_eq!(
        get(&app, "/no/such/thing").await.status(),
        StatusCode::NOT_FOUND
    );
    let token = app.admin_token("scraper").await;
    let response = app.admin_get(&token, "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            "keyhole_http_request_duration_seconds_count{route=\"/healthz\",status=\"200\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE keyhole_http_request_duration_seconds histogram"),
        "{text}"
    );
    // Unknown paths share one label, so scanners cannot blow up the series count.
    assert!(
        !text.contains("/no/such/thing"),
        "a raw path became a label: {text}"
    );
    assert!(
        text.contains("status=\"404\""),
        "the 404 is counted: {text}"
    );
}

#[tokio::test]
async fn metrics_need_an_admin_token_on_the_main_listener() {
    let app = spawn_app().await;
    assert_eq!(
        get(&app, "/metrics").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let tokens = app.tokens(&["claims:status"]).await;
    use oauth2::TokenResponse;
    let with_jwt = http()
        .get(app.url("/metrics"))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_jwt.status(),
        StatusCode::UNAUTHORIZED,
        "a partner token is not enough"
    );
    assert!(
        app.metrics()
            .await
            .contains("keyhole_http_request_duration_seconds")
    );
}

#[tokio::test]
async fn metrics_listen_serves_metrics_without_a_token_and_nothing_else() {
    // Port 0: the listener picks a free port itself (a port found free beforehand may be
    // taken by another test before the app binds it).
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let app = spawn_app_with(|s| s.metrics_listen = Some(addr)).await;
    let private = format!("http://127.0.0.1:{}", app.metrics_port.unwrap());
    let response = http()
        .get(format!("{private}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("keyhole_http_request_duration_seconds")
    );
    let other = http()
        .get(format!("{private}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/metrics").await.status(),
        StatusCode::UNAUTHORIZED
    );
}
