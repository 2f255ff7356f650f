//! HTTP to the provider: short timeouts, no redirects, bounded answers. A provider that is slow
//! or down must cost a sign-in page five seconds at most, and a hostile or broken one must not
//! make us buffer an unbounded body.

use oauth2::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use std::time::Duration;
use url::Url;

/// Connecting and the whole exchange each get this long.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Discovery documents and token answers are a few kilobytes; key sets of a dozen RSA keys
/// stay below 32 KiB. Anything much larger is not an answer we want.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No connection, a timeout, or a 5xx: the provider is not there right now.
    #[error("{0}")]
    Unreachable(String),
    /// An answer, but not one we can use.
    #[error("{0}")]
    Unusable(String),
}

impl FetchError {
    /// The same failure, given again without asking: the log says it is a repeat.
    pub(crate) fn again(self) -> Self {
        let repeat = |why: String| format!("{why} (a moment ago; not asked again yet)");
        match self {
            FetchError::Unreachable(why) => FetchError::Unreachable(repeat(why)),
            FetchError::Unusable(why) => FetchError::Unusable(repeat(why)),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ProviderHttp {
    client: reqwest::Client,
}

impl ProviderHttp {
    pub(crate) fn new() -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            // A provider's endpoints are fixed by its discovery document: a redirect is
            // either a misconfiguration or someone steering us elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyhole/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Unusable(format!("building the HTTP client: {e}")))?;
        Ok(Self { client })
    }

    /// A JSON document (discovery, keys) from a GET answered 200.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, url: &Url) -> Result<T, FetchError> {
        let response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(FetchError::Unreachable(format!("{url} answered {status}")));
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Unusable(format!("{url} answered {status}")));
        }
        let body = read_bounded(url, response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| FetchError::Unusable(format!("{url} is not the expected JSON: {e}")))
    }

    /// The oauth2 crate's requests (the code exchange), bounded the same way. A 5xx becomes
    /// `Unreachable`, so a provider that is down reads as down, not as a refusal.
    pub(crate) async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let url = Url::parse(&request.uri().to_string())
            .map_err(|e| FetchError::Unusable(format!("a request URL: {e}")))?;
        let request = reqwest::Request::try_from(request)
            .map_err(|e| FetchError::Unusable(format!("building a request to {url}: {e}")))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(FetchError::Unreachable(format!("{url} answered {status}")));
        }
        let headers = response.headers().clone();
        let body = read_bounded(&url, response).await?;
        let mut answer = HttpResponse::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

fn unreachable(url: &Url, e: &reqwest::Error) -> FetchError {
    FetchError::Unreachable(format!("{url}: {e}"))
}

/// The body, refused as soon as it passes [`MAX_DOCUMENT_BYTES`].
async fn read_bounded(url: &Url, mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
    let too_large = || {
        FetchError::Unusable(format!(
            "{url} answered more than {MAX_DOCUMENT_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(url, &e))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
