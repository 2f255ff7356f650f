//! A partner's side of DPoP (RFC 9449), written from the RFC rather than from Keyhole's
//! verifier: keys (ES256 on P-256, EdDSA on Ed25519), proofs signed by hand, and an HTTP
//! client for the `oauth2` crate that puts a proof on each token request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub enum ProofKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// What a proof claims; tests change one thing at a time.
pub struct ProofClaims {
    pub htm: String,
    pub htu: String,
    pub iat: i64,
    pub jti: String,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

impl ProofClaims {
    pub fn new(htm: &str, htu: &str, iat: i64) -> Self {
        Self {
            htm: htm.into(),
            htu: htu.into(),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            ath: None,
            nonce: None,
        }
    }

    /// For a resource request: `ath` is the hash of the access token.
    pub fn for_token(mut self, token: &str) -> Self {
        self.ath = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        self
    }

    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.nonce = Some(nonce.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut claims =
            json!({"htm": self.htm, "htu": self.htu, "iat": self.iat, "jti": self.jti});
        if let Some(ath) = &self.ath {
            claims["ath"] = json!(ath);
        }
        if let Some(nonce) = &self.nonce {
            claims["nonce"] = json!(nonce);
        }
        claims
    }
}

impl ProofKey {
    pub fn es256(seed: u8) -> Self {
        let mut bytes = [seed; 32];
        bytes[0] = 1; // keeps the scalar well below the curve order
        Self::P256(p256::ecdsa::SigningKey::from_bytes(&bytes.into()).unwrap())
    }

    pub fn ed25519(seed: u8) -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Self::P256(_) => "ES256",
            Self::Ed25519(_) => "EdDSA",
        }
    }

    pub fn jwk(&self) -> Value {
        match self {
            Self::P256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
                })
            }
            Self::Ed25519(key) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
            }),
        }
    }

    /// RFC 7638: SHA-256 over the required members, in lexicographic order, no whitespace.
    pub fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = match self {
            Self::P256(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
                jwk["x"], jwk["y"]
            ),
            Self::Ed25519(_) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":{}}}"#, jwk["x"]),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A proof with this key in its header.
    pub fn proof(&self, claims: &ProofClaims) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()});
        self.sign(&header, &claims.to_json())
    }

    /// Any header and claims, signed by this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let signature = match self {
            Self::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message.as_bytes());
                signature.to_bytes().to_vec()
            }
            Self::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(message.as_bytes()).to_bytes().to_vec()
            }
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

type Answer = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<oauth2::HttpResponse, oauth2::HttpClientError<reqwest::Error>>,
            > + Send,
    >,
>;

/// An HTTP client for the `oauth2` crate that sends `proof` as the `DPoP` header.
pub fn with_proof(proof: String) -> impl Fn(oauth2::HttpRequest) -> Answer {
    move |mut request: oauth2::HttpRequest| {
        request.headers_mut().insert("DPoP", proof.parse().unwrap());
        Box::pin(async move {
            let client = crate::helpers::http();
            oauth2::AsyncHttpClient::call(&client, request).await
        })
    }
}

/// The claims of a JWT, unverified (the test reads what the server put in).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The partner API path the DPoP tests call.
pub const PATH: &str = "/partner/v1/claims";

/// Token requests and partner calls with DPoP, as the DPoP tests and their red team make them.
impl crate::helpers::TestApp {
    /// The app's clock, as a proof's `iat`.
    pub fn now(&self) -> i64 {
        keyhole::clock::Clock::now(&self.clock).timestamp()
    }

    /// A proof by `key` for the token endpoint.
    pub fn token_proof(&self, key: &ProofKey) -> String {
        key.proof(&ProofClaims::new(
            "POST",
            &self.url("/oauth/token"),
            self.now(),
        ))
    }

    /// A proof by `key` for a GET of `htu` with `token`.
    pub fn call_proof_for(&self, key: &ProofKey, htu: &str, token: &str) -> String {
        key.proof(&ProofClaims::new("GET", htu, self.now()).for_token(token))
    }

    /// A proof by `key` for a GET of [`PATH`] with `token`.
    pub fn call_proof(&self, key: &ProofKey, token: &str) -> String {
        self.call_proof_for(key, &self.url(PATH), token)
    }

    /// A token request by `partner` (HTTP Basic), with a `DPoP` proof when given one.
    pub async fn token_request(
        &self,
        partner: &crate::helpers::Partner,
        form: &[(&str, &str)],
        proof: Option<String>,
    ) -> reqwest::Response {
        let mut request = crate::helpers::http()
            .post(self.url("/oauth/token"))
            .basic_auth(&partner.client_id, Some(&partner.client_secret))
            .form(form);
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send().await.unwrap()
    }

    /// `partner` exchanges Alice's code, with a proof when given one.
    pub async fn exchange_with(
        &self,
        partner: &crate::helpers::Partner,
        authorized: &crate::helpers::Authorized,
        proof: Option<String>,
    ) -> reqwest::Response {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", authorized.code.as_str()),
            ("redirect_uri", partner.redirect_uri.as_str()),
            ("code_verifier", authorized.verifier.secret().as_str()),
        ];
        self.token_request(partner, &form, proof).await
    }

    /// `partner` refreshes, with a proof when given one.
    pub async fn refresh_for(
        &self,
        partner: &crate::helpers::Partner,
        refresh_token: &str,
        proof: Option<String>,
    ) -> reqwest::Response {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_request(partner, &form, proof).await
    }

    /// A GET of [`PATH`] at `base` (another instance, say) with `Authorization: DPoP`.
    pub async fn dpop_get_at(
        &self,
        base: &str,
        token: &str,
        proof: Option<&str>,
    ) -> reqwest::Response {
        let mut request = crate::helpers::http()
            .get(format!("{base}{PATH}"))
            .header("Authorization", format!("DPoP {token}"));
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send().await.unwrap()
    }

    pub async fn dpop_get(&self, token: &str, proof: Option<&str>) -> reqwest::Response {
        self.dpop_get_at(&self.base, token, proof).await
    }
}
