//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2, FAPI 2.0
//! §5.3.2.1): the partner signs a short-lived assertion with a key it registered (`partner add
//! --jwks-file` or `--jwks-uri`) and sends it as `client_assertion`. Checked in this order;
//! every failure is `invalid_client`, its reason only in the log:
//!
//! 1. at most [`MAX_ASSERTION_BYTES`], a compact JWS whose header `alg` is one of
//!    [`SIGNING_ALGORITHMS`] (never `none`, never HMAC), read before any key is looked at;
//!    `jku`, `jwk`, `x5u` and `x5c` are ignored: keys come only from the registration;
//! 2. the client is the assertion's `sub` (and the form's `client_id`, when given): a partner
//!    that is active and registered with keys;
//! 3. exactly one of its keys fits the header: the one named by `kid`, or without a `kid` the
//!    only key of the algorithm's type. An unknown `kid` makes a `--jwks-uri` set be fetched
//!    again, at most once a minute per partner; a set that cannot be fetched fails closed;
//! 4. the signature verifies; `iss` and `sub` are the client id; `aud` is our issuer alone
//!    (a string, or an array of that one string): never the token endpoint's URL;
//! 5. `exp` is present, not passed, and at most [`MAX_LIFETIME_SECONDS`] ahead; `iat` and
//!    `nbf`, when present, are not in the future; each with [`LEEWAY_SECONDS`] of clock skew;
//! 6. `jti` is present, at most [`MAX_JTI_BYTES`], and new: it is remembered in shared state
//!    (by the hash of client id and `jti`) until `exp` plus the leeway, with one atomic
//!    put-if-absent, so that of two uses on any instances exactly one passes. Only an
//!    assertion that passed 1–5 spends its `jti`: a forged one cannot burn a partner's.

use crate::app::App;
use crate::domain::ClientId;
use crate::error::OAuthError;
use crate::oidc::{
    FetchError, Header, IdTokenError, KeyCache, LEEWAY_SECONDS, MIN_RSA_BITS, PRIVATE_MEMBERS,
    ProviderHttp, ProviderKey, fitting, parse_key_set, read_header, rsa_bits, seconds,
    secure_or_loopback, verify_signature,
};
use crate::secrets::token_hash;
use crate::store::{Partner, PartnerKeys, PartnerStatus};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The largest JWKS a partner may register or serve: room for a handful of keys.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An assertion is a few hundred bytes; a larger one is refused before it is decoded.
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;

/// The longest an assertion may still be valid for when it arrives: long enough for a
/// request in flight, short enough that the `jti` memory stays small.
pub const MAX_LIFETIME_SECONDS: i64 = 5 * 60;

/// The longest `jti` accepted (it is hashed, so only to bound the work).
pub const MAX_JTI_BYTES: usize = 256;

/// The asymmetric algorithms FAPI 2.0 allows (§5.4.1), and only those.
pub const SIGNING_ALGORITHMS: &[Algorithm] =
    &[Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

/// [`SIGNING_ALGORITHMS`] by name, for the metadata.
pub const SIGNING_ALGORITHM_NAMES: &[&str] = &["PS256", "ES256", "EdDSA"];

/// How long keys fetched from a `--jwks-uri` are used before they are fetched again: a key the
/// partner withdrew (compromised) stops working within this, without our restart.
const URI_KEYS_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// Why an assertion was refused. For the log only: the partner gets `invalid_client`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AssertionError {
    #[error("the assertion is larger than {MAX_ASSERTION_BYTES} bytes")]
    TooLarge,
    #[error("the assertion is not a well-formed JWT")]
    Malformed,
    #[error("the assertion is signed with `{0}`, which is not PS256, ES256 or EdDSA")]
    Algorithm(String),
    #[error("the assertion's `{0}` claim is missing or malformed")]
    Claim(&'static str),
    #[error("the form's client_id is not the assertion's subject")]
    ClientIdMismatch,
    #[error("no partner has the assertion's subject as client id")]
    UnknownClient,
    #[error("the partner is suspended")]
    Suspended,
    #[error("the partner is registered with a client secret, not with keys")]
    NotRegisteredForKeys,
    #[error("the partner's keys could not be had: {0}")]
    KeySet(FetchError),
    #[error("none of the partner's keys fits the assertion's header")]
    UnknownKey,
    #[error("several of the partner's keys fit an assertion without a `kid`")]
    AmbiguousKey,
    #[error("the assertion's signature does not verify")]
    Signature,
    #[error("the assertion's issuer is not its subject")]
    Issuer,
    #[error("the assertion's audience is not our issuer alone")]
    Audience,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion is valid for more than {MAX_LIFETIME_SECONDS} seconds from now")]
    TooLongLived,
    #[error("the assertion is not valid yet")]
    NotYetValid,
    #[error("the assertion's jti was used before")]
    Replayed,
}

impl From<IdTokenError> for AssertionError {
    /// The shared signature check speaks of ID tokens; its findings, in our words.
    fn from(e: IdTokenError) -> Self {
        match e {
            IdTokenError::Malformed => Self::Malformed,
            IdTokenError::Algorithm(alg) => Self::Algorithm(alg),
            IdTokenError::UnknownKey => Self::UnknownKey,
            IdTokenError::Signature => Self::Signature,
            IdTokenError::Issuer => Self::Issuer,
            IdTokenError::Audience => Self::Audience,
            IdTokenError::Expired => Self::Expired,
            IdTokenError::NotYetValid => Self::NotYetValid,
            IdTokenError::Claim(claim) => Self::Claim(claim),
            // Checks of sign-ins only; never raised for an assertion.
            IdTokenError::AuthorizedParty
            | IdTokenError::Nonce
            | IdTokenError::StaleAuthentication
            | IdTokenError::FutureAuthentication => Self::Malformed,
        }
    }
}

/// An assertion as presented: its header and the client it claims to be, neither verified.
pub struct Assertion {
    token: String,
    header: Header,
    client_id: ClientId,
}

impl Assertion {
    /// Reads the header (the algorithm must be allowed before anything else) and the subject
    /// that names the client whose keys will verify it.
    pub fn parse(token: &str) -> Result<Self, AssertionError> {
        if token.len() > MAX_ASSERTION_BYTES {
            return Err(AssertionError::TooLarge);
        }
        let header = read_header(token, SIGNING_ALGORITHMS)?;
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .ok_or(AssertionError::Malformed)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| AssertionError::Malformed)?;
        let client_id = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|sub| ClientId::parse(sub).ok())
            .ok_or(AssertionError::Claim("sub"))?;
        Ok(Self {
            token: token.to_owned(),
            header,
            client_id,
        })
    }

    /// The client the assertion claims to come from (unverified until [`Self::verify`]).
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Checks 3–5 of the module doc against the partner's `keys`, at `now`.
    pub(crate) fn verify(
        &self,
        keys: &[ProviderKey],
        issuer: &str,
        now: DateTime<Utc>,
    ) -> Result<Verified, AssertionError> {
        match fitting(keys, self.header.alg, self.header.kid.as_deref()).len() {
            0 => return Err(AssertionError::UnknownKey),
            1 => {}
            // Trying each would let a key the partner did not mean decide; with a `kid` the
            // partner names its key, without one it must have only one of the kind.
            _ => return Err(AssertionError::AmbiguousKey),
        }
        let client_id = self.client_id.as_str();
        let claims = verify_signature(
            &self.token,
            &self.header,
            keys,
            client_id,
            issuer,
            &["iss", "sub", "aud", "exp"],
        )?;
        // The library accepts an array `iss` holding the client id, and an `aud` array that
        // merely contains ours: both are held to the exact forms here.
        if claims.get("iss").and_then(Value::as_str) != Some(client_id) {
            return Err(AssertionError::Issuer);
        }
        if claims.get("sub").and_then(Value::as_str) != Some(client_id) {
            return Err(AssertionError::Claim("sub"));
        }
        let audience_is_ours = match claims.get("aud") {
            Some(Value::String(aud)) => aud == issuer,
            Some(Value::Array(auds)) => auds.len() == 1 && auds[0].as_str() == Some(issuer),
            _ => false,
        };
        if !audience_is_ours {
            return Err(AssertionError::Audience);
        }
        let now = now.timestamp();
        let exp = seconds(&claims, "exp")?.ok_or(AssertionError::Claim("exp"))?;
        if exp.saturating_add(LEEWAY_SECONDS) <= now {
            return Err(AssertionError::Expired);
        }
        if exp > now + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS {
            return Err(AssertionError::TooLongLived);
        }
        for claim in ["iat", "nbf"] {
            if seconds(&claims, claim)?.is_some_and(|at| at > now + LEEWAY_SECONDS) {
                return Err(AssertionError::NotYetValid);
            }
        }
        let jti = match claims.get("jti") {
            Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti,
            _ => return Err(AssertionError::Claim("jti")),
        };
        Ok(Verified {
            // Client ids are `[A-Za-z0-9._-]`: the space cannot be part of one, so no two
            // (client, jti) pairs share a key.
            replay_key: token_hash(&format!("{client_id} {jti}")),
            remember_for: Duration::from_secs(
                u64::try_from(exp + LEEWAY_SECONDS - now)
                    .unwrap_or(1)
                    .max(1),
            ),
        })
    }
}

/// A verified assertion: what its `jti` is remembered under, and for how long.
#[derive(Debug)]
pub struct Verified {
    replay_key: String,
    remember_for: Duration,
}

/// The partner an assertion authenticates, or `invalid_client` with the reason in the log.
/// `form_client_id` is the form's `client_id`, which must then be the assertion's subject.
pub async fn authenticate(
    app: &App,
    token: &str,
    form_client_id: Option<&str>,
) -> Result<Partner, OAuthError> {
    let refused = |client_id: Option<&ClientId>, why: AssertionError| {
        match client_id {
            Some(client_id) => {
                tracing::warn!(client_id = %client_id, reason = %why, "client assertion refused");
            }
            None => tracing::warn!(reason = %why, "client assertion refused"),
        }
        OAuthError::invalid_client(false)
    };
    let assertion = Assertion::parse(token).map_err(|e| refused(None, e))?;
    let client_id = assertion.client_id();
    let refuse = |why| refused(Some(client_id), why);
    if form_client_id.is_some_and(|id| id != client_id.as_str()) {
        return Err(refuse(AssertionError::ClientIdMismatch));
    }
    let Some(partner) = app.store.partner(client_id).await? else {
        return Err(refuse(AssertionError::UnknownClient));
    };
    // Before any key is fetched: a suspended partner's key server is not asked.
    if partner.status != PartnerStatus::Active {
        return Err(refuse(AssertionError::Suspended));
    }
    let Some(registered) = &partner.keys else {
        return Err(refuse(AssertionError::NotRegisteredForKeys));
    };
    let now = app.clock.now();
    let keys = app
        .client_keys
        .keys_for(client_id, registered, &assertion.header, now)
        .await
        .map_err(|e| refuse(AssertionError::KeySet(e)))?;
    let verified = assertion
        .verify(&keys, &app.issuer(), now)
        .map_err(refuse)?;
    if !app
        .state
        .first_client_assertion(&verified.replay_key, verified.remember_for)
        .await?
    {
        return Err(refuse(AssertionError::Replayed));
    }
    Ok(partner)
}

/// A `--jwks-file` set, parsed once and kept with the text it came from.
struct RegisteredSet {
    json: String,
    keys: Arc<Vec<ProviderKey>>,
}

/// A `--jwks-uri` set: fetched, kept, refetched as `oidc::jwks` does for providers.
struct FetchedSet {
    uri: Url,
    cache: KeyCache,
}

/// Every partner's verification keys, by client id. Entries are made only for partners found
/// in the database with keys, so there are at most as many as registered partners; one is
/// replaced when the registration it came from (the JSON, the URI) is not the stored one.
pub struct PartnerKeyCache {
    http: ProviderHttp,
    sets: parking_lot::Mutex<HashMap<ClientId, Arc<RegisteredSet>>>,
    uris: parking_lot::Mutex<HashMap<ClientId, Arc<FetchedSet>>>,
}

impl PartnerKeyCache {
    pub fn new() -> Result<Self, FetchError> {
        Ok(Self {
            http: ProviderHttp::new()?,
            sets: parking_lot::Mutex::default(),
            uris: parking_lot::Mutex::default(),
        })
    }

    /// The keys registered for `client_id` that may have signed an assertion with `header`.
    async fn keys_for(
        &self,
        client_id: &ClientId,
        registered: &PartnerKeys,
        header: &Header,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<ProviderKey>>, FetchError> {
        match registered {
            PartnerKeys::Set(json) => self.registered(client_id, json),
            PartnerKeys::Uri(uri) => {
                // `partner add` checked it; a database edited by hand must not send us to a
                // plain-http host either.
                if !secure_or_loopback(uri) {
                    return Err(FetchError::Unusable(format!(
                        "the registered JWKS URI {uri} is not https"
                    )));
                }
                let set = self.fetched(client_id, uri);
                set.cache
                    .keys(&self.http, &set.uri, header.alg, header.kid.as_deref(), now)
                    .await
            }
        }
    }

    fn registered(
        &self,
        client_id: &ClientId,
        json: &str,
    ) -> Result<Arc<Vec<ProviderKey>>, FetchError> {
        if let Some(set) = self.sets.lock().get(client_id)
            && set.json == json
        {
            return Ok(set.keys.clone());
        }
        let value: Value = serde_json::from_str(json)
            .map_err(|e| FetchError::Unusable(format!("the registered JWKS: {e}")))?;
        let keys = Arc::new(parse_key_set(&value)?);
        self.sets.lock().insert(
            client_id.clone(),
            Arc::new(RegisteredSet {
                json: json.to_owned(),
                keys: keys.clone(),
            }),
        );
        Ok(keys)
    }

    fn fetched(&self, client_id: &ClientId, uri: &Url) -> Arc<FetchedSet> {
        let mut uris = self.uris.lock();
        match uris.get(client_id) {
            Some(set) if set.uri == *uri => set.clone(),
            _ => {
                let set = Arc::new(FetchedSet {
                    uri: uri.clone(),
                    cache: KeyCache::with_lifetime(URI_KEYS_LIFETIME),
                });
                uris.insert(client_id.clone(), set.clone());
                set
            }
        }
    }
}

/// Checks a `--jwks-uri`: https (plain http only to this machine, as for redirect URIs), no
/// fragment, no credentials in it.
pub fn check_jwks_uri(uri: &str) -> anyhow::Result<Url> {
    let url = Url::parse(uri).map_err(|e| anyhow::anyhow!("`{uri}` is not a URL: {e}"))?;
    if !secure_or_loopback(&url) {
        anyhow::bail!("`{uri}` must use https (http only on loopback)");
    }
    if url.fragment().is_some() {
        anyhow::bail!("`{uri}` must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        anyhow::bail!("`{uri}` must not carry credentials");
    }
    Ok(url)
}

/// Checks a JWKS a partner registers (`--jwks-file`): JSON `{"keys": [...]}` with at least one
/// key, each a public key we can verify assertions with (EC P-256, OKP Ed25519, RSA of at
/// least 2048 bits), for signatures, with no private or symmetric material; `kid`s unique, and
/// no two keys of one kind without a `kid` (an assertion without one could not choose).
pub fn check_jwks(text: &str) -> anyhow::Result<()> {
    if text.len() > MAX_JWKS_BYTES {
        anyhow::bail!("the JWKS is larger than {MAX_JWKS_BYTES} bytes");
    }
    let set: Value = serde_json::from_str(text)?;
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .filter(|keys| !keys.is_empty())
        .ok_or_else(|| anyhow::anyhow!("a JWKS needs a non-empty `keys` array"))?;
    let mut kids = HashSet::new();
    let mut kinds_without_kid = HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        let kind = check_key(key).map_err(|e| anyhow::anyhow!("key {}: {e}", i + 1))?;
        match key.get("kid") {
            None => {
                if !kinds_without_kid.insert(kind) {
                    anyhow::bail!(
                        "key {}: two {kind} keys without a `kid`; give each key a kid",
                        i + 1
                    );
                }
            }
            Some(Value::String(kid)) if !kid.is_empty() => {
                if !kids.insert(kid.as_str()) {
                    anyhow::bail!("key {}: the kid `{kid}` is used twice", i + 1);
                }
            }
            Some(_) => anyhow::bail!("key {}: `kid` must be a non-empty string", i + 1),
        }
    }
    Ok(())
}

/// One registered key: its kind (`ES256`, `EdDSA`, `PS256`), or why it cannot be one.
fn check_key(key: &Value) -> anyhow::Result<&'static str> {
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| key.get(m).is_some()) {
        anyhow::bail!(
            "it holds private or symmetric key material (`{member}`); register public keys only"
        );
    }
    let jwk: Jwk = serde_json::from_value(key.clone())
        .map_err(|e| anyhow::anyhow!("not a JSON Web Key: {e}"))?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        anyhow::bail!("its `use` is not `sig`");
    }
    let decoded = |b64: &str| URL_SAFE_NO_PAD.decode(b64).ok().map(|bytes| bytes.len());
    let kind = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            if decoded(&ec.x) != Some(32) || decoded(&ec.y) != Some(32) {
                anyhow::bail!("a P-256 key needs 32-byte base64url `x` and `y`");
            }
            "ES256"
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            if decoded(&okp.x) != Some(32) {
                anyhow::bail!("an Ed25519 key needs a 32-byte base64url `x`");
            }
            // A small-order point verifies signatures nobody made (see `strong_ed25519`).
            if !crate::oidc::strong_ed25519(&okp.x) {
                anyhow::bail!("its `x` is not a usable Ed25519 public key (weak or off the curve)");
            }
            "EdDSA"
        }
        AlgorithmParameters::RSA(rsa) => {
            let bits = rsa_bits(&rsa.n);
            if bits < MIN_RSA_BITS {
                anyhow::bail!("an RSA key needs at least {MIN_RSA_BITS} bits (this one: {bits})");
            }
            if decoded(&rsa.e).is_none_or(|len| len == 0 || len > 8) {
                anyhow::bail!("an RSA key needs a base64url `e`");
            }
            "PS256"
        }
        AlgorithmParameters::OctetKey(_) => {
            anyhow::bail!("symmetric (`oct`) keys cannot be registered")
        }
        // Other curves, and kinds the library names (or adds later) that we do not verify.
        _ => anyhow::bail!(
            "only EC P-256 (ES256), OKP Ed25519 (EdDSA) and RSA (PS256) keys are supported"
        ),
    };
    if let Some(alg) = &jwk.common.key_algorithm
        && alg.to_string() != kind
    {
        anyhow::bail!("its `alg` is {alg}, but a key of this kind signs with {kind} here");
    }
    jsonwebtoken::DecodingKey::from_jwk(&jwk)
        .map_err(|e| anyhow::anyhow!("not a usable public key: {e}"))?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, encode};
    use serde_json::json;

    const ISSUER: &str = "https://keyhole.example";
    const CLIENT: &str = "fix-point";

    /// A 2048-bit RSA key made for these tests only (`openssl genrsa 2048`, as PKCS#1 DER):
    /// generating one in an unoptimised test takes seconds.
    const RSA_PRIVATE_DER: &[u8] = include_bytes!("testdata/test-only-rsa-2048.der");

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    struct Signer {
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
    }

    fn signer(kid: &str) -> Signer {
        let seed = crate::secrets::random_bytes::<32>().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().unwrap();
        Signer {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                        "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes())}),
        }
    }

    fn rsa_signer(kid: &str) -> Signer {
        let encoding = EncodingKey::from_rsa_der(RSA_PRIVATE_DER);
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::PS256).unwrap())
                .unwrap();
        jwk["kid"] = json!(kid);
        Signer {
            alg: Algorithm::PS256,
            encoding,
            jwk,
        }
    }

    fn keys(signers: &[&Signer]) -> Vec<ProviderKey> {
        let jwks: Vec<Value> = signers.iter().map(|s| s.jwk.clone()).collect();
        parse_key_set(&json!({ "keys": jwks })).unwrap()
    }

    fn claims() -> Value {
        let now = now().timestamp();
        json!({"iss": CLIENT, "sub": CLIENT, "aud": ISSUER, "jti": "a-1",
               "iat": now, "exp": now + 60})
    }

    fn sign(signer: &Signer, kid: Option<&str>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(signer.alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &signer.encoding).unwrap()
    }

    fn verify(token: &str, keys: &[ProviderKey]) -> Result<Verified, AssertionError> {
        Assertion::parse(token)?.verify(keys, ISSUER, now())
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    /// Red team: a small-order Ed25519 key verifies signatures anyone can make (R the
    /// identity, s = 0), so registering or fetching one let anyone authenticate as the partner.
    #[test]
    fn a_weak_ed25519_key_is_neither_registered_nor_used() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = json!({"kty": "OKP", "crv": "Ed25519", "kid": "weak",
                          "x": URL_SAFE_NO_PAD.encode(identity)});
        assert!(check_jwks(&json!({ "keys": [weak.clone()] }).to_string()).is_err());
        let keys = parse_key_set(&json!({ "keys": [weak] })).unwrap();
        assert!(keys.is_empty(), "a weak key was kept");
        // What it would have let through: an assertion signed by no one.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"weak"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let token = format!("{header}.{body}.{}", URL_SAFE_NO_PAD.encode(forged));
        let assertion = Assertion::parse(&token).unwrap();
        assert!(assertion.verify(&keys, ISSUER, now()).is_err());
    }

    #[test]
    fn a_good_assertion_verifies_and_is_remembered_until_exp_plus_leeway() {
        let signer = signer("k1");
        let keys = keys(&[&signer]);
        let verified = verify(&sign(&signer, Some("k1"), &claims()), &keys).unwrap();
        assert_eq!(verified.remember_for, Duration::from_secs(60 + 30));
        // Without a kid, the only key of the kind.
        assert!(verify(&sign(&signer, None, &claims()), &keys).is_ok());
        // One-element audience arrays are the same audience.
        let one = with(claims(), "aud", json!([ISSUER]));
        assert!(verify(&sign(&signer, Some("k1"), &one), &keys).is_ok());
    }

    #[test]
    fn an_rsa_pss_assertion_verifies_and_rs256_does_not() {
        let signer = rsa_signer("r1");
        let keys = keys(&[&signer]);
        assert!(verify(&sign(&signer, Some("r1"), &claims()), &keys).is_ok());
        let rs256 = Signer {
            alg: Algorithm::RS256,
            ..rsa_signer("r1")
        };
        assert!(matches!(
            verify(&sign(&rs256, Some("r1"), &claims()), &keys),
            Err(AssertionError::Algorithm(_))
        ));
    }

    #[test]
    fn the_replay_key_is_per_client_and_jti() {
        let signer = signer("k1");
        let keys = keys(&[&signer]);
        let a = verify(&sign(&signer, None, &claims()), &keys).unwrap();
        let b = verify(
            &sign(&signer, None, &with(claims(), "jti", json!("a-2"))),
            &keys,
        )
        .unwrap();
        assert_ne!(a.replay_key, b.replay_key);
        let again = verify(&sign(&signer, None, &claims()), &keys).unwrap();
        assert_eq!(a.replay_key, again.replay_key);
    }

    #[test]
    fn each_broken_claim_is_refused_for_its_own_reason() {
        let signer = signer("k1");
        let keys = keys(&[&signer]);
        let at = now().timestamp();
        let remove = |name: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(name);
            c
        };
        let cases: Vec<(Value, &str)> = vec![
            (
                with(claims(), "aud", json!(format!("{ISSUER}/oauth/token"))),
                "Audience",
            ),
            (
                with(claims(), "aud", json!([ISSUER, "https://other.example"])),
                "Audience",
            ),
            (remove("aud"), "Claim"),
            (with(claims(), "iss", json!("other")), "Issuer"),
            (with(claims(), "iss", json!([CLIENT])), "Issuer"),
            (remove("exp"), "Claim"),
            (with(claims(), "exp", json!(at - LEEWAY_SECONDS)), "Expired"),
            (
                with(
                    claims(),
                    "exp",
                    json!(at + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS + 1),
                ),
                "TooLongLived",
            ),
            (
                with(claims(), "iat", json!(at + LEEWAY_SECONDS + 1)),
                "NotYetValid",
            ),
            (
                with(claims(), "nbf", json!(at + LEEWAY_SECONDS + 1)),
                "NotYetValid",
            ),
            (remove("jti"), "Claim"),
            (with(claims(), "jti", json!("")), "Claim"),
            (with(claims(), "jti", json!(7)), "Claim"),
            (
                with(claims(), "jti", json!("j".repeat(MAX_JTI_BYTES + 1))),
                "Claim",
            ),
        ];
        for (claims, expected) in cases {
            let got = verify(&sign(&signer, Some("k1"), &claims), &keys);
            let got = format!("{got:?}");
            assert!(got.contains(expected), "{claims}: {got}");
        }
        // The edges that pass.
        for claims in [
            with(
                claims(),
                "exp",
                json!(at + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS),
            ),
            with(claims(), "exp", json!(at - LEEWAY_SECONDS + 1)),
            with(claims(), "iat", json!(at + LEEWAY_SECONDS)),
            with(claims(), "jti", json!("j".repeat(MAX_JTI_BYTES))),
        ] {
            assert!(
                verify(&sign(&signer, Some("k1"), &claims), &keys).is_ok(),
                "{claims}"
            );
        }
    }

    #[test]
    fn keys_are_chosen_by_kid_and_never_guessed() {
        let one = signer("k1");
        let two = signer("k2");
        let keys = keys(&[&one, &two]);
        assert!(verify(&sign(&two, Some("k2"), &claims()), &keys).is_ok());
        assert!(matches!(
            verify(&sign(&two, None, &claims()), &keys),
            Err(AssertionError::AmbiguousKey)
        ));
        assert!(matches!(
            verify(&sign(&two, Some("k3"), &claims()), &keys),
            Err(AssertionError::UnknownKey)
        ));
        // Signed by k2's key but naming k1.
        assert!(matches!(
            verify(&sign(&two, Some("k1"), &claims()), &keys),
            Err(AssertionError::Signature)
        ));
    }

    #[test]
    fn none_hmac_and_oversized_assertions_are_refused_before_any_key() {
        let signer = signer("k1");
        let keys = keys(&[&signer]);
        let good = sign(&signer, Some("k1"), &claims());
        let payload = good.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#)
        );
        assert!(matches!(
            verify(&none, &keys),
            Err(AssertionError::Algorithm(_))
        ));
        let public = URL_SAFE_NO_PAD
            .decode(signer.jwk["x"].as_str().unwrap())
            .unwrap();
        let hmac = Signer {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(&public),
            jwk: signer.jwk.clone(),
        };
        assert!(matches!(
            verify(&sign(&hmac, Some("k1"), &claims()), &keys),
            Err(AssertionError::Algorithm(_))
        ));
        let padded = with(claims(), "pad", json!("x".repeat(MAX_ASSERTION_BYTES)));
        assert!(matches!(
            verify(&sign(&signer, Some("k1"), &padded), &keys),
            Err(AssertionError::TooLarge)
        ));
        assert!(matches!(
            Assertion::parse("a.b"),
            Err(AssertionError::Malformed)
        ));
    }

    #[test]
    fn a_key_named_in_the_header_is_never_used() {
        let attacker = signer("k1");
        let keys = keys(&[&signer("k1")]);
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        header.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
        header.jku = Some("https://attacker.example/jwks".into());
        let token = encode(&header, &claims(), &attacker.encoding).unwrap();
        assert!(matches!(
            verify(&token, &keys),
            Err(AssertionError::Signature)
        ));
    }

    fn ed_jwk(kid: Option<&str>) -> Value {
        let mut jwk = signer("x").jwk;
        match kid {
            Some(kid) => jwk["kid"] = json!(kid),
            None => {
                jwk.as_object_mut().unwrap().remove("kid");
            }
        }
        jwk
    }

    #[test]
    fn a_registered_jwks_holds_unique_public_signing_keys_of_supported_kinds() {
        let ok = |keys: Vec<Value>| check_jwks(&json!({ "keys": keys }).to_string());
        let rsa = rsa_signer("r1").jwk;
        ok(vec![ed_jwk(Some("a")), ed_jwk(Some("b")), rsa.clone()]).unwrap();
        ok(vec![ed_jwk(None), rsa.clone()]).unwrap();

        let refused = |keys: Vec<Value>, why: &str| {
            let e = ok(keys).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        };
        refused(vec![ed_jwk(Some("a")), ed_jwk(Some("a"))], "used twice");
        refused(vec![ed_jwk(None), ed_jwk(None)], "without a `kid`");
        refused(vec![with(ed_jwk(None), "d", json!("AAAA"))], "private");
        refused(vec![with(rsa.clone(), "p", json!("AAAA"))], "private");
        refused(
            vec![json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"})],
            "private or symmetric",
        );
        refused(
            vec![with(
                rsa.clone(),
                "n",
                json!(URL_SAFE_NO_PAD.encode([0xffu8; 128])),
            )],
            "2048 bits",
        );
        refused(vec![with(ed_jwk(None), "use", json!("enc"))], "use");
        refused(vec![with(ed_jwk(None), "alg", json!("ES256"))], "alg");
        refused(vec![with(rsa, "alg", json!("RS256"))], "alg");
        refused(
            vec![json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"})],
            "supported",
        );
        refused(vec![with(ed_jwk(None), "x", json!("AAAA"))], "32-byte");
        refused(vec![], "non-empty");
        assert!(check_jwks("{\"keys\": 1}").is_err());
        assert!(check_jwks("not json").is_err());
    }

    #[test]
    fn a_registered_set_is_parsed_once_and_again_when_the_stored_one_differs() {
        let cache = PartnerKeyCache::new().unwrap();
        let client = ClientId::parse(CLIENT).unwrap();
        let first = json!({"keys": [signer("k1").jwk]}).to_string();
        let a = cache.registered(&client, &first).unwrap();
        let again = cache.registered(&client, &first).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "parsed once");
        let second = json!({"keys": [signer("k2").jwk, signer("k3").jwk]}).to_string();
        let b = cache.registered(&client, &second).unwrap();
        assert_eq!(b.len(), 2);
        let other = ClientId::parse("other").unwrap();
        assert!(!Arc::ptr_eq(&cache.registered(&other, &first).unwrap(), &a));
        assert_eq!(cache.sets.lock().len(), 2, "one entry per partner");
        assert!(cache.registered(&client, "{not json").is_err());

        let uri = |u: &str| Url::parse(u).unwrap();
        let one = cache.fetched(&client, &uri("https://fix.example/jwks"));
        let same = cache.fetched(&client, &uri("https://fix.example/jwks"));
        assert!(Arc::ptr_eq(&one, &same));
        let moved = cache.fetched(&client, &uri("https://fix.example/jwks2"));
        assert!(!Arc::ptr_eq(&one, &moved));
        assert_eq!(cache.uris.lock().len(), 1);
    }

    #[test]
    fn a_jwks_uri_is_https_or_loopback_without_credentials() {
        assert!(check_jwks_uri("https://fix.example/jwks.json").is_ok());
        assert!(check_jwks_uri("http://127.0.0.1:8080/jwks.json").is_ok());
        for bad in [
            "http://fix.example/jwks.json",
            "https://user:pw@fix.example/jwks.json",
            "https://fix.example/jwks.json#k",
            "file:///etc/passwd",
            "jwks.json",
        ] {
            assert!(check_jwks_uri(bad).is_err(), "{bad}");
        }
    }
}
