//! End to end in a real headless Chromium (WebDriver via chromedriver): a customer signs in,
//! narrows the consent, sees the partner's reads in the portal, and revokes; the partner's next
//! call is refused. Skipped, saying so, where chromium or chromedriver is not installed (see
//! [`crate::webdriver`]).

use crate::helpers::*;
use crate::webdriver;
use fantoccini::Locator;
use oauth2::{AuthorizationCode, TokenResponse};
use reqwest::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn a_customer_consents_watches_and_revokes_in_a_real_browser() {
    let Some((browser, _driver)) = webdriver::start(420, 900).await else {
        return;
    };

    let app = spawn_app_with_sample_upstream(|_| {}).await;

    // Consent: sign in, untick "Claim number", allow.
    let (auth_url, _state, verifier) = app.authorize_url(&["claims:status", "claims:claim_number"]);
    browser.goto(&auth_url).await.unwrap();
    browser
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(ALICE.1)
        .await
        .unwrap();
    browser
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(ALICE.2)
        .await
        .unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let consent = browser
        .wait()
        .for_element(Locator::Css("form[action='/oauth/authorize']"))
        .await
        .unwrap();
    assert!(browser.source().await.unwrap().contains("Claim number"));
    consent
        .find(Locator::Css("input[value='claims:claim_number']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    consent
        .find(Locator::Css("button[value=allow]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The partner's redirect target does not exist; the address bar still holds the code.
    let mut code = None;
    for _ in 0..50 {
        let url = browser.current_url().await.unwrap();
        if let Some(c) = query_param(url.as_str(), "code") {
            code = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = app
        .oauth_client()
        .exchange_code(AuthorizationCode::new(
            code.expect("redirected with a code"),
        ))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();
    let access = token.access_token().secret();
    let body: serde_json::Value = http()
        .get(app.url("/partner/v1/claims/C-1001"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        serde_json::json!({"id": "C-1001", "status": "in_repair"})
    );

    // The portal shows the read; keep a screenshot as an artifact.
    browser.goto(&app.url("/portal")).await.unwrap();
    let png = browser.screenshot().await.unwrap();
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal.png");
    std::fs::write(&artifact, png).unwrap();
    eprintln!("portal screenshot: {}", artifact.display());
    browser
        .find(Locator::LinkText("See every time they looked"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A click does not wait for the navigation it starts: wait for the new page's content.
    browser
        .wait()
        .for_element(Locator::Css("table"))
        .await
        .unwrap();
    let history = browser.source().await.unwrap();
    assert!(
        history.contains("Fone Shop read claims C-1001"),
        "{history}"
    );

    // Revoke, with confirmation.
    browser
        .find(Locator::XPath(
            "//a[starts-with(normalize-space(.), 'Stop sharing')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("form[action$='/revoke'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap();
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );
    browser.close().await.unwrap();
}
