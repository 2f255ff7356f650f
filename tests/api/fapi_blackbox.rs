//! The independent black-box check (`tests/fapi/blackbox.py`): a partner written in Python from
//! the RFCs, with `requests` and `joserfc` rather than any of Keyhole's code, completes PAR,
//! sign-in and consent, a DPoP-bound code exchange authenticated with `private_key_jwt`, bound
//! partner calls, a refresh and a call with the new token against the real server — once as it
//! is configured by default and once with DPoP nonces required.
//!
//! Skipped, saying why, where `python3` lacks the packages (`pip install -r
//! tests/fapi/requirements.txt`); `KEYHOLE_FAPI_PYTHON` names the interpreter to use (a venv's,
//! as `.ci/run` sets), and when it is set the check is never skipped.

use crate::helpers::{ALICE, ALL_FIELDS, spawn_app_with_sample_upstream};
use keyhole::config::Settings;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fapi/blackbox.py")
}

/// The interpreter with the script's packages; `None`, saying why, when there is none.
fn python() -> Option<String> {
    let given = std::env::var("KEYHOLE_FAPI_PYTHON").ok();
    let python = given.clone().unwrap_or_else(|| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import requests, joserfc"])
        .output();
    let usable = matches!(&probe, Ok(out) if out.status.success());
    match (usable, given) {
        (true, _) => Some(python),
        (false, Some(_)) => {
            panic!("KEYHOLE_FAPI_PYTHON={python} cannot import requests and joserfc: {probe:?}")
        }
        (false, None) if probe.is_err() => {
            eprintln!("skipped: python3 is not installed");
            None
        }
        (false, None) => {
            eprintln!(
                "skipped: python3 lacks requests/joserfc (pip install -r tests/fapi/requirements.txt, \
                 or set KEYHOLE_FAPI_PYTHON to a venv's python)"
            );
            None
        }
    }
}

/// Runs the script off the runtime's threads (the server under test shares them).
async fn script_run(python: &str, args: Vec<String>) -> Output {
    let python = python.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script())
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh server with `adjust`, a partner registered with the script's keys, PAR and DPoP
/// required; the script's whole run, which must succeed.
async fn black_box(adjust: impl FnOnce(&mut Settings), extra: &[&str]) {
    let Some(python) = python() else { return };
    let app = spawn_app_with_sample_upstream(adjust).await;
    let keys = tempfile::tempdir().unwrap();
    let out_dir = keys.path().to_str().unwrap().to_owned();

    let made = script_run(&python, vec!["keys".into(), out_dir.clone()]).await;
    assert!(made.status.success(), "blackbox.py keys: {}", shown(&made));
    let jwks = keys.path().join("partner.jwks.json");
    assert!(jwks.is_file(), "no key set written: {}", shown(&made));

    let partner = app
        .add_partner_with("Black Box Partner", ALL_FIELDS, |a| {
            a.jwks_file = Some(jwks);
            a.require_par = true;
            a.require_dpop = true;
        })
        .await;

    let mut args = vec![
        "run".into(),
        app.base.clone(),
        partner.client_id.clone(),
        partner.redirect_uri.clone(),
        ALICE.1.into(),
        ALICE.2.into(),
        out_dir,
        "--scope".into(),
        "claims:status claims:claim_number".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let ran = script_run(&python, args).await;
    assert!(ran.status.success(), "blackbox.py run: {}", shown(&ran));
    let summary = String::from_utf8_lossy(&ran.stdout);
    assert!(summary.starts_with("blackbox: ok: "), "{}", shown(&ran));
    eprintln!("{}", summary.trim_end());
}

#[tokio::test]
async fn an_independent_partner_completes_the_fapi_flow() {
    black_box(|_| {}, &[]).await;
}

#[tokio::test]
async fn an_independent_partner_completes_the_fapi_flow_with_dpop_nonces() {
    black_box(|s| s.dpop.require_nonce = true, &["--expect-nonce"]).await;
}
