//! Strong ETags over the exact answer body, and RFC 9110 `If-None-Match` matching.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub fn of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// Weak comparison, as RFC 9110 §13.1.2 prescribes for `If-None-Match`.
pub fn matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_follow_the_body_and_match_lists() {
        let a = of(b"{\"id\":\"C-1\"}");
        assert_eq!(a, of(b"{\"id\":\"C-1\"}"));
        assert_ne!(a, of(b"{\"id\":\"C-2\"}"));
        assert!(matches(&a, &a));
        assert!(matches(&format!("\"x\", W/{a}"), &a));
        assert!(matches("*", &a));
        assert!(!matches("\"x\"", &a));
    }
}
