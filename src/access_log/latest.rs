//! The latest verification of the whole log, kept for the console's overview: walking ten
//! million records takes minutes, so pages show the last walk's result and its age, and start
//! a new walk in the background when it is stale (one at a time).

use super::{VerifyReport, verify_chain};
use crate::app::App;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone)]
pub struct Verified {
    pub at: DateTime<Utc>,
    pub report: VerifyReport,
}

#[derive(Debug, Default)]
pub struct LatestVerification {
    last: Mutex<Option<Verified>>,
    running: AtomicBool,
}

impl LatestVerification {
    pub fn get(&self) -> Option<Verified> {
        self.last.lock().ok().and_then(|last| last.clone())
    }

    pub fn record(&self, at: DateTime<Utc>, report: VerifyReport) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Verified { at, report });
        }
    }

    /// Whether a walk is under way now.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

/// Walks every chain and its signed checkpoints now, and keeps the result as the latest.
pub async fn verify_log(app: &App) -> Result<VerifyReport, StoreError> {
    app.access_log.settled().await;
    let signed_before = app
        .settings
        .access_log
        .anchor_signed_before(app.clock.now());
    let keys = app.checkpoint_key.public_keys();
    // Read before the walk: the database holds at least this much of our chain then.
    let imported = app.access_log.status().imported.load(Ordering::Acquire);
    let own = (imported > 0).then(|| (app.access_log.chain(), imported));
    let started = app.clock.now();
    let report = verify_chain(&app.store, &keys, Some(signed_before), own).await?;
    if !report.ok {
        tracing::error!(?report.first_broken, "the access log's hash chain is broken");
    }
    app.latest_verification.record(started, report.clone());
    Ok(report)
}

/// Starts a walk in the background unless one is running or the latest is younger than
/// `max_age`.
pub fn refresh_if_stale(app: actix_web::web::Data<App>, max_age: chrono::Duration) {
    let fresh = app
        .latest_verification
        .get()
        .is_some_and(|v| app.clock.now() - v.at < max_age);
    if fresh || app.latest_verification.running.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        if let Err(e) = verify_log(&app).await {
            tracing::error!(error = %e, "background verification of the access log failed");
        }
        app.latest_verification
            .running
            .store(false, Ordering::Release);
    });
}
