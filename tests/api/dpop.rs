//! DPoP (RFC 9449): tokens bound to the partner's key at the token endpoint, and a fresh proof
//! by that key on every partner call. Each test shows one rule holding and, beside it, the
//! same request refused when the rule is broken.

use crate::dpop_client::{PATH, ProofClaims, ProofKey, claims_of, with_proof};
use crate::helpers::*;
use oauth2::{AuthorizationCode, RefreshToken, TokenResponse};
use reqwest::StatusCode;
use serde_json::Value;

impl TestApp {
    /// Alice consents; the partner exchanges the code with a proof by `key`.
    async fn bound_tokens_for(
        &self,
        partner: &Partner,
        key: &ProofKey,
    ) -> oauth2::basic::BasicTokenResponse {
        let authorized = self
            .authorize_for(partner, ALICE, ALL_FIELDS, ALL_FIELDS)
            .await;
        self.oauth_client_for(partner)
            .exchange_code(AuthorizationCode::new(authorized.code))
            .set_pkce_verifier(authorized.verifier)
            .request_async(&with_proof(self.token_proof(key)))
            .await
            .unwrap()
    }

    async fn bound_tokens(&self, key: &ProofKey) -> oauth2::basic::BasicTokenResponse {
        self.bound_tokens_for(&self.partner, key).await
    }
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn refused_as_invalid_proof(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&response).starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{}",
        challenge(&response)
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keyhole:problem:invalid-dpop-proof");
}

#[tokio::test]
async fn a_proof_at_the_token_endpoint_binds_the_tokens_to_its_key_es256_and_eddsa() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    for key in [ProofKey::es256(3), ProofKey::ed25519(4)] {
        let tokens = app.bound_tokens(&key).await;
        assert!(tokens.token_type().as_ref().eq_ignore_ascii_case("DPoP"));
        let access = tokens.access_token().secret();
        assert_eq!(claims_of(access)["cnf"]["jkt"], key.thumbprint());

        let response = app
            .dpop_get(access, Some(&app.call_proof(&key, access)))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{}", key.alg());

        let introspection = app.introspect(access).await;
        assert_eq!(introspection["cnf"]["jkt"], key.thumbprint());
        let refresh = tokens.refresh_token().unwrap().secret();
        assert_eq!(
            app.introspect(refresh).await["cnf"]["jkt"],
            key.thumbprint()
        );
    }
    // Without a proof, tokens stay Bearer tokens with no `cnf`.
    let plain = app.tokens(ALL_FIELDS).await;
    assert_eq!(plain.token_type().as_ref(), "bearer");
    assert!(
        claims_of(plain.access_token().secret())
            .get("cnf")
            .is_none()
    );

    let metadata: Value = http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA", "PS256"])
    );
}

#[tokio::test]
async fn a_bound_token_sent_as_bearer_is_refused_and_an_unbound_one_sent_as_dpop_too() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::es256(5);
    let tokens = app.bound_tokens(&key).await;
    let access = tokens.access_token().secret();
    let response = app.bearer_get(access, PATH).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).starts_with("Bearer error=\"invalid_token\""));

    let plain = app.tokens(ALL_FIELDS).await;
    let plain = plain.access_token().secret();
    let response = app
        .dpop_get(plain, Some(&app.call_proof(&key, plain)))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.bearer_get(plain, PATH).await.status(), StatusCode::OK);

    // Once its consent has ended, a bound token sent the DPoP way is challenged the DPoP way.
    app.revoke(tokens.refresh_token().unwrap().secret(), "refresh_token")
        .await;
    let response = app
        .dpop_get(access, Some(&app.call_proof(&key, access)))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&response).starts_with("DPoP error=\"invalid_token\""),
        "{}",
        challenge(&response)
    );
}

#[tokio::test]
async fn a_proof_that_does_not_describe_the_call_is_refused() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::es256(6);
    let other = ProofKey::es256(7);
    let tokens = app.bound_tokens(&key).await;
    let access = tokens.access_token().secret().clone();
    let now = app.now();
    let url = app.url(PATH);
    let broken: Vec<(&str, String)> = vec![
        ("no proof", String::new()),
        (
            "htm POST",
            key.proof(&ProofClaims::new("POST", &url, now).for_token(&access)),
        ),
        (
            "htu of another path",
            key.proof(
                &ProofClaims::new("GET", &app.url("/partner/v1/claims/C-1001"), now)
                    .for_token(&access),
            ),
        ),
        (
            "htu of another host",
            key.proof(
                &ProofClaims::new("GET", "https://elsewhere.example/partner/v1/claims", now)
                    .for_token(&access),
            ),
        ),
        (
            "iat too old",
            key.proof(&ProofClaims::new("GET", &url, now - 61).for_token(&access)),
        ),
        (
            "iat ahead",
            key.proof(&ProofClaims::new("GET", &url, now + 61).for_token(&access)),
        ),
        (
            "ath of another token",
            key.proof(&ProofClaims::new("GET", &url, now).for_token("another")),
        ),
        ("no ath", key.proof(&ProofClaims::new("GET", &url, now))),
        (
            "another key",
            other.proof(&ProofClaims::new("GET", &url, now).for_token(&access)),
        ),
        ("not a JWT", "garbage".into()),
    ];
    for (what, proof) in &broken {
        let proof = (!proof.is_empty()).then_some(proof.as_str());
        let response = app.dpop_get(&access, proof).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        refused_as_invalid_proof(response).await;
    }
    // Two DPoP headers are refused too, even if each were good.
    let response = http()
        .get(app.url(PATH))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", app.call_proof(&key, &access))
        .header("DPoP", app.call_proof(&key, &access))
        .send()
        .await
        .unwrap();
    refused_as_invalid_proof(response).await;
    // Every refusal is on the record, and none disclosed anything.
    let records = app.log_records().await;
    assert_eq!(records.len(), broken.len() + 1);
    for record in &records {
        assert_eq!(record.record.outcome.as_str(), "invalid_token");
        assert!(record.record.fields.is_empty());
    }
    // The same call with a proper proof goes through.
    let response = app
        .dpop_get(&access, Some(&app.call_proof(&key, &access)))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_proof_is_good_for_one_call_only() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::ed25519(8);
    let tokens = app.bound_tokens(&key).await;
    let access = tokens.access_token().secret();
    let proof = app.call_proof(&key, access);
    assert_eq!(
        app.dpop_get(access, Some(&proof)).await.status(),
        StatusCode::OK
    );
    refused_as_invalid_proof(app.dpop_get(access, Some(&proof)).await).await;
    // At the token endpoint as well.
    let refresh = tokens.refresh_token().unwrap().secret();
    let proof = app.token_proof(&key);
    let first = app
        .refresh_for(&app.partner, refresh, Some(proof.clone()))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let body: Value = first.json().await.unwrap();
    let second = app
        .refresh_for(
            &app.partner,
            body["refresh_token"].as_str().unwrap(),
            Some(proof),
        )
        .await;
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    let error: Value = second.json().await.unwrap();
    assert_eq!(error["error"], "invalid_dpop_proof");
}

#[tokio::test]
async fn a_proof_replayed_at_another_instance_is_refused() {
    if redis_url().is_none() {
        eprintln!(
            "skipped a_proof_replayed_at_another_instance_is_refused: KEYHOLE_REDIS_URL names no Redis server"
        );
        return;
    }
    let a = spawn_app_with_sample_upstream(|_| {}).await;
    let b = a.second_instance().await;
    let key = ProofKey::es256(9);
    let tokens = a.bound_tokens(&key).await;
    let access = tokens.access_token().secret();
    // A proof names the public URL, which both instances share; b is reached at its own port.
    let proof = a.call_proof(&key, access);
    assert_eq!(
        a.dpop_get(access, Some(&proof)).await.status(),
        StatusCode::OK
    );
    let replay = a.dpop_get_at(&b, access, Some(&proof)).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    refused_as_invalid_proof(replay).await;
    // A fresh proof works at b.
    let fresh = a.call_proof(&key, access);
    assert_eq!(
        a.dpop_get_at(&b, access, Some(&fresh)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn refreshing_a_bound_token_needs_a_proof_by_the_same_key_and_keeps_the_binding() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = ProofKey::es256(10);
    let tokens = app.bound_tokens(&key).await;
    let refresh = tokens.refresh_token().unwrap().secret().clone();

    for (what, proof) in [
        ("no proof", None),
        ("another key", Some(app.token_proof(&ProofKey::es256(11)))),
    ] {
        let response = app.refresh_for(&app.partner, &refresh, proof).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_dpop_proof", "{what}");
    }
    // Neither attempt spent the token or revoked the grant.
    let refreshed = app
        .oauth_client()
        .exchange_refresh_token(&RefreshToken::new(refresh))
        .request_async(&with_proof(app.token_proof(&key)))
        .await
        .unwrap();
    assert!(refreshed.token_type().as_ref().eq_ignore_ascii_case("DPoP"));
    let access = refreshed.access_token().secret();
    assert_eq!(claims_of(access)["cnf"]["jkt"], key.thumbprint());
    assert_eq!(
        app.dpop_get(access, Some(&app.call_proof(&key, access)))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_partner_registered_with_require_dpop_gets_only_bound_tokens() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let partner = app
        .add_partner_with("Bound Shop", ALL_FIELDS, |add| add.require_dpop = true)
        .await;
    let authorized = app
        .authorize_for(&partner, ALICE, ALL_FIELDS, ALL_FIELDS)
        .await;
    let without = app.exchange_with(&partner, &authorized, None).await;
    assert_eq!(without.status(), StatusCode::BAD_REQUEST);
    let error: Value = without.json().await.unwrap();
    assert_eq!(error["error"], "invalid_dpop_proof");
    // The refusal spent nothing: the same code, with a proof, gets bound tokens.
    let key = ProofKey::ed25519(12);
    let tokens = app
        .oauth_client_for(&partner)
        .exchange_code(AuthorizationCode::new(authorized.code))
        .set_pkce_verifier(authorized.verifier)
        .request_async(&with_proof(app.token_proof(&key)))
        .await
        .unwrap();
    assert!(tokens.token_type().as_ref().eq_ignore_ascii_case("DPoP"));
}

#[tokio::test]
async fn with_server_nonces_required_a_proof_without_the_current_nonce_is_answered_with_one() {
    let app = spawn_app_with_sample_upstream(|s| s.dpop.require_nonce = true).await;
    let key = ProofKey::es256(13);
    let authorized = app.authorize_as(ALICE, ALL_FIELDS, ALL_FIELDS).await;
    let exchange = |proof: String| app.exchange_with(&app.partner, &authorized, Some(proof));
    let first = exchange(app.token_proof(&key)).await;
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let error: Value = first.json().await.unwrap();
    assert_eq!(error["error"], "use_dpop_nonce");
    // A made-up nonce is no better.
    let forged = key.proof(
        &ProofClaims::new("POST", &app.url("/oauth/token"), app.now())
            .with_nonce("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    assert_eq!(exchange(forged).await.status(), StatusCode::BAD_REQUEST);
    let with_nonce = key
        .proof(&ProofClaims::new("POST", &app.url("/oauth/token"), app.now()).with_nonce(&nonce));
    let second = exchange(with_nonce).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert!(second.headers().contains_key("dpop-nonce"));
    let body: Value = second.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();

    let without = app
        .dpop_get(access, Some(&app.call_proof(&key, access)))
        .await;
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&without).starts_with("DPoP error=\"use_dpop_nonce\""));
    let nonce = without.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = key.proof(
        &ProofClaims::new("GET", &app.url(PATH), app.now())
            .for_token(access)
            .with_nonce(&nonce),
    );
    let ok = app.dpop_get(access, Some(&proof)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().contains_key("dpop-nonce"));
    // Ten minutes on, the nonce has gone stale (shown at the token endpoint: the access
    // token itself has expired by then).
    app.clock.advance(chrono::Duration::minutes(10));
    let stale = key
        .proof(&ProofClaims::new("POST", &app.url("/oauth/token"), app.now()).with_nonce(&nonce));
    let response = app
        .refresh_for(
            &app.partner,
            body["refresh_token"].as_str().unwrap(),
            Some(stale),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "use_dpop_nonce");
}
