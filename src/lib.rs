//! Keyhole: a partner-access gateway with delegated authorisation.
//!
//! Dependencies point one way: `http → oauth (services) → {domain, store, state, tokens}`,
//! and `store → entity`. `domain` knows no framework.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod domain;
pub mod dpop;
pub mod error;
pub mod files;
pub mod http;
pub mod metrics;
pub mod oauth;
pub mod oidc;
pub mod portal;
pub mod proxy;
pub mod sample_upstream;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod unauthenticated;
pub mod upstream;
