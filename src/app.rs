//! Everything a request may need, built once at start and shared by reference. No statics:
//! a test can run many apps in one process.

use crate::access_log::{AccessLog, CheckpointKey};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::Catalog;
use crate::metrics::Metrics;
use crate::oidc::RelyingParty;
use crate::proxy::ProxyCaches;
use crate::state::SharedState;
use crate::store::Store;
use crate::tokens::{KeyRing, Verifier};
use std::sync::Arc;

pub struct App {
    pub settings: Settings,
    pub catalog: Catalog,
    pub store: Store,
    pub state: SharedState,
    pub keys: Arc<KeyRing>,
    pub verifier: Verifier,
    /// DPoP proofs and server nonces (RFC 9449).
    pub dpop: crate::dpop::Dpop,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    /// Signs the log's checkpoints; held in a file, never in the database.
    pub checkpoint_key: Arc<CheckpointKey>,
    pub proxy: ProxyCaches,
    /// The console's relying party at the workforce provider, when `[console_login]` is set.
    pub console_login: Option<Arc<RelyingParty>>,
    /// The portal's relying party at the insurer's provider, when `[customer_login]` is set.
    pub customer_login: Option<Arc<RelyingParty>>,
    /// The last walk of the whole log, for the console.
    pub latest_verification: crate::access_log::latest::LatestVerification,
    /// The alerts' unusual-hours baseline of the current hour.
    pub alert_baseline: crate::admin::alerts::BaselineCache,
    /// The keys of partners that authenticate with `private_key_jwt`, parsed or fetched once.
    pub client_keys: crate::oauth::client_assertion::PartnerKeyCache,
}

impl App {
    pub fn issuer(&self) -> String {
        self.settings.issuer()
    }
}
