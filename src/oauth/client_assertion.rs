//! `private_key_jwt` client authentication (RFC 7523 §2.2, RFC 7521): the partner signs a
//! short-lived assertion with a key it registered (`partner add --jwks-file` or `--jwks-uri`).

use serde_json::Value;

/// The largest JWKS a partner may register or serve: room for a handful of keys.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Checks a JWKS a partner registers: JSON `{"keys": [...]}` with at least one key, each with a
/// `kty`, and no private key material.
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
    for key in keys {
        if key.get("kty").and_then(Value::as_str).is_none() {
            anyhow::bail!("every key needs a `kty`");
        }
        // RFC 7517 §6.2.2 / §6.3.2 / §6.4: `d` (and `k` for symmetric keys) are secrets.
        if key.get("d").is_some() || key.get("k").is_some() {
            anyhow::bail!(
                "the JWKS holds private or symmetric key material; register public keys only"
            );
        }
    }
    Ok(())
}
