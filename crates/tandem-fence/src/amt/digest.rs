//! HTTP Digest access authentication (RFC 7616), client side, as Intel AMT
//! speaks it: `qop="auth"` with MD5 (SHA-256 and the `-sess` variants are
//! accepted too; the legacy RFC 2069 form without `qop` is answered when a
//! device offers nothing else).

use md5::Md5;
use sha2::Sha256;

use crate::secret::Secret;

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut h = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    h.update(b":");
                }
                h.update(p);
            }
            to_hex(&h.finalize())
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => run::<Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => run::<Sha256>(parts),
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// Whether the device offers `qop=auth` (otherwise RFC 2069 form).
    pub qop_auth: bool,
    /// The device says the nonce expired (the password was fine).
    pub stale: bool,
}

impl Challenge {
    /// Parses the value of a `WWW-Authenticate` header. `Err` says why it is
    /// unusable (not Digest, no nonce, an algorithm or qop we cannot do).
    pub fn parse(header: &str) -> Result<Self, String> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(char::is_whitespace)
            .unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(format!(
                "the device asks for {scheme} authentication, not Digest"
            ));
        }
        let params = parse_params(rest)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm").ok_or("Digest challenge without realm")?;
        let nonce = get("nonce").ok_or("Digest challenge without nonce")?;
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => {
                Algorithm::parse(&a).ok_or_else(|| format!("unsupported Digest algorithm {a:?}"))?
            }
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(format!("unsupported Digest qop {q:?} (only \"auth\")"));
                }
            }
        };
        if !qop_auth && algorithm.is_sess() {
            return Err(format!("Digest {} without qop", algorithm.name()));
        }
        let stale = get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm,
            nonce,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// The `Authorization` header value for request `method uri`, with
    /// nonce count `nc` and client nonce `cnonce`.
    pub fn authorization(
        &self,
        username: &str,
        password: &Secret,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&[
            username.as_bytes(),
            self.realm.as_bytes(),
            password.expose(),
        ]);
        if alg.is_sess() {
            ha1 = alg.hash(&[ha1.as_bytes(), self.nonce.as_bytes(), cnonce.as_bytes()]);
        }
        let ha2 = alg.hash(&[method.as_bytes(), uri.as_bytes()]);
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&[
                ha1.as_bytes(),
                self.nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ])
        } else {
            alg.hash(&[ha1.as_bytes(), self.nonce.as_bytes(), ha2.as_bytes()])
        };
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{}\"",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            alg.name(),
            response
        );
        if self.qop_auth {
            h.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quote(cnonce)
            ));
        }
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        h
    }
}

/// A fresh client nonce: 16 random bytes in hex.
pub(crate) fn cnonce() -> String {
    let bytes: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
    to_hex(&bytes)
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Parses `name=value, name="quoted value", ...` (RFC 7235 auth-params).
pub fn parse_params(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("malformed auth parameter {name:?}"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of {name:?}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value of {name:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7616_md5_example() {
        // The MD5 example of RFC 7616 section 3.9.1.
        let c = Challenge::parse(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5,
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        assert!(c.qop_auth && !c.stale);
        let h = c.authorization(
            "Mufasa",
            &Secret::new("Circle of Life"),
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            h.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
            "{h}"
        );
        assert!(h.contains("nc=00000001"), "{h}");
        assert!(h.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
    }

    #[test]
    fn rfc7616_sha256_example() {
        let c = Challenge::parse(
            r#"Digest realm="http-auth@example.org", qop="auth", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="x""#,
        )
        .unwrap();
        let h = c.authorization(
            "Mufasa",
            &Secret::new("Circle of Life"),
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            h.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{h}"
        );
    }

    #[test]
    fn rejects_what_it_cannot_answer() {
        assert!(Challenge::parse("Basic realm=\"x\"").is_err());
        assert!(Challenge::parse("Digest realm=\"x\"").is_err());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\"").is_err());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=\"n\", algorithm=SHA-512").is_err());
        let c = Challenge::parse("Digest realm=\"a\\\"b\", nonce=n1, stale=TRUE").unwrap();
        assert_eq!(c.realm, "a\"b");
        assert!(c.stale && !c.qop_auth);
    }
}
