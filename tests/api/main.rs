//! One integration-test binary: every test starts its own server on port 0 with a fresh SQLite
//! database and talks HTTP to it, driving OAuth with the `oauth2` crate as a partner would.

// Test support code may panic freely.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dpop_client;
mod helpers;
mod instances;
mod oidc_providers;
mod webdriver;

mod admin;
mod at_rest;
mod authorize;
mod browser;
mod cli;
mod console;
mod console_browser;
mod console_oidc;
mod dpop;
mod fapi_blackbox;
mod grace;
mod journal;
mod openapi;
mod ops;
mod outages;
mod par;
mod portal;
mod portal_oidc;
mod private_key_jwt;
mod proxy;
mod redteam_backchannel;
mod redteam_fapi;
mod redteam_openapi;
mod redteam_portal_oidc;
mod rollback;
mod schemathesis;
mod tokens;
mod verifier;
