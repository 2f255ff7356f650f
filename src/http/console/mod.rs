//! The security console (`/console`): server-rendered pages for people on the security team —
//! sign-in, the overview with charts, the access-log search and export, partners (suspend,
//! reinstate) and grants (revoke). No script: the pages carry the portal's CSP; every form
//! carries a CSRF token ([`form::Checked`]); every request passes [`gate::gate`], which puts
//! it in the admin audit trail under the person's name.

pub mod access_log;
pub mod actions;
pub mod form;
pub mod gate;
pub mod grants;
pub mod login;
pub mod oidc;
pub mod overview;
pub mod partners;
pub mod session;
pub mod view;

use actix_web::web;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Sign-in comes before the gated scope, which would otherwise send it to itself.
    cfg.service(login::show)
        .service(login::submit)
        .service(oidc::start)
        .service(oidc::callback)
        .service(
            web::scope("/console")
                .wrap(actix_web::middleware::from_fn(gate::gate))
                .service(login::show_password)
                .service(login::set_password)
                .service(login::logout)
                .service(overview::show)
                .service(access_log::search)
                // Before `/access-log/{id}`, which would otherwise take it.
                .service(access_log::export)
                .service(access_log::record)
                .service(partners::list)
                .service(partners::show)
                .service(partners::confirm_suspend)
                .service(partners::suspend)
                .service(partners::confirm_reinstate)
                .service(partners::reinstate)
                .service(grants::show)
                .service(grants::confirm_revoke)
                .service(grants::revoke)
                .default_service(web::to(not_found)),
        );
}

async fn not_found() -> Result<actix_web::HttpResponse, crate::error::PageError> {
    Err(crate::error::PageError::NotFound)
}
