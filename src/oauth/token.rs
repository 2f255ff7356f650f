//! The token endpoint's grants: `authorization_code` (with PKCE) and `refresh_token`
//! (rotating, with reuse detection). A second use of a just-spent code or refresh token by its
//! own client inside the grace window is a retry and gets the first use's answer
//! (`reissue.rs`); any other second use is reuse and ends the grant.

use super::form::Form;
use super::grants;
use super::reissue::{self, Spent, Verdict};
use crate::app::App;
use crate::domain::{CodeVerifier, FieldSet, GrantId, pairwise_subject};
use crate::dpop::Proof;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::secrets::{random_token, token_hash};
use crate::state::{CodeLookup, IssuedCode};
use crate::store::{Grant, NewRefreshToken, Partner, RefreshOutcome, RefreshRecord, RevokedBy};
use crate::tokens::{AccessClaims, Confirmation};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The successful answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// An RFC 9068 JWT, EdDSA-signed.
    pub access_token: String,
    /// `DPoP` when the request carried a DPoP proof (the tokens are bound to its key),
    /// otherwise `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token has left, at most 300.
    pub expires_in: u32,
    /// Opaque; single use: every refresh returns a new one (a retry inside the grace window
    /// gets this answer again).
    pub refresh_token: String,
    /// The granted fields, space-separated.
    pub scope: String,
    /// DPoP: the thumbprint of the key the tokens are bound to (also in the token's `cnf`).
    #[serde(skip)]
    pub bound_to: Option<String>,
}

/// RFC 9449 §5: `DPoP` for bound tokens, `Bearer` for the others.
pub fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() { "DPoP" } else { "Bearer" }
}

/// `proof`: the request's DPoP proof, already checked and its `jti` spent; the tokens issued
/// are bound to its key.
pub async fn handle(
    app: &App,
    partner: &Partner,
    form: &Form,
    proof: Option<&Proof>,
) -> Result<TokenResponse, OAuthError> {
    if proof.is_none() && partner.fapi.require_dpop {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidDpopProof,
            "this client's tokens must be DPoP-bound: send a DPoP proof",
        ));
    }
    let jkt = proof.map(|p| p.jkt.as_str());
    match form.require("grant_type")? {
        "authorization_code" => exchange_code(app, partner, form, jkt).await,
        "refresh_token" => refresh(app, partner, form, jkt).await,
        other => Err(OAuthError::new(
            OAuthErrorCode::UnsupportedGrantType,
            format!(
                "grant_type `{}` is not supported",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

async fn exchange_code(
    app: &App,
    partner: &Partner,
    form: &Form,
    jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let code = form.require("code")?;
    let redirect_uri = form.require("redirect_uri")?;
    let verifier = CodeVerifier::parse(form.require("code_verifier")?)
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;

    let hash = token_hash(code);
    // Shared state describes the code (client, redirect_uri, PKCE); whether it was spent is
    // the database's to say, so a Redis restored from an old snapshot cannot make it new.
    let issued = match app.state.code(&hash).await? {
        CodeLookup::Issued(issued) => issued,
        // Spent markers are written only by versions from before the database knew.
        CodeLookup::Redeemed {
            grant_id,
            client_id,
        } => return Err(replayed(app, partner, grant_id, client_id.as_ref()).await?),
        CodeLookup::Unknown => {
            return Err(OAuthError::invalid_grant("the code is invalid or expired"));
        }
    };
    if issued.client_id != partner.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    let presented = Presentation {
        code,
        redirect_uri,
        verifier: &verifier,
        jkt,
    };
    let grant = app.store.grant(issued.grant_id).await?;
    if grant.as_ref().is_some_and(|g| g.code_redeemed_at.is_some()) {
        return spent_code(app, partner, &issued, &presented).await;
    }
    // Everything the presenter could get wrong is checked before the code is spent, so a wrong
    // verifier or redirect_uri leaves the partner's code usable. Shared state drops a code at
    // its expiry; this also holds a code given back after a failed exchange to the time it was
    // first given.
    if issued.expires_at.is_some_and(|at| at <= app.clock.now()) {
        return Err(OAuthError::invalid_grant("the code is invalid or expired"));
    }
    presented.check(&issued)?;
    let grant = usable(app, grant).await?;
    let spent_at = app.clock.now();
    if !app.store.spend_code(grant.id, spent_at).await? {
        // Another exchange of this code won the race.
        return spent_code(app, partner, &issued, &presented).await;
    }
    let spent = Spent::Code {
        code,
        grant: grant.id,
    };
    match issue(app, partner, &grant, &issued.scopes, spent, spent_at, jkt).await {
        Ok(tokens) => {
            remember_spent_code(app, &hash, issued).await;
            Ok(tokens)
        }
        Err(e) => {
            // Nothing was issued: give the code back, so the partner's retry is a first use
            // and not a replay that revokes the grant. Its expiry stays what it was.
            if let Err(restore) = app.store.unspend_code(grant.id, spent_at).await {
                tracing::warn!(error = %restore, "restoring an unspent authorization code failed");
            }
            Err(e)
        }
    }
}

/// What a code exchange presented besides the code's client.
struct Presentation<'a> {
    code: &'a str,
    redirect_uri: &'a str,
    verifier: &'a CodeVerifier,
    /// The DPoP key the exchange proved, if any.
    jkt: Option<&'a str>,
}

impl Presentation<'_> {
    fn check(&self, issued: &IssuedCode) -> Result<(), OAuthError> {
        if issued.redirect_uri != self.redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        if !issued.code_challenge.is_satisfied_by(self.verifier) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        Ok(())
    }
}

/// How long a redeemed code's description stays in shared state, so that its replay is
/// recognised (and revokes) for this long, not only for the code's own 60 s.
const SPENT_CODE_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

async fn remember_spent_code(app: &App, hash: &str, issued: IssuedCode) {
    if let Err(e) = app.state.put_code(hash, issued, SPENT_CODE_MEMORY).await {
        // The database still knows it was spent; only a replay after 60 s goes unrecognised.
        tracing::warn!(error = %e, "keeping a redeemed code's description failed");
    }
}

/// The owning client presented a code the database says was spent: its retry inside the
/// window gets the first answer again; anything else is the replay RFC 6749 §4.1.2 means.
async fn spent_code(
    app: &App,
    partner: &Partner,
    issued: &IssuedCode,
    presented: &Presentation<'_>,
) -> Result<TokenResponse, OAuthError> {
    let owner = Some(&issued.client_id);
    // A retry repeats its request; a different redirect_uri or verifier is not one.
    if presented.check(issued).is_err() {
        return Err(replayed(app, partner, issued.grant_id, owner).await?);
    }
    let spent = Spent::Code {
        code: presented.code,
        grant: issued.grant_id,
    };
    match retry(app, spent, issued.grant_id, &issued.scopes, presented.jkt).await? {
        Retry::Answer(tokens) => Ok(tokens),
        Retry::Reuse => Err(replayed(app, partner, issued.grant_id, owner).await?),
        Retry::NotYet => Err(OAuthError::invalid_grant(
            "the code is being exchanged by another request; try again",
        )),
    }
}

/// A spent code came back. RFC 6749 §4.1.2: when its own client presents it again, what the
/// first use issued is revoked (the code leaked, or the client is confused: both lose). Any
/// other client's presentation changes nothing: it must not be able to end someone's grant.
async fn replayed(
    app: &App,
    partner: &Partner,
    grant_id: GrantId,
    owner: Option<&crate::domain::ClientId>,
) -> Result<OAuthError, OAuthError> {
    if owner.is_none_or(|owner| *owner == partner.client_id) {
        tracing::warn!(grant_id = %grant_id, client_id = %partner.client_id, "authorization code replayed; revoking the grant");
        grants::revoke(app, grant_id, RevokedBy::CodeReuse).await?;
    } else {
        tracing::warn!(client_id = %partner.client_id, "another client presented a spent authorization code");
    }
    Ok(OAuthError::invalid_grant("the code was already used"))
}

async fn refresh(
    app: &App,
    partner: &Partner,
    form: &Form,
    jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let token = form.require("refresh_token")?;
    let presented = token_hash(token);
    // Ownership first: another client presenting this token must change nothing.
    let Some(found) = app.store.refresh_token(&presented).await? else {
        return Err(OAuthError::invalid_grant("the refresh token is invalid"));
    };
    let owned = app
        .store
        .grant(found.grant_id)
        .await?
        .is_some_and(|g| g.client_id == partner.client_id);
    if !owned {
        return Err(OAuthError::invalid_grant("the refresh token is invalid"));
    }
    // Everything that can fail without the token being at fault — shared state, the grant's
    // status, the scope — is settled before the token is spent: a refresh that fails for our
    // reasons must leave the partner's token usable, not turn its retry into a "reuse".
    if found.expires_at <= app.clock.now() {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    // RFC 9449 §5: a bound refresh token is refreshed only with a proof by its key. Checked
    // before it is spent, so a thief without the key spends nothing and revokes nothing.
    if let Some(bound) = found.jkt.as_deref() {
        match jkt {
            None => {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidDpopProof,
                    "the refresh token is DPoP-bound: send a DPoP proof by its key",
                ));
            }
            Some(jkt) if jkt != bound => {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidDpopProof,
                    "the DPoP proof was made by another key than the refresh token is bound to",
                ));
            }
            Some(_) => {}
        }
    }
    let grant = usable_grant(app, found.grant_id).await?;
    let scopes = requested_scope(form, &grant)?;
    let spent_at = app.clock.now();
    let record = match app.store.spend_refresh_token(&presented, spent_at).await? {
        RefreshOutcome::Spent(record) => record,
        RefreshOutcome::AlreadySpent(record) => {
            return spent_refresh_token(app, token, &record, &scopes, jkt).await;
        }
        RefreshOutcome::Unknown => {
            return Err(OAuthError::invalid_grant("the refresh token is invalid"));
        }
    };
    let spent = Spent::RefreshToken {
        token,
        record: &record,
    };
    match issue(app, partner, &grant, &scopes, spent, spent_at, jkt).await {
        Ok(tokens) => Ok(tokens),
        Err(e) => {
            // Nothing was issued: give the token back, as for codes.
            if let Err(restore) = app.store.unspend_refresh_token(&record.id, spent_at).await {
                tracing::warn!(error = %restore, "restoring an unspent refresh token failed");
            }
            Err(e)
        }
    }
}

/// RFC 6749 §6: a refresh may narrow the scope, never widen it.
fn requested_scope(form: &Form, grant: &Grant) -> Result<FieldSet, OAuthError> {
    let Some(requested) = form.get("scope") else {
        return Ok(grant.scopes.clone());
    };
    let requested = FieldSet::parse(requested)
        .map_err(|e| OAuthError::new(OAuthErrorCode::InvalidScope, e.to_string()))?;
    if !requested.is_subset(&grant.scopes) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidScope,
            "the requested scope exceeds the grant",
        ));
    }
    Ok(requested)
}

/// The owning client presented a spent refresh token: its retry inside the window gets the
/// first answer again; anything else means a thief or a bug holds a copy, and both lose.
async fn spent_refresh_token(
    app: &App,
    token: &str,
    record: &RefreshRecord,
    scopes: &FieldSet,
    jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let spent = Spent::RefreshToken { token, record };
    match retry(app, spent, record.grant_id, scopes, jkt).await? {
        Retry::Answer(tokens) => Ok(tokens),
        Retry::Reuse => {
            tracing::warn!(grant_id = %record.grant_id, "refresh token reused; revoking the grant");
            grants::revoke(app, record.grant_id, RevokedBy::RefreshTokenReuse).await?;
            Err(OAuthError::invalid_grant(
                "the refresh token is no longer valid",
            ))
        }
        Retry::NotYet => Err(OAuthError::invalid_grant(
            "the refresh token is being used by another request; try again",
        )),
    }
}

/// What a second presentation of a spent secret by its own client gets.
enum Retry {
    /// The first use's answer, again.
    Answer(TokenResponse),
    /// Reuse: the caller revokes the grant.
    Reuse,
    /// The first use has not finished (or failed): a clean `invalid_grant`, nothing revoked.
    NotYet,
}

async fn retry(
    app: &App,
    spent: Spent<'_>,
    grant: GrantId,
    scopes: &FieldSet,
    jkt: Option<&str>,
) -> Result<Retry, OAuthError> {
    let kept = match reissue::settle(app, spent).await? {
        Verdict::Replay(kept) => kept,
        Verdict::Reuse => return Ok(Retry::Reuse),
        Verdict::Pending | Verdict::GivenBack => return Ok(Retry::NotYet),
    };
    let Some(answer) = reissue::open(spent, &kept, app.clock.now()) else {
        tracing::warn!(grant_id = %grant, "an answer kept for a retry did not open");
        return Ok(Retry::Reuse);
    };
    // The window widens nothing: the same scope and the same DPoP key as the first answer,
    // or it is no retry…
    if answer.scope != scopes.to_string() || answer.bound_to.as_deref() != jkt {
        return Ok(Retry::Reuse);
    }
    // …and only while the grant may still be used.
    usable_grant(app, grant).await?;
    tracing::info!(grant_id = %grant, "a retry inside the grace window got the first answer again");
    Ok(Retry::Answer(answer))
}

async fn usable_grant(app: &App, id: GrantId) -> Result<Grant, OAuthError> {
    usable(app, app.store.grant(id).await?).await
}

async fn usable(app: &App, grant: Option<Grant>) -> Result<Grant, OAuthError> {
    match grant {
        Some(grant)
            if grant.is_usable_at(app.clock.now()) && grants::is_active(app, grant.id).await? =>
        {
            Ok(grant)
        }
        _ => Err(OAuthError::invalid_grant(
            "the grant has been revoked or has expired",
        )),
    }
}

/// Signs an access token and stores the next refresh token of the chain, with the answer
/// sealed for a retry of `spent` inside the grace window.
async fn issue(
    app: &App,
    partner: &Partner,
    grant: &Grant,
    scopes: &FieldSet,
    spent: Spent<'_>,
    spent_at: DateTime<Utc>,
    jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let now = app.clock.now();
    let ttl = app.settings.access_token_ttl_seconds;
    let claims = AccessClaims {
        iss: app.issuer(),
        aud: app.settings.audience(),
        sub: pairwise_subject(&partner.client_id, &grant.customer_id),
        client_id: partner.client_id.clone(),
        grant_id: grant.id,
        scope: scopes.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now.timestamp(),
        exp: now.timestamp() + i64::from(ttl),
        cnf: jkt.map(|jkt| Confirmation {
            jkt: jkt.to_owned(),
        }),
    };
    let access_token = app.keys.sign(&claims)?;
    let refresh_token = random_token("kh_rt_").map_err(anyhow::Error::from)?;
    let answer = TokenResponse {
        access_token,
        token_type: token_type(jkt),
        expires_in: ttl,
        refresh_token: refresh_token.expose().to_owned(),
        scope: scopes.to_string(),
        bound_to: jkt.map(str::to_owned),
    };
    let grace = reissue::grace(app);
    let kept = if grace > chrono::Duration::zero() {
        let access_expires_at = now + chrono::Duration::seconds(i64::from(ttl));
        Some(reissue::seal(
            spent,
            &answer,
            access_expires_at,
            spent_at + grace,
        )?)
    } else {
        None
    };
    app.store
        .insert_refresh_token(
            NewRefreshToken {
                grant_id: grant.id,
                token_hash: token_hash(refresh_token.expose()),
                issued_for: spent.issued_for(),
                created_at: now,
                expires_at: grant.expires_at,
                jkt: jkt.map(str::to_owned),
            },
            kept,
        )
        .await?;
    tracing::info!(grant_id = %grant.id, client_id = %partner.client_id, jti = %claims.jti, "tokens issued");
    Ok(answer)
}
