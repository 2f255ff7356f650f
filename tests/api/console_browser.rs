//! End to end in a real headless Chromium: a security person signs in to the console with a
//! one-time password, chooses a real one, looks at the overview, searches and exports the access
//! log, follows a record to its grant, and suspends the partner an alert names; the partner's
//! next call is refused. Every page on the way is checked with axe-core for serious and
//! critical accessibility problems. Skipped, saying so, where chromium or chromedriver is not
//! installed (see [`crate::webdriver`]); the axe-core part alone is skipped, saying so, where
//! `npm ci --prefix tests/axe` has not been run.

use crate::helpers::{CONSOLE_PASSWORD, TestApp, http, spawn_app_with_sample_upstream};
use crate::webdriver;
use fantoccini::{Client, Locator};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The console is a desk tool: a desktop-sized window, where its tables are laid out as tables.
const WINDOW: (u32, u32) = (1280, 1000);

/// More calls beyond the grants than the alert's threshold (set to this in the test's settings).
const DENIED_CALLS: usize = 3;
const BEYOND_GRANTS_THRESHOLD: u64 = 2;

/// The sample partner's traffic: reads, one unknown record, and calls with ids the gateway
/// refuses (`denied`) — enough of them to fire the beyond-grants alert. Returns the token.
async fn traffic_tripping_an_alert(app: &TestApp) -> String {
    let tokens = app.tokens(&["claims:status"]).await;
    let access = oauth2::TokenResponse::access_token(&tokens)
        .secret()
        .clone();
    for _ in 0..3 {
        assert_eq!(
            app.partner_status(&access, "/partner/v1/claims/C-1001")
                .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-2001")
            .await,
        StatusCode::NOT_FOUND
    );
    for _ in 0..DENIED_CALLS {
        assert_eq!(
            app.partner_status(&access, "/partner/v1/claims/C.1001")
                .await,
            StatusCode::BAD_REQUEST
        );
    }
    access
}

/// `target/tmp/<name>`, kept after the test as an artifact.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

async fn screenshot(browser: &Client, name: &str) {
    let path = artifact(name);
    std::fs::write(&path, browser.screenshot().await.unwrap()).unwrap();
    eprintln!("console screenshot: {}", path.display());
}

/// A click does not wait for the navigation it starts: wait until the address is the one
/// `arrived` looks for (`what` names it in the failure), after which WebDriver commands wait for
/// the page to load.
async fn wait_for_url(browser: &Client, what: &str, arrived: impl Fn(&url::Url) -> bool) {
    let mut last = None;
    for _ in 0..100 {
        let url = browser.current_url().await.unwrap();
        if arrived(&url) {
            return;
        }
        last = Some(url);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = browser.source().await.unwrap();
    panic!("expected {what}, still at {last:?}: {page}");
}

/// Waits until the address's path (without its query) is `path`.
async fn wait_for_path(browser: &Client, path: &str) {
    wait_for_url(browser, path, |url| url.path() == path).await;
}

async fn click(browser: &Client, locator: Locator<'_>) {
    browser
        .wait()
        .for_element(locator)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Runs axe-core in the page as it stands and keeps what it finds of impact `serious` or
/// `critical`, so one run reports every page's problems at once.
struct Axe {
    /// `axe.min.js`; `None` where it is not installed (the check is skipped).
    script: Option<String>,
    checked: Vec<&'static str>,
    problems: Vec<String>,
}

/// Runs in the page; hands back the serious and critical violations, one line per element.
const RUN_AXE: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ["violations"] }).then(
  (results) => done({
    violations: results.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => n.target.join(" ") + " | " + n.html + " | " + (n.failureSummary || "").replace(/\n/g, " ")),
      })),
  }),
  (error) => done({ error: String(error) }),
);
"#;

impl Axe {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/axe/node_modules/axe-core/axe.min.js");
        let script = std::fs::read_to_string(&path).ok();
        if script.is_none() {
            eprintln!(
                "axe-core check skipped: {} is missing (run `npm ci --prefix tests/axe`)",
                path.display()
            );
        }
        Self {
            script,
            checked: Vec::new(),
            problems: Vec::new(),
        }
    }

    async fn check(&mut self, browser: &Client, page: &'static str) {
        let Some(script) = &self.script else {
            return;
        };
        // Script injected through WebDriver runs in the page without being subject to the
        // page's CSP (which allows no script at all): this checks that it really loaded.
        browser.execute(script, Vec::new()).await.unwrap();
        let loaded = browser
            .execute("return typeof window.axe;", Vec::new())
            .await
            .unwrap();
        assert_eq!(loaded, "object", "axe-core did not load on the {page} page");
        let outcome = browser.execute_async(RUN_AXE, Vec::new()).await.unwrap();
        if let Some(error) = outcome.get("error") {
            panic!("axe-core failed on the {page} page: {error}");
        }
        for v in outcome["violations"].as_array().unwrap() {
            let nodes: Vec<&str> = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_str())
                .collect();
            self.problems.push(format!(
                "{page}: {} ({}): {}\n    {}",
                v["id"].as_str().unwrap_or_default(),
                v["impact"].as_str().unwrap_or_default(),
                v["help"].as_str().unwrap_or_default(),
                nodes.join("\n    ")
            ));
        }
        self.checked.push(page);
    }

    fn assert_clean(&self) {
        if self.script.is_none() {
            return;
        }
        assert!(
            self.problems.is_empty(),
            "axe-core found serious or critical problems:\n{}",
            self.problems.join("\n")
        );
        eprintln!(
            "axe-core: no serious or critical problem on {}",
            self.checked.join(", ")
        );
    }
}

#[tokio::test]
async fn a_security_person_finds_and_suspends_a_partner_in_a_real_browser() {
    let Some((browser, _driver)) = webdriver::start(WINDOW.0, WINDOW.1).await else {
        return;
    };
    let mut axe = Axe::load();
    let app = spawn_app_with_sample_upstream(|s| {
        s.alerts.beyond_grants.threshold = BEYOND_GRANTS_THRESHOLD;
    })
    .await;
    let access = traffic_tripping_an_alert(&app).await;
    let client_id = app.partner.client_id.clone();
    let one_time = app.add_console_user("ana@harmony.example").await;

    // The policy axe-core's injection has to get past is really there.
    let csp = http()
        .get(app.url("/console/login"))
        .send()
        .await
        .unwrap()
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    // Signing in with the one-time password leads to the password page, and only there.
    browser.goto(&app.url("/console")).await.unwrap();
    wait_for_path(&browser, "/console/login").await;
    axe.check(&browser, "sign-in").await;
    browser
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys("ana@harmony.example")
        .await
        .unwrap();
    browser
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(&one_time)
        .await
        .unwrap();
    click(&browser, Locator::Css("main button[type=submit]")).await;
    wait_for_path(&browser, "/console/password").await;
    axe.check(&browser, "password").await;
    for id in ["password", "confirm"] {
        browser
            .find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(CONSOLE_PASSWORD)
            .await
            .unwrap();
    }
    click(&browser, Locator::Css("main button[type=submit]")).await;
    wait_for_path(&browser, "/console").await;

    // The overview: the alert the traffic fired, with its Suspend button.
    browser
        .wait()
        .for_element(Locator::Id("alerts-h"))
        .await
        .unwrap();
    let overview = browser.source().await.unwrap();
    assert!(overview.contains("beyond_grants"), "{overview}");
    assert!(
        overview.contains(&format!("Suspend {client_id}")),
        "{overview}"
    );
    assert_eq!(
        overview.matches("<svg").count(),
        5,
        "the overview's charts: {overview}"
    );
    screenshot(&browser, "console-overview.png").await;
    axe.check(&browser, "overview").await;

    // The access log, filtered through the form by outcome.
    click(&browser, Locator::LinkText("Access log")).await;
    wait_for_path(&browser, "/console/access-log").await;
    browser
        .find(Locator::Id("outcome"))
        .await
        .unwrap()
        .select_by_value("denied")
        .await
        .unwrap();
    click(
        &browser,
        Locator::Css("form[role=search] button[type=submit]"),
    )
    .await;
    wait_for_url(&browser, "a search for outcome=denied", |url| {
        url.query().is_some_and(|q| q.contains("outcome=denied"))
    })
    .await;
    browser
        .wait()
        .for_element(Locator::Css("table caption"))
        .await
        .unwrap();
    let results = browser.source().await.unwrap();
    assert_eq!(
        results.matches("<td>denied (400)</td>").count(),
        DENIED_CALLS,
        "{results}"
    );
    assert!(!results.contains("<td>ok (200)</td>"), "{results}");
    assert!(!results.contains("<td>not_found (404)</td>"), "{results}");
    axe.check(&browser, "access-log search").await;

    // Export CSV: the same query, fetched with the browser's own session cookie.
    let href = browser
        .find(Locator::LinkText("Export CSV"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .expect("the export link's address");
    assert!(href.contains("outcome=denied"), "{href}");
    let session = browser.get_named_cookie("kh_console").await.unwrap();
    let export = http()
        .get(app.url(&href))
        .header(
            reqwest::header::COOKIE,
            format!("{}={}", session.name(), session.value()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let csv = export.text().await.unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), DENIED_CALLS, "{csv}");
    assert!(
        rows.iter()
            .all(|r| r.contains("denied") && r.contains(&client_id)),
        "{csv}"
    );

    // One record, and the grant it was made under.
    click(&browser, Locator::Css("a[aria-label^='Record ']")).await;
    browser
        .wait()
        .for_element(Locator::Css("code.hash"))
        .await
        .unwrap();
    axe.check(&browser, "record").await;
    click(&browser, Locator::Css("main a[href^='/console/grants/']")).await;
    browser
        .wait()
        .for_element(Locator::Css("ol.timeline"))
        .await
        .unwrap();
    assert!(browser.source().await.unwrap().contains("claims:status"));
    axe.check(&browser, "grant").await;

    // The partners, and the one the alert names.
    click(&browser, Locator::LinkText("Partners")).await;
    wait_for_path(&browser, "/console/partners").await;
    axe.check(&browser, "partners").await;
    click(&browser, Locator::LinkText("Fone Shop")).await;
    wait_for_path(&browser, &format!("/console/partners/{client_id}")).await;
    assert!(
        browser
            .source()
            .await
            .unwrap()
            .contains("class=\"status active\"")
    );
    axe.check(&browser, "partner").await;

    // Suspend from the overview's alert: a confirmation page that wants a reason.
    click(&browser, Locator::LinkText("Overview")).await;
    wait_for_path(&browser, "/console").await;
    click(
        &browser,
        Locator::XPath("//a[starts-with(normalize-space(.), 'Suspend ')]"),
    )
    .await;
    wait_for_path(&browser, &format!("/console/partners/{client_id}/suspend")).await;
    axe.check(&browser, "suspend confirmation").await;
    browser
        .find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("reads far beyond its grants")
        .await
        .unwrap();
    click(&browser, Locator::Css("main button[type=submit]")).await;
    wait_for_path(&browser, &format!("/console/partners/{client_id}")).await;
    browser
        .wait()
        .for_element(Locator::Css("h1 .status.suspended"))
        .await
        .unwrap();
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );
    screenshot(&browser, "console-partner.png").await;

    // Signing out ends the session: the console sends the browser to sign in again.
    click(&browser, Locator::Css("form.signout button[type=submit]")).await;
    wait_for_path(&browser, "/console/login").await;
    browser.goto(&app.url("/console")).await.unwrap();
    wait_for_path(&browser, "/console/login").await;
    assert_eq!(
        browser.current_url().await.unwrap().query(),
        Some("next=%2Fconsole")
    );

    browser.close().await.unwrap();
    axe.assert_clean();
}
