//! SIP digest authentication (RFC 3261 §22, RFC 8760: MD5 and SHA-256), for the registrar
//! and for challenging INVITEs.
//!
//! Nonces are stateless: `<issue time>.<HMAC-SHA256(secret, issue time)>`, so any node that
//! shares the secret can check one, and a stale nonce is told apart from a forged one
//! (stale → re-challenge with `stale=true`; forged → 403). Time is an argument.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest algorithms we offer and accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The name used in `algorithm=` parameters.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` value (case-insensitive).
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// Why an Authorization header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("authorization scheme is not Digest")]
    NotDigest,
    #[error("digest credentials lack {0}")]
    Missing(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    #[error("malformed digest credentials")]
    Malformed,
}

/// Parsed `Authorization: Digest …` credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    /// `Some((nc, cnonce))` when `qop=auth`.
    pub qop_auth: Option<(String, String)>,
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses the value of an Authorization (or Proxy-Authorization) header.
    pub fn parse(value: &str) -> Result<Credentials, AuthError> {
        let rest = value.trim_start();
        let (scheme, params) = rest.split_once(char::is_whitespace).ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(AuthError::NotDigest);
        }
        let fields = parse_fields(params)?;
        let get = |name: &'static str| {
            fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
        };
        let need = |name: &'static str| get(name).ok_or(AuthError::Missing(name));
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(AuthError::Algorithm(a))?,
        };
        let qop_auth = match get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some((need("nc")?, need("cnonce")?)),
            Some(_) => return Err(AuthError::Malformed),
        };
        Ok(Credentials {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?.to_ascii_lowercase(),
            algorithm,
            qop_auth,
            opaque: get("opaque"),
        })
    }

    /// True if `response` is right for this password and request method (constant-time).
    pub fn verify(&self, method: &str, password: &str) -> bool {
        let expected = response(
            self.algorithm,
            &self.username,
            &self.realm,
            password,
            method,
            &self.uri,
            &self.nonce,
            self.qop_auth.as_ref().map(|(nc, c)| (nc.as_str(), c.as_str())),
        );
        constant_time_eq(expected.as_bytes(), self.response.as_bytes())
    }
}

/// `key=value` pairs separated by commas; values may be quoted.
fn parse_fields(s: &str) -> Result<Vec<(String, String)>, AuthError> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or(AuthError::Malformed)?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or(AuthError::Malformed)?;
            (q[..end].to_owned(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key.trim().to_owned(), value));
        rest = remaining.trim_start().strip_prefix(',').unwrap_or(remaining).trim_start();
        if !remaining.trim_start().is_empty() && !remaining.trim_start().starts_with(',') {
            return Err(AuthError::Malformed);
        }
    }
    Ok(out)
}

/// The digest `response` (RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1).
#[allow(clippy::too_many_arguments)]
pub fn response(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop_auth: Option<(&str, &str)>,
) -> String {
    let ha1 = algorithm.hash(&format!("{username}:{realm}:{password}"));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    match qop_auth {
        Some((nc, cnonce)) => algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    /// Ours, but older than the allowed age: re-challenge with `stale=true`.
    Stale,
    /// Not issued by us (or tampered with).
    Invalid,
}

/// Issues and checks stateless nonces with a shared secret.
#[derive(Clone)]
pub struct Nonces {
    secret: Vec<u8>,
    max_age_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("max_age_secs", &self.max_age_secs).finish_non_exhaustive()
    }
}

impl Nonces {
    pub fn new(secret: &[u8], max_age_secs: u64) -> Nonces {
        Nonces { secret: secret.to_vec(), max_age_secs }
    }

    fn mac(&self, issued: u64) -> String {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(&issued.to_be_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A nonce issued at `now` (seconds since the Unix epoch).
    pub fn issue(&self, now: u64) -> String {
        format!("{now:x}.{}", self.mac(now))
    }

    pub fn check(&self, nonce: &str, now: u64) -> NonceCheck {
        let Some((ts, mac)) = nonce.split_once('.') else { return NonceCheck::Invalid };
        let Ok(issued) = u64::from_str_radix(ts, 16) else { return NonceCheck::Invalid };
        if !constant_time_eq(self.mac(issued).as_bytes(), mac.as_bytes())
            || issued > now.saturating_add(5)
        {
            return NonceCheck::Invalid;
        }
        if now.saturating_sub(issued) > self.max_age_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }

    /// A `WWW-Authenticate` value challenging with `algorithm`.
    pub fn challenge(&self, realm: &str, algorithm: Algorithm, now: u64, stale: bool) -> String {
        let stale = if stale { ", stale=true" } else { "" };
        format!(
            "Digest realm=\"{realm}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{stale}",
            self.issue(now),
            algorithm.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_md5_example() {
        // RFC 2617 §3.5 (HTTP, so method GET): the classic Mufasa example.
        let r = response(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc_7616_sha256_and_md5_examples() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let args = ("Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html");
        let sha = response(
            Algorithm::Sha256,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            nonce,
            Some(("00000001", cnonce)),
        );
        assert_eq!(sha, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        let md5 = response(
            Algorithm::Md5,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            nonce,
            Some(("00000001", cnonce)),
        );
        assert_eq!(md5, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn credentials_round_trip_and_verify() {
        let nonces = Nonces::new(b"secret", 300);
        let nonce = nonces.issue(1_000);
        let uri = "sip:voxide.test";
        let resp = response(
            Algorithm::Sha256,
            "alice",
            "voxide.test",
            "pw",
            "REGISTER",
            uri,
            &nonce,
            Some(("00000001", "abc")),
        );
        let header = format!(
            "Digest username=\"alice\", realm=\"voxide.test\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{resp}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"abc\""
        );
        let c = Credentials::parse(&header).expect("parses");
        assert!(c.verify("REGISTER", "pw"));
        assert!(!c.verify("REGISTER", "wrong"));
        assert!(!c.verify("INVITE", "pw"), "the method is part of the digest");
        assert_eq!(nonces.check(&c.nonce, 1_100), NonceCheck::Fresh);
        assert_eq!(nonces.check(&c.nonce, 1_400), NonceCheck::Stale);
        assert_eq!(Nonces::new(b"other", 300).check(&c.nonce, 1_100), NonceCheck::Invalid);
        assert_eq!(nonces.check("zz.zz", 1_100), NonceCheck::Invalid);
        assert_eq!(
            nonces.check(&nonces.issue(9_999), 1_000),
            NonceCheck::Invalid,
            "from the future"
        );
    }

    #[test]
    fn malformed_credentials_are_errors_not_panics() {
        let cases = [
            ("Basic dXNlcjpwdw==", AuthError::NotDigest),
            ("Digest username=\"a\"", AuthError::Missing("realm")),
            (
                "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", algorithm=SHA-512",
                AuthError::Algorithm("SHA-512".into()),
            ),
            ("Digest username=\"a", AuthError::Malformed),
            ("Digest", AuthError::Malformed),
            ("NoOneKnowsThisScheme opaque-data=here", AuthError::NotDigest),
        ];
        for (value, want) in cases {
            assert_eq!(Credentials::parse(value), Err(want), "{value}");
        }
    }
}
