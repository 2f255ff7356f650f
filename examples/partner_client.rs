//! An example partner client for Keyhole with FAPI 2.0's pieces: a pushed authorization
//! request (RFC 9126), PKCE, and tokens bound to the partner's key with DPoP (RFC 9449).
//! Partners may copy it; it uses the `oauth2` crate for the authorization request, the code
//! exchange and the refresh, and signs DPoP proofs with an ES256 (P-256) key.
//!
//! What it does:
//! 1. reads the server's metadata (`/.well-known/oauth-authorization-server`);
//! 2. pushes the authorization request to `/oauth/par` (client_secret_basic) and prints the
//!    `/oauth/authorize?client_id=…&request_uri=…` link for the customer to open;
//! 3. waits for the customer to come back: paste the redirect URL (or only the code) on
//!    stdin; `state` and `iss` are checked;
//! 4. exchanges the code with a DPoP proof, so the tokens are bound to the key;
//! 5. polls `GET /partner/v1/claims` every `--interval` seconds with a fresh proof and
//!    `If-None-Match`, printing the claims, or "unchanged" on `304`;
//! 6. refreshes the tokens (with a proof) before the access token expires.
//!
//! A server that wants nonces answers `use_dpop_nonce` with a `DPoP-Nonce` header; the client
//! keeps the latest nonce it was sent and retries once.
//!
//! Against `keyhole demo` (it prints this command with the secret filled in):
//!
//! ```sh
//! cargo run --example partner_client -- --issuer http://127.0.0.1:8080 \
//!   --client-id fone-shop --client-secret kh_cs_… \
//!   --redirect-uri http://127.0.0.1:8080/demo/callback
//! ```
//!
//! Open the printed link, sign in as alice@example.com / alice-demo-password, Allow, and paste
//! the address of the demo callback page. `--key partner.pem` signs with a PKCS#8 P-256 key
//! (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out partner.pem`) instead
//! of a fresh one per run. With a code from elsewhere (the demo's own authorize link and its
//! printed PKCE verifier), `--code CODE --code-verifier VERIFIER` skips steps 2 and 3.

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpClientError,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardErrorResponse, TokenResponse, TokenUrl,
};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use parking_lot::Mutex;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH, WWW_AUTHENTICATE};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::Url;

#[derive(Parser)]
#[command(about = "Example Keyhole partner client: PAR, PKCE, DPoP-bound tokens, polling")]
struct Args {
    /// The authorization server (Keyhole's public URL).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    issuer: String,
    #[arg(long, env = "CLIENT_ID")]
    client_id: String,
    #[arg(long, env = "CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// One of the partner's registered redirect URIs.
    #[arg(long)]
    redirect_uri: String,
    #[arg(
        long,
        default_value = "claims:status claims:status_updated_at claims:repair_stage"
    )]
    scope: String,
    /// The resource to poll; default `{issuer}/partner/v1/claims`.
    #[arg(long)]
    api: Option<String>,
    /// Seconds between polls.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Stop after this many polls (default: poll until stopped).
    #[arg(long)]
    polls: Option<u64>,
    /// A PKCS#8 PEM file with the P-256 private key; default: a fresh key for this run.
    #[arg(long)]
    key: Option<PathBuf>,
    /// An authorization code obtained elsewhere (skips the pushed request); needs its verifier.
    #[arg(long, requires = "code_verifier")]
    code: Option<String>,
    #[arg(long, requires = "code")]
    code_verifier: Option<String>,
}

/// The parts of RFC 8414 metadata this client uses.
#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    pushed_authorization_request_endpoint: String,
}

#[derive(Deserialize)]
struct Pushed {
    request_uri: String,
    expires_in: u64,
}

/// The partner's DPoP key, the last nonce the server sent, and the HTTP client.
struct Dpop {
    key: p256::ecdsa::SigningKey,
    nonce: Mutex<Option<String>>,
    http: reqwest::Client,
}

type TokenError = RequestTokenError<
    HttpClientError<reqwest::Error>,
    StandardErrorResponse<BasicErrorResponseType>,
>;

impl Dpop {
    /// The public key as a JWK (RFC 7517): the only key material a proof carries.
    fn jwk(&self) -> anyhow::Result<serde_json::Value> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let (x, y) = point
            .x()
            .zip(point.y())
            .context("P-256 key without coordinates")?;
        Ok(json!({"kty": "EC", "crv": "P-256",
                  "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}))
    }

    /// RFC 7638 thumbprint: what the server binds the tokens to (`cnf.jkt`).
    fn thumbprint(&self) -> anyhow::Result<String> {
        let jwk = self.jwk()?;
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            jwk["x"], jwk["y"]
        );
        Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical)))
    }

    /// A proof (RFC 9449 §4.2) for one request: `htu` is the URL without query or fragment;
    /// `ath` (the access token's hash) on resource calls; a fresh `jti` every time.
    fn proof(&self, htm: &str, url: &str, access_token: Option<&str>) -> anyhow::Result<String> {
        let mut htu = Url::parse(url)?;
        htu.set_query(None);
        htu.set_fragment(None);
        let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut claims = json!({"htm": htm, "htu": htu.as_str(), "iat": iat,
                                "jti": uuid::Uuid::new_v4().to_string()});
        if let Some(token) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token)));
        }
        if let Some(nonce) = self.nonce.lock().clone() {
            claims["nonce"] = json!(nonce);
        }
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()?});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        let signature: p256::ecdsa::Signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }

    /// Keeps the nonce a response carries, for the next proofs.
    fn remember_nonce(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(nonce) = headers.get("DPoP-Nonce").and_then(|v| v.to_str().ok()) {
            *self.nonce.lock() = Some(nonce.to_owned());
        }
    }

    /// The HTTP client handed to the `oauth2` crate: each token request gets its own proof.
    async fn send(
        &self,
        mut request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>> {
        let proof = self
            .proof(request.method().as_str(), &request.uri().to_string(), None)
            .and_then(|p| Ok(oauth2::http::HeaderValue::from_str(&p)?))
            .map_err(|e| HttpClientError::Other(format!("making the DPoP proof: {e}")))?;
        request.headers_mut().insert("DPoP", proof);
        let response = oauth2::AsyncHttpClient::call(&self.http, request).await?;
        self.remember_nonce(response.headers());
        Ok(response)
    }

    /// A partner API call with `Authorization: DPoP` and a fresh proof; retried once with the
    /// server's nonce when it asks for one.
    async fn get(
        &self,
        url: &str,
        access_token: &str,
        etag: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let mut request = self
                .http
                .get(url)
                .header(AUTHORIZATION, format!("DPoP {access_token}"))
                .header("DPoP", self.proof("GET", url, Some(access_token))?);
            if let Some(etag) = etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            let response = request.send().await?;
            self.remember_nonce(response.headers());
            let wants_nonce = response.status() == StatusCode::UNAUTHORIZED
                && response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("use_dpop_nonce"));
            if !wants_nonce || retried {
                return Ok(response);
            }
            retried = true;
        }
    }
}

/// Runs a token request, and once more if the server asked for a DPoP nonce (RFC 9449 §8: the
/// `use_dpop_nonce` error; [`Dpop::send`] has kept the nonce from its `DPoP-Nonce` header).
async fn with_nonce_retry<F, Fut>(mut request: F) -> anyhow::Result<BasicTokenResponse>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<BasicTokenResponse, TokenError>>,
{
    match request().await {
        Err(RequestTokenError::ServerResponse(e))
            if e.error() == &BasicErrorResponseType::Extension("use_dpop_nonce".into()) =>
        {
            Ok(request().await?)
        }
        answer => Ok(answer?),
    }
}

fn load_or_make_key(path: Option<&PathBuf>) -> anyhow::Result<p256::ecdsa::SigningKey> {
    match path {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            p256::ecdsa::SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| anyhow!("{} is not a PKCS#8 P-256 key: {e}", path.display()))
        }
        None => {
            // 32 random bytes are a valid P-256 scalar but for a chance of about 2^-32.
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
            Ok(p256::ecdsa::SigningKey::from_slice(&bytes)?)
        }
    }
}

/// Pushes the authorization request, prints the link for the customer, and reads the code
/// back from the pasted redirect URL. Returns the code and the PKCE verifier.
async fn authorize(
    args: &Args,
    meta: &Metadata,
    client: &oauth2::basic::BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
    http: &reqwest::Client,
) -> anyhow::Result<(AuthorizationCode, PkceCodeVerifier)> {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    // The oauth2 crate builds the authorization request; its parameters are pushed over the
    // back channel instead of travelling in the browser's address bar.
    let (request, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(args.scope.split_whitespace().map(|s| Scope::new(s.into())))
        .set_pkce_challenge(challenge)
        .url();
    let pushed = http
        .post(&meta.pushed_authorization_request_endpoint)
        .basic_auth(&args.client_id, Some(&args.client_secret))
        .form(&request.query_pairs().collect::<Vec<_>>())
        .send()
        .await?;
    if pushed.status() != StatusCode::CREATED {
        bail!(
            "pushed authorization request refused: {} {}",
            pushed.status(),
            pushed.text().await?
        );
    }
    let pushed: Pushed = pushed.json().await?;
    let link = Url::parse_with_params(
        &meta.authorization_endpoint,
        [
            ("client_id", args.client_id.as_str()),
            ("request_uri", &pushed.request_uri),
        ],
    )?;
    println!(
        "Open this link within {} s, sign in and allow:\n  {link}\n\
         Then paste the address you were sent back to (or just the code) and press Enter:",
        pushed.expires_in
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim();
    let code = match Url::parse(line) {
        Ok(back) => {
            let param = |name: &str| {
                back.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            if let Some(error) = param("error") {
                bail!(
                    "authorization refused: {error} {}",
                    param("error_description").unwrap_or_default()
                );
            }
            if param("state").as_deref() != Some(state.secret().as_str()) {
                bail!("the redirect's state is not the one this request sent");
            }
            // RFC 9207: the response names its issuer, so a mix-up with another server shows.
            if let Some(iss) = param("iss")
                && iss != meta.issuer
            {
                bail!("the redirect came from issuer {iss}, not {}", meta.issuer);
            }
            param("code").context("the redirect URL carries no code")?
        }
        Err(_) if !line.is_empty() => line.to_owned(),
        Err(_) => bail!("no code given"),
    };
    Ok((AuthorizationCode::new(code), verifier))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // No redirects: an authorization server's answers are never followed elsewhere.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let issuer = args.issuer.trim_end_matches('/');
    let meta: Metadata = http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if meta.issuer != issuer {
        bail!(
            "the server says its issuer is {}, not {issuer}",
            meta.issuer
        );
    }
    let dpop = Dpop {
        key: load_or_make_key(args.key.as_ref())?,
        nonce: Mutex::new(None),
        http: http.clone(),
    };
    println!(
        "DPoP key thumbprint (the tokens' cnf.jkt): {}",
        dpop.thumbprint()?
    );
    let client = BasicClient::new(ClientId::new(args.client_id.clone()))
        .set_client_secret(ClientSecret::new(args.client_secret.clone()))
        .set_auth_uri(AuthUrl::new(meta.authorization_endpoint.clone())?)
        .set_token_uri(TokenUrl::new(meta.token_endpoint.clone())?)
        .set_redirect_uri(RedirectUrl::new(args.redirect_uri.clone())?);

    let (code, verifier) = match (&args.code, &args.code_verifier) {
        (Some(code), Some(verifier)) => (
            AuthorizationCode::new(code.clone()),
            PkceCodeVerifier::new(verifier.clone()),
        ),
        _ => authorize(&args, &meta, &client, &http).await?,
    };
    let token_http = |request| dpop.send(request);
    let tokens = with_nonce_retry(|| {
        client
            .exchange_code(code.clone())
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.secret().clone()))
            .request_async(&token_http)
    })
    .await
    .context("exchanging the code")?;
    let mut tokens = Tokens::from(tokens)?;
    println!("Tokens bound to the key; scope: {}", tokens.scope);

    let api = args
        .api
        .clone()
        .unwrap_or_else(|| format!("{issuer}/partner/v1/claims"));
    let interval = Duration::from_secs(args.interval.max(1));
    let mut etag: Option<String> = None;
    let mut polls = 0;
    loop {
        // Refresh while the access token still has more than one interval and 15 s to live.
        if tokens.expires_at <= Instant::now() + interval + Duration::from_secs(15) {
            let refresh = tokens
                .refresh
                .clone()
                .context("the access token expires and there is no refresh token")?;
            let fresh = with_nonce_retry(|| {
                client
                    .exchange_refresh_token(&refresh)
                    .request_async(&token_http)
            })
            .await
            .context("refreshing the tokens")?;
            tokens = Tokens::from(fresh)?.keeping(tokens.refresh);
            println!("refreshed the tokens");
        }
        let response = dpop.get(&api, &tokens.access, etag.as_deref()).await?;
        match response.status() {
            StatusCode::OK => {
                etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                println!("{}", response.text().await?);
            }
            StatusCode::NOT_MODIFIED => println!("unchanged"),
            status => {
                let detail = response.text().await?;
                // The grant was revoked, the partner suspended, or the key refused: stop.
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    bail!("{status}: {detail}");
                }
                println!("{status}: {detail}");
            }
        }
        polls += 1;
        if args.polls.is_some_and(|n| polls >= n) {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// The tokens in use and when the access token expires.
struct Tokens {
    access: String,
    refresh: Option<RefreshToken>,
    expires_at: Instant,
    scope: String,
}

impl Tokens {
    fn from(answer: BasicTokenResponse) -> anyhow::Result<Self> {
        // A bearer token here would mean the server ignored the proof: do not use it.
        if !answer.token_type().as_ref().eq_ignore_ascii_case("DPoP") {
            bail!(
                "the server issued a {} token, not a DPoP-bound one",
                answer.token_type().as_ref()
            );
        }
        Ok(Self {
            access: answer.access_token().secret().clone(),
            refresh: answer.refresh_token().cloned(),
            expires_at: Instant::now() + answer.expires_in().unwrap_or(Duration::from_secs(300)),
            scope: answer
                .scopes()
                .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        })
    }

    /// Keeps the old refresh token when the server did not rotate it.
    fn keeping(mut self, old: Option<RefreshToken>) -> Self {
        if self.refresh.is_none() {
            self.refresh = old;
        }
        self
    }
}
