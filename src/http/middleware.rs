//! Cross-cutting request handling: request ids, the source address, the body cap, and the
//! root tracing span.

use super::MAX_BODY_BYTES;
use crate::domain::MAX_STORED_CHARS;
use crate::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage, ResponseError};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of this request, as accepted from the client or generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Accepts a well-formed `X-Request-Id` from the caller (so ids can be followed across
/// systems) or makes one; either way it ends up in the span, the extensions and the answer.
/// Returns the id and its header value: the caller's own value is echoed as it came (a
/// shared copy), so only a generated id is turned into a header.
fn request_id(req: &ServiceRequest) -> (String, Option<HeaderValue>) {
    let given = req.headers().get(&REQUEST_ID).filter(|v| {
        let v = v.as_bytes();
        !v.is_empty()
            && v.len() <= 64
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    // Checked above: ASCII only, so `to_str` cannot fail.
    match given.and_then(|v| Some((v.to_str().ok()?.to_owned(), v.clone()))) {
        Some((id, value)) => (id, Some(value)),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            let value = HeaderValue::from_str(&id).ok();
            (id, value)
        }
    }
}

/// At most the first `MAX_STORED_CHARS` characters, borrowed (`domain::bounded` without the
/// copy): span fields are formatted by the subscriber, and only when the span is enabled.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_STORED_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

pub struct KeyholeRootSpan;

impl RootSpanBuilder for KeyholeRootSpan {
    /// The span every log line of a request carries. Built by hand rather than with the
    /// crate's default fields: those hold the whole target (query included), the whole
    /// User-Agent, and a client address taken from any caller's `X-Forwarded-For`, which
    /// would let a caller grow the process log and forge its address there.
    /// Field values are expressions, not locals: the macro evaluates them only when the span
    /// is enabled, so a process logging at `warn` pays nothing for them.
    fn on_request_start(request: &ServiceRequest) -> Span {
        let extensions = request.extensions();
        tracing::info_span!(
            "HTTP request",
            http.method = %clip(request.method().as_str()),
            http.target = %clip(request.path()),
            http.client_ip = ?extensions.get::<super::source::SourceAddr>().and_then(|s| s.0),
            request_id = %extensions.get::<RequestId>().map_or("", |r| r.0.as_str()),
            otel.kind = "server",
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Marks a `HEAD` request, which the router sees as the `GET` it asks about (RFC 9110 §9.3.2:
/// the same answer without its content). The connection still knows the request was `HEAD`
/// and sends the headers only; the admin audit trail records `HEAD`.
#[derive(Debug, Clone, Copy)]
pub struct Head;

/// Runs before everything else: answers `HEAD` as `GET`, assigns the request id, and refuses
/// oversized bodies by their declared length before any handler reads them.
pub async fn outermost(
    mut req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
        req.extensions_mut().insert(Head);
    }
    let (id, header) = request_id(&req);
    req.extensions_mut().insert(RequestId(id));
    let trusted = req
        .app_data::<actix_web::web::Data<crate::app::App>>()
        .map(|app| app.settings.trusted_proxies.as_slice())
        .unwrap_or_default();
    let source = super::source::resolve(req.peer_addr().map(|a| a.ip()), req.headers(), trusted);
    req.extensions_mut()
        .insert(super::source::SourceAddr(source));
    let too_large = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > MAX_BODY_BYTES);
    let mut response = if too_large {
        let response = ApiError::PayloadTooLarge(MAX_BODY_BYTES).error_response();
        req.into_response(response).map_into_right_body()
    } else {
        next.call(req).await?.map_into_left_body()
    };
    if let Some(value) = header {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// The admin-audit row of a request, before anyone is named on it: when, which request, what
/// (method, path bounded, the query only as a hash: the caller chose both), and from where.
pub fn audit_entry(
    req: &actix_web::HttpRequest,
    at: chrono::DateTime<chrono::Utc>,
) -> crate::store::AdminAuditEntry {
    use actix_web::HttpMessage;
    let query = req.query_string();
    crate::store::AdminAuditEntry {
        at,
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        token_id: None,
        token_name: None,
        method: if req.extensions().get::<Head>().is_some() {
            "HEAD".to_owned()
        } else {
            crate::domain::bounded(req.method().as_str())
        },
        // The path as the router matched it (percent-encoded unreserved characters decoded):
        // `/partners/x/%72einstate` is recorded as the reinstatement it was.
        path: crate::domain::bounded(req.match_info().as_str()),
        query_sha256: (!query.is_empty()).then(|| crate::secrets::token_hash(query)),
        status: 0,
        client_ip: super::source::source_addr(req).map(|ip| ip.to_string()),
        console_user_id: None,
        console_user_email: None,
        reason: None,
    }
}
