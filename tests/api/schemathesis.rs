//! The OpenAPI document against the server it describes: schemathesis (property-based, every
//! check on, stateful phase included) runs `openapi/openapi.json` against `keyhole demo`, with
//! an admin token, the demo partner's secret, and a partner token from a consent Alice gives
//! through the real sign-in and consent pages. It must find nothing.
//!
//! Skipped, saying why, where `schemathesis` is not installed (`pip install -r
//! tests/schemathesis/requirements.txt`); `KEYHOLE_SCHEMATHESIS` names the executable to use
//! (a venv's, as `.ci/run` sets), and when it is set the run is never skipped.

use crate::helpers::{DemoProcess, browser, hidden, http, location, query_param};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    Scope, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use std::path::Path;
use std::process::Command;

/// The executable, or `None`, saying why, when there is none.
fn schemathesis() -> Option<String> {
    let given = std::env::var("KEYHOLE_SCHEMATHESIS").ok();
    let program = given.clone().unwrap_or_else(|| "schemathesis".into());
    let probe = Command::new(&program).arg("--version").output();
    match (probe, given) {
        (Ok(out), _) if out.status.success() => Some(program),
        (probe, Some(_)) => panic!("KEYHOLE_SCHEMATHESIS={program} does not run: {probe:?}"),
        (_, None) => {
            eprintln!(
                "skipped: schemathesis is not installed (pip install -r \
                 tests/schemathesis/requirements.txt, or set KEYHOLE_SCHEMATHESIS)"
            );
            None
        }
    }
}

/// Alice signs in on the authorization page the demo partner sends her to and allows every
/// field it asks for; the partner exchanges the code, as a real client does, with `oauth2`.
async fn partner_token(demo: &DemoProcess, client_secret: &str) -> String {
    let link = demo
        .line_after("1. Open this link")
        .expect("the walkthrough's authorization link");
    let scopes = query_param(&link, "scope").expect("the link's scope");
    let client = BasicClient::new(ClientId::new("fone-shop".into()))
        .set_client_secret(ClientSecret::new(client_secret.into()))
        .set_auth_uri(AuthUrl::new(demo.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(demo.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(demo.url("/demo/callback")).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.split(' ').map(|s| Scope::new(s.into())))
        .set_pkce_challenge(challenge)
        .url();

    let browser = browser();
    let sign_in = browser.get(url.as_str()).send().await.unwrap();
    let html = sign_in.text().await.unwrap();
    let signed_in = browser
        .post(demo.url("/portal/login"))
        .form(&[
            ("email", "alice@example.com"),
            ("password", "alice-demo-password"),
            ("csrf_token", &hidden(&html, "csrf_token").unwrap()),
            ("next", &hidden(&html, "next").unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER, "Alice's sign-in");
    let consent = browser.get(url.as_str()).send().await.unwrap();
    let html = consent.text().await.unwrap();
    let mut form = vec![
        (
            "consent_id",
            hidden(&html, "consent_id").expect("the consent page"),
        ),
        ("csrf_token", hidden(&html, "csrf_token").unwrap()),
        ("decision", "allow".to_owned()),
    ];
    form.extend(scopes.split(' ').map(|s| ("field", s.to_owned())));
    let decided = browser
        .post(demo.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::SEE_OTHER);
    let code = query_param(&location(&decided), "code").expect("a code");
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .expect("the code exchange");
    tokens.access_token().secret().clone()
}

/// The README's worked example ("Partner integration"): a client generated from the document
/// with `openapi-python-client` (installed beside schemathesis) reads Alice's claims with the
/// partner's token, and only the granted fields come back.
fn generated_client_reads_the_claims(schemathesis: &str, demo: &DemoProcess, token: &str) {
    let bin = Path::new(schemathesis)
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty());
    let tool = |name: &str| bin.map_or(name.into(), |dir| dir.join(name));
    let python = tool("python3");
    let out = tempfile::tempdir().unwrap();
    let client = out.path().join("keyhole_client");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = tokio::task::block_in_place(|| {
        Command::new(tool("openapi-python-client"))
            .args(["generate", "--meta", "none", "--path"])
            .arg(root.join("openapi/openapi.json"))
            .arg("--output-path")
            .arg(&client)
            .output()
            .unwrap()
    });
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let example = root.join("examples/python/poll_claims.py");
    let ran = tokio::task::block_in_place(|| {
        Command::new(python)
            .arg(example)
            .args([demo.url(""), token.to_owned()])
            .env("PYTHONPATH", out.path())
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        stdout.contains("C-1001: {") && stdout.contains("'status'"),
        "{stdout}"
    );
    assert!(!stdout.contains("iban"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_in_the_openapi_document() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    // One address sends every request here, most of them without a valid token, and one
    // grant makes every partner call: the demo's per-address and per-grant allowances, meant
    // for a crowd of callers, would answer most of them 429 and leave the rest untested.
    let demo = DemoProcess::start(&[
        ("KEYHOLE_RATE_LIMITS__UNAUTHENTICATED_PER_SECOND", "100000"),
        ("KEYHOLE_RATE_LIMITS__UNAUTHENTICATED_BURST", "100000"),
        ("KEYHOLE_RATE_LIMITS__GRANT_PER_SECOND", "100000"),
        ("KEYHOLE_RATE_LIMITS__GRANT_BURST", "100000"),
        ("KEYHOLE_RATE_LIMITS__PARTNER_PER_SECOND", "100000"),
        ("KEYHOLE_RATE_LIMITS__PARTNER_BURST", "100000"),
    ])
    .expect("the demo starts");
    let client_secret = demo.word_after("client_secret").expect("the secret");
    let admin_token = demo.word_after("(admin token").expect("the admin token");
    let admin_token = admin_token.trim_end_matches("):").to_owned();
    let partner_token = partner_token(&demo, &client_secret).await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    generated_client_reads_the_claims(&schemathesis, &demo, &partner_token);
    let seed = std::env::var("KEYHOLE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let base = demo.url("");
    // First without the operations that end access (suspension, revocation), so the partner
    // API is exercised with a token that works; then everything, the stateful phase included,
    // which follows the links from the lists to those actions.
    let without_endings: &[&str] = &[
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-operation-id",
        "suspend_partner",
        "--exclude-operation-id",
        "reinstate_partner",
        "--exclude-operation-id",
        "revoke_grant",
    ];
    let scratch = tempfile::tempdir().unwrap();
    for extra in [without_endings, &[]] {
        let run = |program: String, extra: Vec<String>| {
            // Its working directory gets its cache (`.schemathesis/`): a scratch one.
            Command::new(program)
                .current_dir(scratch.path())
                .arg("--no-color")
                .arg("--config-file")
                .arg(root.join("tests/schemathesis/schemathesis.toml"))
                .arg("run")
                .arg(root.join("openapi/openapi.json"))
                .args(["--url", &base])
                .args(["--checks", "all", "--seed", &seed])
                .args(extra)
                .env("KH_ADMIN_TOKEN", &admin_token)
                .env("KH_PARTNER_TOKEN", &partner_token)
                .env("KH_CLIENT_SECRET", &client_secret)
                .output()
                .unwrap()
        };
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let output = tokio::task::block_in_place(|| run(schemathesis.clone(), extra));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis found failures (exit {:?}):\n{stdout}\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(" passed"), "{stdout}");
    }
}
