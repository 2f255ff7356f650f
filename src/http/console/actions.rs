//! The console's containment actions take a reason, which goes into the request's audit row
//! before the action runs: an action whose reason cannot be recorded does not happen.

use super::form::CsrfProtected;
use super::gate::Person;
use crate::app::App;
use crate::error::{Internal, PageError};
use serde::Deserialize;

/// Bounded: the person typed it, and it is stored.
const REASON_CHARS: std::ops::RangeInclusive<usize> = 3..=500;

#[derive(Deserialize)]
pub struct ReasonForm {
    csrf_token: String,
    reason: String,
}

impl CsrfProtected for ReasonForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl ReasonForm {
    /// The trimmed reason, or why it is refused (shown on the confirmation page again).
    pub fn reason(&self) -> Result<&str, String> {
        let reason = self.reason.trim();
        if REASON_CHARS.contains(&reason.chars().count()) {
            Ok(reason)
        } else {
            Err(format!(
                "Give a reason of {} to {} characters: it goes on the audit record.",
                REASON_CHARS.start(),
                REASON_CHARS.end()
            ))
        }
    }
}

/// Writes the reason onto this request's audit row.
pub async fn record_reason(app: &App, person: &Person, reason: &str) -> Result<(), PageError> {
    app.store
        .set_admin_audit_reason(person.audit_id, reason)
        .await
        .map_err(Internal::from)?;
    tracing::info!(person = %person.email, reason, "console action");
    Ok(())
}
