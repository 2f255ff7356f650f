//! Encryption at rest of the token-signing keys. Each private key is sealed with
//! XChaCha20-Poly1305 under a 32-byte key kept outside the database (a file, or a value from a
//! secret manager), so that a copy of the database alone (a backup, a dump) does not let anyone
//! sign tokens. The nonce is random per seal (192 bits: no counter to keep across instances),
//! and the key's `kid` is the associated data, so a sealed key moved to another row does not
//! open.

use crate::files::{self, FileError};
use crate::secrets::{SecretError, random_bytes};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use std::path::Path;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Starts every sealed key and names its format. Plain PKCS#8 DER, as databases from before
/// sealing hold, starts with 0x30 (an ASN.1 SEQUENCE), so the two never look alike.
const MAGIC: &[u8; 4] = b"khs1";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("an encryption key must be the base64 of 32 bytes")]
    BadKey,
    #[error(
        "the configured encryption key is not the one it was encrypted with (or the stored value was altered)"
    )]
    WrongKey,
    #[error("the stored value is not a sealed key")]
    Malformed,
    #[error(transparent)]
    Random(#[from] SecretError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// The key that seals the signing keys.
pub struct EncryptionKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(***)")
    }
}

/// Whether a stored private key is sealed (rather than plain DER from before sealing).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

impl EncryptionKey {
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self(Zeroizing::new(random_bytes::<32>()?)))
    }

    /// Parses the base64 form (standard alphabet, as `openssl rand -base64 32` prints it).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SealError::BadKey)?,
        );
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self(Zeroizing::new(key)))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }

    /// Reads a key file (its base64 form); the caller checks the file's permissions first.
    pub fn read_file(path: &Path) -> Result<Self, SealError> {
        // A base64 key is 44 bytes; a huge or endless file is refused, not read.
        let text = Zeroizing::new(crate::files::read_small(path, 4096)?);
        Self::from_base64(&text)
    }

    /// Creates a key file holding a new key, readable by its owner only; fails if it exists.
    pub fn create_file(path: &Path) -> Result<Self, SealError> {
        let key = Self::generate()?;
        let mut text = key.to_base64();
        text.push('\n');
        files::create_owner_only(path, text.as_bytes())?;
        Ok(key)
    }

    /// A key of its own for another purpose (HMAC-SHA256 under a label), so every instance
    /// holding this key derives the same one and nothing else can.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut out = Zeroizing::new([0u8; 32]);
        // HMAC takes keys of any length: this cannot fail.
        if let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_slice()) {
            mac.update(label.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    pub fn same_as(&self, other: &EncryptionKey) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, SealError> {
        XChaCha20Poly1305::new_from_slice(self.0.as_slice()).map_err(|_| SealError::BadKey)
    }

    /// Seals a private key for the row of `kid`.
    pub fn seal(&self, kid: &str, private_key: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let ciphertext = self
            .cipher()?
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: private_key,
                    aad: kid.as_bytes(),
                },
            )
            // Encryption fails only for messages beyond 256 GiB.
            .map_err(|_| SealError::Malformed)?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens a key sealed for the row of `kid`.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::Malformed)?;
        let (nonce, ciphertext) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(SealError::Malformed)?;
        self.cipher()?
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_key_and_its_kid() {
        let key = EncryptionKey::generate().unwrap();
        let sealed = key.seal("kid-1", b"private").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(key.open("kid-1", &sealed).unwrap().as_slice(), b"private");
        assert_ne!(
            sealed,
            key.seal("kid-1", b"private").unwrap(),
            "a fresh nonce"
        );

        let other = EncryptionKey::generate().unwrap();
        assert!(matches!(
            other.open("kid-1", &sealed),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            key.open("kid-2", &sealed),
            Err(SealError::WrongKey)
        ));
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            key.open("kid-1", &altered),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            key.open("kid-1", b"\x30\x2e plain DER"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn keys_round_trip_through_base64_and_owner_only_files() {
        use std::os::unix::fs::PermissionsExt;
        let key = EncryptionKey::generate().unwrap();
        let again = EncryptionKey::from_base64(&key.to_base64()).unwrap();
        assert!(key.same_as(&again));
        assert!(EncryptionKey::from_base64("c2hvcnQ=").is_err());
        assert!(EncryptionKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{key:?}"), "EncryptionKey(***)");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let created = EncryptionKey::create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(EncryptionKey::read_file(&path).unwrap().same_as(&created));
        assert!(
            EncryptionKey::create_file(&path).is_err(),
            "never overwritten"
        );
    }
}
