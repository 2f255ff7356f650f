//! The checkpoint key: the Ed25519 key that signs checkpoints and the end of every export. It
//! lives in a file of its own (`[access_log] checkpoint_key_file`), never in the database the
//! checkpoints protect: an intruder who can rewrite the database — and so read the token-signing
//! keys stored there — still cannot sign a rewritten chain.
//!
//! The file is PKCS#8 in PEM (`openssl pkey -in FILE -pubout` reads it), mode 0600. Its `kid`
//! is the RFC 7638 thumbprint of the public key, so pinning the `kid` pins the key.

use super::checkpoint::{PublicKeys, decoding};
use crate::files::{FileError, check_owner_only, create_owner_only};
use crate::secrets::{SecretError, random_bytes};
use crate::tokens::thumbprint;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};
use std::io;
use std::path::{Path, PathBuf};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    #[error(
        "the checkpoint key file {0} does not exist (`keyhole serve` or `keyhole log checkpoint-key` creates it)"
    )]
    Absent(PathBuf),
    #[error("the checkpoint key file {path} is not an Ed25519 PKCS#8 PEM key: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Random(#[from] SecretError),
    #[error("signing with the checkpoint key failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

pub struct CheckpointKey {
    kid: String,
    public_key: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// A PEM Ed25519 key is about 120 bytes; anything much larger is not one.
const KEY_FILE_LIMIT: u64 = 4096;

impl CheckpointKey {
    /// Reads the key; refuses a file that other users can read or write.
    pub fn load(path: &Path) -> Result<Self, CheckpointKeyError> {
        check_owner_only(path)?;
        let pem = match crate::files::read_small(path, KEY_FILE_LIMIT) {
            Ok(pem) => pem,
            Err(FileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(CheckpointKeyError::Absent(path.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let malformed = |reason: String| CheckpointKeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("-----"))
            .collect();
        if !pem.contains(PEM_BEGIN) {
            return Err(malformed(format!("no `{PEM_BEGIN}` line")));
        }
        let der = STANDARD
            .decode(body)
            .map_err(|e| malformed(e.to_string()))?;
        let signing = SigningKey::from_pkcs8_der(&der).map_err(|e| malformed(e.to_string()))?;
        Self::from_signing(&signing)
            .map(|(key, _)| key)
            .map_err(malformed)
    }

    /// Reads the key, creating it (mode 0600) when the file does not exist yet. Returns whether
    /// it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), CheckpointKeyError> {
        match Self::load(path) {
            Err(CheckpointKeyError::Absent(_)) => {}
            other => return other.map(|key| (key, false)),
        }
        let signing = SigningKey::from_bytes(&random_bytes::<32>()?);
        let (key, der) =
            Self::from_signing(&signing).map_err(|reason| CheckpointKeyError::Malformed {
                path: path.to_owned(),
                reason,
            })?;
        // Written in full under a temporary name, then linked into place: the link fails if
        // another process created the file meanwhile, so no one reads a half-written key and
        // two instances starting together end up with the same one.
        let name = path
            .file_name()
            .map_or("checkpoint.key".into(), |n| n.to_string_lossy());
        let temporary =
            path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        create_owner_only(&temporary, pem(&der).as_bytes())?;
        let linked = std::fs::hard_link(&temporary, path);
        // The temporary name goes whatever happened; the key, if linked, stays under `path`.
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok((key, true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Self::load(path).map(|key| (key, false))
            }
            Err(source) => Err(FileError::Io {
                path: path.to_owned(),
                source,
            }
            .into()),
        }
    }

    /// The key, and its PKCS#8 encoding for the file.
    fn from_signing(signing: &SigningKey) -> Result<(Self, Vec<u8>), String> {
        let der = signing.to_pkcs8_der().map_err(|e| e.to_string())?;
        let public_key = signing.verifying_key().to_bytes();
        let kid = thumbprint(&public_key);
        let key = Self {
            decoding: decoding(&kid, &URL_SAFE_NO_PAD.encode(public_key))?,
            kid,
            public_key,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
        };
        Ok((key, der.as_bytes().to_vec()))
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 8037), for pinning and for exports.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(self.public_key),
            "kid": self.kid, "alg": "EdDSA", "use": "sig",
        })
    }

    /// The key as the only one a verification trusts.
    pub fn public_keys(&self) -> PublicKeys {
        PublicKeys::single(&self.kid, self.decoding.clone())
    }

    /// Signs `claims` as a compact JWS of type `typ`; returns the key's id with it. The `typ`
    /// keeps one kind of signed object from passing for another.
    pub fn sign_jws<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<(String, String), CheckpointKeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        let jws = jsonwebtoken::encode(&header, claims, &self.encoding)?;
        Ok((self.kid.clone(), jws))
    }
}

/// PEM as RFC 7468 writes it: base64 in lines of 64 characters between the labels.
fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("{PEM_BEGIN}\n");
    let mut rest = body.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_created_key_is_owner_only_and_loads_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        let (created, fresh) = CheckpointKey::load_or_create(&path).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, fresh) = CheckpointKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(again.kid(), created.kid());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with(PEM_BEGIN)
        );
        // Nothing is left under a temporary name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        CheckpointKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = CheckpointKey::load_or_create(&path).err().unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(matches!(
            CheckpointKey::load(&dir.path().join("absent.key")),
            Err(CheckpointKeyError::Absent(_))
        ));
    }

    #[test]
    fn what_it_signs_verifies_with_its_public_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = CheckpointKey::load_or_create(&dir.path().join("a.key")).unwrap();
        let (other, _) = CheckpointKey::load_or_create(&dir.path().join("b.key")).unwrap();
        let checkpoint =
            super::super::checkpoint::sign(&key, "iss", "c1", 7, "ab", chrono::Utc::now()).unwrap();
        assert_eq!(checkpoint.kid, key.kid());
        key.public_keys().verify(&checkpoint).unwrap();
        assert!(other.public_keys().verify(&checkpoint).is_err());
        let jwks = [key.public_jwk()];
        assert_eq!(
            PublicKeys::from_jwks(&jwks, None).unwrap().kids(),
            [key.kid()]
        );
    }
}
