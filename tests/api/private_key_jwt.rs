//! `private_key_jwt` client authentication (RFC 7523): partners registered with keys
//! (`--jwks-file`, `--jwks-uri`) sign assertions here, in the test, with their private keys;
//! the gateway checks them at the token, revocation and introspection endpoints.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyhole::clock::Clock;
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A partner's signing key: the private half signs in the test, the public half is registered.
pub struct Key {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    /// The public key as a JWK, with its `kid`.
    pub jwk: Value,
}

impl Key {
    /// A fresh P-256 key for ES256.
    pub fn es256(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let secret =
            p256::SecretKey::from_slice(&keyhole::secrets::random_bytes::<32>().unwrap()).unwrap();
        let der = secret.to_pkcs8_der().unwrap();
        Self::from_encoding(
            Algorithm::ES256,
            kid,
            EncodingKey::from_ec_der(der.as_bytes()),
        )
    }

    /// A fresh Ed25519 key for EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let seed = keyhole::secrets::random_bytes::<32>().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().unwrap();
        // Built by hand: the library makes a JWK from an EC or RSA key, not from this one.
        Self {
            alg: Algorithm::EdDSA,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
                        "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes())}),
        }
    }

    fn from_encoding(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// An assertion with these claims, naming this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid), claims)
    }

    /// An assertion with these claims, naming `kid` (or none).
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWKS of the keys' public halves.
pub fn jwks(keys: &[&Key]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// Registers a partner with these keys in a `--jwks-file`, as `partner add` does.
async fn partner_with_file(app: &TestApp, name: &str, keys: &[&Key]) -> Partner {
    let file = app
        .dir()
        .join(format!("{}.jwks.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, jwks(keys).to_string()).unwrap();
    let partner = app
        .add_partner_with(name, ALL_FIELDS, |add| add.jwks_file = Some(file))
        .await;
    assert_eq!(
        partner.client_secret, "",
        "a partner with keys is shown no secret"
    );
    partner
}

async fn partner_with_uri(app: &TestApp, name: &str, uri: &str) -> Partner {
    app.add_partner_with(name, ALL_FIELDS, |add| add.jwks_uri = Some(uri.to_owned()))
        .await
}

/// Good claims for `client_id`'s next assertion: a fresh `jti`, one minute to live.
fn claims(app: &TestApp, client_id: &str) -> Value {
    let now = app.clock.now().timestamp();
    json!({
        "iss": client_id, "sub": client_id, "aud": app.base,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60,
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

/// A form POST authenticated by `assertion` (and nothing else).
async fn post_with_assertion(
    base: &str,
    path: &str,
    assertion: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = form.to_vec();
    form.extend([
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]);
    http()
        .post(format!("{base}{path}"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Introspection of a made-up token: 200 (`active: false`) exactly when the client
/// authenticated. The cheapest authenticated call.
async fn authenticates(app: &TestApp, assertion: &str) -> StatusCode {
    authenticates_at(&app.base, assertion).await
}

async fn authenticates_at(base: &str, assertion: &str) -> StatusCode {
    let response = post_with_assertion(
        base,
        "/oauth/introspect",
        assertion,
        &[("token", "nothing")],
    )
    .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    match status {
        StatusCode::OK => assert_eq!(body["active"], false, "{body}"),
        StatusCode::UNAUTHORIZED => assert_eq!(body["error"], "invalid_client", "{body}"),
        other => panic!("unexpected {other}: {body}"),
    }
    status
}

/// The code exchange, authenticated by an assertion.
async fn exchange(app: &TestApp, partner: &Partner, assertion: &str) -> reqwest::Response {
    let authorized = app
        .authorize_for(partner, ALICE, &["claims:status"], &["claims:status"])
        .await;
    post_with_assertion(
        &app.base,
        "/oauth/token",
        assertion,
        &[
            ("grant_type", "authorization_code"),
            ("code", &authorized.code),
            ("redirect_uri", &partner.redirect_uri),
            ("code_verifier", authorized.verifier.secret()),
        ],
    )
    .await
}

#[tokio::test]
async fn a_partner_with_keys_gets_tokens_for_a_code_and_a_refresh_token_with_assertions() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;

    // An assertion for the token endpoint's URL instead of the issuer: no tokens, and the
    // code is not spent by the refusal.
    let authorized = app
        .authorize_for(&partner, ALICE, &["claims:status"], &["claims:status"])
        .await;
    let code_form = [
        ("grant_type", "authorization_code"),
        ("code", authorized.code.as_str()),
        ("redirect_uri", partner.redirect_uri.as_str()),
        ("code_verifier", authorized.verifier.secret().as_str()),
    ];
    let wrong = key.sign(&with(
        claims(&app, &partner.client_id),
        "aud",
        json!(app.url("/oauth/token")),
    ));
    let refused = post_with_assertion(&app.base, "/oauth/token", &wrong, &code_form).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers().get("www-authenticate").is_none(),
        "no Basic challenge for an assertion"
    );
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let good = key.sign(&claims(&app, &partner.client_id));
    let response = post_with_assertion(&app.base, "/oauth/token", &good, &code_form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );

    let refreshed = post_with_assertion(
        &app.base,
        "/oauth/token",
        &key.sign(&claims(&app, &partner.client_id)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert!(refreshed["access_token"].is_string(), "{refreshed}");
}

#[tokio::test]
async fn revocation_and_introspection_accept_an_assertion() {
    let app = spawn_app().await;
    let key = Key::ed25519("ed-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let tokens: Value = exchange(&app, &partner, &key.sign(&claims(&app, &partner.client_id)))
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let introspect = |assertion: String| {
        let base = app.base.clone();
        let access = access.to_owned();
        async move {
            post_with_assertion(
                &base,
                "/oauth/introspect",
                &assertion,
                &[("token", &access)],
            )
            .await
        }
    };
    let active: Value = introspect(key.sign(&claims(&app, &partner.client_id)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["client_id"], partner.client_id.as_str());
    // Without any client authentication, nothing.
    let anonymous = http()
        .post(app.url("/oauth/introspect"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let revoked = post_with_assertion(
        &app.base,
        "/oauth/revoke",
        &key.sign(&claims(&app, &partner.client_id)),
        &[("token", refresh), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let after: Value = introspect(key.sign(&claims(&app, &partner.client_id)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["active"], false,
        "revoking the refresh token ends the grant"
    );
}

#[tokio::test]
async fn the_audience_must_be_the_issuer_alone() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let good = claims(&app, &partner.client_id);
    for aud in [
        json!(app.url("/oauth/token")),
        json!(app.url("/oauth/introspect")),
        json!([app.base, "https://other.example"]),
        json!(format!("{}/", app.base)),
        json!([]),
    ] {
        let assertion = key.sign(&with(good.clone(), "aud", aud.clone()));
        assert_eq!(
            authenticates(&app, &assertion).await,
            StatusCode::UNAUTHORIZED,
            "{aud}"
        );
    }
    let one_element = key.sign(&with(good.clone(), "aud", json!([app.base])));
    assert_eq!(authenticates(&app, &one_element).await, StatusCode::OK);
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_expired_assertion_and_one_that_lives_too_long_are_refused() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let now = app.clock.now().timestamp();
    let at = |exp: i64| key.sign(&with(claims(&app, &partner.client_id), "exp", json!(exp)));
    // 30 s of leeway for clocks that run apart, no more.
    assert_eq!(
        authenticates(&app, &at(now - 31)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(authenticates(&app, &at(now - 29)).await, StatusCode::OK);
    // At most five minutes ahead (with the same leeway).
    assert_eq!(
        authenticates(&app, &at(now + 3600)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        authenticates(&app, &at(now + 331)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(authenticates(&app, &at(now + 300)).await, StatusCode::OK);
    // Without exp, never.
    let no_exp = key.sign(&without(claims(&app, &partner.client_id), "exp"));
    assert_eq!(authenticates(&app, &no_exp).await, StatusCode::UNAUTHORIZED);
    // Issued (or valid from) the future.
    let future = |claim: &str| {
        key.sign(&with(
            claims(&app, &partner.client_id),
            claim,
            json!(now + 120),
        ))
    };
    assert_eq!(
        authenticates(&app, &future("iat")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        authenticates(&app, &future("nbf")).await,
        StatusCode::UNAUTHORIZED
    );
    // A good one kept until it expired.
    let kept = key.sign(&claims(&app, &partner.client_id));
    app.clock.advance(chrono::Duration::seconds(60 + 30));
    assert_eq!(authenticates(&app, &kept).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_jti_is_accepted_once_and_a_forged_assertion_does_not_spend_it() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let claims = claims(&app, &partner.client_id);
    // Someone without the key sends the jti first, under the partner's kid.
    let forger = Key::es256("es-1");
    assert_eq!(
        authenticates(&app, &forger.sign(&claims)).await,
        StatusCode::UNAUTHORIZED
    );
    let assertion = key.sign(&claims);
    assert_eq!(authenticates(&app, &assertion).await, StatusCode::OK);
    assert_eq!(
        authenticates(&app, &assertion).await,
        StatusCode::UNAUTHORIZED,
        "replayed"
    );
    // The same jti in a new assertion is a replay too; another partner's jti of the same
    // value is its own.
    let resigned = key.sign(&with(
        claims.clone(),
        "iat",
        json!(app.clock.now().timestamp() - 1),
    ));
    assert_eq!(
        authenticates(&app, &resigned).await,
        StatusCode::UNAUTHORIZED
    );
    let other_key = Key::ed25519("ed-1");
    let other = partner_with_file(&app, "Other Shop", &[&other_key]).await;
    let same_jti = with(
        with(
            with(claims.clone(), "iss", json!(other.client_id)),
            "sub",
            json!(other.client_id),
        ),
        "jti",
        claims["jti"].clone(),
    );
    assert_eq!(
        authenticates(&app, &other_key.sign(&same_jti)).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_jti_used_at_one_instance_is_refused_at_another() {
    if redis_url().is_none() {
        eprintln!("skipped: KEYHOLE_REDIS_URL names no Redis server");
        return;
    }
    let a = spawn_app().await;
    let b = a.second_instance().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&a, "Fix Point", &[&key]).await;
    let first = key.sign(&claims(&a, &partner.client_id));
    assert_eq!(authenticates_at(&a.base, &first).await, StatusCode::OK);
    assert_eq!(authenticates_at(&b, &first).await, StatusCode::UNAUTHORIZED);
    let second = key.sign(&claims(&a, &partner.client_id));
    assert_eq!(authenticates_at(&b, &second).await, StatusCode::OK);
    assert_eq!(
        authenticates_at(&a.base, &second).await,
        StatusCode::UNAUTHORIZED
    );
    // Racing: of eight uses of one assertion across both instances, exactly one passes.
    let raced = key.sign(&claims(&a, &partner.client_id));
    let tries = (0..8).map(|i| {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.clone()
        };
        let raced = raced.clone();
        async move { authenticates_at(&base, &raced).await }
    });
    let passed = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|s| *s == StatusCode::OK)
        .count();
    assert_eq!(passed, 1);
}

#[tokio::test]
async fn claims_that_do_not_name_the_client_are_refused() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let other = app.partner.client_id.clone();
    let good = claims(&app, &partner.client_id);
    for (what, claims) in [
        ("no jti", without(good.clone(), "jti")),
        ("empty jti", with(good.clone(), "jti", json!(""))),
        (
            "long jti",
            with(good.clone(), "jti", json!("j".repeat(257))),
        ),
        ("iss is not sub", with(good.clone(), "iss", json!(other))),
        ("no iss", without(good.clone(), "iss")),
        ("no sub", without(good.clone(), "sub")),
    ] {
        assert_eq!(
            authenticates(&app, &key.sign(&claims)).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    // A form client_id must be the assertion's.
    let assertion = key.sign(&claims(&app, &partner.client_id));
    let mismatched = post_with_assertion(
        &app.base,
        "/oauth/introspect",
        &assertion,
        &[("token", "x"), ("client_id", &other)],
    )
    .await;
    assert_eq!(mismatched.status(), StatusCode::UNAUTHORIZED);
    let matching = post_with_assertion(
        &app.base,
        "/oauth/introspect",
        &key.sign(&claims(&app, &partner.client_id)),
        &[("token", "x"), ("client_id", &partner.client_id)],
    )
    .await;
    assert_eq!(matching.status(), StatusCode::OK);
    // A long jti within bounds is fine.
    let long = with(
        claims(&app, &partner.client_id),
        "jti",
        json!("j".repeat(256)),
    );
    assert_eq!(authenticates(&app, &key.sign(&long)).await, StatusCode::OK);
}

#[tokio::test]
async fn an_assertion_signed_by_another_key_or_another_partners_key_is_refused() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let theirs = Key::es256("theirs");
    partner_with_file(&app, "Other Shop", &[&theirs]).await;
    let claims = || claims(&app, &partner.client_id);
    for (what, assertion) in [
        (
            "another key under our kid",
            Key::es256("es-1").sign(&claims()),
        ),
        (
            "another key, no kid",
            Key::es256("x").sign_as(None, &claims()),
        ),
        ("another partner's key", theirs.sign(&claims())),
        (
            "another partner's key under our kid",
            theirs.sign_as(Some("es-1"), &claims()),
        ),
        (
            "an Ed25519 key under our kid",
            Key::ed25519("es-1").sign(&claims()),
        ),
    ] {
        assert_eq!(
            authenticates(&app, &assertion).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    assert_eq!(
        authenticates(&app, &key.sign_as(None, &claims())).await,
        StatusCode::OK,
        "without a kid, the only key of its kind"
    );
}

#[tokio::test]
async fn none_and_hmac_with_the_public_key_as_secret_are_refused() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    let good = key.sign(&claims(&app, &partner.client_id));
    let payload = good.split('.').nth(1).unwrap();
    for header in [
        json!({"alg": "none", "kid": "es-1"}),
        json!({"alg": "None"}),
    ] {
        let unsigned = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header.to_string()));
        assert_eq!(
            authenticates(&app, &unsigned).await,
            StatusCode::UNAUTHORIZED,
            "{header}"
        );
    }
    // HS256 keyed with what anyone can read: the registered JWK, or its x coordinate.
    let jwk_text = key.jwk.to_string();
    let x = URL_SAFE_NO_PAD
        .decode(key.jwk["x"].as_str().unwrap())
        .unwrap();
    for secret in [jwk_text.as_bytes(), x.as_slice()] {
        let hmac = Key {
            alg: Algorithm::HS256,
            kid: "es-1".into(),
            encoding: EncodingKey::from_secret(secret),
            jwk: key.jwk.clone(),
        };
        assert_eq!(
            authenticates(&app, &hmac.sign(&claims(&app, &partner.client_id))).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // An oversized assertion is refused before it is read.
    let padded = with(
        claims(&app, &partner.client_id),
        "pad",
        json!("x".repeat(9 * 1024)),
    );
    assert_eq!(
        authenticates(&app, &key.sign(&padded)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(authenticates(&app, &good).await, StatusCode::OK);
}

#[tokio::test]
async fn each_partner_authenticates_only_the_way_it_registered() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;

    // A partner with keys sends a secret (it was never shown one): Basic or in the form.
    let basic = http()
        .post(app.url("/oauth/introspect"))
        .basic_auth(&partner.client_id, Some("kh_cs_guess"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(basic.headers().get("www-authenticate").is_some());
    let posted = http()
        .post(app.url("/oauth/introspect"))
        .form(&[
            ("token", "x"),
            ("client_id", &partner.client_id),
            ("client_secret", "kh_cs_guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);
    // Even a secret that matches its stored hash (the one nobody was shown) is refused.
    app.app
        .store
        .set_partner_secret_hash(
            &keyhole::domain::ClientId::parse(&partner.client_id).unwrap(),
            keyhole::secrets::token_hash("kh_cs_known"),
        )
        .await
        .unwrap();
    let known = http()
        .post(app.url("/oauth/introspect"))
        .basic_auth(&partner.client_id, Some("kh_cs_known"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(known.status(), StatusCode::UNAUTHORIZED);

    // A partner with a secret sends an assertion signed with a key it never registered.
    let secret_partner = &app.partner;
    let stray = Key::es256("k");
    assert_eq!(
        authenticates(&app, &stray.sign(&claims(&app, &secret_partner.client_id))).await,
        StatusCode::UNAUTHORIZED
    );
    // Its secret still works; and the partner with keys still authenticates with them.
    let introspected = app.post_form("/oauth/introspect", &[("token", "x")]).await;
    assert_eq!(introspected.status(), StatusCode::OK);
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );

    // Two methods at once, or half of one, is a malformed request.
    let assertion = key.sign(&claims(&app, &partner.client_id));
    let both = http()
        .post(app.url("/oauth/introspect"))
        .basic_auth(
            &secret_partner.client_id,
            Some(&secret_partner.client_secret),
        )
        .form(&[
            ("token", "x"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        both.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    let with_secret = http()
        .post(app.url("/oauth/introspect"))
        .form(&[
            ("token", "x"),
            ("client_secret", "kh_cs_guess"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(with_secret.status(), StatusCode::BAD_REQUEST);
    let half = http()
        .post(app.url("/oauth/introspect"))
        .form(&[("token", "x"), ("client_assertion", &assertion)])
        .send()
        .await
        .unwrap();
    assert_eq!(half.status(), StatusCode::BAD_REQUEST);
    let other_type = http()
        .post(app.url("/oauth/introspect"))
        .form(&[
            ("token", "x"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(other_type.status(), StatusCode::UNAUTHORIZED);
    // None of those spent the assertion.
    assert_eq!(authenticates(&app, &assertion).await, StatusCode::OK);
}

#[tokio::test]
async fn a_suspended_partner_with_keys_is_refused() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let partner = partner_with_file(&app, "Fix Point", &[&key]).await;
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
    app.app
        .store
        .set_partner_status(
            &keyhole::domain::ClientId::parse(&partner.client_id).unwrap(),
            keyhole::store::PartnerStatus::Suspended,
            app.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A partner's key server: serves whatever key set the test puts up, and counts the fetches.
struct KeyServer {
    server: MockServer,
    set: Arc<Mutex<Value>>,
    status: Arc<Mutex<u16>>,
}

struct Serve(Arc<Mutex<Value>>, Arc<Mutex<u16>>);

impl Respond for Serve {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        ResponseTemplate::new(*self.1.lock()).set_body_json(self.0.lock().clone())
    }
}

impl KeyServer {
    async fn start(keys: &[&Key]) -> Self {
        let server = MockServer::start().await;
        let set = Arc::new(Mutex::new(jwks(keys)));
        let status = Arc::new(Mutex::new(200));
        Mock::given(method("GET"))
            .and(path("/jwks.json"))
            .respond_with(Serve(set.clone(), status.clone()))
            .mount(&server)
            .await;
        Self {
            server,
            set,
            status,
        }
    }

    fn uri(&self) -> String {
        format!("{}/jwks.json", self.server.uri())
    }

    fn serve(&self, keys: &[&Key]) {
        *self.set.lock() = jwks(keys);
    }

    fn answer(&self, status: u16) {
        *self.status.lock() = status;
    }

    async fn fetches(&self) -> usize {
        self.server.received_requests().await.unwrap().len()
    }
}

#[tokio::test]
async fn a_rotated_key_at_the_jwks_uri_is_picked_up_by_its_unknown_kid() {
    let app = spawn_app().await;
    let old = Key::es256("2026-01");
    let server = KeyServer::start(&[&old]).await;
    let partner = partner_with_uri(&app, "Fix Point", &server.uri()).await;
    assert_eq!(partner.client_secret, "");
    assert_eq!(
        authenticates(&app, &old.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
    assert_eq!(
        authenticates(&app, &old.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
    assert_eq!(server.fetches().await, 1, "the set is kept");

    // The partner rotates: the new key is published, the old one withdrawn.
    let new = Key::ed25519("2026-02");
    server.serve(&[&new]);
    // Within a minute of the last fetch, the new kid is not known yet.
    assert_eq!(
        authenticates(&app, &new.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(
        authenticates(&app, &new.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
    assert_eq!(server.fetches().await, 2);
    assert_eq!(
        authenticates(&app, &old.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::UNAUTHORIZED,
        "the withdrawn key is gone with the set it was in"
    );
    // Headers that point elsewhere are not followed.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("2026-03".into());
    header.jku = Some(format!("{}/other.json", server.server.uri()));
    header.x5u = Some(format!("{}/x5u.pem", server.server.uri()));
    let elsewhere =
        jsonwebtoken::encode(&header, &claims(&app, &partner.client_id), &old.encoding).unwrap();
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(
        authenticates(&app, &elsewhere).await,
        StatusCode::UNAUTHORIZED
    );
    let asked: Vec<String> = server
        .server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert!(asked.iter().all(|p| p == "/jwks.json"), "{asked:?}");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_a_minute() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let server = KeyServer::start(&[&key]).await;
    let partner = partner_with_uri(&app, "Fix Point", &server.uri()).await;
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
    app.clock.advance(chrono::Duration::seconds(61));
    for round in 0..2 {
        let before = server.fetches().await;
        for _ in 0..20 {
            let kid = uuid::Uuid::new_v4().to_string();
            let forged = Key::es256(&kid).sign(&claims(&app, &partner.client_id));
            assert_eq!(authenticates(&app, &forged).await, StatusCode::UNAUTHORIZED);
            app.clock.advance(chrono::Duration::seconds(1));
        }
        let fetched = server.fetches().await - before;
        assert_eq!(fetched, 1, "round {round}: {fetched} fetches in 20 s");
        app.clock.advance(chrono::Duration::seconds(41));
    }
    // The partner's own key still works throughout.
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_jwks_uri_that_is_down_fails_closed() {
    let app = spawn_app().await;
    let key = Key::es256("es-1");
    let server = KeyServer::start(&[&key]).await;
    server.answer(503);
    let partner = partner_with_uri(&app, "Fix Point", &server.uri()).await;
    let assertion = key.sign(&claims(&app, &partner.client_id));
    assert_eq!(
        authenticates(&app, &assertion).await,
        StatusCode::UNAUTHORIZED
    );
    // A failed fetch stands for a few seconds: callers meanwhile are refused without asking.
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &partner.client_id))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.fetches().await, 1);
    // Back up: the refused assertion was not spent.
    server.answer(200);
    app.clock.advance(chrono::Duration::seconds(10));
    assert_eq!(authenticates(&app, &assertion).await, StatusCode::OK);

    // A key server that is not there at all.
    let gone = format!("http://127.0.0.1:{}/jwks.json", free_port());
    let stranded = partner_with_uri(&app, "Stranded", &gone).await;
    assert_eq!(
        authenticates(&app, &key.sign(&claims(&app, &stranded.client_id))).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_metadata_advertises_private_key_jwt_and_its_algorithms() {
    let app = spawn_app().await;
    let metadata: Value = http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for endpoint in ["token", "revocation", "introspection"] {
        let methods = &metadata[format!("{endpoint}_endpoint_auth_methods_supported")];
        assert_eq!(
            methods,
            &json!([
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt"
            ]),
            "{endpoint}"
        );
        let algs = &metadata[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")];
        assert_eq!(algs, &json!(["PS256", "ES256", "EdDSA"]), "{endpoint}");
    }
}
