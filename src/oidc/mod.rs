//! An OpenID Connect relying party (authorization code + PKCE S256, `state`, `nonce`,
//! `max_age`), for every place where people sign in through a provider of ours: the security
//! console's workforce provider (`[console_login]`) and the insurer's customer provider
//! (`[customer_login]`). Nothing here knows which: callers give it a purpose name and a
//! callback, and read what they need from the [`IdentityClaims`].
//!
//! Module map: `settings` (the shared keys), `fetch` (bounded HTTP with timeouts),
//! `discovery` (the checked discovery document), `jwks` (the provider's keys, refetched on an
//! unknown `kid` at most once a minute), `id_token` (complete validation), `callback` (the
//! answer at our callback), `logout_token` (Back-Channel Logout's signed notice),
//! `relying_party` (the two steps of a sign-in, the sign-out URL, logout tokens).
//!
//! `fetch`, `jwks` and the signature half of `id_token` also serve `private_key_jwt` client
//! authentication (`oauth::client_assertion`): a partner's keys are fetched, kept and
//! refetched as a provider's are, and its assertions verified with the same code.

mod callback;
mod claims;
mod discovery;
mod fetch;
mod id_token;
mod jwks;
mod logout_token;
mod relying_party;
mod settings;

pub use callback::{AuthorizationAnswer, MAX_PARAMETER_LENGTH};
pub use claims::IdentityClaims;
pub use fetch::FetchError;
pub(crate) use fetch::ProviderHttp;
pub(crate) use id_token::{Header, read_header, seconds, verify_signature};
pub use id_token::{IdTokenError, LEEWAY_SECONDS};
pub(crate) use jwks::{
    KeyCache, MIN_RSA_BITS, PRIVATE_MEMBERS, ProviderKey, fitting, parse_key_set, rsa_bits,
    strong_ed25519,
};
pub use logout_token::{LogoutClaims, LogoutTokenError};

/// How old a logout token may be when it arrives, in seconds.
pub fn logout_token_max_age() -> u64 {
    logout_token::MAX_AGE_SECONDS.unsigned_abs()
}
pub use relying_party::{
    MAX_RETURN_TO_LENGTH, RelyingParty, SIGN_IN_LIFETIME, SignInStart, SignedIn,
};
pub use settings::{
    DEFAULT_REAUTHENTICATE_AFTER_MINUTES, DEFAULT_SCOPES, ProviderSettings, SettingsError,
    is_token, secure_or_loopback,
};

use crate::secrets::SecretError;
use crate::state::StateError;

/// Everything that can stop a sign-in through a provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// No connection, a timeout, or a 5xx: the provider is not there right now (a 503 page).
    #[error("the sign-in provider is unreachable: {0}")]
    Unavailable(String),
    /// The provider answered, but not as the protocol says (its discovery document, keys or
    /// token answer): a misconfiguration on one side or the other (a 502 page).
    #[error("the sign-in provider's answer is unusable: {0}")]
    Provider(String),
    /// This sign-in cannot complete (a 4xx page).
    #[error("sign-in refused: {0}")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Why a sign-in was refused. For the log: the person sees one plain sentence per kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a parameter of the answer is longer than {MAX_PARAMETER_LENGTH} characters")]
    ParameterTooLong,
    /// No binding cookie, or nothing (any more) under it: expired, or already used.
    #[error("no pending sign-in for this browser (expired, or already used)")]
    NoPendingSignIn,
    #[error("the answer's state is not this browser's")]
    StateMismatch,
    /// The provider answered with an error code (the person cancelled, or may not sign in).
    #[error("the provider answered with error `{0}`")]
    ProviderError(String),
    #[error("the answer came from another issuer")]
    IssuerMismatch,
    #[error("the answer has no code")]
    MissingCode,
    /// The token endpoint refused the code (expired, used, or not ours).
    #[error("the provider refused the code: {0}")]
    CodeRejected(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    #[error(transparent)]
    LogoutToken(#[from] LogoutTokenError),
}

impl From<FetchError> for OidcError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Unreachable(why) => OidcError::Unavailable(why),
            FetchError::Unusable(why) => OidcError::Provider(why),
        }
    }
}
