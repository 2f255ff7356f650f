//! Console forms: every POST handler takes its form as [`Checked`], which refuses it unless it
//! carries the person's CSRF token — so no handler can forget the check.

use super::gate::Person;
use crate::error::PageError;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

/// A form that names the CSRF token it was rendered with.
pub trait CsrfProtected {
    fn csrf_token(&self) -> &str;
}

/// A form whose CSRF token matched the signed-in person's session.
pub struct Checked<T>(pub T);

impl<T: DeserializeOwned + CsrfProtected + 'static> FromRequest for Checked<T> {
    type Error = PageError;
    type Future = LocalBoxFuture<'static, Result<Self, PageError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let person = Person::extract(req).into_inner();
        let form = web::Form::<T>::from_request(req, payload);
        Box::pin(async move {
            let person = person?;
            let form = form
                .await
                .map_err(|e| PageError::BadRequest(format!("the form is not valid: {e}")))?
                .into_inner();
            let presented = form.csrf_token().as_bytes();
            if presented.is_empty() || !bool::from(presented.ct_eq(person.csrf_token().as_bytes()))
            {
                return Err(PageError::Forbidden);
            }
            Ok(Checked(form))
        })
    }
}
