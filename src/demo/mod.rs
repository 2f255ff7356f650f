//! `keyhole demo`: the whole flow on one machine, no external services. It seeds a demo
//! partner and two customers into the SQLite database, starts the gateway, and prints a
//! walkthrough you can follow with a browser and curl.

mod history;

use crate::cli::{PartnerAdd, add_partner};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::{ClientId, UpstreamCustomerId};
use crate::http::demo::DemoPartner;
use crate::secrets::{hash_password, random_bytes, random_token, token_hash};
use crate::startup::{Application, Options, open_store};
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub const DEMO_CLIENT_ID: &str = "fone-shop";
/// The demo's console account; each start gives it a fresh one-time password.
pub const DEMO_CONSOLE_USER: &str = "security@harmony.example";
pub const DEMO_CUSTOMERS: [(&str, &str, &str); 2] = [
    ("CU-1001", "alice@example.com", "alice-demo-password"),
    ("CU-2002", "bob@example.com", "bob-demo-password"),
];

/// Creates the demo partner and customers, or refreshes their secrets if they exist, so each
/// run can print working credentials. Returns the partner's fresh secret.
pub async fn seed(store: &Store, settings: &Settings) -> anyhow::Result<String> {
    let client_id = ClientId::parse(DEMO_CLIENT_ID)?;
    let redirect_uri = format!("{}/demo/callback", settings.issuer());
    let secret = if store.partner(&client_id).await?.is_some() {
        let secret = random_token("kh_cs_")?;
        store
            .set_partner_secret_hash(&client_id, token_hash(secret.expose()))
            .await?;
        secret.expose().to_owned()
    } else {
        let add = PartnerAdd {
            name: "Fone Shop".into(),
            redirect_uris: vec![redirect_uri],
            fields: vec![
                "claims:status".into(),
                "claims:status_updated_at".into(),
                "claims:claim_number".into(),
                "claims:repair_stage".into(),
            ],
            client_id: Some(DEMO_CLIENT_ID.into()),
            rate: None,
            burst: None,
            grant_rate: None,
            ..Default::default()
        };
        add_partner(store, &settings.catalog()?, &add)
            .await?
            .1
            .ok_or_else(|| anyhow::anyhow!("the demo partner has a secret"))?
    };
    for (upstream, email, password) in DEMO_CUSTOMERS {
        let upstream = UpstreamCustomerId::parse(upstream)?;
        match store.customer_by_upstream_id(&upstream).await? {
            Some(existing) => {
                store
                    .set_customer_password(existing.id, hash_password(password)?)
                    .await?
            }
            None => {
                store
                    .insert_customer(
                        &upstream,
                        email,
                        hash_password(password)?,
                        SystemClock.now(),
                    )
                    .await?;
            }
        }
    }
    Ok(secret)
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let upstream_addr = settings
        .upstream
        .base_url
        .socket_addrs(|| Some(80))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("upstream.base_url names no address"))?;
    let upstream_listener = std::net::TcpListener::bind(upstream_addr)
        .map_err(|e| anyhow::anyhow!("starting the sample claims API on {upstream_addr}: {e}"))?;
    let upstream = crate::sample_upstream::start(upstream_listener, 1)?;
    tokio::spawn(upstream);
    let store = open_store(&settings).await?;
    let secret = seed(&store, &settings).await?;
    let admin = random_token("kh_adm_")?;
    store
        .insert_admin_token(
            "demo security team",
            token_hash(admin.expose()),
            chrono::Utc::now(),
        )
        .await?;
    let admin = admin.expose().to_owned();
    let console_password = console_user(&store).await?;
    let issuer = settings.issuer();
    let verifier = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect_uri = format!("{issuer}/demo/callback");
    let demo = DemoPartner {
        client_id: DEMO_CLIENT_ID.into(),
        client_secret: secret.clone(),
        redirect_uri: redirect_uri.clone(),
        code_verifier: verifier.clone(),
        token_url: format!("{issuer}/oauth/token"),
    };
    let app = Application::build(
        settings.clone(),
        Options {
            demo: Some(demo),
            ..Default::default()
        },
    )
    .await?;
    let seeded = history::seed(&app.app()).await?;
    let authorize = url::Url::parse_with_params(
        &format!("{issuer}/oauth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", DEMO_CLIENT_ID),
            ("redirect_uri", redirect_uri.as_str()),
            (
                "scope",
                "claims:status claims:status_updated_at claims:repair_stage",
            ),
            ("state", "demo-state"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )?;
    println!(
        r#"
Keyhole demo is running at {issuer}  (database: {db})
Sample claims API (the "insurer") at {upstream_url}: Alice owns C-1001 and C-1002, Bob C-2001 and C-2002.
Each record carries IMEI, IBAN, payout and date of birth; see one with: curl -s {upstream_url}/claims/C-1001

Demo customers (portal sign-in):
  alice@example.com / alice-demo-password   (claims customer CU-1001)
  bob@example.com   / bob-demo-password     (claims customer CU-2002)
Demo partner "Fone Shop":
  client_id     {DEMO_CLIENT_ID}
  client_secret {secret}
  PKCE verifier {verifier}

1. Open this link in a browser, sign in as Alice, untick a field if you like, and Allow:
   {authorize}

2. The demo callback page shows the code and the exact curl command, which is:
   curl -s -u '{DEMO_CLIENT_ID}:{secret}' -d grant_type=authorization_code \
     -d code=CODE_FROM_THE_PAGE -d redirect_uri='{redirect_uri}' \
     -d code_verifier='{verifier}' {issuer}/oauth/token

   Or the FAPI 2.0 way, with the example partner client: a pushed authorization request, tokens
   bound to its key (DPoP) and a fresh proof on every call. It prints its own link to open;
   after Allow, paste the callback page's address (it carries the code) into it. It then polls
   the claims every 10 s ("unchanged" when nothing changed) and refreshes the tokens itself:
   cargo run --example partner_client -- --issuer {issuer} \
     --client-id {DEMO_CLIENT_ID} --client-secret '{secret}' \
     --redirect-uri '{redirect_uri}'

3. Call the partner API as Fone Shop: only the fields Alice allowed come back, never the IBAN:
   curl -s -H "Authorization: Bearer ACCESS_TOKEN" {issuer}/partner/v1/claims
   curl -s -i -H "Authorization: Bearer ACCESS_TOKEN" {issuer}/partner/v1/claims/C-1001
   Bob's claim answers exactly like a missing one:
   curl -s -H "Authorization: Bearer ACCESS_TOKEN" {issuer}/partner/v1/claims/C-2002

4. Inspect the token, rotate the refresh token, then revoke it (which ends the whole grant):
   curl -s -u '{DEMO_CLIENT_ID}:{secret}' -d token=ACCESS_TOKEN {issuer}/oauth/introspect
   curl -s -u '{DEMO_CLIENT_ID}:{secret}' -d grant_type=refresh_token -d refresh_token=REFRESH_TOKEN {issuer}/oauth/token
   curl -s -u '{DEMO_CLIENT_ID}:{secret}' -d token=NEW_REFRESH_TOKEN {issuer}/oauth/revoke

5. The next partner call is refused at once (401), though the access token has not expired:
   curl -s -H "Authorization: Bearer ACCESS_TOKEN" {issuer}/partner/v1/claims

6. As the security team (admin token {admin}): who read what, proof the log is intact, alerts,
   and containment of a partner at once:
   curl -s -H "Authorization: Bearer {admin}" '{issuer}/admin/v1/access-log?customer_id=CU-1001'
   curl -s -H "Authorization: Bearer {admin}" -H "Accept: text/csv" '{issuer}/admin/v1/access-log?field=claims:status'
   curl -s -H "Authorization: Bearer {admin}" {issuer}/admin/v1/access-log/verify
   curl -s -H "Authorization: Bearer {admin}" {issuer}/admin/v1/alerts
   curl -s -X POST -H "Authorization: Bearer {admin}" {issuer}/admin/v1/partners/{DEMO_CLIENT_ID}/suspend
   Alice's own view of every read: {issuer}/portal

7. The security console, with {history}:
   {issuer}/console   sign in as {DEMO_CONSOLE_USER} with the one-time password
   {console_password}   (you then choose your own); the alert on {repairer} has a Suspend button.

Metadata: {issuer}/.well-known/oauth-authorization-server   Keys: {issuer}/.well-known/jwks.json
Press Ctrl-C to stop.
"#,
        db = settings.database_url,
        history = if seeded > 0 {
            format!(
                "{seeded} made-up records of {} days seeded into the log",
                history::DAYS
            )
        } else {
            "the log's own history".to_owned()
        },
        repairer = history::REPAIRER_CLIENT_ID,
        upstream_url = settings.upstream.base_url.as_str().trim_end_matches('/'),
    );
    app.run_until_stopped().await?;
    Ok(())
}

/// Creates the demo's console account, or gives it a fresh one-time password; returns it.
async fn console_user(store: &Store) -> anyhow::Result<String> {
    let email = crate::domain::Email::parse(DEMO_CONSOLE_USER)?;
    let one_time = random_token("")?;
    let hash = hash_password(one_time.expose())?;
    match store.console_user_by_email(&email).await? {
        Some(user) => store.reset_console_password(&user.id, hash).await?,
        None => {
            store
                .insert_console_user(&email, hash, SystemClock.now())
                .await?;
        }
    }
    Ok(one_time.expose().to_owned())
}
