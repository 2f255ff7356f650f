//! Every error that reaches a client is mapped here, in one place per response style:
//!
//! - [`OAuthError`]: the RFC 6749 §5.2 JSON form, for `/oauth/token`, `/oauth/revoke`,
//!   `/oauth/introspect` and `/oauth/par`;
//! - [`PageError`]: an HTML page, for what a person sees in a browser;
//! - [`ApiError`]: RFC 9457 problem+json with a stable `type`, for everything else.
//!
//! Internal failures become an opaque 500 (or 503 when a dependency is down) carrying the
//! request id; the cause chain goes to the log, never to the client.

use crate::proxy::ProxyError;
use crate::state::StateError;
use crate::store::StoreError;
use crate::tokens::KeyError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// Failures of a dependency or of the code itself, never shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Internal {
    /// A dependency that is down is a 503 (retry later); anything else is a 500.
    fn status(&self) -> StatusCode {
        match self {
            Internal::State(StateError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Internal::Store(StoreError::Db(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Internal::Store(_) | Internal::State(_) | Internal::Keys(_) | Internal::Other(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn log(&self) {
        tracing::error!(error = %self, "internal error");
    }
}

// ----- RFC 6749 §5.2 -----------------------------------------------------------------------

/// The error codes of RFC 6749 §5.2 and §4.1.2.1 (and RFC 7009 §2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedTokenType,
    /// RFC 9449 §5: the DPoP proof is missing, invalid, or replayed.
    InvalidDpopProof,
    /// An authorization request (at `/oauth/authorize` or pushed to `/oauth/par`) asked for
    /// something other than `response_type=code`.
    UnsupportedResponseType,
}

impl OAuthErrorCode {
    /// The code as it travels in a redirect's query (the same text as its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::UnsupportedTokenType => "unsupported_token_type",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorCode::InvalidDpopProof => "invalid_dpop_proof",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{code:?}: {description}")]
    Client {
        code: OAuthErrorCode,
        description: String,
        /// The client tried HTTP Basic, so a 401 must name that scheme (RFC 6749 §5.2).
        basic_auth: bool,
    },
    /// RFC 9449 §8: the proof needs this server's nonce, which the answer carries.
    #[error("use_dpop_nonce")]
    UseDpopNonce { nonce: String },
    /// An authenticated client over one of its quotas (pushed authorization requests per
    /// minute): `429` with `Retry-After`, and `temporarily_unavailable` (RFC 6749 §4.1.2.1's
    /// "try again later"), the closest registered code, so a generic client backs off.
    #[error("too many requests: {description}")]
    TooMany {
        description: String,
        retry_after: std::time::Duration,
    },
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self::Client {
            code,
            description: description.into(),
            basic_auth: false,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, description)
    }

    pub fn invalid_client(basic_auth: bool) -> Self {
        Self::Client {
            code: OAuthErrorCode::InvalidClient,
            description: "client authentication failed".into(),
            basic_auth,
        }
    }
}

/// Lets `?` lift store, state and key errors straight into each layer's error.
macro_rules! lift_internal {
    ($($source:ty),*) => {$(
        impl From<$source> for OAuthError {
            fn from(e: $source) -> Self { Self::Internal(e.into()) }
        }
        impl From<$source> for ApiError {
            fn from(e: $source) -> Self { Self::Internal(e.into()) }
        }
        impl From<$source> for PageError {
            fn from(e: $source) -> Self { Self::Internal(e.into()) }
        }
    )*};
}
lift_internal!(StoreError, StateError, KeyError, anyhow::Error);

/// The RFC 6749 §5.2 error body (RFC 7009, 7662, 9126 and 9449 reuse it).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OAuthError)]
pub struct OAuthErrorBody<'a> {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`, `unsupported_token_type`,
    /// `unsupported_response_type`, `invalid_dpop_proof`, `use_dpop_nonce`,
    /// `temporarily_unavailable` or `server_error`.
    #[schema(value_type = String, example = "invalid_grant")]
    pub error: OAuthErrorCode,
    /// One sentence for the partner's developer; never shown to a customer.
    pub error_description: &'a str,
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            OAuthError::Client {
                code: OAuthErrorCode::InvalidClient,
                ..
            } => StatusCode::UNAUTHORIZED,
            OAuthError::Client { .. } | OAuthError::UseDpopNonce { .. } => StatusCode::BAD_REQUEST,
            OAuthError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            OAuthError::Internal(internal) => internal.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        match self {
            OAuthError::Client {
                code,
                description,
                basic_auth,
            } => {
                if *basic_auth && *code == OAuthErrorCode::InvalidClient {
                    response.insert_header((
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"keyhole\""),
                    ));
                }
                response.json(OAuthErrorBody {
                    error: *code,
                    error_description: description,
                })
            }
            OAuthError::UseDpopNonce { nonce } => response
                .insert_header(("DPoP-Nonce", nonce.as_str()))
                .json(serde_json::json!({
                    "error": "use_dpop_nonce",
                    "error_description": "DPoP proofs must carry the nonce in the DPoP-Nonce header",
                })),
            OAuthError::TooMany {
                description,
                retry_after,
            } => {
                // Whole seconds, rounded up: a client that waits exactly that long is allowed.
                let seconds = retry_after
                    .as_secs()
                    .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
                    .max(1);
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
                response.json(serde_json::json!({
                    "error": "temporarily_unavailable",
                    "error_description": description,
                }))
            }
            OAuthError::Internal(internal) => {
                internal.log();
                response.json(serde_json::json!({
                    "error": if internal.status() == StatusCode::SERVICE_UNAVAILABLE {
                        "temporarily_unavailable"
                    } else {
                        "server_error"
                    },
                    "error_description": "the server could not complete the request; see the request id",
                }))
            }
        }
    }
}

// ----- RFC 9457 problem+json ---------------------------------------------------------------

/// The problem types; each has a stable URN that clients may match on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// RFC 6750: a missing, malformed, expired or revoked access token.
    #[error("{0}")]
    InvalidToken(String),
    /// RFC 9449 §7.1: a DPoP-bound token's proof is missing, invalid or replayed.
    #[error("{0}")]
    InvalidDpopProof(String),
    /// RFC 9449 §9: the proof needs this server's nonce, which the answer carries.
    #[error("DPoP proofs must carry the nonce in the DPoP-Nonce header")]
    UseDpopNonce { nonce: String },
    #[error("{0}")]
    InsufficientScope(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the requested resource does not exist")]
    NotFound,
    /// A known path asked with a method it does not take; the value is its `Allow` header.
    #[error("this path takes {0} only")]
    MethodNotAllowed(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("rate limit exceeded; retry after {retry_after_seconds} seconds")]
    RateLimited {
        retry_after_seconds: u64,
        policy: String,
        current: String,
    },
    #[error("the claims service did not answer in time")]
    UpstreamTimeout,
    #[error("the claims service could not answer")]
    UpstreamFailed,
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// A call without a valid token past its address's allowance.
impl From<crate::unauthenticated::Refused> for ApiError {
    fn from(r: crate::unauthenticated::Refused) -> Self {
        ApiError::RateLimited {
            retry_after_seconds: r.retry_after_seconds,
            policy: r.policy,
            current: r.current,
        }
    }
}

/// The partner API's refusals, each with its one status.
impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::InvalidToken(why) => ApiError::InvalidToken(why),
            // The handler answers `UseNonce` with a nonce of its own; this is the fallback.
            ProxyError::Dpop(e) => ApiError::InvalidDpopProof(e.to_string()),
            ProxyError::UnknownResource | ProxyError::NotFound => ApiError::NotFound,
            ProxyError::BadId => {
                ApiError::BadRequest("record ids are 1 to 64 letters, digits, `-` or `_`".into())
            }
            ProxyError::InsufficientScope => {
                ApiError::InsufficientScope("the token grants no field of this resource".into())
            }
            ProxyError::RateLimited {
                retry_after_seconds,
                headers,
            } => ApiError::RateLimited {
                retry_after_seconds,
                // Made once per partner as bytes; a refusal is the rare case that copies it.
                policy: String::from_utf8_lossy(&headers.policy).into_owned(),
                current: headers.current,
            },
            ProxyError::UpstreamTimeout => ApiError::UpstreamTimeout,
            ProxyError::UpstreamFailed => ApiError::UpstreamFailed,
            ProxyError::Unavailable(internal) => ApiError::Internal(internal),
            ProxyError::LogUnavailable => ApiError::Unavailable(
                "the access log cannot be written, so no data can be released; retry later".into(),
            ),
        }
    }
}

/// An RFC 9457 problem: every error of the partner, security-team and operations APIs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// A stable URN per kind of problem, e.g. `urn:keyhole:problem:invalid-token`; match on it.
    #[serde(rename = "type")]
    #[schema(example = "urn:keyhole:problem:not-found")]
    pub type_: &'a str,
    /// The kind's short name.
    pub title: &'a str,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request; for internal errors, only the request id to quote.
    pub detail: String,
}

impl ApiError {
    fn type_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("urn:keyhole:problem:bad-request", "Bad request"),
            ApiError::InvalidToken(_) => ("urn:keyhole:problem:invalid-token", "Invalid token"),
            ApiError::InvalidDpopProof(_) => (
                "urn:keyhole:problem:invalid-dpop-proof",
                "Invalid DPoP proof",
            ),
            ApiError::UseDpopNonce { .. } => {
                ("urn:keyhole:problem:use-dpop-nonce", "DPoP nonce required")
            }
            ApiError::InsufficientScope(_) => (
                "urn:keyhole:problem:insufficient-scope",
                "Insufficient scope",
            ),
            ApiError::Unauthorized(_) => ("urn:keyhole:problem:unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => ("urn:keyhole:problem:forbidden", "Forbidden"),
            ApiError::NotFound => ("urn:keyhole:problem:not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => (
                "urn:keyhole:problem:method-not-allowed",
                "Method not allowed",
            ),
            ApiError::PayloadTooLarge(_) => {
                ("urn:keyhole:problem:payload-too-large", "Payload too large")
            }
            ApiError::RateLimited { .. } => {
                ("urn:keyhole:problem:rate-limited", "Too many requests")
            }
            ApiError::UpstreamTimeout => {
                ("urn:keyhole:problem:upstream-timeout", "Upstream timeout")
            }
            ApiError::UpstreamFailed => ("urn:keyhole:problem:upstream-failed", "Bad gateway"),
            ApiError::Unavailable(_) => ("urn:keyhole:problem:unavailable", "Service unavailable"),
            ApiError::Internal(i) if i.status() == StatusCode::SERVICE_UNAVAILABLE => {
                ("urn:keyhole:problem:unavailable", "Service unavailable")
            }
            ApiError::Internal(_) => ("urn:keyhole:problem:internal", "Internal error"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidToken(_)
            | ApiError::InvalidDpopProof(_)
            | ApiError::UseDpopNonce { .. }
            | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(internal) => internal.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (type_, title) = self.type_and_title();
        let detail = match self {
            ApiError::Internal(internal) => {
                internal.log();
                "the server could not complete the request; quote the X-Request-Id header"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            ApiError::InvalidToken(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                ));
            }
            ApiError::InvalidDpopProof(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "DPoP error=\"invalid_dpop_proof\", algs=\"ES256 EdDSA PS256\"",
                    ),
                ));
            }
            ApiError::UseDpopNonce { nonce } => {
                response
                    .insert_header((
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(
                            "DPoP error=\"use_dpop_nonce\", algs=\"ES256 EdDSA PS256\"",
                        ),
                    ))
                    .insert_header(("DPoP-Nonce", nonce.as_str()));
            }
            ApiError::InsufficientScope(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                ));
            }
            ApiError::RateLimited {
                retry_after_seconds,
                policy,
                current,
            } => {
                response
                    .insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()))
                    .insert_header(("RateLimit-Policy", policy.as_str()))
                    .insert_header(("RateLimit", current.as_str()));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"keyhole-admin\""),
                ));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            ApiError::BadRequest(_)
            | ApiError::Forbidden(_)
            | ApiError::NotFound
            | ApiError::PayloadTooLarge(_)
            | ApiError::UpstreamTimeout
            | ApiError::UpstreamFailed
            | ApiError::Unavailable(_)
            | ApiError::Internal(_) => {}
        }
        response.json(Problem {
            type_,
            title,
            status: status.as_u16(),
            detail,
        })
    }
}

// ----- HTML pages --------------------------------------------------------------------------

/// An error shown to a person: never a redirect to an unverified address.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("this page does not exist")]
    NotFound,
    #[error("your session has expired or the form was already used; please start again")]
    Forbidden,
    #[error("{0}")]
    TooMany(String),
    /// A refusal with its own explanation (e.g. not in the console's group).
    #[error("{0}")]
    Refused(String),
    /// Something we depend on outside (the sign-in provider) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Something we depend on outside answered in a way we cannot use.
    #[error("{0}")]
    BadGateway(String),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// A sign-in through a provider that did not complete. The person reads one plain sentence per
/// kind, never the provider's own text; the log gets the reason.
impl From<crate::oidc::OidcError> for PageError {
    fn from(e: crate::oidc::OidcError) -> Self {
        use crate::oidc::{OidcError, Refusal};
        match e {
            OidcError::Unavailable(why) => {
                tracing::warn!(error = %why, "OpenID provider unreachable");
                PageError::Unavailable(
                    "The sign-in service cannot be reached right now. Please try again in a few \
                     minutes."
                        .into(),
                )
            }
            OidcError::Provider(why) => {
                tracing::error!(error = %why, "OpenID provider answer unusable");
                PageError::BadGateway(
                    "The sign-in service gave an answer we cannot use. Please try again later, \
                     or tell the administrators if it persists."
                        .into(),
                )
            }
            OidcError::Refused(refusal) => {
                tracing::warn!(reason = %refusal, "OpenID sign-in refused");
                match refusal {
                    Refusal::ParameterTooLong | Refusal::MissingCode => PageError::BadRequest(
                        "The answer from the sign-in service is malformed. Please start again."
                            .into(),
                    ),
                    Refusal::ProviderError(_) => PageError::Refused(
                        "The sign-in service did not sign you in (it was cancelled or refused). \
                         Please start again."
                            .into(),
                    ),
                    Refusal::NoPendingSignIn
                    | Refusal::StateMismatch
                    | Refusal::IssuerMismatch
                    | Refusal::CodeRejected(_)
                    | Refusal::IdToken(_)
                    | Refusal::LogoutToken(_) => PageError::Refused(
                        "This sign-in could not be completed: it expired, was already used, or \
                         did not come from this browser. Please start again."
                            .into(),
                    ),
                }
            }
            OidcError::State(e) => PageError::Internal(e.into()),
            OidcError::Secret(e) => PageError::Internal(anyhow::Error::from(e).into()),
        }
    }
}

impl PageError {
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Forbidden => StatusCode::FORBIDDEN,
            PageError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            PageError::Refused(_) => StatusCode::FORBIDDEN,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            PageError::Internal(internal) => internal.status(),
        }
    }

    /// What the person reads; internal details stay in the log.
    pub fn message(&self) -> String {
        match self {
            PageError::Internal(internal) => {
                internal.log();
                "Something went wrong on our side. Please try again in a moment.".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        crate::http::pages::error_page(self.status(), &self.message())
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&s)
    }
}
