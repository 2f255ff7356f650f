//! The demo partner's landing page, mounted only by `keyhole demo`: it stands in for the
//! partner's own site so the walkthrough can show the code and the next command.

use crate::http::pages::{page, render};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use serde::Deserialize;

pub struct DemoPartner {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub code_verifier: String,
    pub token_url: String,
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[get("/demo/callback")]
pub async fn callback(
    demo: web::Data<DemoPartner>,
    query: web::Query<Callback>,
) -> Result<HttpResponse, crate::error::PageError> {
    let curl = query.code.as_deref().map(|code| {
        format!(
            "curl -s -u '{}:{}' -d grant_type=authorization_code -d code='{}' \\\n  -d redirect_uri='{}' -d code_verifier='{}' {}",
            demo.client_id, demo.client_secret, code, demo.redirect_uri, demo.code_verifier, demo.token_url
        )
    });
    let body = render(
        "demo_callback.html",
        minijinja::context! {
            code => query.code, curl, error => query.error, error_description => query.error_description,
        },
    )?;
    Ok(page(StatusCode::OK, body, None))
}
