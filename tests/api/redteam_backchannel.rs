//! Red team: Back-Channel Logout (`POST /portal/oidc/backchannel-logout`) attacked as anyone on
//! the network, as the provider's other clients, and through the failures the provider is told
//! to retry. The rule throughout: bad input gets a clear error and changes nothing; a logout
//! the provider was told to retry is applied when it does.

use crate::helpers::set_cookie;
use crate::oidc_providers::with;
use crate::portal_oidc::{FIONA, fake_world};
use reqwest::StatusCode;
use serde_json::json;

/// A provider session recorded before sessions said how they started (no `via_provider`):
/// with `[customer_login]` every customer session is the provider's, and a sign-out there must
/// end it too.
#[tokio::test]
async fn redteam_backchannel_a_session_from_before_via_provider_ends_too() {
    let world = fake_world(&["EdDSA"]).await;
    let (fiona, answer) = world
        .sign_in(|w, nonce| {
            w.fake
                .sign("k1", &with(w.claims(nonce), "sid", json!("sid-old")))
        })
        .await;
    let cookie = set_cookie(&answer, "kh_session").unwrap();
    let value = crate::helpers::cookie_value(&cookie);
    let hash = keyhole::secrets::token_hash(&value);
    let state = &world.app.app.state;
    let mut session = state
        .session::<keyhole::state::Session>(&hash)
        .await
        .unwrap()
        .unwrap();
    // As a session written before the field existed reads: `#[serde(default)]`.
    let mut old = serde_json::to_value(&session).unwrap();
    old.as_object_mut().unwrap().remove("via_provider");
    session = serde_json::from_value(old).unwrap();
    assert!(!session.via_provider);
    state
        .put_session(&hash, &session, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(world.signed_in(&fiona).await);

    world.app.clock.advance(chrono::Duration::seconds(1));
    let token = world
        .fake
        .sign("k1", &world.logout_claims(Some(FIONA), None));
    assert_eq!(
        world.post_logout_token(&token).await.status(),
        StatusCode::OK
    );
    assert!(!world.signed_in(&fiona).await, "ended");
}
