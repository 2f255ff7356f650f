//! Server-rendered pages: the templates (embedded at build time) and the headers every page
//! carries.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, get};
use minijinja::Environment;
use serde::Serialize;
use std::sync::LazyLock;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("consent.html", include_str!("../../templates/consent.html")),
    ("portal.html", include_str!("../../templates/portal.html")),
    ("grant.html", include_str!("../../templates/grant.html")),
    ("revoke.html", include_str!("../../templates/revoke.html")),
    (
        "signed_out.html",
        include_str!("../../templates/signed_out.html"),
    ),
    (
        "console/base.html",
        include_str!("../../templates/console/base.html"),
    ),
    (
        "console/login.html",
        include_str!("../../templates/console/login.html"),
    ),
    (
        "console/password.html",
        include_str!("../../templates/console/password.html"),
    ),
    (
        "console/overview.html",
        include_str!("../../templates/console/overview.html"),
    ),
    (
        "console/access_log.html",
        include_str!("../../templates/console/access_log.html"),
    ),
    (
        "console/record.html",
        include_str!("../../templates/console/record.html"),
    ),
    (
        "console/partners.html",
        include_str!("../../templates/console/partners.html"),
    ),
    (
        "console/partner.html",
        include_str!("../../templates/console/partner.html"),
    ),
    (
        "console/grant.html",
        include_str!("../../templates/console/grant.html"),
    ),
    (
        "console/confirm.html",
        include_str!("../../templates/console/confirm.html"),
    ),
    (
        "demo_callback.html",
        include_str!("../../templates/demo_callback.html"),
    ),
];

const STYLESHEET: &str = include_str!("../../templates/style.css");

/// Immutable, compiled once; `.html` templates are HTML-escaped automatically.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_filter("utc", utc);
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "template does not compile");
        }
    }
    env
});

/// `{{ t|utc }}`: an RFC 3339 time as pages write it, in UTC to the second; anything else as
/// it is.
fn utc(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value).map_or(value, |t| {
        t.with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    })
}

pub fn render(name: &str, context: impl Serialize) -> Result<String, anyhow::Error> {
    Ok(ENV.get_template(name)?.render(context)?)
}

/// The origin of an address a page's form may be answered with a redirect to (a partner's
/// redirect URI, the sign-in provider), for that page's `form-action`: browsers apply it to the
/// redirect that follows the form post.
pub fn form_origin(uri: &str) -> Option<String> {
    url::Url::parse(uri)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}

/// The page headers: nothing may frame us, run script, or post forms to other origins than
/// ours and (on the consent page) the partner's verified redirect origin.
pub fn page(status: StatusCode, body: String, form_target: Option<&str>) -> HttpResponse {
    let form_action = match form_target {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
                 frame-ancestors 'none'; base-uri 'none'"
            ),
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

pub fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    match render("error.html", minijinja::context! { message }) {
        Ok(body) => page(status, body, None),
        Err(e) => {
            tracing::error!(error = %e, "error page failed to render");
            HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(message.to_owned())
        }
    }
}

/// `303 See Other`: after a form POST the browser must GET the target.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[get("/static/style.css")]
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn times_read_in_utc_to_the_second() {
        assert_eq!(
            utc("2026-12-02T08:29:41.182224874Z".into()),
            "2026-12-02 08:29:41 UTC"
        );
        assert_eq!(
            utc("2026-12-02T10:29:41+02:00".into()),
            "2026-12-02 08:29:41 UTC"
        );
        assert_eq!(utc("not a time".into()), "not a time");
    }

    #[test]
    fn values_are_html_escaped() {
        let html = render(
            "error.html",
            minijinja::context! { message => "<script>x</script>" },
        )
        .unwrap();
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>x"));
    }
}
