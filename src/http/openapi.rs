//! The OpenAPI 3.1 document, generated from the handlers' annotations and committed as
//! `openapi/openapi.json`; a test fails when the committed copy is stale.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyhole",
        description = "Partner-access gateway with delegated authorisation: OAuth 2.0 consent (authorization code + PKCE), field-limited JWT access tokens, and the operations endpoints.",
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
    modifiers(&BearerScheme),
    components(schemas(
        crate::oauth::token::TokenResponse,
        crate::oauth::introspection::Introspection,
        crate::oauth::par::PushedAuthorizationForm,
        crate::oauth::par::PushedAuthorizationResponse,
    )),
    tags(
        (name = "oauth", description = "Authorization server (RFC 6749, 7636, 7009, 7662, 8414, 9068, 9126, 9207)"),
        (name = "partner", description = "Partner API: records reduced to the granted fields, every call logged"),
        (name = "ops", description = "Health, readiness and metrics"),
        (name = "admin", description = "Security team API: search, export and verify the access log; suspend partners; revoke grants; alerts. Bearer: an admin token from `keyhole admin token create`"),
    )
)]
pub struct ApiDoc;

/// The partner API's `bearer` security scheme (RFC 9068 access tokens).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> Result<String, serde_json::Error> {
    Ok(format!("{}\n", ApiDoc::openapi().to_pretty_json()?))
}
