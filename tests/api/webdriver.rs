//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromedriver`), shared by
//! the end-to-end browser tests. Where either is missing, [`start`] says so and returns `None`,
//! and the test skips (`.ci/run` installs both).

use fantoccini::{Client, ClientBuilder};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Keeps chromedriver and the browser's throwaway profile for as long as the test holds it;
/// dropping it stops chromedriver (and with it the browser).
pub struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(binary: &str) -> Option<String> {
    let out = Command::new("which").arg(binary).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A fresh browser with a window of `width` x `height` CSS pixels, or `None` (having said why)
/// where chromium or chromedriver is not installed.
pub async fn start(width: u32, height: u32) -> Option<(Client, Driver)> {
    let (Some(chromedriver), Some(chromium)) = (find("chromedriver"), find("chromium")) else {
        eprintln!(
            "skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    };
    // Two TLS backends are linked (reqwest's and hyper-rustls'): pick one for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let profile = tempfile::tempdir().unwrap();
    let profile_dir = profile.path().display().to_string();
    let driver = Driver {
        child: Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        _profile: profile,
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     format!("--window-size={width},{height}"),
                     format!("--user-data-dir={profile_dir}")],
        }),
    );
    // chromedriver takes a moment to listen.
    for _ in 0..50 {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return Some((client, driver)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not start");
}
