//! Which methods each known path takes, for the `405` with `Allow` that a method it does not
//! take gets (RFC 9110 §15.5.6), instead of the `404` of an unknown path. The API's paths come
//! from the OpenAPI document, computed once; the pages for people, which the document leaves
//! out, are listed in [`PAGES`]. A test holds both against the handlers' route attributes.

use super::openapi::ApiDoc;
use crate::error::ApiError;
use actix_web::dev::ResourceDef;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use std::sync::LazyLock;
use utoipa::OpenApi;

/// The routes for people's browsers (HTML pages, their forms and downloads) and the demo's
/// callback: not part of the API contract, so not in the document. The security console's
/// pages (`/console/…`) answer under their own scope and are not listed.
pub const PAGES: &[(&str, &str)] = &[
    ("/portal", "GET"),
    ("/portal/login", "GET, POST"),
    ("/portal/logout", "POST"),
    ("/portal/grants/{id}", "GET"),
    ("/portal/grants/{id}/revoke", "GET, POST"),
    ("/portal/access-history.csv", "GET"),
    ("/portal/access-history.json", "GET"),
    ("/portal/oidc/callback", "GET"),
    ("/portal/signed-out", "GET"),
    ("/console/login", "GET, POST"),
    ("/console/oidc/login", "GET"),
    ("/console/oidc/callback", "GET"),
    ("/static/style.css", "GET"),
    ("/demo/callback", "GET"),
];

struct MethodTable(Vec<(ResourceDef, String)>);

/// `Allow` for these methods, with HEAD beside GET: `middleware::outermost` answers it as GET.
fn allow(methods: &[&str]) -> String {
    methods
        .iter()
        .flat_map(|&method| std::iter::once(method).chain((method == "GET").then_some("HEAD")))
        .collect::<Vec<_>>()
        .join(", ")
}

static METHODS: LazyLock<MethodTable> = LazyLock::new(|| {
    let document = ApiDoc::openapi();
    let mut table: Vec<(ResourceDef, String)> = document
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods: Vec<&str> = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ]
            .into_iter()
            .filter_map(|(method, takes)| takes.then_some(method))
            .collect();
            (ResourceDef::new(path.as_str()), allow(&methods))
        })
        .collect();
    table.extend(PAGES.iter().map(|(path, methods)| {
        let methods: Vec<&str> = methods.split(", ").collect();
        (ResourceDef::new(*path), allow(&methods))
    }));
    MethodTable(table)
});

/// The `Allow` value of a known path, `None` for an unknown one.
pub fn allowed(path: &str) -> Option<&'static str> {
    METHODS
        .0
        .iter()
        .find(|(pattern, _)| pattern.is_match(path))
        .map(|(_, allow)| allow.as_str())
}

/// Every request no route took: `405` with `Allow` on a known path, `404` on any other.
pub async fn unrouted(req: HttpRequest) -> HttpResponse {
    refusal(&req)
}

/// What [`unrouted`] answers. The path is the one the router matched against (unreserved
/// characters percent-decoded), so `/oauth/%74oken` is `/oauth/token` here as there.
pub fn refusal(req: &HttpRequest) -> HttpResponse {
    match allowed(req.match_info().as_str()) {
        Some(allow) => ApiError::MethodNotAllowed(allow.to_owned()).error_response(),
        None => ApiError::NotFound.error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// `(METHOD, path)` of every `#[get("…")]` / `#[post("…")]` in `src/http`, with the prefix
    /// of the scope its module's routes are mounted under.
    fn declared_routes() -> BTreeSet<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut files = vec![root.clone()];
        let mut routes = BTreeSet::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let scope = match relative.as_str() {
                "admin.rs" => "/admin/v1",
                r if r.starts_with("console/") => "/console",
                _ => "",
            };
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().map(str::trim) {
                for method in ["get", "post", "put", "delete", "patch"] {
                    let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) else {
                        continue;
                    };
                    let route = rest.split('"').next().unwrap();
                    let full = if scope.is_empty() || route.starts_with(scope) {
                        route.to_owned()
                    } else {
                        format!("{scope}{route}")
                    };
                    routes.insert((method.to_uppercase(), full));
                }
            }
        }
        routes
    }

    fn documented() -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for (path, item) in ApiDoc::openapi().paths.paths {
            if item.get.is_some() {
                routes.insert(("GET".to_owned(), path.clone()));
            }
            if item.post.is_some() {
                routes.insert(("POST".to_owned(), path.clone()));
            }
        }
        routes
    }

    fn pages() -> BTreeSet<(String, String)> {
        PAGES
            .iter()
            .flat_map(|(path, allow)| {
                allow
                    .split(", ")
                    .map(|method| (method.to_owned(), (*path).to_owned()))
            })
            .collect()
    }

    #[test]
    fn every_route_is_in_the_document_or_a_page_for_people() {
        let declared = declared_routes();
        assert!(
            declared.len() > 40,
            "the scan found the routes: {declared:?}"
        );
        let (documented, pages) = (documented(), pages());
        let missing: Vec<_> = declared
            .iter()
            .filter(|route| !documented.contains(*route) && !pages.contains(*route))
            .filter(|(_, path)| !path.starts_with("/console/") && path != "/console")
            .collect();
        assert!(
            missing.is_empty(),
            "routes the OpenAPI document does not describe (add them to it, or to PAGES if \
             they are pages for people): {missing:?}"
        );
        // And nothing described that no handler serves (the partner API is one dispatcher).
        let stale: Vec<_> = documented
            .union(&pages)
            .filter(|route| !declared.contains(*route))
            .filter(|(_, path)| !path.starts_with("/partner/v1/"))
            .collect();
        assert!(stale.is_empty(), "described but not routed: {stale:?}");
    }

    #[test]
    fn known_paths_name_their_methods_and_unknown_ones_none() {
        assert_eq!(allowed("/oauth/token"), Some("POST"));
        assert_eq!(allowed("/oauth/authorize"), Some("GET, HEAD, POST"));
        assert_eq!(allowed("/admin/v1/grants/abc/revoke"), Some("POST"));
        assert_eq!(allowed("/partner/v1/claims/C-1"), Some("GET, HEAD"));
        assert_eq!(allowed("/portal/grants/x"), Some("GET, HEAD"));
        assert_eq!(allowed("/portal/login"), Some("GET, HEAD, POST"));
        assert_eq!(allowed("/oauth/tokens"), None);
        assert_eq!(allowed("/nothing"), None);
    }
}
