//! The committed OpenAPI document must match the code. Regenerate with
//! `cargo run -- openapi > openapi/openapi.json`.

#[test]
fn the_committed_openapi_document_is_current() {
    let generated = keyhole::http::openapi::document().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap_or_default();
    assert!(
        generated == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

use crate::helpers::{http, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn document() -> Value {
    serde_json::from_str(&keyhole::http::openapi::document().unwrap()).unwrap()
}

/// Every path of the document, asked with a method it does not list, answers `405` with an
/// `Allow` naming exactly the methods it lists (an unknown path stays `404`). Before, the
/// router's fall-through answered `404` (schemathesis ST204).
#[tokio::test]
async fn a_method_a_documented_path_does_not_take_gets_405_with_allow() {
    let app = spawn_app().await;
    let admin = app.admin_token("openapi").await;
    let document = document();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() > 20);
    for (path, item) in paths {
        let mut listed: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "delete" | "patch"))
            .map(|k| k.to_uppercase())
            .collect();
        // HEAD is answered wherever GET is (RFC 9110 §9.3.2), without being listed.
        if listed.iter().any(|m| m == "GET") {
            listed.push("HEAD".into());
        }
        listed.sort();
        let concrete = path
            .replace("{resource}", "claims")
            .replace("{id}", "C-1001")
            .replace("{client_id}", "fone-shop");
        for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::TRACE] {
            let response = http()
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {concrete}"
            );
            let mut allow: Vec<String> = response.headers()["allow"]
                .to_str()
                .unwrap()
                .split(", ")
                .map(str::to_owned)
                .collect();
            allow.sort();
            assert_eq!(allow, listed, "{method} {concrete}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{method} {concrete}"
            );
        }
    }
    let unknown = http().put(app.url("/oauth/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// A body over the limit is refused with the documented `413` and body, at every endpoint
/// that reads one. The document first said the back-channel endpoints answer it with the
/// RFC 6749 object, which they never did.
#[tokio::test]
async fn an_oversize_body_gets_the_documented_413() {
    let app = spawn_app().await;
    let body = "a".repeat(70_000);
    for path in [
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/oauth/par",
        "/portal/oidc/backchannel-logout",
    ] {
        let response = http()
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let documented = &document()["paths"][path]["post"]["responses"]["413"]["content"];
        assert!(
            documented.get("application/problem+json").is_some(),
            "{path}: {documented}"
        );
    }
}

/// Every error response the document lists says what its body is: a `Problem`, the RFC 6749
/// §5.2 object at the back-channel endpoints, a page at the authorization endpoint, or (the
/// back-channel logout's refusals, RFC-defined) nothing.
#[test]
fn every_documented_error_has_its_body_described() {
    let document = document();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("Problem") && schemas.contains_key("OAuthError"));
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let content = &response["content"];
                let problem = content["application/problem+json"]["schema"]["$ref"]
                    == "#/components/schemas/Problem";
                let described = if path == "/portal/oidc/backchannel-logout" {
                    status != "413" || problem
                } else if path == "/readyz" {
                    // Not ready is an answer, not an error: the same report as when ready.
                    content.get("application/json").is_some()
                } else if status == "413" {
                    // The app-wide body limit answers before any endpoint reads its body.
                    problem
                } else if path.starts_with("/oauth/authorize") {
                    content.get("text/html").is_some()
                } else if [
                    "/oauth/token",
                    "/oauth/revoke",
                    "/oauth/introspect",
                    "/oauth/par",
                ]
                .contains(&path.as_str())
                {
                    content["application/json"]["schema"]["$ref"]
                        == "#/components/schemas/OAuthError"
                } else {
                    problem
                };
                assert!(described, "{method} {path} {status}: {response}");
            }
        }
    }
}
