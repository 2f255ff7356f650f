//! Secrets at rest: the database and the key files are closed to other users, and the
//! token-signing keys in the database are encrypted under a key kept outside it.

use crate::helpers::*;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use keyhole::config::{KeysSettings, Settings};
use keyhole::files;
use keyhole::secrets::Secret;
use keyhole::startup::{Application, Options};
use keyhole::store::Store;
use keyhole::tokens::{EncryptionKey, generate_key};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Settings for an app of the test's own over a SQLite file in `dir`, its checkpoint key and
/// access-log journal there too (never in the working directory).
fn settings_in(dir: &Path) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}?mode=rwc", dir.join("keyhole.db").display()),
        ..Settings::default()
    };
    settings.access_log.checkpoint_key_file = dir.join("checkpoint.key");
    settings.access_log.journal_dir = dir.join("journal");
    settings
}

#[tokio::test]
async fn the_sqlite_database_and_its_wal_and_shm_files_are_created_owner_only() {
    let app = spawn_app().await;
    let Some(db) = app.sqlite_file() else {
        eprintln!("skipped: the database is not a SQLite file");
        return;
    };
    // A grant and tokens, so the write-ahead log has content.
    app.tokens(&["claims:status"]).await;
    for suffix in ["", "-wal", "-shm"] {
        let path = db.with_file_name(format!("keyhole.db{suffix}"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn a_database_readable_by_others_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    drop(Store::connect(&settings.database_url).await.unwrap());
    let db = dir.path().join("keyhole.db");
    chmod(&db, 0o644);

    let err = Application::build(settings.clone(), Options::default())
        .await
        .err()
        .expect("refused: the database is readable by others");
    let message = format!("{err:#}");
    assert!(message.contains(&db.display().to_string()), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
    assert!(
        message.contains("allow_insecure_file_permissions"),
        "{message}"
    );

    // The operator's override starts it (with a warning).
    let allowed = Settings {
        allow_insecure_file_permissions: true,
        ..settings
    };
    Application::build(allowed, Options::default())
        .await
        .expect("allowed explicitly");
}

#[tokio::test]
async fn the_encryption_key_file_is_created_owner_only_and_a_readable_one_is_refused() {
    let app = spawn_app().await;
    let key_file = app.dir().join("keys.key");
    assert_eq!(mode(&key_file), 0o600);

    chmod(&key_file, 0o640);
    let err = Application::build(again(&app), Options::default())
        .await
        .err()
        .expect("refused: the key file is readable by others");
    let message = format!("{err:#}");
    assert!(
        message.contains(&key_file.display().to_string()),
        "{message}"
    );
    assert!(message.contains("chmod 600"), "{message}");
    assert!(
        message.contains("allow_insecure_file_permissions"),
        "{message}"
    );
}

/// The settings of `app` for another start over the same database and key. `app` still runs
/// and holds its access-log journal, so the other start gets a journal (a chain) of its own.
fn again(app: &TestApp) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..app.app.settings.clone()
    };
    settings.access_log.journal_dir = app
        .dir()
        .join(format!("journal-{}", uuid::Uuid::new_v4().simple()));
    settings
}

#[tokio::test]
async fn signing_keys_in_the_database_are_encrypted() {
    let app = spawn_app().await;
    let keys = app.app.store.all_signing_keys().await.unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(
            ed25519_dalek::SigningKey::from_pkcs8_der(&key.private_key).is_err(),
            "signing key {} is stored in the clear",
            key.kid
        );
    }

    // They open with the key file, and the database files hold no plain copy.
    let encryption_key = app.encryption_key();
    for key in &keys {
        let der = encryption_key.open(&key.kid, &key.private_key).unwrap();
        ed25519_dalek::SigningKey::from_pkcs8_der(&der).unwrap();
        if let Some(db) = app.sqlite_file() {
            for suffix in ["", "-wal"] {
                let bytes = std::fs::read(db.with_file_name(format!("keyhole.db{suffix}")))
                    .unwrap_or_default();
                assert!(
                    !bytes.windows(der.len()).any(|w| w == der.as_slice()),
                    "a plain copy of {} in keyhole.db{suffix}",
                    key.kid
                );
            }
        }
    }
}

#[tokio::test]
async fn a_wrong_or_missing_encryption_key_stops_the_start_and_makes_no_new_key() {
    let app = spawn_app().await;
    let kid = app.app.keys.current_kid();
    let count = app.app.store.all_signing_keys().await.unwrap().len();

    let wrong = Settings {
        keys: KeysSettings {
            encryption_key_file: None,
            encryption_key: Some(Secret::new(
                EncryptionKey::generate().unwrap().to_base64().to_string(),
            )),
        },
        ..again(&app)
    };
    let err = Application::build(wrong, Options::default())
        .await
        .err()
        .expect("refused: the key does not open the signing keys");
    let message = format!("{err:#}");
    assert!(message.contains(&kid), "{message}");
    assert!(message.contains("cannot be decrypted"), "{message}");
    assert!(message.contains("keys.encryption_key_file"), "{message}");

    // A lost key file is not replaced by a new key.
    let key_file = app.dir().join("keys.key");
    let saved = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let err = Application::build(again(&app), Options::default())
        .await
        .err()
        .expect("refused: the key file is gone");
    let message = format!("{err:#}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        message.contains(&key_file.display().to_string()),
        "{message}"
    );
    assert!(!key_file.exists(), "no new key file");

    let keys = app.app.store.all_signing_keys().await.unwrap();
    assert_eq!(keys.len(), count, "no new signing key");
    assert!(keys.iter().any(|k| k.kid == kid && k.retired_at.is_none()));

    // With the right key back, it starts and signs with the same key.
    files::create_owner_only(&key_file, &saved).unwrap();
    let application = Application::build(again(&app), Options::default())
        .await
        .unwrap();
    assert_eq!(application.app().keys.current_kid(), kid);
}

#[tokio::test]
async fn signing_keys_stored_in_the_clear_are_encrypted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    let store = Store::connect(&settings.database_url).await.unwrap();
    // As an older version stored it: plain PKCS#8.
    let plain = generate_key(chrono::Utc::now()).unwrap();
    store.add_signing_key(plain.clone()).await.unwrap();

    let application = Application::build(settings, Options::default())
        .await
        .unwrap();
    assert_eq!(
        application.app().keys.current_kid(),
        plain.kid,
        "the same key signs"
    );
    let key_file = dir.path().join("keyhole-keys.key");
    assert_eq!(
        mode(&key_file),
        0o600,
        "the default key file, beside the database"
    );
    let stored = store.all_signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].private_key, plain.private_key);
    let opened = EncryptionKey::read_file(&key_file)
        .unwrap()
        .open(&plain.kid, &stored[0].private_key)
        .unwrap();
    assert_eq!(opened.as_slice(), plain.private_key.as_slice());
}
