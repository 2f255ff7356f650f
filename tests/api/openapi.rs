//! The committed OpenAPI document must match the code. Regenerate with
//! `cargo run -- openapi > openapi/openapi.json`.

#[test]
fn the_committed_openapi_document_is_current() {
    let generated = keyhole::http::openapi::document().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap_or_default();
    assert!(
        generated == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}
