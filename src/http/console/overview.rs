//! The console's overview (`/console`).

use super::gate::Person;
use crate::app::App;
use crate::error::PageError;
use crate::http::pages::{page, render};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};

#[get("")]
pub async fn show(_app: web::Data<App>, person: Person) -> Result<HttpResponse, PageError> {
    let body = render(
        "console/overview.html",
        minijinja::context! { person => minijinja::context! { email => &person.email, csrf_token => person.csrf_token() } },
    )?;
    Ok(page(StatusCode::OK, body, None))
}
