//! Red team of the FAPI 2.0 pieces (pushed authorization requests, DPoP, private_key_jwt):
//! attacks that held, each in a short `held_*` test, beside the regression tests of those that
//! did not (those live next to the code they fixed: `dpop::proof`, `cli`).

use crate::dpop_client::{PATH, ProofClaims, ProofKey, claims_of};
use crate::helpers::*;
use keyhole::access_log::Outcome;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Alice consents; `partner` exchanges the code with a proof by `key`: the token answer.
async fn bound_tokens(app: &TestApp, partner: &Partner, key: &ProofKey) -> Value {
    let authorized = app
        .authorize_for(partner, ALICE, ALL_FIELDS, ALL_FIELDS)
        .await;
    let response = app
        .exchange_with(partner, &authorized, Some(app.token_proof(key)))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn oauth_error(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_owned()
}

async fn refused_proof(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn held_a_proof_for_the_token_endpoint_does_not_open_the_partner_api() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::es256(40);
    let tokens = bound_tokens(&app, &app.partner, &key).await;
    let access = tokens["access_token"].as_str().unwrap();
    let token_endpoint = app.url("/oauth/token");
    for (what, proof) in [
        (
            "POST to the token endpoint",
            key.proof(&ProofClaims::new("POST", &token_endpoint, app.now()).for_token(access)),
        ),
        (
            "GET of the token endpoint",
            app.call_proof_for(&key, &token_endpoint, access),
        ),
    ] {
        refused_proof(app.dpop_get(access, Some(&proof)).await, what).await;
    }
}

#[tokio::test]
async fn held_htu_tricks_do_not_move_a_proof_to_another_uri() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::ed25519(41);
    let tokens = bound_tokens(&app, &app.partner, &key).await;
    let access = tokens["access_token"].as_str().unwrap();
    let exact = url::Url::parse(&app.url(PATH)).unwrap();
    let port = exact.port().unwrap();
    let host = exact.host_str().unwrap();
    let refused = [
        format!("http://{host}:{port}/PARTNER/v1/claims"),
        format!("http://{host}:{port}/partner/v1/claims/"),
        format!("http://{host}:{port}/partner/v1/%63laims"),
        format!("http://{host}:{port}/partner/v1//claims"),
        format!("http://{host}:{port}/partner/v1/claims/C-1001/.."),
        format!("http://{host}:{}/partner/v1/claims", port.wrapping_add(1)),
        format!("https://{host}:{port}/partner/v1/claims"),
        format!("http://user@{host}:{port}/partner/v1/claims"),
        format!("http://localhost:{port}/partner/v1/claims"),
        "/partner/v1/claims".to_owned(),
    ];
    for htu in &refused {
        let proof = app.call_proof_for(&key, htu, access);
        refused_proof(app.dpop_get(access, Some(&proof)).await, htu).await;
    }
    // RFC 9449 §4.3: query and fragment are not compared; the host's case is normalised.
    for htu in [
        format!("{exact}?page=2"),
        format!("{exact}#top"),
        format!("http://{}:{port}/partner/v1/claims", host.to_uppercase()),
    ] {
        let proof = app.call_proof_for(&key, &htu, access);
        assert_eq!(
            app.dpop_get(access, Some(&proof)).await.status(),
            StatusCode::OK,
            "{htu}"
        );
    }
}

#[tokio::test]
async fn held_odd_proofs_at_the_token_endpoint_are_refused_before_the_code_is_touched() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::es256(42);
    let ed = ProofKey::ed25519(43);
    let authorized = app
        .authorize_for(&app.partner, ALICE, ALL_FIELDS, ALL_FIELDS)
        .await;
    let claims = || {
        json!({"htm": "POST", "htu": app.url("/oauth/token"), "iat": app.now(),
               "jti": uuid::Uuid::new_v4().to_string()})
    };
    let mut private = key.jwk();
    private["d"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut p384 = key.jwk();
    p384["crv"] = json!("P-384");
    let none = format!(
        "{}.{}.",
        base64_url(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()})),
        base64_url(&claims())
    );
    let odd: Vec<(&str, String)> = vec![
        (
            "a private member in the jwk",
            key.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}), &claims()),
        ),
        (
            "a P-384 jwk for ES256",
            key.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": p384}), &claims()),
        ),
        (
            "alg ES256 over an Ed25519 jwk",
            ed.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": ed.jwk()}), &claims()),
        ),
        (
            "alg HS256 with an oct jwk",
            key.sign(
                &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
                &claims(),
            ),
        ),
        ("alg none", none),
        (
            "typ JWT",
            key.sign(&json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk()}), &claims()),
        ),
        (
            "a proof of 5000 bytes",
            key.sign(
                &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk(), "pad": "x".repeat(4000)}),
                &claims(),
            ),
        ),
    ];
    for (what, proof) in odd {
        let response = app
            .exchange_with(&app.partner, &authorized, Some(proof))
            .await;
        assert_eq!(oauth_error(response).await, "invalid_dpop_proof", "{what}");
    }
    // None of them spent the code.
    let response = app
        .exchange_with(&app.partner, &authorized, Some(app.token_proof(&key)))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn held_a_require_dpop_partner_gets_no_bearer_token_from_a_grace_window_retry() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let partner = app
        .add_partner_with("Bound Retry", ALL_FIELDS, |add| add.require_dpop = true)
        .await;
    let key = ProofKey::es256(44);
    let authorized = app
        .authorize_for(&partner, ALICE, ALL_FIELDS, ALL_FIELDS)
        .await;
    let first = app
        .exchange_with(&partner, &authorized, Some(app.token_proof(&key)))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    // The retry without a proof gets nothing, and revokes nothing…
    let retry = app.exchange_with(&partner, &authorized, None).await;
    assert_eq!(oauth_error(retry).await, "invalid_dpop_proof");
    // …so the retry with a proof by the same key gets the first (bound) answer.
    let again = app
        .exchange_with(&partner, &authorized, Some(app.token_proof(&key)))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(again["token_type"], "DPoP");

    // The same at refresh: a retry of the just-spent (bound) refresh token without a proof.
    let rt = first["refresh_token"].as_str().unwrap();
    let refreshed = app
        .refresh_for(&partner, rt, Some(app.token_proof(&key)))
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    for proof in [None, Some(app.token_proof(&ProofKey::es256(45)))] {
        let retry = app.refresh_for(&partner, rt, proof).await;
        assert_eq!(oauth_error(retry).await, "invalid_dpop_proof");
    }
    let again = app
        .refresh_for(&partner, rt, Some(app.token_proof(&key)))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["refresh_token"], refreshed["refresh_token"]);
    assert_eq!(
        claims_of(again["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.thumbprint()
    );
}

#[tokio::test]
async fn held_dpop_refusals_are_on_the_record_and_under_the_flood_limit() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.unauthenticated_burst = 3;
        s.rate_limits.unauthenticated_per_second = 0.01;
    })
    .await;
    let key = ProofKey::es256(46);
    let tokens = bound_tokens(&app, &app.partner, &key).await;
    let access = tokens["access_token"].as_str().unwrap();
    let before = app.log_records().await.len();
    let replayed = app.call_proof(&key, access);
    assert_eq!(
        app.dpop_get(access, Some(&replayed)).await.status(),
        StatusCode::OK
    );
    let mut statuses = Vec::new();
    for proof in [
        None,
        Some(replayed.clone()),
        Some(app.call_proof(&ProofKey::es256(47), access)),
        Some(replayed.clone()),
        None,
    ] {
        statuses.push(app.dpop_get(access, proof.as_deref()).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
    let records = app.log_records().await;
    let outcomes: Vec<Outcome> = records[before..].iter().map(|r| r.record.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,
            Outcome::InvalidToken,
            Outcome::InvalidToken,
            Outcome::InvalidToken
        ]
    );
}

#[tokio::test]
async fn held_without_shared_state_dpop_and_pushed_requests_fail_closed() {
    let Some(binary) = crate::outages::redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let mut redis = crate::outages::Redis::start(binary);
    let url = redis.url();
    let app = spawn_app_with_sample_upstream(|s| s.redis_url = Some(url)).await;
    let key = ProofKey::ed25519(48);
    let tokens = bound_tokens(&app, &app.partner, &key).await;
    let access = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (challenge, _verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let push = || {
        http()
            .post(app.url("/oauth/par"))
            .basic_auth(&app.partner.client_id, Some(&app.partner.client_secret))
            .form(&[
                ("response_type", "code"),
                ("redirect_uri", app.partner.redirect_uri.as_str()),
                ("scope", "claims:status"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
    };
    let pushed = push().await.unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let pushed: Value = pushed.json().await.unwrap();
    let request_uri = pushed["request_uri"].as_str().unwrap();

    redis.stop();
    let proof = app.call_proof(&key, access);
    let call = app.dpop_get(access, Some(&proof)).await;
    assert_eq!(call.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = call.text().await.unwrap();
    assert!(
        !body.contains("in_repair") && !body.contains("items"),
        "{body}"
    );
    let last = app.log_records().await.pop().unwrap();
    assert_eq!(last.record.outcome, Outcome::Unavailable);
    assert!(last.record.fields.is_empty());

    let refreshed = app
        .refresh_for(&app.partner, rt, Some(app.token_proof(&key)))
        .await;
    assert_eq!(refreshed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = refreshed.text().await.unwrap();
    assert!(!body.contains("access_token"), "{body}");
    assert_eq!(
        push().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let authorize = url::Url::parse_with_params(
        &app.url("/oauth/authorize"),
        [
            ("client_id", app.partner.client_id.as_str()),
            ("request_uri", request_uri),
        ],
    )
    .unwrap();
    let page = browser().get(authorize).send().await.unwrap();
    assert!(page.status().is_server_error(), "{}", page.status());
    assert!(page.headers().get("location").is_none());
}

/// Introspection of a made-up token authenticated by `assertion` alone: its status.
async fn assertion_status(app: &TestApp, assertion: &str) -> StatusCode {
    http()
        .post(app.url("/oauth/introspect"))
        .form(&[
            ("token", "nothing"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

fn assertion_claims(app: &TestApp, client_id: &str) -> Value {
    let now = app.now();
    json!({"iss": client_id, "sub": client_id, "aud": app.base,
           "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60})
}

#[tokio::test]
async fn held_a_jwks_uri_that_redirects_is_huge_or_slow_fails_closed() {
    use crate::private_key_jwt::{Key, jwks};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let server = MockServer::start().await;
    let set = jwks(&[&key]);
    Mock::given(path("/real"))
        .respond_with(ResponseTemplate::new(200).set_body_json(set.clone()))
        .mount(&server)
        .await;
    Mock::given(path("/redirect"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("Location", format!("{}/real", server.uri())),
        )
        .mount(&server)
        .await;
    let mut huge = set.clone();
    huge["padding"] = json!("x".repeat(300 * 1024));
    Mock::given(path("/huge"))
        .respond_with(ResponseTemplate::new(200).set_body_json(huge))
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(set)
                .set_delay(std::time::Duration::from_secs(8)),
        )
        .mount(&server)
        .await;
    for (name, at, expected) in [
        ("Redirected", "/redirect", StatusCode::UNAUTHORIZED),
        ("Huge", "/huge", StatusCode::UNAUTHORIZED),
        ("Slow", "/slow", StatusCode::UNAUTHORIZED),
        ("Plain", "/real", StatusCode::OK),
    ] {
        let partner = app
            .add_partner_with(name, ALL_FIELDS, |add| {
                add.jwks_uri = Some(format!("{}{at}", server.uri()))
            })
            .await;
        let started = std::time::Instant::now();
        let assertion = key.sign(&assertion_claims(&app, &partner.client_id));
        assert_eq!(assertion_status(&app, &assertion).await, expected, "{name}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(7),
            "{name}: {:?}",
            started.elapsed()
        );
    }
}
