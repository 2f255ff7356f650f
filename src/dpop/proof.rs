//! One DPoP proof checked against the request it came with (RFC 9449 §4.3): the JWS is taken
//! apart here rather than by `jsonwebtoken::decode`, so the header is parsed once and its
//! `jwk` can be refused when it carries private material before any key is built from it.

use super::{DpopError, MAX_JTI_LEN, MAX_PROOF_LEN, PROOF_TYP, access_token_hash};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The request a proof must describe.
pub struct Expected<'a> {
    pub method: &'a str,
    /// The request's URI without query or fragment, normalised by [`htu`].
    pub uri: &'a str,
    /// For a resource request: the access token the proof must hash into `ath`.
    pub access_token: Option<&'a str>,
    /// Seconds since the epoch, and how far `iat` may lie from it either way.
    pub now: i64,
    pub window: i64,
}

/// A proof that passed every check but its `jti`'s freshness, which shared state decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key: what tokens are bound to (`cnf.jkt`).
    pub jkt: String,
    pub jti: String,
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Members that only a private or symmetric JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// RFC 9449 §4.3 step 9: the URI without query and fragment, normalised as RFC 3986 §6.2.2
/// and §6.2.3 say (case of scheme and host, default port, dot segments), which is what
/// parsing as a URL does. `None` for anything that is not an absolute http(s) URL.
pub fn htu(uri: &str) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(url.into())
}

fn segment<T: for<'de> Deserialize<'de>>(part: &str, what: &'static str) -> Result<T, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.as_bytes())
        .map_err(|_| DpopError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| DpopError::Malformed(what))
}

/// A proof key, ready for `ring`: its verifiers are several times faster than the pure-Rust
/// ones `jsonwebtoken` uses for ES256, and this runs on every DPoP-bound partner call.
enum ProofKey {
    /// The uncompressed SEC1 point `04 ‖ x ‖ y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl ProofKey {
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s.as_bytes()).ok();
        match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) => {
                let (x, y) = (decode(&ec.x)?, decode(&ec.y)?);
                (x.len() == 32 && y.len() == 32).then(|| {
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    Self::P256(point)
                })
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                decode(&okp.x).filter(|x| x.len() == 32).map(Self::Ed25519)
            }
            AlgorithmParameters::RSA(rsa) => Some(Self::Rsa {
                n: decode(&rsa.n)?,
                e: decode(&rsa.e)?,
            }),
            _ => None,
        }
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{self as sig, UnparsedPublicKey};
        match self {
            Self::P256(point) => UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Self::Ed25519(x) => UnparsedPublicKey::new(&sig::ED25519, x)
                .verify(message, signature)
                .is_ok(),
            Self::Rsa { n, e } => sig::RsaPublicKeyComponents { n, e }
                .verify(&sig::RSA_PSS_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

/// The key in the header, if it is a public key of the proof's algorithm.
fn public_key(alg: Algorithm, jwk: Map<String, Value>) -> Result<(ProofKey, String), DpopError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::BadKey);
    }
    let jwk: Jwk = serde_json::from_value(Value::Object(jwk)).map_err(|_| DpopError::BadKey)?;
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519 && crate::oidc::strong_ed25519(&okp.x)
        }
        // RFC 7518 §3.5 / §4.2: RSA keys of at least 2048 bits, counted from the modulus's
        // first set bit: its octets as sent may start with zeros, which make no key stronger.
        (AlgorithmParameters::RSA(rsa), Algorithm::PS256) => {
            crate::oidc::rsa_bits(&rsa.n) >= crate::oidc::MIN_RSA_BITS
        }
        _ => false,
    };
    if !fits {
        return Err(DpopError::BadKey);
    }
    let key = ProofKey::from_jwk(&jwk).ok_or(DpopError::BadKey)?;
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::BadKey)?;
    Ok((key, jkt))
}

pub fn verify(proof: &str, expected: &Expected<'_>) -> Result<Proof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed("longer than 4096 bytes"));
    }
    let mut parts = proof.split('.');
    let (Some(header_part), Some(claims_part), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed("not a compact JWS"));
    };
    let header: Header = segment(header_part, "header")?;
    if header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(DpopError::WrongType);
    }
    let alg = match header.alg.as_deref() {
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        Some("PS256") => Algorithm::PS256,
        _ => return Err(DpopError::UnsupportedAlgorithm),
    };
    let (key, jkt) = public_key(alg, header.jwk.ok_or(DpopError::BadKey)?)?;
    let signed = &proof[..header_part.len() + 1 + claims_part.len()];
    let signature = URL_SAFE_NO_PAD
        .decode(signature.as_bytes())
        .map_err(|_| DpopError::BadSignature)?;
    if !key.verifies(signed.as_bytes(), &signature) {
        return Err(DpopError::BadSignature);
    }

    let claims: Claims = segment(claims_part, "claims")?;
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(DpopError::Malformed(
            "jti is missing or longer than 256 bytes",
        ))?;
    if claims.htm.as_deref() != Some(expected.method) {
        return Err(DpopError::WrongMethod);
    }
    if claims.htu.as_deref().and_then(htu).as_deref() != Some(expected.uri) {
        return Err(DpopError::WrongUri);
    }
    let iat = claims.iat.ok_or(DpopError::Malformed("iat is missing"))?;
    if iat.abs_diff(expected.now) > expected.window.unsigned_abs() {
        return Err(DpopError::Stale);
    }
    if let Some(token) = expected.access_token
        && claims.ath.as_deref() != Some(access_token_hash(token).as_str())
    {
        return Err(DpopError::WrongAccessTokenHash);
    }
    let nonce = match claims.nonce {
        Some(nonce) if nonce.len() > MAX_JTI_LEN => {
            return Err(DpopError::Malformed("nonce is longer than 256 bytes"));
        }
        nonce => nonce,
    };
    Ok(Proof { jkt, jti, nonce })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Proofs made the way a partner makes them, for tests in this crate.
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use serde_json::json;

    pub struct ProofKey {
        pub encoding: EncodingKey,
        pub jwk: Value,
    }

    impl ProofKey {
        pub fn ed25519(seed: u8) -> Self {
            let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            let der = signing.to_pkcs8_der().unwrap();
            let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
            Self {
                encoding: EncodingKey::from_ed_der(der.as_bytes()),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            }
        }

        pub fn thumbprint(&self) -> String {
            let jwk: Jwk = serde_json::from_value(self.jwk.clone()).unwrap();
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
        }

        pub fn sign(&self, claims: &Value) -> String {
            self.sign_with(claims, |_| {})
        }

        /// Signs with a header written out by hand, for members `jsonwebtoken` would drop.
        pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
            );
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::EdDSA)
                    .unwrap();
            format!("{message}.{signature}")
        }

        pub fn sign_with(&self, claims: &Value, adjust: impl FnOnce(&mut JwtHeader)) -> String {
            let mut header = JwtHeader::new(Algorithm::EdDSA);
            header.typ = Some(PROOF_TYP.into());
            header.jwk = Some(serde_json::from_value(self.jwk.clone()).unwrap());
            adjust(&mut header);
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::ProofKey;
    use super::*;
    use serde_json::json;

    const URI: &str = "https://keyhole.example/partner/v1/claims";
    const NOW: i64 = 1_900_000_000;

    fn expected(token: Option<&str>) -> Expected<'_> {
        Expected {
            method: "GET",
            uri: URI,
            access_token: token,
            now: NOW,
            window: 60,
        }
    }

    fn claims() -> Value {
        json!({"jti": "j-1", "htm": "GET", "htu": URI, "iat": NOW, "ath": access_token_hash("tok")})
    }

    fn with(change: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut c = claims();
        change(c.as_object_mut().unwrap());
        c
    }

    #[test]
    fn a_good_proof_names_its_key() {
        let key = ProofKey::ed25519(1);
        let proof = verify(&key.sign(&claims()), &expected(Some("tok"))).unwrap();
        assert_eq!(proof.jkt, key.thumbprint());
        assert_eq!(proof.jti, "j-1");
        assert_eq!(proof.nonce, None);
    }

    #[test]
    fn each_claim_must_describe_the_request() {
        let key = ProofKey::ed25519(1);
        let cases: Vec<(Value, DpopError)> = vec![
            (
                with(|c| {
                    c.insert("htm".into(), json!("POST"));
                }),
                DpopError::WrongMethod,
            ),
            (
                with(|c| {
                    c.insert("htm".into(), json!("get"));
                }),
                DpopError::WrongMethod,
            ),
            (
                with(|c| {
                    c.insert(
                        "htu".into(),
                        json!("https://keyhole.example/partner/v1/claims/C-1"),
                    );
                }),
                DpopError::WrongUri,
            ),
            (
                with(|c| {
                    c.insert(
                        "htu".into(),
                        json!("https://other.example/partner/v1/claims"),
                    );
                }),
                DpopError::WrongUri,
            ),
            (
                with(|c| {
                    c.remove("htu");
                }),
                DpopError::WrongUri,
            ),
            (
                with(|c| {
                    c.insert("iat".into(), json!(NOW - 61));
                }),
                DpopError::Stale,
            ),
            (
                with(|c| {
                    c.insert("iat".into(), json!(NOW + 61));
                }),
                DpopError::Stale,
            ),
            (
                with(|c| {
                    c.remove("iat");
                }),
                DpopError::Malformed("iat is missing"),
            ),
            (
                with(|c| {
                    c.insert("ath".into(), json!(access_token_hash("other")));
                }),
                DpopError::WrongAccessTokenHash,
            ),
            (
                with(|c| {
                    c.remove("ath");
                }),
                DpopError::WrongAccessTokenHash,
            ),
            (
                with(|c| {
                    c.remove("jti");
                }),
                DpopError::Malformed("jti is missing or longer than 256 bytes"),
            ),
            (
                with(|c| {
                    c.insert("jti".into(), json!("x".repeat(257)));
                }),
                DpopError::Malformed("jti is missing or longer than 256 bytes"),
            ),
        ];
        for (claims, error) in cases {
            assert_eq!(
                verify(&key.sign(&claims), &expected(Some("tok"))),
                Err(error),
                "{claims}"
            );
        }
        // The window's edges are inside.
        for iat in [NOW - 60, NOW + 60] {
            let c = with(|c| {
                c.insert("iat".into(), json!(iat));
            });
            assert!(verify(&key.sign(&c), &expected(Some("tok"))).is_ok());
        }
    }

    /// Red team: an Ed25519 jwk of small order (here the identity point) verifies a signature
    /// anyone can make for any message, so proofs "by" it are forgeable by whoever holds a
    /// token bound to it: a bound token worth no more than a Bearer one.
    #[test]
    fn a_weak_ed25519_key_is_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let header = json!({"typ": PROOF_TYP, "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(identity)}});
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
        );
        // R = the identity, s = 0: [s]B = R + [k]A holds for every message when A is the
        // identity. No private key was involved.
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let proof = format!("{message}.{}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(
            verify(&proof, &expected(Some("tok"))),
            Err(DpopError::BadKey)
        );
    }

    /// Red team: the size check counted the modulus's octets as sent, so a 1024-bit RSA key
    /// written with 128 leading zero octets passed as a 2048-bit one.
    #[test]
    fn a_small_rsa_key_padded_with_zero_octets_is_refused() {
        // Made for this test only (`openssl genrsa 1024`, as PKCS#1 DER).
        let encoding = jsonwebtoken::EncodingKey::from_rsa_der(include_bytes!(
            "testdata/test-only-rsa-1024.der"
        ));
        let public =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::PS256).unwrap())
                .unwrap();
        let n = URL_SAFE_NO_PAD
            .decode(public["n"].as_str().unwrap())
            .unwrap();
        assert_eq!(n.len(), 128);
        let mut padded = vec![0u8; 256 - n.len()];
        padded.extend_from_slice(&n);
        for modulus in [padded, n] {
            let header = json!({"typ": PROOF_TYP, "alg": "PS256", "jwk": {
                "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&modulus), "e": public["e"]}});
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
            );
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &encoding, Algorithm::PS256)
                    .unwrap();
            assert_eq!(
                verify(&format!("{message}.{signature}"), &expected(Some("tok"))),
                Err(DpopError::BadKey),
                "a modulus of {} octets",
                modulus.len()
            );
        }
    }

    #[test]
    fn htu_is_compared_after_normalisation_without_query_or_fragment() {
        let key = ProofKey::ed25519(1);
        for htu in [
            "HTTPS://Keyhole.Example/partner/v1/claims",
            "https://keyhole.example:443/partner/v1/claims",
            "https://keyhole.example/partner/v1/claims?page=2",
            "https://keyhole.example/partner/v1/claims#x",
            "https://keyhole.example/partner/v1/./claims",
        ] {
            let c = with(|c| {
                c.insert("htu".into(), json!(htu));
            });
            assert!(
                verify(&key.sign(&c), &expected(Some("tok"))).is_ok(),
                "{htu}"
            );
        }
        assert_eq!(htu("ftp://keyhole.example/x"), None);
        assert_eq!(htu("/partner/v1/claims"), None);
    }

    #[test]
    fn the_header_decides_nothing_it_should_not() {
        let key = ProofKey::ed25519(1);
        let other = ProofKey::ed25519(2);
        let wrong_typ = key.sign_with(&claims(), |h| h.typ = Some("JWT".into()));
        assert_eq!(
            verify(&wrong_typ, &expected(Some("tok"))),
            Err(DpopError::WrongType)
        );
        // Signed by one key, naming another: the named key does not verify it.
        let swapped = key.sign_with(&claims(), |h| {
            h.jwk = Some(serde_json::from_value(other.jwk.clone()).unwrap())
        });
        assert_eq!(
            verify(&swapped, &expected(Some("tok"))),
            Err(DpopError::BadSignature)
        );
        let no_key = key.sign_with(&claims(), |h| h.jwk = None);
        assert_eq!(
            verify(&no_key, &expected(Some("tok"))),
            Err(DpopError::BadKey)
        );
        // HMAC with a symmetric key in the header: refused before any key is built.
        let mut hs = jsonwebtoken::Header::new(Algorithm::HS256);
        hs.typ = Some(PROOF_TYP.into());
        hs.jwk = Some(serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap());
        let hmac = jsonwebtoken::encode(
            &hs,
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(
            verify(&hmac, &expected(Some("tok"))),
            Err(DpopError::UnsupportedAlgorithm)
        );
        // A private member in the jwk.
        let mut private = key.jwk.clone();
        private["d"] = json!("AAAA");
        let leaky = key.sign_raw(
            &json!({"typ": PROOF_TYP, "alg": "EdDSA", "jwk": private}),
            &claims(),
        );
        assert_eq!(
            verify(&leaky, &expected(Some("tok"))),
            Err(DpopError::BadKey)
        );
        // alg: none, and a tampered body.
        let good = key.sign(&claims());
        let mut pieces = good.split('.');
        let (h, _, s) = (
            pieces.next().unwrap(),
            pieces.next().unwrap(),
            pieces.next().unwrap(),
        );
        let body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&with(|c| {
                c.insert("jti".into(), json!("j-2"));
            }))
            .unwrap(),
        );
        assert_eq!(
            verify(&format!("{h}.{body}.{s}"), &expected(Some("tok"))),
            Err(DpopError::BadSignature)
        );
        let none = URL_SAFE_NO_PAD.encode(br#"{"typ":"dpop+jwt","alg":"none"}"#);
        assert_eq!(
            verify(&format!("{none}.{body}."), &expected(Some("tok"))),
            Err(DpopError::UnsupportedAlgorithm)
        );
        assert_eq!(
            verify("a.b", &expected(None)),
            Err(DpopError::Malformed("not a compact JWS"))
        );
        assert!(verify(&"a".repeat(5000), &expected(None)).is_err());
    }
}
