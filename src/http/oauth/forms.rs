//! The form bodies of the back-channel endpoints, as the OpenAPI document describes them. Only
//! schemas: the handlers read bodies with [`crate::oauth::form::Form`], which sees repeated
//! parameters (a struct would silently keep one). Parameters not named here are ignored
//! (RFC 6749 §3.2): the document's modifier lets other string parameters through.
//!
//! Client authentication is not among them: it is the `client_secret_basic` security scheme,
//! whose description names the alternatives in the body (`client_id` + `client_secret`, or a
//! `client_assertion`). A client uses exactly one method (RFC 6749 §2.3), and a schema cannot
//! say "these fields only without that header".

#![allow(dead_code)]

use utoipa::ToSchema;

/// RFC 6749 §4.1.3 (a code) and §6 (a refresh token).
#[derive(ToSchema)]
pub struct TokenForm {
    #[schema(pattern = "^(authorization_code|refresh_token)$")]
    pub grant_type: String,
    /// With `authorization_code`: the code from the redirect; single use.
    pub code: Option<String>,
    /// With `authorization_code`: the redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// With `authorization_code`: the PKCE verifier (RFC 7636), 43–128 characters.
    pub code_verifier: Option<String>,
    /// With `refresh_token`: the refresh token; single use (it rotates).
    pub refresh_token: Option<String>,
    /// With `refresh_token`: a narrower set of the granted fields.
    pub scope: Option<String>,
}

/// RFC 7009 §2.1 and RFC 7662 §2.1.
#[derive(ToSchema)]
pub struct TokenHintForm {
    /// An access or refresh token of this client.
    #[schema(min_length = 1)]
    pub token: String,
    /// `access_token` or `refresh_token`; a hint only (the server looks for both).
    pub token_type_hint: Option<String>,
}

/// The OpenID provider's logout token (OpenID Connect Back-Channel Logout 1.0 §2.5).
#[derive(ToSchema)]
pub struct LogoutTokenForm {
    /// A JWT signed by the provider.
    #[schema(min_length = 1)]
    pub logout_token: String,
}

/// The consent page's form (a person's browser posts it, with the session cookie).
#[derive(ToSchema)]
pub struct ConsentDecisionForm {
    /// From the consent page; single use.
    pub consent_id: String,
    /// From the consent page.
    pub csrf_token: String,
    #[schema(pattern = "^(allow|deny)$")]
    pub decision: String,
    /// The ticked fields (scopes), repeated: a subset of those asked for.
    pub field: Vec<String>,
}
