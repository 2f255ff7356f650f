//! The access-token verifier refuses forgeries. Every forged token is checked twice: the
//! verifier itself must name the specific reason, and introspection over HTTP must answer
//! exactly `{"active": false}`, revealing nothing else.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyhole::clock::Clock;
use keyhole::store::StoredKey;
use keyhole::tokens::{AccessClaims, LEEWAY_SECONDS, TokenError, generate_key};
use oauth2::TokenResponse;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

// ----- building tokens by hand -------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The header and payload of a compact JWS, as JSON, and its signature part as sent.
fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let (h, p, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    assert!(it.next().is_none(), "a compact JWS has three parts");
    (decode_part(h), decode_part(p), s.to_owned())
}

/// Signs exactly the given header and payload with an Ed25519 PKCS#8 key, byte for byte as
/// written here, so headers the jsonwebtoken crate would not emit can be tried too.
fn sign_ed(private_key_der: &[u8], header: &Value, payload: &Value) -> String {
    let key = ed25519_dalek::SigningKey::from_pkcs8_der(private_key_der).unwrap();
    let message = format!("{}.{}", b64_json(header), b64_json(payload));
    let signature = key.sign(message.as_bytes());
    format!("{message}.{}", b64(&signature.to_bytes()))
}

fn sign_hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", b64(&mac.finalize().into_bytes()))
}

fn header(kid: &str) -> Value {
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid })
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// A genuine access token, checked to verify and introspect as active before it is forged.
async fn genuine(app: &TestApp) -> String {
    let response = app.tokens(&["claims:status"]).await;
    let token = response.access_token().secret().clone();
    assert!(app.app.verifier.verify(&token, app.clock.now()).is_ok());
    assert_eq!(app.introspect(&token).await["active"], true);
    token
}

/// The server's own current signing key, read from its database (the private key is never
/// reachable over HTTP). Used to make tokens whose signature is valid but whose header or
/// claims are not, so the checks after the signature are exercised too.
async fn real_key(app: &TestApp) -> StoredKey {
    let kid = app.app.keys.current_kid();
    let mut key = app
        .app
        .store
        .signing_keys(app.clock.now() - chrono::Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid == kid)
        .unwrap();
    // Stored sealed: opened with the key file, as only the gateway can.
    key.private_key = app
        .encryption_key()
        .open(&key.kid, &key.private_key)
        .unwrap()
        .to_vec();
    key
}

/// Both the verifier and introspection refuse `token`, the verifier for `reason`.
async fn assert_refused(app: &TestApp, token: &str, reason: TokenError) {
    assert_eq!(
        app.app.verifier.verify(token, app.clock.now()),
        Err(reason),
        "verifying {token:?}"
    );
    assert_eq!(
        app.introspect(token).await,
        json!({ "active": false }),
        "introspecting {token:?}"
    );
}

async fn jwks(app: &TestApp) -> Value {
    let response = http()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

// ----- algorithm confusion -----------------------------------------------------------------

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let app = spawn_app().await;
    let (mut header, payload, _) = parts(&genuine(&app).await);
    for alg in ["none", "None", "NONE"] {
        header["alg"] = json!(alg);
        let token = format!("{}.{}.", b64_json(&header), b64_json(&payload));
        assert_refused(&app, &token, TokenError::Malformed).await;
    }
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_servers_public_key_is_refused() {
    let app = spawn_app().await;
    let (mut header, payload, _) = parts(&genuine(&app).await);
    let jwks = jwks(&app).await;
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let raw = URL_SAFE_NO_PAD.decode(&x).unwrap();
    assert_eq!(raw.len(), 32, "an Ed25519 public key");
    header["alg"] = json!("HS256");
    for secret in [raw.as_slice(), x.as_bytes()] {
        let token = sign_hs256(secret, &header, &payload);
        assert_refused(&app, &token, TokenError::WrongAlgorithm).await;
    }
    // Also as the jsonwebtoken crate itself would build it.
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = header["kid"].as_str().map(str::to_owned);
    let token = jsonwebtoken::encode(&hs, &payload, &EncodingKey::from_secret(&raw)).unwrap();
    assert_refused(&app, &token, TokenError::WrongAlgorithm).await;
}

// ----- foreign keys ------------------------------------------------------------------------

#[tokio::test]
async fn a_token_signed_by_a_foreign_key_under_an_unknown_kid_is_refused() {
    let app = spawn_app().await;
    let (_, payload, _) = parts(&genuine(&app).await);
    let foreign = generate_key(app.clock.now()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(foreign.kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &payload,
        &EncodingKey::from_ed_der(&foreign.private_key),
    )
    .unwrap();
    assert_refused(&app, &token, TokenError::UnknownKey).await;

    // Without any kid at all.
    header.kid = None;
    let token = jsonwebtoken::encode(
        &header,
        &payload,
        &EncodingKey::from_ed_der(&foreign.private_key),
    )
    .unwrap();
    assert_refused(&app, &token, TokenError::UnknownKey).await;
}

#[tokio::test]
async fn a_token_signed_by_a_foreign_key_under_the_real_kid_is_refused() {
    let app = spawn_app().await;
    let real = genuine(&app).await;
    let (header, payload, _) = parts(&real);
    assert_eq!(header["kid"], json!(app.app.keys.current_kid()));
    let foreign = generate_key(app.clock.now()).unwrap();
    let mut jwt_header = Header::new(Algorithm::EdDSA);
    jwt_header.typ = Some("at+jwt".into());
    jwt_header.kid = Some(kid_of(&real));
    let token = jsonwebtoken::encode(
        &jwt_header,
        &payload,
        &EncodingKey::from_ed_der(&foreign.private_key),
    )
    .unwrap();
    assert_refused(&app, &token, TokenError::BadSignature).await;
}

#[tokio::test]
async fn an_embedded_jwk_or_jku_header_pointing_at_another_key_is_ignored() {
    let app = spawn_app().await;
    let real = genuine(&app).await;
    let (_, payload, _) = parts(&real);
    let foreign = generate_key(app.clock.now()).unwrap();
    let foreign_jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "x": b64(&foreign.public_key),
        "kid": foreign.kid, "alg": "EdDSA", "use": "sig",
    });
    // The attacker's own key, embedded and named by its kid.
    let mut header = header(&foreign.kid);
    header["jwk"] = foreign_jwk.clone();
    let token = sign_ed(&foreign.private_key, &header, &payload);
    assert_refused(&app, &token, TokenError::UnknownKey).await;

    // The attacker's key embedded, but the real kid named.
    let mut header = self::header(&kid_of(&real));
    header["jwk"] = foreign_jwk;
    let token = sign_ed(&foreign.private_key, &header, &payload);
    assert_refused(&app, &token, TokenError::BadSignature).await;

    // A jku (and x5u) pointing at a key set the attacker controls: never fetched.
    for (kid, reason) in [
        (foreign.kid.clone(), TokenError::UnknownKey),
        (kid_of(&real), TokenError::BadSignature),
    ] {
        let mut header = self::header(&kid);
        header["jku"] = json!("https://attacker.example/jwks.json");
        header["x5u"] = json!("https://attacker.example/cert.pem");
        let token = sign_ed(&foreign.private_key, &header, &payload);
        assert_refused(&app, &token, reason).await;
    }
}

// ----- claims ------------------------------------------------------------------------------

#[tokio::test]
async fn a_scope_added_to_the_payload_under_the_original_signature_is_refused() {
    let app = spawn_app().await;
    let real = genuine(&app).await;
    let (_, mut payload, _) = parts(&real);
    assert_eq!(payload["scope"], "claims:status");
    payload["scope"] = json!("claims:claim_number claims:status");
    let mut pieces = real.split('.');
    let (h, _, s) = (
        pieces.next().unwrap(),
        pieces.next().unwrap(),
        pieces.next().unwrap(),
    );
    let token = format!("{h}.{}.{s}", b64_json(&payload));
    assert_refused(&app, &token, TokenError::BadSignature).await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let app = spawn_app().await;
    let (header, mut payload, _) = parts(&genuine(&app).await);
    payload["aud"] = json!("https://other-api.example");

    // Signed by a stranger under the real kid: the signature fails first.
    let foreign = generate_key(app.clock.now()).unwrap();
    let token = sign_ed(&foreign.private_key, &header, &payload);
    assert_refused(&app, &token, TokenError::BadSignature).await;

    // Validly signed by the server's own key: the audience check itself refuses it.
    let claims: AccessClaims = serde_json::from_value(payload).unwrap();
    let token = app.app.keys.sign(&claims).unwrap();
    assert_refused(&app, &token, TokenError::WrongAudience).await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let app = spawn_app().await;
    let (header, mut payload, _) = parts(&genuine(&app).await);
    payload["iss"] = json!("https://evil.example");

    let foreign = generate_key(app.clock.now()).unwrap();
    let token = sign_ed(&foreign.private_key, &header, &payload);
    assert_refused(&app, &token, TokenError::BadSignature).await;

    let claims: AccessClaims = serde_json::from_value(payload).unwrap();
    let token = app.app.keys.sign(&claims).unwrap();
    assert_refused(&app, &token, TokenError::WrongIssuer).await;
}

#[tokio::test]
async fn a_token_without_the_at_jwt_type_is_refused_even_when_validly_signed() {
    let app = spawn_app().await;
    let (header, payload, _) = parts(&genuine(&app).await);
    let key = real_key(&app).await;
    assert_eq!(header["kid"], json!(key.kid));

    let mut missing = header.clone();
    missing.as_object_mut().unwrap().remove("typ");
    let mut jwt = header.clone();
    jwt["typ"] = json!("JWT");
    for header in [missing, jwt] {
        // With the server's own key, and with a stranger's.
        let token = sign_ed(&key.private_key, &header, &payload);
        assert_refused(&app, &token, TokenError::WrongType).await;
        let foreign = generate_key(app.clock.now()).unwrap();
        let token = sign_ed(&foreign.private_key, &header, &payload);
        assert_refused(&app, &token, TokenError::WrongType).await;
    }
    // The same header with typ at+jwt and the server's key is accepted: the refusals above
    // are the typ's doing.
    let token = sign_ed(&key.private_key, &header, &payload);
    assert!(app.app.verifier.verify(&token, app.clock.now()).is_ok());
    assert_eq!(app.introspect(&token).await["active"], true);
}

#[tokio::test]
async fn a_token_expires_once_the_clock_passes_exp_plus_the_leeway() {
    let app = spawn_app().await;
    let token = genuine(&app).await;
    let (_, payload, _) = parts(&token);
    let exp = payload["exp"].as_i64().unwrap();
    let to_exp = exp - app.clock.now().timestamp();
    assert!(to_exp > 0 && to_exp <= 300, "{to_exp}");

    // One second short of exp + leeway: still valid.
    app.clock
        .advance(chrono::Duration::seconds(to_exp + LEEWAY_SECONDS - 1));
    assert!(app.app.verifier.verify(&token, app.clock.now()).is_ok());
    assert_eq!(app.introspect(&token).await["active"], true);

    app.clock.advance(chrono::Duration::seconds(1));
    assert_refused(&app, &token, TokenError::Expired).await;
}

#[tokio::test]
async fn a_token_whose_exp_is_in_the_past_is_refused_however_it_is_signed() {
    let app = spawn_app().await;
    let real = genuine(&app).await;
    let (header, mut payload, _) = parts(&real);
    let now = app.clock.now().timestamp();
    payload["iat"] = json!(now - 3600);
    payload["exp"] = json!(now - 3300);

    let foreign = generate_key(app.clock.now()).unwrap();
    let token = sign_ed(&foreign.private_key, &self::header(&foreign.kid), &payload);
    assert_refused(&app, &token, TokenError::UnknownKey).await;
    let token = sign_ed(&foreign.private_key, &header, &payload);
    assert_refused(&app, &token, TokenError::BadSignature).await;

    let claims: AccessClaims = serde_json::from_value(payload).unwrap();
    let token = app.app.keys.sign(&claims).unwrap();
    assert_refused(&app, &token, TokenError::Expired).await;
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let app = spawn_app().await;
    let (_, mut payload, _) = parts(&genuine(&app).await);
    let now = app.clock.now().timestamp();
    payload["iat"] = json!(now + 60);
    payload["exp"] = json!(now + 360);
    let claims: AccessClaims = serde_json::from_value(payload).unwrap();
    let token = app.app.keys.sign(&claims).unwrap();
    assert_refused(&app, &token, TokenError::NotYetValid).await;
}

// ----- garbage -----------------------------------------------------------------------------

#[tokio::test]
async fn garbage_is_malformed_and_never_active() {
    let app = spawn_app().await;
    let dots = ".".repeat(10 * 1024);
    let real = genuine(&app).await;
    let (header, payload, _) = parts(&real);
    let no_signature = format!("{}.{}", b64_json(&header), b64_json(&payload));
    let not_json = format!("{}.{}.AAAA", b64(b"not json"), b64_json(&payload));
    for garbage in [
        "a.b",
        "a.b.c",
        dots.as_str(),
        "....",
        "not a token",
        no_signature.as_str(),
        not_json.as_str(),
    ] {
        assert_refused(&app, garbage, TokenError::Malformed).await;
    }

    // The empty string: malformed to the verifier; introspection calls a missing token a bad
    // request (RFC 6749 §3.1: an empty parameter is an absent one), never active.
    assert_eq!(
        app.app.verifier.verify("", app.clock.now()),
        Err(TokenError::Malformed)
    );
    let response = app.post_form("/oauth/introspect", &[("token", "")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body.get("active").is_none());
}

// ----- rotation ----------------------------------------------------------------------------

#[tokio::test]
async fn a_rotated_out_key_verifies_until_its_tokens_have_expired_then_disappears() {
    let app = spawn_app().await;
    let first = app.tokens(&["claims:status"]).await;
    let token_a = first.access_token().secret().clone();
    let old_kid = kid_of(&token_a);
    assert_eq!(old_kid, app.app.keys.current_kid());
    assert_eq!(jwks_kids(&jwks(&app).await), vec![old_kid.clone()]);

    let rotation = app.app.keys.rotate().await.unwrap();
    let new_kid = rotation.kid.clone();
    assert_ne!(new_kid, old_kid);
    // Published at once, signing once every instance has had time to load it.
    assert_eq!(app.app.keys.current_kid(), old_kid);
    app.clock.advance(rotation.signs_from - app.clock.now());
    assert_eq!(app.app.keys.current_kid(), new_kid);

    // A, signed by the retired key, is still good.
    assert!(app.app.verifier.verify(&token_a, app.clock.now()).is_ok());
    assert_eq!(app.introspect(&token_a).await["active"], true);

    // B, issued after the rotation, is signed by the new key.
    let second = app
        .oauth_client()
        .exchange_refresh_token(first.refresh_token().unwrap())
        .request_async(&http())
        .await
        .unwrap();
    let token_b = second.access_token().secret().clone();
    assert_eq!(kid_of(&token_b), new_kid);
    assert_eq!(app.introspect(&token_b).await["active"], true);
    assert_eq!(app.introspect(&token_a).await["active"], true);

    let mut kids = jwks_kids(&jwks(&app).await);
    kids.sort();
    let mut expected = vec![old_kid.clone(), new_kid.clone()];
    expected.sort();
    assert_eq!(kids, expected, "both keys are published");

    // Past every token the old key could have signed: A has expired...
    app.clock.advance(chrono::Duration::seconds(400));
    assert_refused(&app, &token_a, TokenError::Expired).await;

    // ...and on the next reload the old key is no longer published or trusted.
    app.app.keys.reload().await.unwrap();
    assert_eq!(jwks_kids(&jwks(&app).await), vec![new_kid.clone()]);
    assert_eq!(app.app.keys.current_kid(), new_kid);
    assert_refused(&app, &token_a, TokenError::UnknownKey).await;
    // B's key stays; B itself has simply expired.
    assert_refused(&app, &token_b, TokenError::Expired).await;
}
