//! The HTTP client to the insurer's claims API: pooled keep-alive connections, a connect
//! timeout and a total timeout, a cap on body size. Upstream bodies never reach a partner;
//! they are parsed here and projected by the proxy.

use crate::config::Upstream as UpstreamSettings;
use actix_web::http::StatusCode;
use std::time::Duration;

/// Claims are small; anything this large is not a claim.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("the upstream could not be reached: {0}")]
    Unreachable(String),
    #[error("the upstream has no such record")]
    NotFound,
    #[error("the upstream answered {0}")]
    Status(u16),
    #[error("the upstream answered something that is not the expected JSON")]
    InvalidBody,
}

/// One per worker thread: awc's client is single-threaded, which keeps its pool lock-free.
pub struct UpstreamClient {
    client: awc::Client,
    base: String,
}

impl UpstreamClient {
    pub fn new(settings: &UpstreamSettings) -> Self {
        // rustls needs one process-wide crypto provider; when a build links two (test builds
        // do), it refuses to guess. Choosing explicitly makes every build behave the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connector = awc::Connector::new()
            .timeout(Duration::from_millis(settings.connect_timeout_ms))
            .limit(256);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_millis(settings.timeout_ms))
            .disable_redirects()
            .finish();
        Self {
            client,
            base: settings.base_url.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// GETs `path` (already built from validated parts) and returns the body as it came. The
    /// proxy parses it (borrowed, see `proxy::projection`); a body that is not JSON is
    /// [`UpstreamError::InvalidBody`] there.
    pub async fn get_body(&self, path: &str) -> Result<bytes::Bytes, UpstreamError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .client
            .get(url)
            .insert_header(("accept", "application/json"))
            .send()
            .await
            .map_err(|e| match e {
                awc::error::SendRequestError::Timeout => UpstreamError::Timeout,
                awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
                    UpstreamError::Timeout
                }
                other => UpstreamError::Unreachable(other.to_string()),
            })?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(UpstreamError::NotFound),
            other => return Err(UpstreamError::Status(other.as_u16())),
        }
        response.body().limit(MAX_BODY).await.map_err(|e| match e {
            awc::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                UpstreamError::Timeout
            }
            _ => UpstreamError::InvalidBody,
        })
    }
}
