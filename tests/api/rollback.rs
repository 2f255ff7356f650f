//! A Redis that comes back with old data (a restart from an older snapshot, a failover to a
//! lagging replica) must not undo what was decided after that data was written. Two instances
//! over one database (PostgreSQL under `.ci/run`) and a Redis of this test's own: a snapshot is
//! taken, then a grant is revoked, a partner suspended, an access token revoked, a code
//! redeemed and a customer signs out; then Redis is killed and restarted from the snapshot.

use crate::helpers::*;
use crate::outages::{Redis, redis_server};
use oauth2::{AuthorizationCode, TokenResponse};
use reqwest::StatusCode;

async fn call(base: &str, token: &str) -> StatusCode {
    http()
        .get(format!("{base}/partner/v1/claims/C-1001"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn introspect_at(base: &str, partner: &Partner, token: &str) -> serde_json::Value {
    http()
        .post(format!("{base}/oauth/introspect"))
        .basic_auth(&partner.client_id, Some(&partner.client_secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn exchange(base: &str, partner: &Partner, code: &str, verifier: &str) -> StatusCode {
    http()
        .post(format!("{base}/oauth/token"))
        .basic_auth(&partner.client_id, Some(&partner.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", partner.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

async fn portal_with(base: &str, cookie: &str) -> StatusCode {
    http()
        .get(format!("{base}/portal"))
        .header("cookie", format!("kh_session={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn redis_command(url: &str, name: &str) {
    redis_args(url, &[name]).await;
}

async fn redis_args(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// A partner call's status once shared state answers: `503` while Redis is out of reach or
/// not a primary (never data), then what it says.
async fn settled_call(base: &str, token: &str) -> StatusCode {
    let mut status = call(base, token).await;
    for _ in 0..50 {
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = call(base, token).await;
    }
    status
}

#[tokio::test]
async fn a_redis_restored_from_an_old_snapshot_brings_back_nothing_that_was_revoked() {
    let Some(binary) = redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let mut redis = Redis::start_with_snapshots(binary);
    let url = redis.url();
    let a = spawn_app_with_sample_upstream(|s| s.redis_url = Some(url.clone())).await;
    let b = a.second_instance().await;
    let fix_it = a.add_partner("Fix It", &["claims:status"]).await;

    // Before the snapshot: four live grants, an unredeemed code, and Bob signed in.
    let kept = a.tokens(&["claims:status"]).await;
    let revoked_grant = a.tokens(&["claims:status"]).await;
    let suspended = a.tokens_for(&fix_it, &["claims:status"]).await;
    let revoked_token = a.tokens(&["claims:status"]).await;
    let code = a
        .authorize_as(ALICE, &["claims:status"], &["claims:status"])
        .await;
    let verifier = code.verifier.secret().clone();
    let (bob, bob_cookie) = a.session_of(BOB).await;
    for token in [&revoked_grant, &suspended, &revoked_token] {
        let access = token.access_token().secret();
        for base in [&a.base, &b] {
            assert_eq!(call(base, access).await, StatusCode::OK);
        }
    }
    assert_eq!(portal_with(&b, &bob_cookie).await, StatusCode::OK);
    redis_command(&url, "SAVE").await;

    // After it: every one of those is ended, through one instance or the other.
    a.revoke(
        revoked_grant.refresh_token().unwrap().secret(),
        "refresh_token",
    )
    .await;
    let admin = a.admin_token("sec").await;
    let suspension = http()
        .post(format!(
            "{b}/admin/v1/partners/{}/suspend",
            fix_it.client_id
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(suspension.status(), StatusCode::OK);
    a.revoke(revoked_token.access_token().secret(), "access_token")
        .await;
    let redeemed = a
        .oauth_client()
        .exchange_code(AuthorizationCode::new(code.code.clone()))
        .set_pkce_verifier(code.verifier)
        .request_async(&http())
        .await
        .unwrap();
    a.sign_out(&bob).await;

    // Redis dies and comes back from the snapshot.
    redis.stop();
    redis.restart();

    let ended = [
        revoked_grant.access_token().secret(),
        suspended.access_token().secret(),
        revoked_token.access_token().secret(),
    ];
    for base in [&a.base, &b] {
        for (i, access) in ended.iter().enumerate() {
            assert_eq!(
                settled_call(base, access).await,
                StatusCode::UNAUTHORIZED,
                "token {i} at {base}"
            );
        }
        let grant_owner = &a.partner;
        for access in [ended[0], ended[2]] {
            assert_eq!(
                introspect_at(base, grant_owner, access).await["active"],
                false,
                "at {base}"
            );
        }
        // A suspended partner cannot even authenticate to introspect.
        assert_ne!(introspect_at(base, &fix_it, ended[1]).await["active"], true);
        // The spent code is not spendable again.
        assert_ne!(
            exchange(base, &a.partner, &code.code, &verifier).await,
            StatusCode::OK
        );
        // Bob's signed-out cookie opens nothing.
        assert_eq!(portal_with(base, &bob_cookie).await, StatusCode::SEE_OTHER);
    }
    // What nobody ended still works, on both instances: the database answered for it.
    for base in [&a.base, &b] {
        assert_eq!(
            call(base, kept.access_token().secret()).await,
            StatusCode::OK
        );
    }
    drop(redeemed);
}

/// `FLUSHALL` takes the epoch with everything else: the next write makes a new one, and the
/// database answers for what was cached.
#[tokio::test]
async fn after_flushall_revocations_still_hold_and_live_grants_still_work() {
    let Some(binary) = redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let redis = Redis::start(binary);
    let url = redis.url();
    let app = spawn_app_with_sample_upstream(|s| s.redis_url = Some(url.clone())).await;
    let live = app.tokens(&["claims:status"]).await;
    let revoked = app.tokens(&["claims:status"]).await;
    app.revoke(revoked.access_token().secret(), "access_token")
        .await;
    redis_command(&url, "FLUSHALL").await;
    assert_eq!(
        call(&app.base, revoked.access_token().secret()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app.base, live.access_token().secret()).await,
        StatusCode::OK
    );
    // And again, now that the cache is filled under the new epoch.
    assert_eq!(
        call(&app.base, revoked.access_token().secret()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        introspect_at(&app.base, &app.partner, revoked.access_token().secret()).await["active"],
        false
    );
}

/// The same Redis process with older data: the primary is demoted, fully resynchronised from a
/// copy that lags behind it (as when a failed-over replica that missed writes becomes the
/// primary it follows), and promoted again. Its `run_id` is unchanged and Keyhole's
/// connections stay open throughout; its replication history is new, and nothing revoked in
/// between comes back — nor is the old data read while it is a replica.
#[tokio::test]
async fn a_primary_resynchronised_from_a_lagging_copy_brings_back_nothing_that_was_revoked() {
    let Some(binary) = redis_server() else {
        eprintln!("skipped: no redis-server (set TEST_REDIS_SERVER)");
        return;
    };
    let primary = Redis::start_with_snapshots(binary);
    let url = primary.url();
    let a = spawn_app_with_sample_upstream(|s| s.redis_url = Some(url.clone())).await;
    let b = a.second_instance().await;
    let kept = a.tokens(&["claims:status"]).await;
    let revoked_grant = a.tokens(&["claims:status"]).await;
    let revoked_token = a.tokens(&["claims:status"]).await;
    let (bob, bob_cookie) = a.session_of(BOB).await;
    for token in [&kept, &revoked_grant, &revoked_token] {
        assert_eq!(
            call(&b, token.access_token().secret()).await,
            StatusCode::OK
        );
    }
    redis_command(&url, "SAVE").await;
    let lagging = Redis::start_from_snapshot_of(&primary);

    a.revoke(
        revoked_grant.refresh_token().unwrap().secret(),
        "refresh_token",
    )
    .await;
    a.revoke(revoked_token.access_token().secret(), "access_token")
        .await;
    a.sign_out(&bob).await;

    let port = lagging.port().to_string();
    redis_args(&url, &["REPLICAOF", "127.0.0.1", &port]).await;
    for attempt in 0.. {
        let info = redis_args(&url, &["INFO", "replication"]).await;
        let info: String = redis::from_redis_value(info).unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(attempt < 100, "the resync did not finish: {info}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // While it is a replica holding the old data, nothing is read from it.
    assert_eq!(
        call(&a.base, revoked_grant.access_token().secret()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_ne!(portal_with(&b, &bob_cookie).await, StatusCode::OK);
    redis_args(&url, &["REPLICAOF", "NO", "ONE"]).await;

    for base in [&a.base, &b] {
        for access in [
            revoked_grant.access_token().secret(),
            revoked_token.access_token().secret(),
        ] {
            assert_eq!(
                settled_call(base, access).await,
                StatusCode::UNAUTHORIZED,
                "at {base}"
            );
            assert_eq!(
                introspect_at(base, &a.partner, access).await["active"],
                false
            );
        }
        assert_eq!(portal_with(base, &bob_cookie).await, StatusCode::SEE_OTHER);
        assert_eq!(
            settled_call(base, kept.access_token().secret()).await,
            StatusCode::OK
        );
    }
}
