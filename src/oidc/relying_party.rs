//! One relying party: a provider, our client there, and the callback it answers to. A sign-in
//! is two calls:
//!
//! 1. [`RelyingParty::begin`]: a fresh `state`, `nonce` and PKCE verifier are parked in shared
//!    state under the hash of a random key that only the browser gets (in a cookie); the
//!    browser is sent to the provider with `state`, `nonce`, the S256 challenge and `max_age`.
//! 2. [`RelyingParty::finish`]: the answer's bounds are checked; the browser's key takes the
//!    parked values (once: a replayed answer finds nothing); `state` and `iss` must match; the
//!    code is exchanged with the verifier; the ID token is validated (`id_token.rs`).
//!
//! State, nonce and verifier are `Secret`s: never in a log line.

use super::callback::AuthorizationAnswer;
use super::claims::IdentityClaims;
use super::discovery::{ClientAuth, Provider};
use super::fetch::{FetchError, ProviderHttp};
use super::id_token::{self, Expected};
use super::jwks::KeyCache;
use super::settings::ProviderSettings;
use super::{OidcError, Refusal};
use crate::clock::SharedClock;
use crate::secrets::{Secret, random_token, token_hash};
use crate::state::{PendingOidcSignIn, SharedState};
use chrono::{DateTime, Utc};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use url::Url;

/// How long a browser has between leaving for the provider and coming back.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The longest `return_to` parked with a sign-in. Callers refuse longer ones before they begin
/// (with a page saying so): a partner's authorization request, with a `state` of up to 512
/// bytes percent-encoded and its redirect URI, comes back through here and must fit.
pub const MAX_RETURN_TO_LENGTH: usize = 8 * 1024;

/// How long a discovery document is used before it is fetched again.
const DISCOVERY_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// After a fetch found the provider unreachable, how long it is taken at its word: the
/// requests queued behind that fetch (and those that follow) use the document from before, or
/// get "unavailable" at once, instead of each waiting for a timeout of its own in turn.
const UNREACHABLE_RETRY: chrono::Duration = chrono::Duration::seconds(30);

/// The token endpoint's answer: OAuth's, plus the ID token (Core §3.1.3.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A completed sign-in: who signed in, and where the caller wanted them next.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub claims: IdentityClaims,
    /// As given to [`RelyingParty::begin`]; the caller checks it again before redirecting.
    pub return_to: Option<String>,
}

/// Where to send the browser, and the key it must bring back.
#[derive(Debug)]
pub struct SignInStart {
    pub authorization_url: Url,
    /// The value of the cookie that binds this sign-in to the browser.
    pub browser_binding: Secret,
}

struct Discovered {
    provider: Arc<Provider>,
    at: DateTime<Utc>,
}

/// The discovery document this process holds, and when the provider last could not be reached.
#[derive(Default)]
struct Discovery {
    current: Option<Discovered>,
    unreachable: Option<(DateTime<Utc>, String)>,
}

pub struct RelyingParty {
    settings: ProviderSettings,
    purpose: &'static str,
    redirect_uri: RedirectUrl,
    http: ProviderHttp,
    discovered: Mutex<Discovery>,
    keys: KeyCache,
    state: SharedState,
    clock: SharedClock,
}

impl RelyingParty {
    /// A relying party for `purpose` (a short name, `console` or `portal`, that keeps one
    /// party's pending sign-ins out of another's callback) answering at `redirect_uri`. Nothing
    /// is fetched yet: the provider may be down when we start.
    pub fn new(
        settings: ProviderSettings,
        purpose: &'static str,
        redirect_uri: Url,
        state: SharedState,
        clock: SharedClock,
    ) -> Result<Self, OidcError> {
        Ok(Self {
            settings,
            purpose,
            redirect_uri: RedirectUrl::from_url(redirect_uri),
            http: ProviderHttp::new().map_err(OidcError::from)?,
            discovered: Mutex::default(),
            keys: KeyCache::default(),
            state,
            clock,
        })
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    pub fn purpose(&self) -> &'static str {
        self.purpose
    }

    /// Starts a sign-in; `max_age` asks the provider for a sign-in at most that old;
    /// `return_to` comes back from [`Self::finish`] (never interpreted here; one longer than
    /// [`MAX_RETURN_TO_LENGTH`] is dropped, so callers check first).
    pub async fn begin(
        &self,
        max_age: Option<Duration>,
        return_to: Option<&str>,
    ) -> Result<SignInStart, OidcError> {
        let provider = self.provider().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = random_token("")?;
        let nonce = random_token("")?;
        let browser_binding = random_token("kh_oidc_")?;
        let client = self.client(&provider);
        let mut request = client
            .authorize_url(|| CsrfToken::new(state.expose().to_owned()))
            .add_scopes(
                self.settings
                    .scopes
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(|s| Scope::new(s.to_owned())),
            )
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.expose());
        if let Some(max_age) = max_age {
            request = request.add_extra_param("max_age", max_age.as_secs().to_string());
        }
        let (authorization_url, _) = request.url();
        let pending = PendingOidcSignIn {
            state,
            nonce,
            pkce_verifier: Secret::new(verifier.into_secret()),
            max_age_seconds: max_age.map(|age| age.as_secs()),
            return_to: return_to
                .filter(|r| r.len() <= MAX_RETURN_TO_LENGTH)
                .map(str::to_owned),
        };
        self.state
            .put_oidc_sign_in(
                self.purpose,
                &token_hash(browser_binding.expose()),
                &pending,
                SIGN_IN_LIFETIME,
            )
            .await?;
        Ok(SignInStart {
            authorization_url,
            browser_binding,
        })
    }

    /// Completes a sign-in with the provider's answer and the browser's binding cookie.
    pub async fn finish(
        &self,
        browser_binding: Option<&str>,
        answer: &AuthorizationAnswer,
    ) -> Result<SignedIn, OidcError> {
        if !answer.within_bounds() {
            return Err(Refusal::ParameterTooLong.into());
        }
        let binding = browser_binding
            .filter(|b| b.len() <= super::callback::MAX_PARAMETER_LENGTH)
            .ok_or(Refusal::NoPendingSignIn)?;
        let pending = self
            .state
            .take_oidc_sign_in(self.purpose, &token_hash(binding))
            .await?
            .ok_or(Refusal::NoPendingSignIn)?;
        let state = answer.state.as_deref().unwrap_or_default();
        if !bool::from(state.as_bytes().ct_eq(pending.state.expose().as_bytes())) {
            return Err(Refusal::StateMismatch.into());
        }
        if let Some(code) = answer.error_code() {
            return Err(Refusal::ProviderError(code).into());
        }
        let provider = self.provider().await?;
        match answer.iss.as_deref() {
            // RFC 9207 §2.4: a provider that names itself must be the one we sent the
            // browser to; one that promised to name itself must have.
            Some(iss) if iss != provider.issuer => return Err(Refusal::IssuerMismatch.into()),
            None if provider.iss_parameter => return Err(Refusal::IssuerMismatch.into()),
            _ => {}
        }
        let code = answer.code.as_deref().ok_or(Refusal::MissingCode)?;
        let id_token = self
            .exchange(&provider, code, pending.pkce_verifier.expose())
            .await?;
        let claims = self.validate(&provider, &id_token, &pending).await?;
        Ok(SignedIn {
            claims,
            return_to: pending.return_to,
        })
    }

    /// Where to send a browser that signed out here, when the provider advertises an
    /// `end_session_endpoint` (RP-Initiated Logout 1.0): it ends the provider's session too,
    /// then returns to `post_logout_redirect_uri` (registered with the provider). `client_id`
    /// rather than `id_token_hint`, so that no ID token is kept in our sessions.
    pub async fn end_session_url(
        &self,
        post_logout_redirect_uri: &Url,
    ) -> Result<Option<Url>, OidcError> {
        let provider = self.provider().await?;
        Ok(provider.end_session_endpoint.clone().map(|mut url| {
            url.query_pairs_mut()
                .append_pair("client_id", &self.settings.client_id)
                .append_pair(
                    "post_logout_redirect_uri",
                    post_logout_redirect_uri.as_str(),
                );
            url
        }))
    }

    /// Validates a logout token the provider sent to our back-channel endpoint
    /// (`logout_token.rs`); its `jti` is the caller's to accept once.
    pub async fn verify_logout_token(&self, token: &str) -> Result<super::LogoutClaims, OidcError> {
        let provider = self.provider().await?;
        let refused = |e: super::LogoutTokenError| OidcError::from(Refusal::LogoutToken(e));
        let header =
            id_token::read_header(token, &provider.algorithms).map_err(|e| refused(e.into()))?;
        let now = self.clock.now();
        let keys = self.keys_for(&provider, &header, now).await?;
        super::logout_token::verify(
            token,
            &header,
            &keys,
            &self.settings.issuer,
            &self.settings.client_id,
            now,
        )
        .map_err(refused)
    }

    /// The origin of the provider's end-session endpoint, from the discovery document this
    /// process already holds: never fetched here, as the pages that ask must not wait on the
    /// provider (an instance that has not fetched it yet answers `None`).
    pub fn known_end_session_origin(&self) -> Option<String> {
        let discovered = self.discovered.try_lock().ok()?;
        let url = discovered
            .current
            .as_ref()?
            .provider
            .end_session_endpoint
            .as_ref()?;
        Some(url.origin().ascii_serialization()).filter(|o| o != "null")
    }

    async fn exchange(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let http = self.http.clone();
        let send = move |request| {
            let http = http.clone();
            async move { http.execute(request).await }
        };
        let response = self
            .client(provider)
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&send)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(refused) => {
                    Refusal::CodeRejected(format!("{:?}", refused.error())).into()
                }
                RequestTokenError::Request(fetch) => OidcError::from(fetch),
                RequestTokenError::Parse(e, _) => {
                    OidcError::Provider(format!("the token answer: {e}"))
                }
                RequestTokenError::Other(e) => OidcError::Provider(format!(
                    "the token answer: {}",
                    super::discovery::truncate(&e)
                )),
            })?;
        response
            .extra_fields()
            .id_token
            .clone()
            .ok_or_else(|| OidcError::Provider("the token answer has no id_token".into()))
    }

    /// The provider's keys that may have signed a token with `header` (fetched, or refetched
    /// for an unknown `kid`, as `jwks.rs` allows).
    async fn keys_for(
        &self,
        provider: &Provider,
        header: &id_token::Header,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<super::jwks::ProviderKey>>, OidcError> {
        Ok(self
            .keys
            .keys(
                &self.http,
                &provider.jwks_uri,
                header.alg,
                header.kid.as_deref(),
                now,
            )
            .await?)
    }

    async fn validate(
        &self,
        provider: &Provider,
        id_token: &str,
        pending: &PendingOidcSignIn,
    ) -> Result<IdentityClaims, OidcError> {
        let refused = |e| OidcError::from(Refusal::IdToken(e));
        let header = id_token::read_header(id_token, &provider.algorithms).map_err(refused)?;
        let now = self.clock.now();
        let keys = self.keys_for(provider, &header, now).await?;
        let expected = Expected {
            issuer: &self.settings.issuer,
            client_id: &self.settings.client_id,
            nonce: pending.nonce.expose(),
            max_age: pending.max_age_seconds.map(Duration::from_secs),
            now,
        };
        id_token::verify(id_token, &header, &keys, &expected).map_err(refused)
    }

    /// The provider's checked discovery document: cached for an hour; past that, fetched
    /// again, and the old one kept (with a warning) while the provider cannot be reached. One
    /// fetch at a time (the others wait for it), and a provider found unreachable is not asked
    /// again for [`UNREACHABLE_RETRY`]: without that, every request queued behind a fetch that
    /// timed out made its own, in turn.
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let now = self.clock.now();
        let mut discovery = self.discovered.lock().await;
        if let Some(d) = discovery.current.as_ref()
            && now - d.at < DISCOVERY_LIFETIME
        {
            return Ok(d.provider.clone());
        }
        if let Some((at, why)) = discovery.unreachable.as_ref()
            && now - *at < UNREACHABLE_RETRY
        {
            return match discovery.current.as_ref() {
                Some(stale) => Ok(stale.provider.clone()),
                None => Err(OidcError::Unavailable(format!(
                    "{why} (a moment ago; not asked again yet)"
                ))),
            };
        }
        let url = self
            .settings
            .discovery_url()
            .map_err(|e| OidcError::Provider(format!("the discovery URL: {e}")))?;
        let fetched = match self.http.get_json(&url).await {
            Ok(json) => Provider::from_document(&self.settings.issuer, json),
            Err(e) => Err(e),
        };
        // The fetch may have taken seconds: what it found is as of when it ended.
        let now = self.clock.now();
        match fetched {
            Ok(provider) => {
                let provider = Arc::new(provider);
                discovery.current = Some(Discovered {
                    provider: provider.clone(),
                    at: now,
                });
                discovery.unreachable = None;
                Ok(provider)
            }
            Err(FetchError::Unreachable(why)) => {
                discovery.unreachable = Some((now, why.clone()));
                match discovery.current.as_ref() {
                    Some(stale) => {
                        tracing::warn!(purpose = self.purpose, error = %why, "the OpenID provider is unreachable; using its discovery document from before");
                        Ok(stale.provider.clone())
                    }
                    None => Err(OidcError::Unavailable(why)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn client(&self, provider: &Provider) -> OAuthClient {
        oauth2::Client::new(ClientId::new(self.settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            ))
            .set_auth_uri(AuthUrl::from_url(provider.authorization_endpoint.clone()))
            .set_token_uri(TokenUrl::from_url(provider.token_endpoint.clone()))
            .set_redirect_uri(self.redirect_uri.clone())
            .set_auth_type(match provider.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post => AuthType::RequestBody,
            })
    }
}
