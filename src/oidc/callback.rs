//! The provider's answer at our callback, as the browser brings it back (RFC 6749 §4.1.2,
//! RFC 9207's `iss`). Nothing in it is trusted; lengths are bounded before anything is looked
//! up, and the provider's own error text (`error_description`) is never read at all.

use serde::Deserialize;

/// `code` and `state` longer than this are refused before anything else happens. Providers'
/// codes are well under 200 characters; ours is 43.
pub const MAX_PARAMETER_LENGTH: usize = 512;

/// The query string of the callback.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizationAnswer {
    pub code: Option<String>,
    pub state: Option<String>,
    /// An OAuth error code (`access_denied`, `login_required`, …) instead of a code.
    pub error: Option<String>,
    /// RFC 9207: the issuer that answered.
    pub iss: Option<String>,
}

impl AuthorizationAnswer {
    /// Whether every parameter is within [`MAX_PARAMETER_LENGTH`].
    pub fn within_bounds(&self) -> bool {
        [&self.code, &self.state, &self.error, &self.iss]
            .into_iter()
            .flatten()
            .all(|value| value.len() <= MAX_PARAMETER_LENGTH)
    }

    /// The provider's error code, reduced to what an OAuth error code can be (for the log).
    pub(crate) fn error_code(&self) -> Option<String> {
        self.error.as_ref().map(|e| {
            e.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_parameters_are_out_of_bounds_and_error_codes_are_reduced() {
        let mut answer = AuthorizationAnswer {
            code: Some("c".repeat(MAX_PARAMETER_LENGTH)),
            state: Some("s".into()),
            ..Default::default()
        };
        assert!(answer.within_bounds());
        answer.state = Some("s".repeat(MAX_PARAMETER_LENGTH + 1));
        assert!(!answer.within_bounds());
        answer.error = Some("access_denied<script>".into());
        assert_eq!(answer.error_code().as_deref(), Some("access_deniedscript"));
    }
}
