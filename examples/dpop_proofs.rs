//! DPoP proofs (RFC 9449) for the load benchmark, made in advance because wrk cannot sign:
//! `bench/dpop.lua` sends one per request, never one twice. The ES256 key comes from a seed
//! (SHA-256 of it is the private scalar), so every call with the same seed is the same key.
//!
//! ```sh
//! # the key's RFC 7638 thumbprint (what a bound token's cnf.jkt holds)
//! cargo run --release --example dpop_proofs -- --seed bench thumbprint
//! # one proof for a token request (htm POST, no ath)
//! cargo run --release --example dpop_proofs -- --seed bench token --htu http://127.0.0.1:18090/oauth/token
//! # N proofs for partner calls with this access token (ath), one per line, iat = now, unique jti
//! cargo run --release --example dpop_proofs -- --seed bench resource \
//!   --htu http://127.0.0.1:18090/partner/v1/claims/C-1001 --access-token-file token --count 150000 >proofs
//! ```
//!
//! A proof is accepted while its `iat` is within the server's window (60 s by default), so make
//! them just before the run that sends them.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Parser, Subcommand};
use p256::ecdsa::signature::Signer;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(about = "DPoP proofs for the load benchmark")]
struct Args {
    /// Any string: the key is derived from it, so the same seed is the same key.
    #[arg(long, default_value = "keyhole-bench")]
    seed: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Prints the key's RFC 7638 thumbprint.
    Thumbprint,
    /// Prints one proof for a token request (htm POST).
    Token {
        #[arg(long)]
        htu: String,
        #[arg(long)]
        nonce: Option<String>,
    },
    /// Prints COUNT proofs for resource calls, one per line.
    Resource {
        #[arg(long)]
        htu: String,
        #[arg(long, default_value = "GET")]
        htm: String,
        /// The access token, for `ath`; or --access-token-file.
        #[arg(long, conflicts_with = "access_token_file")]
        access_token: Option<String>,
        #[arg(long)]
        access_token_file: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long)]
        nonce: Option<String>,
    },
}

struct Key {
    key: p256::ecdsa::SigningKey,
    /// The protected header, identical in every proof: encoded once.
    header: String,
    jwk: (String, String),
}

impl Key {
    fn from_seed(seed: &str) -> anyhow::Result<Self> {
        let scalar = Sha256::digest(format!("keyhole dpop bench key\0{seed}"));
        let key = p256::ecdsa::SigningKey::from_slice(&scalar)
            .context("this seed gives no P-256 key; try another")?;
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = point
            .x()
            .zip(point.y())
            .context("P-256 key without coordinates")?;
        let jwk = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let header = json!({"typ": "dpop+jwt", "alg": "ES256",
                            "jwk": {"kty": "EC", "crv": "P-256", "x": jwk.0, "y": jwk.1}});
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        Ok(Self { key, header, jwk })
    }

    fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk.0, self.jwk.1
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical))
    }

    fn proof(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

fn now() -> anyhow::Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = Key::from_seed(&args.seed)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.what {
        What::Thumbprint => writeln!(out, "{}", key.thumbprint())?,
        What::Token { htu, nonce } => {
            let mut claims = json!({"htm": "POST", "htu": htu, "iat": now()?,
                                    "jti": uuid::Uuid::new_v4().to_string()});
            if let Some(nonce) = nonce {
                claims["nonce"] = json!(nonce);
            }
            writeln!(out, "{}", key.proof(&claims)?)?;
        }
        What::Resource {
            htu,
            htm,
            access_token,
            access_token_file,
            count,
            nonce,
        } => {
            let token = match (access_token, access_token_file) {
                (Some(token), _) => token,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .trim()
                    .to_owned(),
                (None, None) => bail!("give --access-token or --access-token-file"),
            };
            let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            // jti: a random prefix for this batch and a counter, so no two proofs share one,
            // within the batch or across batches.
            let batch = uuid::Uuid::new_v4().simple().to_string();
            let mut claims = json!({"htm": htm, "htu": htu, "ath": ath});
            if let Some(nonce) = nonce {
                claims["nonce"] = json!(nonce);
            }
            for i in 0..count {
                // iat is read per proof: a long batch does not age its last proofs.
                claims["iat"] = json!(now()?);
                claims["jti"] = json!(format!("{batch}-{i}"));
                writeln!(out, "{}", key.proof(&claims)?)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
