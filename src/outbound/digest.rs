//! Digest authentication for SIP (RFC 3261 §22.4, RFC 8760): read a
//! registrar's `WWW-Authenticate` / `Proxy-Authenticate` challenge and
//! compute the `Authorization` / `Proxy-Authorization` answer.
//!
//! RFC 8760 adds SHA-256 and SHA-512/256 to MD5 (RFC 7616's algorithms);
//! a server offering several sends one challenge per algorithm, most
//! preferred first, and the client answers the first one it supports
//! (RFC 8760 §2.4). The `-sess` variants and `auth-int` are not offered by
//! SIP registrars in practice and are refused with a clear error.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

/// A digest algorithm (RFC 8760 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 3261's only algorithm; the default when none is named).
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512/256 (SHA-512 truncated to 256 bits, FIPS 180-4).
    Sha512_256,
}

impl Algorithm {
    /// The algorithm named by a challenge's `algorithm` parameter.
    fn from_token(token: &str) -> Option<Algorithm> {
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-512-256" => Some(Algorithm::Sha512_256),
            _ => None,
        }
    }

    /// The token as the `algorithm` parameter spells it.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// The lowercase hex digest of `data`.
    fn hex(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => ring::digest::digest(&ring::digest::SHA256, data.as_bytes())
                .as_ref()
                .to_vec(),
            Algorithm::Sha512_256 => {
                ring::digest::digest(&ring::digest::SHA512_256, data.as_bytes())
                    .as_ref()
                    .to_vec()
            }
        };
        bytes.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header is not a Digest challenge, or is malformed.
    #[error("not a usable Digest challenge: {0}")]
    Malformed(&'static str),
    /// No challenge names an algorithm this client implements.
    #[error("no supported digest algorithm offered (supported: MD5, SHA-256, SHA-512-256; offered: {0})")]
    UnsupportedAlgorithm(String),
    /// The challenge requires a quality of protection other than `auth`.
    #[error("the challenge requires qop {0:?}; only \"auth\" (or none) is supported")]
    UnsupportedQop(String),
}

/// One parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`, echoed in the answer.
    pub realm: String,
    /// `nonce`, echoed in the answer.
    pub nonce: String,
    /// `opaque`, echoed unchanged when present.
    pub opaque: Option<String>,
    /// The algorithm to answer with.
    pub algorithm: Algorithm,
    /// Whether the server asked for `qop=auth` (else the RFC 2069 form).
    pub qop_auth: bool,
    /// `stale=true`: the credentials were right, only the nonce expired.
    pub stale: bool,
}

impl Challenge {
    /// Parses one `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let params = DigestParams::parse(value)?;
        let get = |name: &str| params.get(name);
        let realm = get("realm").ok_or(DigestError::Malformed("no realm"))?;
        let nonce = get("nonce").ok_or(DigestError::Malformed("no nonce"))?;
        let algorithm = params.algorithm()?;
        let qop_auth = match get("qop") {
            None => false,
            Some(list) => {
                let offered: Vec<&str> = list.split(',').map(str::trim).collect();
                if !offered.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
                    return Err(DigestError::UnsupportedQop(list.to_string()));
                }
                true
            }
        };
        Ok(Challenge {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: get("opaque").map(str::to_string),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The first challenge of `values` (in header order) whose algorithm is
    /// supported (RFC 8760 §2.4). Errors name what was offered.
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, DigestError> {
        let mut offered = Vec::new();
        let mut last_error = DigestError::Malformed("no challenge");
        for value in values {
            match Challenge::parse(value) {
                Ok(challenge) => return Ok(challenge),
                Err(DigestError::UnsupportedAlgorithm(name)) => offered.push(name),
                Err(e) => last_error = e,
            }
        }
        if offered.is_empty() {
            Err(last_error)
        } else {
            Err(DigestError::UnsupportedAlgorithm(offered.join(", ")))
        }
    }

    /// The `Authorization` value answering this challenge for a request
    /// with `method` and Request-URI `uri`. `cnonce` is fresh per request
    /// and `nc` counts the uses of this nonce (from 1).
    pub fn answer(
        &self,
        creds: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let alg = self.algorithm;
        let response = self.response(creds, method, uri, cnonce, nc);
        let nc = format!("{nc:08x}");
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            quote_escape(&creds.user),
            quote_escape(&self.realm),
            quote_escape(&self.nonce),
            alg.token(),
        );
        if self.qop_auth {
            let _ = write!(
                out,
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quote_escape(cnonce)
            );
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(out, ", opaque=\"{}\"", quote_escape(opaque));
        }
        out
    }
}

impl Challenge {
    /// The `response` value (RFC 7616 §3.4.1): `H(HA1:nonce:nc:cnonce:auth:HA2)`
    /// with qop, `H(HA1:nonce:HA2)` without (RFC 2069).
    fn response(
        &self,
        creds: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.hex(&format!("{}:{}:{}", creds.user, self.realm, creds.password));
        let ha2 = alg.hex(&format!("{method}:{uri}"));
        if self.qop_auth {
            alg.hex(&format!(
                "{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}",
                self.nonce
            ))
        } else {
            alg.hex(&format!("{ha1}:{}:{ha2}", self.nonce))
        }
    }

    /// The server side: this challenge as a `WWW-Authenticate` /
    /// `Proxy-Authenticate` value (`qop="auth"` when `qop_auth`).
    pub fn to_header(&self) -> String {
        let mut out = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}",
            quote_escape(&self.realm),
            quote_escape(&self.nonce),
            self.algorithm.token()
        );
        if self.qop_auth {
            out.push_str(", qop=\"auth\"");
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(out, ", opaque=\"{}\"", quote_escape(opaque));
        }
        if self.stale {
            out.push_str(", stale=true");
        }
        out
    }

    /// The server side: does `auth` (a client's answer to this challenge,
    /// same realm, nonce and algorithm) prove `creds` for a request with
    /// `method`? The digest is computed over the `uri` the client names;
    /// the caller checks that it is the request's Request-URI.
    pub fn verify(&self, creds: &Credentials, method: &str, auth: &Authorization) -> bool {
        auth.username == creds.user
            && auth.realm == self.realm
            && auth.nonce == self.nonce
            && auth.algorithm == self.algorithm
            && auth.qop_auth == self.qop_auth
            && same_hex_in_constant_time(
                &auth.response,
                &self.response(creds, method, &auth.uri, &auth.cnonce, auth.nc),
            )
    }
}

/// Compares two hex digests without stopping at the first difference, so
/// the time taken does not tell a client how much of its guess was right.
fn same_hex_in_constant_time(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| {
                diff | (a.to_ascii_lowercase() ^ b.to_ascii_lowercase())
            })
            == 0
}

/// A client's `Authorization` / `Proxy-Authorization` value, as a server
/// reads it to verify it ([`Challenge::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `username`.
    pub username: String,
    /// `realm`, as challenged.
    pub realm: String,
    /// `nonce`, as challenged.
    pub nonce: String,
    /// The digest-uri the response was computed over.
    pub uri: String,
    /// The hex digest to check.
    pub response: String,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// `qop=auth` (then `nc` and `cnonce` count).
    pub qop_auth: bool,
    /// The nonce count (`nc`, hex), 0 without qop.
    pub nc: u32,
    /// The client nonce (`cnonce`), empty without qop.
    pub cnonce: String,
}

impl Authorization {
    /// Parses one `Digest` credentials value. Bounded like a challenge.
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        let params = DigestParams::parse(value)?;
        let required = |name: &'static str| params.get(name).ok_or(DigestError::Malformed(name));
        let algorithm = params.algorithm()?;
        let qop_auth = match params.get("qop") {
            None => false,
            Some(q) if q.eq_ignore_ascii_case("auth") => true,
            Some(q) => return Err(DigestError::UnsupportedQop(q.to_string())),
        };
        let (nc, cnonce) = if qop_auth {
            let nc = u32::from_str_radix(required("nc")?, 16)
                .map_err(|_| DigestError::Malformed("nc is not hexadecimal"))?;
            (nc, required("cnonce")?.to_string())
        } else {
            (0, String::new())
        };
        Ok(Authorization {
            username: required("username")?.to_string(),
            realm: required("realm")?.to_string(),
            nonce: required("nonce")?.to_string(),
            uri: required("uri")?.to_string(),
            response: required("response")?.to_string(),
            algorithm,
            qop_auth,
            nc,
            cnonce,
        })
    }
}

/// A user name and password for digest authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (the `username` parameter).
    pub user: String,
    /// The password (never printed).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The auth-params of a `Digest` challenge or credentials value.
struct DigestParams(Vec<(String, String)>);

impl DigestParams {
    /// Checks the scheme is `Digest` and reads the parameters after it.
    fn parse(value: &str) -> Result<DigestParams, DigestError> {
        let rest = value.trim_start();
        let (scheme, params) = rest.split_at(rest.find([' ', '\t']).unwrap_or(rest.len()));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::Malformed("the scheme is not Digest"));
        }
        parse_params(params).map(DigestParams)
    }

    /// The value of parameter `name` (case-insensitive name).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `algorithm` parameter; MD5 when absent (RFC 3261 §22.4).
    fn algorithm(&self) -> Result<Algorithm, DigestError> {
        match self.get("algorithm") {
            None => Ok(Algorithm::Md5),
            Some(token) => Algorithm::from_token(token)
                .ok_or_else(|| DigestError::UnsupportedAlgorithm(token.to_string())),
        }
    }
}

/// Escapes `"` and `\` for a quoted-string (RFC 3261 §25.1).
fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Parses `name=value, name="quoted value", …` (auth-params). Bounded: at
/// most 32 parameters, so a hostile header costs linear time and memory.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, DigestError> {
    const MAX_PARAMS: usize = 32;
    let mut params = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        // Skip separators.
        while chars
            .next_if(|(_, c)| matches!(c, ' ' | '\t' | ','))
            .is_some()
        {}
        let Some(&(start, _)) = chars.peek() else {
            return Ok(params);
        };
        if params.len() == MAX_PARAMS {
            return Err(DigestError::Malformed("too many parameters"));
        }
        let mut end = start;
        while let Some((i, c)) = chars.next_if(|(_, c)| *c != '=' && *c != ',') {
            end = i + c.len_utf8();
        }
        let name = s[start..end].trim();
        if name.is_empty() || chars.next().is_none_or(|(_, c)| c != '=') {
            return Err(DigestError::Malformed("a parameter without a value"));
        }
        while chars.next_if(|(_, c)| matches!(c, ' ' | '\t')).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '"').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(DigestError::Malformed("an unterminated quoted string"));
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != ',') {
                value.push(c);
            }
            value = value.trim_end().to_string();
        }
        params.push((name.to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa() -> Credentials {
        Credentials {
            user: "Mufasa".into(),
            password: "Circle Of Life".into(),
        }
    }

    /// RFC 2617 §3.5's worked example (MD5, qop=auth).
    #[test]
    fn rfc2617_example_md5_with_qop() {
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Md5);
        assert!(challenge.qop_auth);
        let answer = challenge.answer(&mufasa(), "GET", "/dir/index.html", "0a4f113b", 1);
        assert!(
            answer.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{answer}"
        );
        assert!(answer.contains("nc=00000001"), "{answer}");
        assert!(answer.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    /// RFC 7616 §3.9.1's example, answered with SHA-256 and with MD5.
    #[test]
    fn rfc7616_example_sha256_and_md5() {
        let creds = Credentials {
            user: "Mufasa".into(),
            password: "Circle of Life".into(),
        };
        let header = |alg: &str| {
            format!(
                "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )
        };
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let sha = Challenge::parse(&header("SHA-256")).unwrap();
        assert!(sha
            .answer(&creds, "GET", "/dir/index.html", cnonce, 1)
            .contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ));
        let md5 = Challenge::parse(&header("MD5")).unwrap();
        assert!(md5
            .answer(&creds, "GET", "/dir/index.html", cnonce, 1)
            .contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""));
    }

    /// Without qop the RFC 2069 form: H(HA1:nonce:HA2), and no nc/cnonce.
    #[test]
    fn without_qop_the_answer_has_no_nonce_count() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        let a = c.answer(&mufasa(), "REGISTER", "sip:example.test", "cn", 1);
        let ha1 = Algorithm::Md5.hex("Mufasa:r:Circle Of Life");
        let ha2 = Algorithm::Md5.hex("REGISTER:sip:example.test");
        let expected = Algorithm::Md5.hex(&format!("{ha1}:n:{ha2}"));
        assert!(a.contains(&format!("response=\"{expected}\"")), "{a}");
        assert!(!a.contains("nc=") && !a.contains("cnonce"), "{a}");
    }

    #[test]
    fn the_first_supported_challenge_is_chosen() {
        let chosen = Challenge::choose([
            "Digest realm=\"r\", nonce=\"a\", algorithm=SHA-512-256-sess",
            "Digest realm=\"r\", nonce=\"b\", algorithm=SHA-256",
            "Digest realm=\"r\", nonce=\"c\", algorithm=MD5",
        ])
        .unwrap();
        assert_eq!(
            (chosen.algorithm, chosen.nonce.as_str()),
            (Algorithm::Sha256, "b")
        );
        let none = Challenge::choose(["Digest realm=\"r\", nonce=\"a\", algorithm=MD5-sess"]);
        assert_eq!(
            none,
            Err(DigestError::UnsupportedAlgorithm("MD5-sess".into()))
        );
    }

    #[test]
    fn malformed_challenges_are_errors() {
        for bad in [
            "",
            "Basic realm=\"r\"",
            "Digest nonce=\"n\"",
            "Digest realm=\"r\"",
            "Digest realm=\"r, nonce=\"n\"",
            "Digest realm",
            "Digest =x, realm=r, nonce=n",
            "Digest realm=r, nonce=n, qop=auth-int",
        ] {
            assert!(Challenge::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let many = format!("Digest {}", "a=b, ".repeat(100));
        assert_eq!(
            Challenge::parse(&many),
            Err(DigestError::Malformed("too many parameters"))
        );
    }

    #[test]
    fn quoted_values_are_unescaped_and_reescaped() {
        let c =
            Challenge::parse(r#"Digest realm="a \"quoted\" realm", nonce=n1, stale=TRUE"#).unwrap();
        assert_eq!(c.realm, "a \"quoted\" realm");
        assert!(c.stale);
        let a = c.answer(&mufasa(), "REGISTER", "sip:x", "c", 2);
        assert!(a.contains(r#"realm="a \"quoted\" realm""#), "{a}");
    }

    /// The server side: what the client answers to a challenge the
    /// server wrote verifies, for each algorithm, with and without qop;
    /// a wrong password, another nonce or another method does not.
    #[test]
    fn the_server_verifies_what_the_client_answers() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256] {
            for qop_auth in [true, false] {
                let issued = Challenge {
                    realm: "example.test".into(),
                    nonce: "n0nce".into(),
                    opaque: None,
                    algorithm,
                    qop_auth,
                    stale: false,
                };
                let header = issued.to_header();
                let client_view = Challenge::parse(&header).unwrap();
                assert_eq!(client_view, issued, "{header}");
                let answer = client_view.answer(&mufasa(), "REGISTER", "sip:example.test", "c1", 1);
                let auth = Authorization::parse(&answer).unwrap();
                assert_eq!(auth.uri, "sip:example.test");
                assert!(issued.verify(&mufasa(), "REGISTER", &auth), "{answer}");
                let wrong = Credentials {
                    password: "Circle of Death".into(),
                    ..mufasa()
                };
                assert!(!issued.verify(&wrong, "REGISTER", &auth));
                assert!(!issued.verify(&mufasa(), "INVITE", &auth));
                let other_nonce = Challenge {
                    nonce: "other".into(),
                    ..issued.clone()
                };
                assert!(!other_nonce.verify(&mufasa(), "REGISTER", &auth));
            }
        }
        for bad in [
            "Basic abc",
            "Digest realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"0\"",
            "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"0\", qop=auth, nc=zz, cnonce=\"c\"",
        ] {
            assert!(Authorization::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        assert!(!format!("{:?}", mufasa()).contains("Circle"));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = Challenge::parse(&s);
            let _ = Authorization::parse(&s);
        }
    }
}
