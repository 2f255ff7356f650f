use crate::app::App;
use crate::oauth::client_assertion::SIGNING_ALGORITHM_NAMES;
use crate::tokens::JWKS_MAX_AGE;
use actix_web::{HttpResponse, get, http::header, web};
use serde_json::json;

/// RFC 8414 authorization server metadata.
#[utoipa::path(
    tag = "oauth",
    operation_id = "authorization_server_metadata",
    responses((status = 200, description = "Authorization server metadata (RFC 8414)", body = Object, content_type = "application/json"))
)]
#[get("/.well-known/oauth-authorization-server")]
pub async fn metadata(app: web::Data<App>) -> HttpResponse {
    let issuer = app.issuer();
    let scopes: Vec<String> = app
        .catalog
        .all_scopes()
        .iter()
        .map(ToString::to_string)
        .collect();
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    let signing_algs = SIGNING_ALGORITHM_NAMES;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oauth/authorize"),
            "token_endpoint": format!("{issuer}/oauth/token"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "revocation_endpoint": format!("{issuer}/oauth/revoke"),
            "introspection_endpoint": format!("{issuer}/oauth/introspect"),
            "pushed_authorization_request_endpoint": format!("{issuer}/oauth/par"),
            // Every partner when set; a partner registered with `--require-par` must push
            // even when it is not (RFC 9126 §6: a client's own registration may require it).
            "require_pushed_authorization_requests": app.settings.require_par,
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "token_endpoint_auth_signing_alg_values_supported": signing_algs,
            "revocation_endpoint_auth_signing_alg_values_supported": signing_algs,
            "introspection_endpoint_auth_signing_alg_values_supported": signing_algs,
            "authorization_response_iss_parameter_supported": true,
            "dpop_signing_alg_values_supported": crate::dpop::SIGNING_ALGS,
        }))
}

/// The public keys that verify access tokens: the one that signs, a rotated one that signs
/// soon, and retired ones whose tokens may still be valid.
#[utoipa::path(
    tag = "oauth",
    operation_id = "jwks",
    responses((status = 200, description = "JSON Web Key Set (RFC 7517)", body = Object, content_type = "application/json"))
)]
#[get("/.well-known/jwks.json")]
pub async fn jwks(app: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={}", JWKS_MAX_AGE.as_secs()),
        ))
        .json(app.keys.jwks())
}
