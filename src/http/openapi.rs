//! The OpenAPI 3.1 document, generated from the handlers' annotations and committed as
//! `openapi/openapi.json`; a test fails when the committed copy is stale, and another when a
//! route the handlers declare is neither in it nor a page for people ([`super::routes`]).
//!
//! What every operation of a surface shares is added here, once, rather than repeated in each
//! annotation: the error bodies (`Problem`, or the RFC 6749 §5.2 object at the back-channel
//! endpoints), the refusals every admin call can get from its gate, and the links that let a
//! client (or schemathesis's stateful phase) go from a list to the actions on its items.

use crate::error::{OAuthErrorBody, Problem};
use utoipa::OpenApi;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    AuthorizationCode, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes, SecurityScheme,
};
use utoipa::openapi::{Content, Ref, RefOr, Response};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyhole",
        description = "Partner-access gateway with delegated authorisation: OAuth 2.0 consent (authorization code + PKCE, PAR, DPoP), field-limited JWT access tokens, the partner API, the security team's API, and the operations endpoints.\n\nErrors are RFC 9457 `application/problem+json` (`Problem`) everywhere but the OAuth back-channel endpoints (token, revocation, introspection, PAR), which answer with the RFC 6749 §5.2 object (`OAuthError`), and the authorization endpoint, which shows pages to people. A method a path does not list gets `405` with `Allow`.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::oauth::metadata::metadata,
        super::oauth::metadata::jwks,
        super::oauth::authorize::start,
        super::oauth::authorize::decide,
        super::oauth::endpoints::token,
        super::oauth::endpoints::revoke,
        super::oauth::endpoints::introspect,
        super::oauth::par::push,
        super::portal::backchannel::logout,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::partner::list,
        super::partner::item,
        super::admin::access_log,
        super::admin::verify,
        super::admin::partners,
        super::admin::suspend,
        super::admin::reinstate,
        super::admin::list_grants,
        super::admin::revoke_grant,
        super::admin::alerts_report,
        super::admin::audit,
    ),
    modifiers(&SecuritySchemes, &SharedResponses, &Links, &FormBodies),
    components(schemas(
        Problem,
        OAuthErrorBody,
        crate::oauth::token::TokenResponse,
        crate::oauth::introspection::Introspection,
        crate::oauth::par::PushedAuthorizationForm,
        crate::oauth::par::PushedAuthorizationResponse,
    )),
    tags(
        (name = "oauth", description = "Authorization server (RFC 6749, 7636, 7009, 7662, 8414, 9068, 9126, 9207, 9449)"),
        (name = "partner", description = "Partner API: records reduced to the granted fields, every call logged"),
        (name = "portal", description = "What the insurer's OpenID provider calls (back-channel logout)"),
        (name = "ops", description = "Health, readiness and metrics"),
        (name = "admin", description = "Security team API: search, export and verify the access log; suspend partners; revoke grants; alerts. Bearer: an admin token from `keyhole admin token create`"),
    )
)]
pub struct ApiDoc;

/// The back-channel endpoints, whose errors are the RFC 6749 §5.2 object.
const OAUTH_BACK_CHANNEL: &[&str] = &[
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/oauth/par",
];

/// Who may call what: a partner's access token, an admin token, a client's own credentials.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "partner_token",
            bearer(
                "JWT",
                "An RFC 9068 access token from the `partner_consent` flow. A DPoP-bound token \
                 (`token_type: DPoP`) is sent as `Authorization: DPoP <token>` with a `DPoP` \
                 proof header instead.",
            ),
        );
        components.add_security_scheme(
            "admin_token",
            bearer(
                "opaque (kh_adm_…)",
                "A security-team token from `keyhole admin token create`.",
            ),
        );
        components.add_security_scheme(
            "client_secret_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The partner's client_id and secret (RFC 6749 §2.3.1). Instead: \
                         `client_id` + `client_secret` in the form (client_secret_post), or \
                         `client_assertion_type` + `client_assertion` (RFC 7523 \
                         private_key_jwt) for partners registered with keys.",
                    ))
                    .build(),
            ),
        );
        let mut flow = AuthorizationCode::with_refresh_url(
            "/oauth/authorize",
            "/oauth/token",
            Scopes::new(),
            "/oauth/token",
        );
        flow.scopes = Scopes::one(
            "claims:status",
            "one field of the catalog per scope; the deployment's are `scopes_supported` in \
             /.well-known/oauth-authorization-server",
        );
        let mut consent = OAuth2::new([Flow::AuthorizationCode(flow)]);
        consent.description = Some(
            "How a partner gets a `partner_token`: the customer's consent through the \
             authorization code flow with PKCE S256 (and, for partners held to FAPI 2.0, PAR \
             and DPoP)."
                .into(),
        );
        components.add_security_scheme("partner_consent", SecurityScheme::OAuth2(consent));
    }
}

/// What every operation of a surface can answer, and the body of every error.
struct SharedResponses;

impl SharedResponses {
    fn problem() -> Content {
        Content::new(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
    }

    fn oauth_error() -> Content {
        Content::new(Some(RefOr::Ref(Ref::from_schema_name("OAuthError"))))
    }

    fn add(operation: &mut Operation, status: &str, description: &str) {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    }

    fn shared_by(path: &str, operation: &mut Operation) {
        if path.starts_with("/admin/v1/") || path == "/metrics" {
            Self::add(operation, "401", "Missing, unknown or revoked admin token");
            Self::add(
                operation,
                "429",
                "Too many calls without a valid token from this address; see Retry-After",
            );
            Self::add(
                operation,
                "503",
                "The database or the shared state cannot be reached (for admin calls: the \
                 audit trail cannot be written, so nothing was done)",
            );
        }
        if OAUTH_BACK_CHANNEL.contains(&path) {
            Self::add(operation, "400", "invalid_request");
            Self::add(operation, "401", "invalid_client");
            Self::add(
                operation,
                "413",
                "Body over 64 KiB: refused by the app-wide limit before the endpoint reads \
                 its form, so a Problem like every other oversize body",
            );
            Self::add(
                operation,
                "503",
                "temporarily_unavailable: the database or the shared state cannot be reached",
            );
        }
    }
}

impl utoipa::Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Its refusals have no body but two, both declared with it.
            if path == super::portal::backchannel::BACKCHANNEL_PATH {
                continue;
            }
            let back_channel = OAUTH_BACK_CHANNEL.contains(&path.as_str());
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                Self::shared_by(path, operation);
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if !status.starts_with('4') && !status.starts_with('5') {
                        continue;
                    }
                    // The app-wide body limit answers 413 before any endpoint reads its form.
                    let (media, body) = if back_channel && status != "413" {
                        ("application/json", Self::oauth_error())
                    } else {
                        ("application/problem+json", Self::problem())
                    };
                    // A body declared with another type (a page, a report) stays as declared.
                    if response.content.is_empty() || response.content.contains_key(media) {
                        response.content.insert(media.into(), body);
                    }
                }
            }
        }
    }
}

/// Form bodies take other parameters, which are ignored (RFC 6749 §3.2), but only one value of
/// each: other properties are strings, never lists.
struct FormBodies;

impl utoipa::Modify for FormBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AdditionalProperties, Object, Schema, Type};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["TokenForm", "TokenHintForm", "PushedAuthorizationForm"] {
            if let Some(RefOr::T(Schema::Object(form))) = components.schemas.get_mut(name) {
                form.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::T(
                    Schema::Object(Object::with_type(Type::String)),
                ))));
            }
        }
    }
}

/// Links from a list to the actions on its first item, and from a suspension to its undoing.
struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let link = |operation_id: &str, parameter: &str, from: &str| {
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(operation_id)
                    .parameter(parameter, from)
                    .build(),
            )
        };
        let links: [(&str, &str, &str, &str, &str, &str); 5] = [
            (
                "/admin/v1/partners",
                "get",
                "suspend_partner",
                "client_id",
                "$response.body#/items/0/client_id",
                "SuspendFirst",
            ),
            (
                "/admin/v1/partners",
                "get",
                "reinstate_partner",
                "client_id",
                "$response.body#/items/0/client_id",
                "ReinstateFirst",
            ),
            (
                "/admin/v1/partners/{client_id}/suspend",
                "post",
                "reinstate_partner",
                "client_id",
                "$response.body#/client_id",
                "Reinstate",
            ),
            (
                "/admin/v1/partners/{client_id}/reinstate",
                "post",
                "suspend_partner",
                "client_id",
                "$response.body#/client_id",
                "Suspend",
            ),
            (
                "/admin/v1/grants",
                "get",
                "revoke_grant",
                "id",
                "$response.body#/items/0/id",
                "RevokeFirst",
            ),
        ];
        for (path, method, operation_id, parameter, from, name) in links {
            let Some(item) = openapi.paths.paths.get_mut(path) else {
                continue;
            };
            let operation = match method {
                "get" => item.get.as_mut(),
                _ => item.post.as_mut(),
            };
            let Some(RefOr::T(ok)) = operation.and_then(|o| o.responses.responses.get_mut("200"))
            else {
                continue;
            };
            ok.links
                .insert(name.into(), link(operation_id, parameter, from));
        }
    }
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> Result<String, serde_json::Error> {
    let mut document = serde_json::to_value(ApiDoc::openapi())?;
    camel_case_links(&mut document);
    Ok(format!("{}\n", serde_json::to_string_pretty(&document)?))
}

/// utoipa 5.5 writes a Link's fields in snake case (`operation_id`); OpenAPI spells them
/// `operationId`, `operationRef` and `requestBody`, and a client ignores the others.
fn camel_case_links(document: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(Value::as_object_mut)
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.into(), value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{Cursor, Outcome};
    use crate::domain::{ClientId, GrantId, Scope, UpstreamCustomerId, scope::is_identifier};
    use crate::store::GrantStatusFilter;

    /// The `pattern` of query parameter `name` of `GET path`.
    fn pattern(document: &serde_json::Value, path: &str, name: &str) -> regex_lite::Regex {
        let parameters = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        let parameter = parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has {name}"));
        let pattern = parameter["schema"]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} {name} has a pattern"));
        regex_lite::Regex::new(pattern).unwrap()
    }

    fn agree(regex: &regex_lite::Regex, parses: impl Fn(&str) -> bool, samples: &[&str]) {
        for sample in samples {
            assert_eq!(
                regex.is_match(sample),
                parses(sample),
                "pattern {regex} and the parser disagree on {sample:?}"
            );
        }
    }

    /// Every parameter pattern of the document against the parser its handler uses, on the
    /// edge cases: a pattern that refuses what the server takes, or takes what it refuses,
    /// misleads every generated client and validator (the red team found `outcome` missing
    /// `unavailable`).
    #[test]
    fn parameter_patterns_accept_exactly_what_the_parsers_accept() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let long = "a".repeat(64);
        let longer = "a".repeat(65);
        let ids = [
            "", ".", "..", "...", ".a", "..a", "a.", "a..", "a", "-", "_", "A_b.c-9", "CU-1001",
            "a b", "é", "a/b", "a%2F", &long, &longer,
        ];
        for (path, name) in [
            ("/admin/v1/access-log", "client_id"),
            ("/admin/v1/grants", "client_id"),
        ] {
            agree(
                &pattern(&document, path, name),
                |s| ClientId::parse(s).is_ok(),
                &ids,
            );
        }
        for path in ["/admin/v1/access-log", "/admin/v1/grants"] {
            let regex = pattern(&document, path, "customer_id");
            agree(&regex, |s| UpstreamCustomerId::parse(s).is_ok(), &ids);
        }
        let uuid = "0190a5e8-7c1d-7000-8000-00000000abcd";
        agree(
            &pattern(&document, "/admin/v1/access-log", "grant_id"),
            |s| GrantId::parse(s).is_ok(),
            &[
                uuid,
                "0190A5E8-7C1D-7000-8000-00000000ABCD",
                "0190a5e87c1d7000800000000000abcd",
                "{0190a5e8-7c1d-7000-8000-00000000abcd}",
                "urn:uuid:0190a5e8-7c1d-7000-8000-00000000abcd",
                "",
            ],
        );
        let names = [
            "claims", "c", "c_2", "C", "2c", "_c", "c-d", "", &long, &longer,
        ];
        agree(
            &pattern(&document, "/admin/v1/access-log", "resource"),
            is_identifier,
            &names,
        );
        agree(
            &pattern(&document, "/admin/v1/access-log", "field"),
            |s| s.parse::<Scope>().is_ok(),
            &[
                "claims:status",
                "claims:",
                ":status",
                "claims:status:x",
                "Claims:status",
                "claims status",
                "c:s",
                "claims:2s",
            ],
        );
        let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        let mut samples = outcomes.clone();
        samples.extend(["", "OK", "okay", "ok|denied"]);
        agree(
            &pattern(&document, "/admin/v1/access-log", "outcome"),
            |s| Outcome::parse(s).is_some(),
            &samples,
        );
        agree(
            &pattern(&document, "/admin/v1/grants", "status"),
            |s| GrantStatusFilter::parse(s).is_some(),
            &["active", "revoked", "expired", "Active", "", "pending"],
        );
        let cursors = [
            "1",
            "0",
            "01",
            "-1",
            "+1",
            " 1",
            "1e3",
            "999999999999999999",
            "1000000000000000000",
            "١",
            "",
        ];
        for path in ["/admin/v1/access-log", "/admin/v1/audit"] {
            let regex = pattern(&document, path, "cursor");
            agree(&regex, |s| Cursor::decode(s).is_ok(), &cursors);
        }
        let grant_cursors = [
            format!("1700000000.000000001.{uuid}"),
            format!("0.000000000.{uuid}"),
            format!("99999999999.999999999.{uuid}"),
            format!("999999999999.000000000.{uuid}"),
            format!("1700000000.00000001.{uuid}"),
            format!("1700000000.1000000000.{uuid}"),
            format!("1700000000.000000001.{}", uuid.to_uppercase()),
            format!("+1700000000.000000001.{uuid}"),
            "1700000000.000000001".to_owned(),
            String::new(),
        ];
        let grant_cursors: Vec<&str> = grant_cursors.iter().map(String::as_str).collect();
        agree(
            &pattern(&document, "/admin/v1/grants", "cursor"),
            |s| super::super::admin::parse_grant_cursor(s).is_ok(),
            &grant_cursors,
        );
    }
}
