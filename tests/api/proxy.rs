//! The partner API proxy, end to end: a real server, a real consent flow, and a `wiremock`
//! upstream standing in for the insurer's claims API. Every test checks both what the partner
//! got and what the access log says it got.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyhole::access_log::{ChainedRecord, Outcome};
use keyhole::clock::Clock;
use keyhole::domain::catalog::{FieldConfig, ResourceConfig, default_resources};
use keyhole::domain::{ClientId, GrantId};
use keyhole::store::{PartnerStatus, RevokedBy};
use keyhole::tokens::{AccessClaims, generate_key};
use oauth2::{Scope, TokenResponse};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

// ----- upstream data -----------------------------------------------------------------------

const IBAN: &str = "GB82WEST12345698765432";
const IMEI: &str = "356938035643809";
const DATE_OF_BIRTH: &str = "1985-04-12";
const NEW_SECRET: &str = "NEW-SECRET-VALUE-7f3a";
/// Strings that must never reach a partner, whatever it was granted.
const NEVER: &[&str] = &[IBAN, IMEI, DATE_OF_BIRTH, NEW_SECRET];

/// A full upstream claim, sensitive parts included.
fn claim(id: &str, customer: &str, status: &str) -> Value {
    json!({
        "id": id,
        "customer_id": customer,
        "status": status,
        "status_updated_at": "2024-11-18T14:32:05Z",
        "claim_number": format!("HRM-2024-{id}"),
        "device": {"make": "Apple", "model": "iPhone 14 Pro", "imei": IMEI},
        "repair": {"stage": "awaiting_parts"},
        "settlement": {"iban": IBAN, "amount": 289.0},
        "date_of_birth": DATE_OF_BIRTH,
        "new_secret_field": NEW_SECRET,
    })
}

fn alice_claim(id: &str) -> Value {
    claim(id, ALICE.0, "in_repair")
}

// ----- the world ---------------------------------------------------------------------------

/// A mock upstream and an app that talks to it.
async fn upstream_app() -> (MockServer, TestApp) {
    upstream_app_with(|_| {}).await
}

async fn upstream_app_with(
    adjust: impl FnOnce(&mut keyhole::config::Settings),
) -> (MockServer, TestApp) {
    let mock = MockServer::start().await;
    let uri = mock.uri();
    let app = spawn_app_with(|s| {
        s.upstream.base_url = uri.parse().unwrap();
        adjust(s);
    })
    .await;
    (mock, app)
}

/// Serves `body` as the upstream record `id`, expecting exactly `calls` calls.
async fn serve_item(mock: &MockServer, id: &str, body: Value, calls: impl Into<wiremock::Times>) {
    Mock::given(method("GET"))
        .and(path(format!("/claims/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(calls)
        .mount(mock)
        .await;
}

/// Any upstream call at all fails the test (checked by `mock.verify()` and on drop).
async fn forbid_upstream(mock: &MockServer) {
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(alice_claim("C-1001")))
        .with_priority(100)
        .expect(0)
        .named("no upstream call")
        .mount(mock)
        .await;
}

async fn upstream_calls(mock: &MockServer) -> usize {
    mock.received_requests().await.unwrap_or_default().len()
}

/// A partner with limits high enough never to interfere.
async fn unlimited_partner(app: &TestApp, name: &str, fields: &[&str]) -> Partner {
    app.add_partner_with(name, fields, |add| {
        add.rate = Some(100_000.0);
        add.burst = Some(100_000);
        add.grant_rate = Some(100_000.0);
        add.grant_burst = Some(100_000);
    })
    .await
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    http()
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn log_of(app: &TestApp) -> Vec<ChainedRecord> {
    app.log_records().await
}

async fn last_record(app: &TestApp) -> ChainedRecord {
    log_of(app).await.pop().expect("an access-log record")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A problem+json answer with this status and type; returns its body.
async fn problem(response: reqwest::Response, status: StatusCode, type_: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], type_, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// A refusal: no record and no field named.
fn assert_refusal(record: &ChainedRecord, outcome: Outcome, status: u16) {
    let r = &record.record;
    assert_eq!(r.outcome, outcome, "{r:?}");
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.record_ids.is_empty(), "{r:?}");
    assert!(r.fields.is_empty(), "{r:?}");
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

/// The header and payload of a compact JWS, as JSON.
fn jws_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let decode = |part: Option<&str>| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.unwrap()).unwrap()).unwrap()
    };
    (decode(it.next()), decode(it.next()))
}

fn grant_id_of(token: &str) -> GrantId {
    let (_, payload) = jws_parts(token);
    GrantId::parse(payload["grant_id"].as_str().unwrap()).unwrap()
}

/// The same claims as `token` (after `edit`), validly signed by the server's own key.
fn resigned(app: &TestApp, token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (_, mut payload) = jws_parts(token);
    edit(&mut payload);
    let claims: AccessClaims = serde_json::from_value(payload).unwrap();
    app.app.keys.sign(&claims).unwrap()
}

// ----- projection --------------------------------------------------------------------------

#[tokio::test]
async fn only_granted_fields_come_back() {
    let (mock, app) = upstream_app().await;
    let fields = ["claims:status", "claims:device_model"];
    let partner = app.add_partner("Repair Co", &fields).await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 1).await;
    let token = app.tokens_for(&partner, &fields).await;
    let access = token.access_token().secret();

    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    let text = response.text().await.unwrap();
    for secret in NEVER
        .iter()
        .chain(&["HRM-2024", "2024-11-18", "289", "awaiting_parts", "Apple"])
    {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"id": "C-1001", "status": "in_repair", "device_model": "iPhone 14 Pro"})
    );

    let log = log_of(&app).await;
    assert_eq!(log.len(), 1);
    let r = &log[0].record;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.status, 200);
    // Catalog order: the fields of a resource are kept sorted by name.
    assert_eq!(r.fields, strings(&["claims:device_model", "claims:status"]));
    assert_eq!(r.record_ids, strings(&["C-1001"]));
    assert_eq!(r.customer_id.as_deref(), Some(ALICE.0));
    assert_eq!(r.resource, "claims");
    assert_eq!(r.resource_id.as_deref(), Some("C-1001"));
    assert_eq!(r.client_id.as_deref(), Some(partner.client_id.as_str()));
    assert_eq!(
        r.grant_id.as_deref(),
        Some(grant_id_of(access).to_string().as_str())
    );
    mock.verify().await;
}

/// One JSON object key: its decoded name and the raw text that spells it.
fn json_key() -> impl Strategy<Value = (String, String)> {
    let plain = prop::sample::select(vec![
        "status",
        "status_updated_at",
        "claim_number",
        "device",
        "model",
        "repair",
        "stage",
        "settlement",
        "iban",
        "imei",
        "date_of_birth",
        "new_secret_field",
        "id",
        "customer_id",
    ])
    .prop_map(|k| (k.to_owned(), format!("\"{k}\"")));
    prop_oneof![
        6 => plain,
        2 => "[a-z_]{1,8}".prop_map(|k| (k.clone(), format!("\"{k}\""))),
        // The same names spelled with escapes, which a JSON parser decodes to the plain name.
        1 => Just(("status".to_owned(), r#""st\u0061tus""#.to_owned())),
        1 => Just(("iban".to_owned(), r#""\u0069ban""#.to_owned())),
        1 => Just(("model".to_owned(), r#""mod\u0065l""#.to_owned())),
    ]
}

/// A JSON value as raw text: nested objects and arrays, duplicated keys allowed. Whatever sits
/// under a sensitive key name is a sensitive value; no sensitive value appears anywhere else.
#[derive(Debug, Clone)]
enum Shape {
    Leaf(String),
    Array(Vec<Shape>),
    Object(Vec<((String, String), Shape)>),
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        (-1.0e6f64..1.0e6).prop_map(|f| serde_json::to_string(&f).unwrap()),
        "[a-zA-Z0-9 _-]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_map(Shape::Leaf)
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Shape::Array),
                prop::collection::vec((json_key(), inner), 0..7).prop_map(Shape::Object),
            ]
        })
}

fn sensitive_value(key: &str) -> Option<&'static str> {
    match key {
        "iban" => Some(IBAN),
        "imei" => Some(IMEI),
        "date_of_birth" => Some(DATE_OF_BIRTH),
        "new_secret_field" => Some(NEW_SECRET),
        _ => None,
    }
}

fn render_pairs(pairs: &[((String, String), Shape)], out: &mut Vec<String>) {
    for ((name, raw), value) in pairs {
        let value = match sensitive_value(name) {
            Some(secret) => format!("\"{secret}\""),
            None => render(value),
        };
        out.push(format!("{raw}:{value}"));
    }
}

fn render(shape: &Shape) -> String {
    match shape {
        Shape::Leaf(raw) => raw.clone(),
        Shape::Array(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(",")
        ),
        Shape::Object(pairs) => {
            let mut out = Vec::new();
            render_pairs(pairs, &mut out);
            format!("{{{}}}", out.join(","))
        }
    }
}

/// A top-level record: random pairs (with duplicates), then its id and owner, written last so
/// that they win over any earlier duplicate.
fn record_text(pairs: &[((String, String), Shape)], id: &str, customer: &str) -> String {
    let mut out = Vec::new();
    render_pairs(pairs, &mut out);
    out.push(format!("\"id\":\"{id}\""));
    out.push(format!("\"customer_id\":\"{customer}\""));
    format!("{{{}}}", out.join(","))
}

const ALL_CLAIM_FIELDS: &[(&str, &str)] = &[
    ("claim_number", "/claim_number"),
    ("device_model", "/device/model"),
    ("repair_stage", "/repair/stage"),
    ("status", "/status"),
    ("status_updated_at", "/status_updated_at"),
];

/// One answered item, checked against the upstream text it came from.
fn check_projection(item: &Value, upstream: &Value) -> Result<BTreeSet<String>, String> {
    let object = item.as_object().ok_or(format!("not an object: {item}"))?;
    let mut disclosed = BTreeSet::new();
    for (key, value) in object {
        if value.is_object() || value.is_array() || value.is_null() {
            return Err(format!("non-scalar value under {key}: {item}"));
        }
        if key == "id" {
            continue;
        }
        let (_, pointer) = ALL_CLAIM_FIELDS
            .iter()
            .find(|(name, _)| name == key)
            .ok_or(format!("leaked key {key}: {item}"))?;
        if upstream.pointer(pointer) != Some(value) {
            return Err(format!(
                "{key} is not the upstream value at {pointer}: {item}"
            ));
        }
        disclosed.insert(format!("claims:{key}"));
    }
    // A scalar at a granted pointer is never dropped either.
    for (name, pointer) in ALL_CLAIM_FIELDS {
        let scalar = matches!(
            upstream.pointer(pointer),
            Some(Value::String(_) | Value::Number(_) | Value::Bool(_))
        );
        if scalar != object.contains_key(*name) {
            return Err(format!("{name} at {pointer} mishandled: {item}"));
        }
    }
    Ok(disclosed)
}

async fn one_random_case(
    app: &TestApp,
    mock: &MockServer,
    token: &str,
    alice: &[((String, String), Shape)],
    bob: &[((String, String), Shape)],
    list: bool,
) -> Result<(), String> {
    mock.reset().await;
    let alice_text = record_text(alice, "C-1001", ALICE.0);
    let bob_text = record_text(bob, "C-2001", BOB.0);
    let (upstream_path, partner_path, upstream_body) = if list {
        (
            format!("/customers/{}/claims", ALICE.0),
            "/partner/v1/claims",
            format!("[{bob_text},{alice_text}]"),
        )
    } else {
        (
            "/claims/C-1001".to_owned(),
            "/partner/v1/claims/C-1001",
            alice_text.clone(),
        )
    };
    Mock::given(method("GET"))
        .and(path(upstream_path))
        .respond_with(ResponseTemplate::new(200).set_body_raw(upstream_body, "application/json"))
        .mount(mock)
        .await;
    let response = get(app, token, partner_path).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    if status != StatusCode::OK {
        return Err(format!("status {status} for {alice_text}: {text}"));
    }
    for secret in NEVER.iter().chain(&["C-2001"]) {
        if text.contains(secret) {
            return Err(format!("{secret} leaked from {alice_text}: {text}"));
        }
    }
    let body: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let upstream: Value = serde_json::from_str(&alice_text).map_err(|e| e.to_string())?;
    let item = if list {
        let items = body["items"]
            .as_array()
            .ok_or(format!("no items: {text}"))?;
        if items.len() != 1 || body.as_object().map(|o| o.len()) != Some(1) {
            return Err(format!("expected Alice's record alone: {text}"));
        }
        items[0].clone()
    } else {
        body
    };
    if item["id"] != "C-1001" {
        return Err(format!("wrong id: {text}"));
    }
    let disclosed = check_projection(&item, &upstream)?;
    let record = last_record(app).await.record;
    let logged: BTreeSet<String> = record.fields.iter().cloned().collect();
    if record.outcome != Outcome::Ok || logged != disclosed || record.record_ids != ["C-1001"] {
        return Err(format!("log {record:?} does not match the answer {text}"));
    }
    Ok(())
}

/// Whatever shape the upstream sends — nested, duplicated keys, escaped key names, sensitive
/// values everywhere except under the granted pointers — the answer holds only `id` and
/// granted fields, each a scalar taken from exactly its pointer, and the log says so.
#[test]
fn random_upstream_shapes_never_leak_anything_but_granted_scalars() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fields: Vec<String> = ALL_CLAIM_FIELDS
        .iter()
        .map(|(name, _)| format!("claims:{name}"))
        .collect();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let (mock, app, token) = rt.block_on(async {
        let (mock, app) = upstream_app().await;
        let partner = unlimited_partner(&app, "Shape Tester", &fields).await;
        let token = app.tokens_for(&partner, &fields).await;
        (mock, app, token.access_token().secret().clone())
    });
    let pairs = || prop::collection::vec((json_key(), shape()), 0..10);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(pairs(), pairs(), any::<bool>()), |(alice, bob, list)| {
            rt.block_on(one_random_case(&app, &mock, &token, &alice, &bob, list))
                .map_err(TestCaseError::fail)
        })
        .unwrap();
    let report = rt.block_on(app.verify_log());
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn a_list_holds_only_the_owners_records() {
    let (mock, app) = upstream_app().await;
    let fields = [
        "claims:status",
        "claims:claim_number",
        "claims:status_updated_at",
    ];
    let token = app.tokens(&fields).await;
    // C-1001 has no claim number; only Bob's record has a status_updated_at.
    let mut first = alice_claim("C-1001");
    first.as_object_mut().unwrap().remove("claim_number");
    first.as_object_mut().unwrap().remove("status_updated_at");
    let mut second = claim("C-1002", ALICE.0, "paid");
    second.as_object_mut().unwrap().remove("status_updated_at");
    let bobs = claim("C-2001", BOB.0, "being_assessed");
    Mock::given(method("GET"))
        .and(path("/customers/CU-1001/claims"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([first, bobs, second])))
        .expect(1)
        .mount(&mock)
        .await;

    let response = get(&app, token.access_token().secret(), "/partner/v1/claims").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("C-2001") && !text.contains("being_assessed"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"items": [
            {"id": "C-1001", "status": "in_repair"},
            {"id": "C-1002", "status": "paid", "claim_number": "HRM-2024-C-1002"},
        ]})
    );

    let r = last_record(&app).await.record;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.status, 200);
    assert_eq!(r.resource_id, None);
    assert_eq!(r.record_ids, strings(&["C-1001", "C-1002"]));
    assert_eq!(r.fields, strings(&["claims:claim_number", "claims:status"]));
    mock.verify().await;
}

// ----- ownership ---------------------------------------------------------------------------

#[tokio::test]
async fn another_customers_record_is_indistinguishable_from_a_missing_one() {
    let (mock, app) = upstream_app().await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    serve_item(&mock, "C-2001", claim("C-2001", BOB.0, "rejected"), 1).await;
    // An owner that is not exactly the customer id as a string is not an owner either.
    let mut listed = alice_claim("C-3001");
    listed["customer_id"] = json!([ALICE.0]);
    serve_item(&mock, "C-3001", listed, 1).await;
    let mut prefixed = alice_claim("C-3002");
    prefixed["customer_id"] = json!("CU-10011");
    serve_item(&mock, "C-3002", prefixed, 1).await;
    Mock::given(method("GET"))
        .and(path("/claims/C-9999"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "no such claim"})))
        .expect(1)
        .mount(&mock)
        .await;

    let mut answers = Vec::new();
    for id in ["C-9999", "C-2001", "C-3001", "C-3002"] {
        let response = get(&app, access, &format!("/partner/v1/claims/{id}")).await;
        let status = response.status();
        let content_type = header(&response, "content-type");
        let www = header(&response, "www-authenticate");
        let body = response.bytes().await.unwrap();
        answers.push((id, status, content_type, www, body));
    }
    let (_, status, content_type, www, body) = &answers[0];
    assert_eq!(*status, StatusCode::NOT_FOUND);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert!(!String::from_utf8_lossy(body).contains("rejected"));
    for (id, s, c, w, b) in &answers[1..] {
        assert_eq!((s, c, w, b), (status, content_type, www, body), "{id}");
    }

    let log = log_of(&app).await;
    assert_eq!(log.len(), 4);
    for record in &log {
        assert_refusal(record, Outcome::NotFound, 404);
        assert_eq!(record.record.customer_id.as_deref(), Some(ALICE.0));
    }
    mock.verify().await;
}

// ----- revocation, suspension, expiry ------------------------------------------------------

async fn assert_invalid_token(app: &TestApp, response: reqwest::Response) {
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    problem(
        response,
        StatusCode::UNAUTHORIZED,
        "urn:keyhole:problem:invalid-token",
    )
    .await;
    assert_refusal(&last_record(app).await, Outcome::InvalidToken, 401);
}

#[tokio::test]
async fn a_revoked_grant_stops_the_next_call() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 1).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_eq!(response.status(), StatusCode::OK);

    let grant = grant_id_of(access);
    assert!(
        keyhole::oauth::grants::revoke(&app.app, grant, RevokedBy::Customer)
            .await
            .unwrap()
    );
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;
    let response = get(&app, access, "/partner/v1/claims").await;
    assert_invalid_token(&app, response).await;
    assert_eq!(upstream_calls(&mock).await, 1);
    mock.verify().await;
}

#[tokio::test]
async fn a_revoked_grant_gets_401_whatever_it_calls() {
    let (mock, app) = upstream_app().await;
    forbid_upstream(&mock).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    keyhole::oauth::grants::revoke(&app.app, grant_id_of(access), RevokedBy::Customer)
        .await
        .unwrap();
    for path in [
        "/partner/v1/claims/C-1001",
        "/partner/v1/claims",
        "/partner/v1/policies",
        "/partner/v1/claims/a%2Fb",
    ] {
        let response = get(&app, access, path).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_invalid_token(&app, response).await;
    }
    mock.verify().await;
}

#[tokio::test]
async fn revoking_the_refresh_token_at_the_oauth_endpoint_stops_the_next_call() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 1).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    assert_eq!(
        get(&app, access, "/partner/v1/claims/C-1001")
            .await
            .status(),
        StatusCode::OK
    );

    app.revoke(token.refresh_token().unwrap().secret(), "refresh_token")
        .await;
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;
    assert_eq!(upstream_calls(&mock).await, 1);
    mock.verify().await;
}

#[tokio::test]
async fn revoking_the_access_token_stops_that_token_at_once() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 2).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    assert_eq!(
        get(&app, access, "/partner/v1/claims/C-1001")
            .await
            .status(),
        StatusCode::OK
    );

    let response = app
        .post_form(
            "/oauth/revoke",
            &[("token", access), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;

    // The grant lives on: a fresh access token works.
    let next = app
        .oauth_client()
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http())
        .await
        .unwrap();
    let response = get(
        &app,
        next.access_token().secret(),
        "/partner/v1/claims/C-1001",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    mock.verify().await;
}

#[tokio::test]
async fn a_suspended_partner_is_stopped_at_the_next_call_and_reinstating_restores_access() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 2).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    assert_eq!(
        get(&app, access, "/partner/v1/claims/C-1001")
            .await
            .status(),
        StatusCode::OK
    );

    let client = ClientId::parse(&app.partner.client_id).unwrap();
    keyhole::oauth::grants::set_partner_status(&app.app, &client, PartnerStatus::Suspended)
        .await
        .unwrap();
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;
    assert_eq!(upstream_calls(&mock).await, 1);

    keyhole::oauth::grants::set_partner_status(&app.app, &client, PartnerStatus::Active)
        .await
        .unwrap();
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "C-1001", "status": "in_repair"})
    );
    assert_eq!(last_record(&app).await.record.outcome, Outcome::Ok);
    mock.verify().await;
}

#[tokio::test]
async fn an_expired_grant_stops_calls_even_with_a_validly_signed_fresh_token() {
    let (mock, app) = upstream_app_with(|s| s.grant_lifetime_days = 1).await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 1).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret().clone();
    assert_eq!(
        get(&app, &access, "/partner/v1/claims/C-1001")
            .await
            .status(),
        StatusCode::OK
    );

    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));
    // The old token has expired by now as well...
    let response = get(&app, &access, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;

    // ...so, to isolate the grant's expiry, the same claims freshly issued and validly signed:
    // the token itself verifies, and only the expired grant refuses it.
    let now = app.clock.now().timestamp();
    let fresh = resigned(&app, &access, |payload| {
        payload["iat"] = json!(now);
        payload["exp"] = json!(now + 300);
        payload["jti"] = json!(uuid::Uuid::new_v4().to_string());
    });
    assert!(app.app.verifier.verify(&fresh, app.clock.now()).is_ok());
    let response = get(&app, &fresh, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;
    assert_eq!(upstream_calls(&mock).await, 1);
    mock.verify().await;
}

// ----- forged tokens -----------------------------------------------------------------------

#[tokio::test]
async fn forged_tokens_get_401_and_no_upstream_call() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 1).await;
    let token = app.tokens(&["claims:status"]).await;
    let genuine = token.access_token().secret().clone();
    // The genuine token works (and is now in the verified-token cache).
    assert_eq!(
        get(&app, &genuine, "/partner/v1/claims/C-1001")
            .await
            .status(),
        StatusCode::OK
    );
    let (header_json, payload) = jws_parts(&genuine);
    let mut pieces = genuine.split('.');
    let (h, _, s) = (
        pieces.next().unwrap(),
        pieces.next().unwrap(),
        pieces.next().unwrap(),
    );

    let mut forged: Vec<(&str, String)> = Vec::new();

    let mut none = header_json.clone();
    none["alg"] = json!("none");
    forged.push((
        "alg none",
        format!("{}.{}.", b64_json(&none), b64_json(&payload)),
    ));

    let jwks: Value = http()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut hs = header_json.clone();
    hs["alg"] = json!("HS256");
    let message = format!("{}.{}", b64_json(&hs), b64_json(&payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(&public).unwrap();
    mac.update(message.as_bytes());
    forged.push((
        "HS256 keyed with the public key",
        format!("{message}.{}", b64(&mac.finalize().into_bytes())),
    ));

    let foreign = generate_key(app.clock.now()).unwrap();
    let mut jwt_header = Header::new(Algorithm::EdDSA);
    jwt_header.typ = Some("at+jwt".into());
    jwt_header.kid = Some(foreign.kid.clone());
    let foreign_key = EncodingKey::from_ed_der(&foreign.private_key);
    forged.push((
        "a foreign key under an unknown kid",
        jsonwebtoken::encode(&jwt_header, &payload, &foreign_key).unwrap(),
    ));
    jwt_header.kid = header_json["kid"].as_str().map(str::to_owned);
    forged.push((
        "a foreign key under the real kid",
        jsonwebtoken::encode(&jwt_header, &payload, &foreign_key).unwrap(),
    ));

    forged.push((
        "another audience",
        resigned(&app, &genuine, |p| {
            p["aud"] = json!("https://other-api.example")
        }),
    ));
    forged.push((
        "another issuer",
        resigned(&app, &genuine, |p| p["iss"] = json!("https://evil.example")),
    ));

    let mut widened = payload.clone();
    widened["scope"] = json!("claims:claim_number claims:status");
    forged.push((
        "scope edited under the original signature",
        format!("{h}.{}.{s}", b64_json(&widened)),
    ));

    forged.push(("garbage", "garbage".into()));
    forged.push(("three garbage parts", "a.b.c".into()));
    forged.push((
        "the real token, truncated",
        genuine[..genuine.len() - 4].to_owned(),
    ));

    for (what, token) in &forged {
        let auth = format!("Bearer {token}");
        let response = get_with(
            &app,
            "/partner/v1/claims/C-1001",
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_invalid_token(&app, response).await;
    }

    // Without a bearer token at all.
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            app.partner.client_id, app.partner.client_secret
        ))
    );
    for (what, headers) in [
        ("no Authorization", vec![]),
        (
            "Basic client credentials",
            vec![("authorization", basic.as_str())],
        ),
        ("Bearer without a token", vec![("authorization", "Bearer ")]),
        (
            "the token without a scheme",
            vec![("authorization", genuine.as_str())],
        ),
    ] {
        let response = get_with(&app, "/partner/v1/claims/C-1001", &headers).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_invalid_token(&app, response).await;
    }

    // And the genuine token, once it has expired (though it was cached when valid).
    app.clock.advance(chrono::Duration::seconds(400));
    let response = get(&app, &genuine, "/partner/v1/claims/C-1001").await;
    assert_invalid_token(&app, response).await;

    assert_eq!(upstream_calls(&mock).await, 1);
    let log = log_of(&app).await;
    assert_eq!(log.len(), 1 + forged.len() + 4 + 1);
    mock.verify().await;
}

// ----- scope -------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_lacking_a_fields_scope_never_returns_it_even_if_the_grant_has_it() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 2).await;
    let wide = app.tokens(&["claims:status", "claims:claim_number"]).await;
    let narrow = app
        .oauth_client()
        .exchange_refresh_token(wide.refresh_token().unwrap())
        .add_scope(Scope::new("claims:status".into()))
        .request_async(&http())
        .await
        .unwrap();

    let response = get(
        &app,
        wide.access_token().secret(),
        "/partner/v1/claims/C-1001",
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "C-1001", "status": "in_repair", "claim_number": "HRM-2024-C-1001"})
    );
    let response = get(
        &app,
        narrow.access_token().secret(),
        "/partner/v1/claims/C-1001",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "C-1001", "status": "in_repair"})
    );
    assert_eq!(
        last_record(&app).await.record.fields,
        strings(&["claims:status"])
    );
    mock.verify().await;
}

#[tokio::test]
async fn a_token_claiming_more_than_its_grant_gets_only_what_the_grant_covers() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 1).await;
    let token = app.tokens(&["claims:status"]).await;
    // Validly signed by the server, but claiming a field the customer never granted.
    let widened = resigned(&app, token.access_token().secret(), |p| {
        p["scope"] = json!("claims:claim_number claims:status");
        p["jti"] = json!(uuid::Uuid::new_v4().to_string());
    });
    let response = get(&app, &widened, "/partner/v1/claims/C-1001").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "C-1001", "status": "in_repair"})
    );
    assert_eq!(
        last_record(&app).await.record.fields,
        strings(&["claims:status"])
    );
    mock.verify().await;
}

/// The default catalog plus Harmony Auto's `vehicle_orders`, configured and nothing else.
fn with_vehicle_orders(settings: &mut keyhole::config::Settings) {
    let mut resources = default_resources();
    resources.insert(
        "vehicle_orders".into(),
        ResourceConfig {
            item_path: "/orders/{id}".into(),
            list_path: "/customers/{customer_id}/orders".into(),
            owner_pointer: "/owner".into(),
            id_pointer: "/id".into(),
            fields: BTreeMap::from([(
                "stage".into(),
                FieldConfig {
                    pointer: "/stage".into(),
                    label: "Order stage".into(),
                    description: Some("How far your vehicle order has got.".into()),
                },
            )]),
        },
    );
    settings.resources = resources;
}

fn order(id: &str, owner: &str, stage: &str) -> Value {
    json!({"id": id, "owner": owner, "stage": stage, "vin": "WVWZZZ1JZXW000001", "price": 31999})
}

#[tokio::test]
async fn a_token_with_no_field_of_the_resource_gets_403() {
    let (mock, app) = upstream_app_with(with_vehicle_orders).await;
    forbid_upstream(&mock).await;
    let partner = app
        .add_partner("Dealer", &["claims:status", "vehicle_orders:stage"])
        .await;
    let token = app.tokens_for(&partner, &["claims:status"]).await;
    for path in [
        "/partner/v1/vehicle_orders/V-1",
        "/partner/v1/vehicle_orders",
    ] {
        let response = get(&app, token.access_token().secret(), path).await;
        assert_eq!(
            header(&response, "www-authenticate").as_deref(),
            Some("Bearer error=\"insufficient_scope\""),
            "{path}"
        );
        problem(
            response,
            StatusCode::FORBIDDEN,
            "urn:keyhole:problem:insufficient-scope",
        )
        .await;
        let record = last_record(&app).await;
        assert_refusal(&record, Outcome::Denied, 403);
        assert_eq!(record.record.resource, "vehicle_orders");
    }
    mock.verify().await;
}

#[tokio::test]
async fn a_second_resource_works_from_config_alone() {
    let (mock, app) = upstream_app_with(with_vehicle_orders).await;
    Mock::given(method("GET"))
        .and(path("/orders/V-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(order(
            "V-1",
            ALICE.0,
            "in_production",
        )))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/customers/CU-1001/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            order("V-1", ALICE.0, "in_production"),
            order("V-9", BOB.0, "delivered"),
        ])))
        .expect(1)
        .mount(&mock)
        .await;
    let partner = app
        .add_partner("Dealer", &["claims:status", "vehicle_orders:stage"])
        .await;
    let token = app.tokens_for(&partner, &["vehicle_orders:stage"]).await;
    let access = token.access_token().secret();

    let response = get(&app, access, "/partner/v1/vehicle_orders/V-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "V-1", "stage": "in_production"})
    );
    let r = last_record(&app).await.record;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.resource, "vehicle_orders");
    assert_eq!(r.fields, strings(&["vehicle_orders:stage"]));
    assert_eq!(r.record_ids, strings(&["V-1"]));

    let response = get(&app, access, "/partner/v1/vehicle_orders").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"items": [{"id": "V-1", "stage": "in_production"}]})
    );

    // The claims resource is still there, and this token has no field of it.
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    mock.verify().await;
}

// ----- rate limits -------------------------------------------------------------------------

#[tokio::test]
async fn the_grant_rate_limit_refuses_with_retry_after_and_ratelimit_headers() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 2).await;
    let partner = app
        .add_partner_with("Slow Poller", &["claims:status"], |add| {
            add.grant_rate = Some(0.01);
            add.grant_burst = Some(2);
        })
        .await;
    let token = app.tokens_for(&partner, &["claims:status"]).await;
    let access = token.access_token().secret();

    for remaining in [1, 0] {
        let response = get(&app, access, "/partner/v1/claims/C-1001").await;
        assert_eq!(response.status(), StatusCode::OK);
        let policy = header(&response, "ratelimit-policy").expect("RateLimit-Policy");
        assert!(policy.contains("\"grant\";q=2;w=200"), "{policy}");
        assert!(policy.contains("\"partner\";q="), "{policy}");
        let current = header(&response, "ratelimit").expect("RateLimit");
        assert!(
            current.starts_with(&format!("\"grant\";r={remaining};t=")),
            "{current}"
        );
    }

    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    let retry_after: u64 = header(&response, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=200).contains(&retry_after), "{retry_after}");
    let policy = header(&response, "ratelimit-policy").expect("RateLimit-Policy");
    assert!(policy.contains("\"grant\";q=2;w=200"), "{policy}");
    assert_eq!(
        header(&response, "ratelimit").as_deref(),
        Some(format!("\"grant\";r=0;t={retry_after}").as_str())
    );
    let body = problem(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "urn:keyhole:problem:rate-limited",
    )
    .await;
    assert!(!body.to_string().contains("in_repair"));
    assert_refusal(&last_record(&app).await, Outcome::RateLimited, 429);
    assert_eq!(upstream_calls(&mock).await, 2);
    mock.verify().await;
}

// ----- upstream failures -------------------------------------------------------------------

#[tokio::test]
async fn upstream_failures_give_502_or_504_and_reveal_nothing() {
    let (mock, app) = upstream_app_with(|s| s.upstream.timeout_ms = 300).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    Mock::given(method("GET"))
        .and(path("/claims/C-500"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_raw("SECRET-UPSTREAM-TEXT stack trace in_repair", "text/plain"),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/claims/C-BAD"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "{\"id\":\"C-BAD\",\"customer_id\":\"CU-1001\",\"status\":\"SECRET-UPSTREAM-TEXT\"",
            "application/json",
        ))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/claims/C-SLOW"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(alice_claim("C-SLOW"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&mock)
        .await;
    // A redirect (to another customer's records) is not followed.
    Mock::given(method("GET"))
        .and(path("/claims/C-302"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", "/customers/CU-2002/claims"),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/customers/CU-2002/claims"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!([claim("C-2001", BOB.0, "paid")])),
        )
        .expect(0)
        .mount(&mock)
        .await;
    // An answer for another id than the one asked for, and a list that is not a list.
    serve_item(&mock, "C-1001", alice_claim("C-7777"), 1).await;
    Mock::given(method("GET"))
        .and(path("/customers/CU-1001/claims"))
        .respond_with(ResponseTemplate::new(200).set_body_json(alice_claim("C-1001")))
        .mount(&mock)
        .await;

    for (path, status, type_) in [
        (
            "/partner/v1/claims/C-500",
            StatusCode::BAD_GATEWAY,
            "urn:keyhole:problem:upstream-failed",
        ),
        (
            "/partner/v1/claims/C-BAD",
            StatusCode::BAD_GATEWAY,
            "urn:keyhole:problem:upstream-failed",
        ),
        (
            "/partner/v1/claims/C-SLOW",
            StatusCode::GATEWAY_TIMEOUT,
            "urn:keyhole:problem:upstream-timeout",
        ),
        (
            "/partner/v1/claims/C-302",
            StatusCode::BAD_GATEWAY,
            "urn:keyhole:problem:upstream-failed",
        ),
        (
            "/partner/v1/claims/C-1001",
            StatusCode::BAD_GATEWAY,
            "urn:keyhole:problem:upstream-failed",
        ),
        (
            "/partner/v1/claims",
            StatusCode::BAD_GATEWAY,
            "urn:keyhole:problem:upstream-failed",
        ),
    ] {
        let response = get(&app, access, path).await;
        let body = problem(response, status, type_).await.to_string();
        for secret in NEVER
            .iter()
            .chain(&["SECRET-UPSTREAM-TEXT", "in_repair", "C-7777"])
        {
            assert!(!body.contains(secret), "{path}: {body}");
        }
        let record = last_record(&app).await;
        assert_refusal(&record, Outcome::UpstreamError, status.as_u16());
    }
    assert_eq!(log_of(&app).await.len(), 6);
    mock.verify().await;
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(|s| {
        s.upstream.base_url = format!("http://127.0.0.1:{port}").parse().unwrap();
        s.upstream.timeout_ms = 1000;
    })
    .await;
    let token = app.tokens(&["claims:status"]).await;
    for path in ["/partner/v1/claims/C-1001", "/partner/v1/claims"] {
        let response = get(&app, token.access_token().secret(), path).await;
        problem(
            response,
            StatusCode::BAD_GATEWAY,
            "urn:keyhole:problem:upstream-failed",
        )
        .await;
        assert_refusal(&last_record(&app).await, Outcome::UpstreamError, 502);
    }
}

// ----- the access log ----------------------------------------------------------------------

#[tokio::test]
async fn when_the_log_cannot_be_written_the_call_gets_503_and_no_data() {
    // `durability = "database"`: the record must be committed to the database before the
    // answer leaves, so a database that refuses it refuses the call. (In journal mode the
    // journal is where it must be durable; the database is then only the importer's target.)
    let (mock, app) =
        upstream_app_with(|s| s.access_log.durability = keyhole::config::Durability::Database)
            .await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 2).await;
    let token = app.tokens(&["claims:status", "claims:claim_number"]).await;
    let access = token.access_token().secret();
    assert_eq!(
        get(&app, access, "/partner/v1/claims/C-1001")
            .await
            .status(),
        StatusCode::OK
    );

    app.app
        .store
        .connection()
        .execute_unprepared("DROP TABLE access_log")
        .await
        .unwrap();
    let response = get(&app, access, "/partner/v1/claims/C-1001").await;
    assert_eq!(header(&response, "etag"), None);
    let body = problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "urn:keyhole:problem:unavailable",
    )
    .await
    .to_string();
    assert!(
        !body.contains("in_repair") && !body.contains("HRM-2024"),
        "{body}"
    );
    mock.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_load_every_200_has_exactly_one_record_with_exactly_its_fields() {
    const CALLS: usize = 200;
    let (mock, app) = upstream_app().await;
    let fields = [
        "claims:status",
        "claims:status_updated_at",
        "claims:claim_number",
    ];
    let partner = unlimited_partner(&app, "Busy Shop", &fields).await;
    let token = app.tokens_for(&partner, &fields).await;
    let access = token.access_token().secret().clone();

    // Records that disclose different field sets.
    let full = alice_claim("C-1");
    let mut status_only = alice_claim("C-2");
    status_only["status_updated_at"] = Value::Null;
    status_only.as_object_mut().unwrap().remove("claim_number");
    let mut no_status = alice_claim("C-3");
    no_status["status"] = Value::Null;
    let mut nested_status = alice_claim("C-4");
    nested_status["status"] = json!({"code": "in_repair"});
    nested_status
        .as_object_mut()
        .unwrap()
        .remove("status_updated_at");
    let records = [full, status_only, no_status, nested_status];
    for record in &records {
        let id = record["id"].as_str().unwrap();
        serve_item(&mock, id, record.clone(), 0..=CALLS as u64).await;
    }
    Mock::given(method("GET"))
        .and(path("/customers/CU-1001/claims"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(records)))
        .mount(&mock)
        .await;

    let client = http();
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let client = client.clone();
        let url = if i % 10 == 9 {
            app.url("/partner/v1/claims")
        } else {
            app.url(&format!("/partner/v1/claims/C-{}", i % 4 + 1))
        };
        let access = access.clone();
        calls.push(tokio::spawn(async move {
            let request_id = format!("load-{i}");
            let response = client
                .get(url)
                .bearer_auth(access)
                .header("x-request-id", &request_id)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.headers()["x-request-id"].to_str().unwrap(),
                request_id
            );
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (request_id, status, body)
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }

    let log = log_of(&app).await;
    assert_eq!(log.len(), CALLS);
    let mut by_request: BTreeMap<&str, Vec<&ChainedRecord>> = BTreeMap::new();
    for record in &log {
        by_request
            .entry(record.record.request_id.as_str())
            .or_default()
            .push(record);
    }
    for (request_id, status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{request_id}: {body}");
        let items = match body.get("items") {
            Some(items) => items.as_array().unwrap().clone(),
            None => vec![body.clone()],
        };
        let mut expected_fields = BTreeSet::new();
        let mut expected_ids = Vec::new();
        for item in &items {
            for key in item.as_object().unwrap().keys() {
                if key != "id" {
                    expected_fields.insert(format!("claims:{key}"));
                }
            }
            expected_ids.push(item["id"].as_str().unwrap().to_owned());
        }
        let records = &by_request[request_id.as_str()];
        assert_eq!(records.len(), 1, "{request_id}");
        let r = &records[0].record;
        assert_eq!(r.outcome, Outcome::Ok, "{request_id}");
        assert_eq!(r.status, 200, "{request_id}");
        let logged: BTreeSet<String> = r.fields.iter().cloned().collect();
        assert_eq!(
            logged.len(),
            r.fields.len(),
            "{request_id}: duplicate fields"
        );
        assert_eq!(logged, expected_fields, "{request_id}: {body}");
        assert_eq!(r.record_ids, expected_ids, "{request_id}");
    }
    let report = app.verify_log().await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, CALLS as u64);
}

/// An app whose log holds four records of successful calls.
async fn app_with_four_records() -> (MockServer, TestApp) {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 4).await;
    let token = app.tokens(&["claims:status"]).await;
    for _ in 0..4 {
        assert_eq!(
            get(
                &app,
                token.access_token().secret(),
                "/partner/v1/claims/C-1001"
            )
            .await
            .status(),
            StatusCode::OK
        );
    }
    let report = app.verify_log().await;
    assert!(report.ok && report.records == 4, "{report:?}");
    (mock, app)
}

async fn tamper(app: &TestApp, statements: &[&str]) {
    for sql in statements {
        app.app
            .store
            .connection()
            .execute_unprepared(sql)
            .await
            .unwrap();
    }
}

/// The `seq` of the first broken link, which must be in the app's own chain.
async fn first_broken(app: &TestApp) -> i64 {
    let report = app.verify_log().await;
    assert!(!report.ok, "{report:?}");
    let link = report.first_broken.expect("a broken link");
    assert_eq!(link.chain, app.chain(), "{link:?}");
    link.seq
}

/// The SQL condition that picks record `seq` of the app's own chain.
fn at(app: &TestApp, seq: i64) -> String {
    format!("chain = '{}' AND seq = {seq}", app.chain())
}

#[tokio::test]
async fn the_hash_chain_detects_an_edited_row() {
    let (_mock, app) = app_with_four_records().await;
    let edit = format!(
        "UPDATE access_log SET fields = '[\"claims:claim_number\"]' WHERE {}",
        at(&app, 2)
    );
    tamper(&app, &[&edit]).await;
    assert_eq!(first_broken(&app).await, 2);
}

#[tokio::test]
async fn the_hash_chain_detects_a_deleted_row() {
    let (_mock, app) = app_with_four_records().await;
    tamper(
        &app,
        &[&format!("DELETE FROM access_log WHERE {}", at(&app, 2))],
    )
    .await;
    assert_eq!(first_broken(&app).await, 3);
}

#[tokio::test]
async fn the_hash_chain_detects_reordered_rows() {
    let (_mock, app) = app_with_four_records().await;
    // Records 2 and 3 swap places in the chain.
    let swap =
        |from: i64, to: i64| format!("UPDATE access_log SET seq = {to} WHERE {}", at(&app, from));
    let statements = [swap(2, -2), swap(3, 2), swap(-2, 3)];
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    tamper(&app, &statements).await;
    assert_eq!(first_broken(&app).await, 2);
}

#[tokio::test]
async fn the_hash_chain_detects_deleting_the_newest_row() {
    let (_mock, app) = app_with_four_records().await;
    // The chain alone cannot see a truncation; the signed checkpoint of its head can.
    let a = &app.app;
    let chain = app.chain();
    let (seq, hash) = a.store.chain_head(&chain).await.unwrap().unwrap();
    assert_eq!(seq, 4);
    keyhole::access_log::checkpoint::checkpoint(
        &a.store,
        &a.checkpoint_key,
        &a.issuer(),
        &a.clock,
        &chain,
        seq,
        &hash,
    )
    .await
    .unwrap();
    tamper(
        &app,
        &[&format!("DELETE FROM access_log WHERE {}", at(&app, 4))],
    )
    .await;
    let report = app.verify_log().await;
    assert!(!report.ok, "truncating the log went unnoticed: {report:?}");
}

// ----- conditional requests ----------------------------------------------------------------

#[tokio::test]
async fn a_matching_if_none_match_gives_304_and_is_still_logged() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 4).await;
    let token = app.tokens(&["claims:status", "claims:claim_number"]).await;
    let auth = format!("Bearer {}", token.access_token().secret());
    let url = "/partner/v1/claims/C-1001";

    let first = get_with(&app, url, &[("authorization", &auth)]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = header(&first, "etag").expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let ok = last_record(&app).await.record;

    let second = get_with(
        &app,
        url,
        &[("authorization", &auth), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&second, "etag").as_deref(), Some(etag.as_str()));
    assert!(second.bytes().await.unwrap().is_empty());
    let not_modified = last_record(&app).await.record;
    assert_eq!(not_modified.outcome, Outcome::NotModified);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.fields, ok.fields);
    assert_eq!(
        not_modified.fields,
        strings(&["claims:claim_number", "claims:status"])
    );

    // A list of candidates, one of them weak, matches too.
    let list = format!("\"other\", W/{etag}");
    let third = get_with(
        &app,
        url,
        &[("authorization", &auth), ("if-none-match", &list)],
    )
    .await;
    assert_eq!(third.status(), StatusCode::NOT_MODIFIED);

    let fourth = get_with(
        &app,
        url,
        &[("authorization", &auth), ("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(fourth.status(), StatusCode::OK);
    assert_eq!(header(&fourth, "etag").as_deref(), Some(etag.as_str()));
    assert_eq!(
        fourth.json::<Value>().await.unwrap(),
        json!({"id": "C-1001", "status": "in_repair", "claim_number": "HRM-2024-C-1001"})
    );
    assert_eq!(last_record(&app).await.record.outcome, Outcome::Ok);
    mock.verify().await;
}

// ----- malformed ids and unknown resources -------------------------------------------------

/// Sends a request line exactly as written (an HTTP client would normalise `..` and `%2e`).
async fn raw_status(app: &TestApp, target: &str, token: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = app.base.trim_start_matches("http://").to_owned();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let reply = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        String::from_utf8_lossy(&reply).into_owned()
    })
    .await
    .unwrap();
    reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {reply}"))
}

#[tokio::test]
async fn path_injection_ids_are_refused_before_any_upstream_call() {
    // Limits above the number of probes: rate limiting comes before the id check.
    let (mock, app) = upstream_app_with(|s| {
        s.rate_limits.grant_burst = 100;
        s.rate_limits.partner_burst = 100;
    })
    .await;
    forbid_upstream(&mock).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    let long = "A".repeat(65);
    let targets = [
        "/partner/v1/claims/..".to_owned(),
        "/partner/v1/claims/.".to_owned(),
        "/partner/v1/claims/%2e%2e".to_owned(),
        "/partner/v1/claims/%2E%2E".to_owned(),
        "/partner/v1/claims/.%2e".to_owned(),
        "/partner/v1/claims/%252e%252e".to_owned(),
        "/partner/v1/claims/a%2Fb".to_owned(),
        "/partner/v1/claims/a%5Cb".to_owned(),
        "/partner/v1/claims/C-1001%00".to_owned(),
        "/partner/v1/claims/C-1001%0D%0AX-Injected:%201".to_owned(),
        "/partner/v1/claims/C-1001%3Fx%3D1".to_owned(),
        "/partner/v1/claims/C-1001%23frag".to_owned(),
        format!("/partner/v1/claims/{long}"),
        "/partner/v1/claims/C%201".to_owned(),
        "/partner/v1/claims/%C3%A9".to_owned(),
        "/partner/v1/claims/..%2Fcustomers%2FCU-2002%2Fclaims".to_owned(),
        "/partner/v1/claims/%2e%2e%2fcustomers%2fCU-2002%2fclaims".to_owned(),
    ];
    for target in &targets {
        let status = raw_status(&app, target, access).await;
        assert!(status == 400 || status == 404, "{target}: {status}");
    }
    let log = log_of(&app).await;
    assert_eq!(log.len(), targets.len(), "every call is logged: {log:#?}");
    for (record, target) in log.iter().zip(&targets) {
        let r = &record.record;
        assert!(
            matches!(r.outcome, Outcome::Denied | Outcome::NotFound),
            "{target}: {r:?}"
        );
        assert!(
            r.record_ids.is_empty() && r.fields.is_empty(),
            "{target}: {r:?}"
        );
        assert_eq!(
            r.status,
            if r.outcome == Outcome::Denied {
                400
            } else {
                404
            }
        );
    }
    assert_eq!(upstream_calls(&mock).await, 0);
    mock.verify().await;
}

#[tokio::test]
async fn an_unknown_resource_is_404_and_logged() {
    let (mock, app) = upstream_app().await;
    forbid_upstream(&mock).await;
    let token = app.tokens(&["claims:status"]).await;
    for path in ["/partner/v1/policies", "/partner/v1/policies/P-1"] {
        let response = get(&app, token.access_token().secret(), path).await;
        problem(
            response,
            StatusCode::NOT_FOUND,
            "urn:keyhole:problem:not-found",
        )
        .await;
        let record = last_record(&app).await;
        assert_refusal(&record, Outcome::NotFound, 404);
        assert_eq!(record.record.resource, "policies");
    }
    assert_eq!(log_of(&app).await.len(), 2);
    mock.verify().await;
}

#[tokio::test]
async fn refused_requests_count_against_the_rate_limit_too() {
    // Before the fix the limiter ran after the resource, id and scope checks, so a partner
    // could write unlimited log rows with malformed requests.
    let (mock, app) = upstream_app_with(|s| {
        s.rate_limits.grant_burst = 2;
        s.rate_limits.grant_per_second = 0.01;
    })
    .await;
    forbid_upstream(&mock).await;
    let token = app.tokens(&["claims:status"]).await;
    let access = token.access_token().secret();
    for expected in [404, 404, 429] {
        let response = get(&app, access, "/partner/v1/no_such_resource").await;
        assert_eq!(response.status().as_u16(), expected);
    }
    let outcomes: Vec<Outcome> = log_of(&app)
        .await
        .iter()
        .map(|r| r.record.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![Outcome::NotFound, Outcome::NotFound, Outcome::RateLimited]
    );
}

// ----- issue 11: hostile input is bounded ---------------------------------------------------

#[tokio::test]
async fn junk_path_segments_never_become_metric_labels() {
    let (_mock, app) = upstream_app().await;
    let partner = unlimited_partner(&app, "Label Prober", &["claims:status"]).await;
    let tokens = app.tokens_for(&partner, &["claims:status"]).await;
    let access = tokens.access_token().secret();
    for i in 0..20 {
        let junk = format!("junk{i}{}", "x".repeat(2_000));
        let status = app
            .partner_status(access, &format!("/partner/v1/{junk}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let metrics = app.metrics().await;
    assert!(!metrics.contains("junk"), "a path segment became a label");
    assert!(metrics.len() < 64 * 1024, "{} bytes", metrics.len());
    assert!(
        metrics.contains("resource=\"other\",outcome=\"not_found\"} 20"),
        "{metrics}"
    );
    // What is stored of the caller's segment is bounded too.
    for record in log_of(&app).await {
        assert!(record.record.resource.chars().count() <= 64);
    }
}

#[tokio::test]
async fn calls_without_a_valid_token_are_limited_per_address_and_not_logged_past_the_limit() {
    // The default burst (20), refilled too slowly to matter while the test runs.
    let (mock, app) = upstream_app_with(|s| s.rate_limits.unauthenticated_per_second = 0.01).await;
    forbid_upstream(&mock).await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        // A forged X-Forwarded-For per call: from an untrusted peer it counts for nothing.
        let forged = format!("198.51.100.{i}");
        let response = get_with(
            &app,
            "/partner/v1/claims/C-1001",
            &[
                ("authorization", "Bearer not-a-token"),
                ("x-forwarded-for", &forged),
            ],
        )
        .await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((unauthorized, limited), (20, 10), "{statuses:?}");
    assert_eq!(
        log_of(&app).await.len(),
        20,
        "refusals past the limit are not logged"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keyhole_unauthenticated_refusals_total{surface=\"partner\"} 10"),
        "{metrics}"
    );
    mock.verify().await;
}

#[tokio::test]
async fn a_valid_token_is_never_held_to_the_unauthenticated_limit() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", alice_claim("C-1001"), 40).await;
    let partner = unlimited_partner(&app, "Busy Partner", &["claims:status"]).await;
    let tokens = app.tokens_for(&partner, &["claims:status"]).await;
    for _ in 0..40 {
        assert_eq!(
            app.partner_status(tokens.access_token().secret(), "/partner/v1/claims/C-1001")
                .await,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn an_upstream_item_that_is_not_an_object_is_a_bad_gateway_not_a_missing_record() {
    let (mock, app) = upstream_app().await;
    serve_item(&mock, "C-1001", json!(["C-1001", "CU-1001"]), 1).await;
    serve_item(&mock, "C-1002", json!("in_repair"), 1).await;
    let tokens = app.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret();
    for id in ["C-1001", "C-1002"] {
        let status = app
            .partner_status(access, &format!("/partner/v1/claims/{id}"))
            .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{id}");
        let record = last_record(&app).await.record;
        assert_eq!(record.outcome, Outcome::UpstreamError, "{id}");
    }
}

#[tokio::test]
async fn a_database_outage_is_logged_as_unavailable_not_as_the_partners_denial() {
    let (mock, app) = upstream_app().await;
    forbid_upstream(&mock).await;
    let tokens = app.tokens(&["claims:status"]).await;
    let db = sea_orm::Database::connect(&app.app.settings.database_url)
        .await
        .unwrap();
    // The grant's facts are read from the database on the first call: make that fail.
    db.execute_unprepared("ALTER TABLE grants RENAME TO grants_away")
        .await
        .unwrap();
    let status = app
        .partner_status(tokens.access_token().secret(), "/partner/v1/claims/C-1001")
        .await;
    db.execute_unprepared("ALTER TABLE grants_away RENAME TO grants")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let record = last_record(&app).await.record;
    assert_eq!(record.outcome, Outcome::Unavailable);
    assert_eq!(record.status, 503);
    mock.verify().await;
}
