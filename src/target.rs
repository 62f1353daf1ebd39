//! What the user asked to reach: a `sip:`/`sips:` URI (RFC 3261 §19.1) or a
//! bare `host[:port]`, reduced to the parts RFC 3263 location needs.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::endpoint::{unusable_address, Transport};

/// `sip:` or `sips:`. A `sips:` target must only ever be reached over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip:` (RFC 3261 §19.1); also what a bare `host[:port]` means.
    Sip,
    /// `sips:` (RFC 3261 §19.1): TLS on every hop, never a non-TLS fallback.
    Sips,
}

/// The host part: a domain name to resolve, or a literal address (no DNS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lowercased, without a trailing dot.
    Name(String),
    /// An IPv4 or IPv6 literal (IPv6 in brackets in a URI); RFC 3263 §4.2
    /// uses it as is, without DNS.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
        }
    }
}

/// A parsed dial target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `sip:` or `sips:` (`sip:` for a bare `host[:port]`).
    pub scheme: Scheme,
    /// The user part before `@`, if any (never empty).
    pub user: Option<String>,
    /// The host to locate: a name for RFC 3263 lookups or a literal address.
    pub host: Host,
    /// The explicit port, if given; None lets RFC 3263 use SRV or the default.
    pub port: Option<u16>,
    /// The `;transport=` parameter, if given.
    pub transport: Option<Transport>,
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {input:?}: {reason}")]
pub struct TargetError {
    /// The string as the user gave it.
    pub input: String,
    /// What is wrong with it, in words for the user.
    pub reason: String,
}

impl Target {
    /// Parses `sip:[user@]host[:port][;params]`, `sips:...` or a bare `host[:port]`.
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        let fail = |reason: String| TargetError {
            input: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(fail("the target is empty".into()));
        }
        if trimmed.len() > 2048 {
            return Err(fail("the target is longer than 2048 characters".into()));
        }
        if let Some(c) = trimmed
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return Err(fail(format!("it contains the character {c:?}")));
        }

        let lower = trimmed.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("sips:") {
            (Scheme::Sips, &trimmed[5..])
        } else if lower.starts_with("sip:") {
            (Scheme::Sip, &trimmed[4..])
        } else if let Some((other, _)) = trimmed.split_once(':').filter(|(s, _)| {
            !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphabetic())
                && !trimmed.starts_with('[')
                && s.parse::<u16>().is_err()
                && !s.contains('.')
                && trimmed[s.len() + 1..]
                    .chars()
                    .next()
                    .is_some_and(|c| !c.is_ascii_digit())
        }) {
            return Err(fail(format!(
                "unsupported URI scheme {other:?} (expected sip: or sips:)"
            )));
        } else {
            (Scheme::Sip, trimmed)
        };

        // Headers (`?...`) are meaningless for dialing; refuse rather than misparse.
        let rest = match rest.split_once('?') {
            Some(_) => return Err(fail("URI headers ('?...') are not supported".into())),
            None => rest,
        };
        let (hostport_user, params) = match rest.split_once(';') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        let (user, hostport) = match hostport_user.rsplit_once('@') {
            Some((u, h)) => {
                if u.is_empty() {
                    return Err(fail("the user part before '@' is empty".into()));
                }
                (Some(u.to_string()), h)
            }
            None => (None, hostport_user),
        };
        let (host, port) = parse_hostport(hostport).map_err(fail)?;

        let mut transport = None;
        for param in params.into_iter().flat_map(|p| p.split(';')) {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.eq_ignore_ascii_case("transport") {
                let t = Transport::parse(value).ok_or_else(|| {
                    fail(format!(
                        "unsupported transport {value:?} (expected udp, tcp, tls or sctp)"
                    ))
                })?;
                transport = Some(t);
            } else if name.is_empty() {
                return Err(fail("an empty URI parameter (';;')".into()));
            }
        }
        if scheme == Scheme::Sips {
            if let Some(t) = transport.filter(|t| !t.is_secure()) {
                // RFC 3261 §19.1.2 lets `sips:...;transport=tcp` mean TLS over TCP,
                // but UDP or SCTP cannot carry TLS here: refuse instead of downgrading.
                if t != Transport::Tcp {
                    return Err(fail(format!(
                        "a sips: URI cannot use transport={t}: sips requires TLS"
                    )));
                }
                transport = Some(Transport::Tls);
            }
        }
        Ok(Target {
            scheme,
            user,
            host,
            port,
            transport,
        })
    }

    /// The transports this target may be reached over, before DNS narrows them.
    pub fn allowed_transports(&self) -> Vec<Transport> {
        match (self.scheme, self.transport) {
            (_, Some(t)) => vec![t],
            (Scheme::Sips, None) => vec![Transport::Tls],
            (Scheme::Sip, None) => Transport::ALL.to_vec(),
        }
    }

    /// The SIP domain: what a TLS certificate must match (RFC 5922 §4).
    pub fn domain(&self) -> String {
        match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }

    /// The Request-URI to put in a probe: the target itself, minus any user part.
    pub fn request_uri(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
        };
        match self.port {
            Some(p) => format!("{scheme}:{}:{p}", self.host),
            None => format!("{scheme}:{}", self.host),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
        };
        write!(f, "{scheme}:")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(t) = self.transport {
            write!(f, ";transport={t}")?;
        }
        Ok(())
    }
}

fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), String> {
    if s.is_empty() {
        return Err("the host is missing".into());
    }
    let (host_str, port_str) = if let Some(inner) = s.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| "an IPv6 reference is missing its closing ']'".to_string())?;
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not a valid IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after the IPv6 address"))?,
            ),
        };
        let ip = IpAddr::V6(ip);
        if let Some(why) = undialable(ip) {
            return Err(why);
        }
        return Ok((Host::Ip(ip), port.map(parse_port).transpose()?));
    } else {
        match s.matches(':').count() {
            0 => (s, None),
            1 => {
                let (h, p) = s.split_once(':').expect("one colon");
                (h, Some(p))
            }
            _ => {
                return Err(format!(
                    "{s:?} has several ':'; write an IPv6 address in brackets, as [{s}]"
                ))
            }
        }
    };
    let port = port_str.map(parse_port).transpose()?;
    if let Ok(ip) = host_str.parse::<std::net::Ipv4Addr>() {
        let ip = IpAddr::V4(ip);
        if let Some(why) = undialable(ip) {
            return Err(why);
        }
        return Ok((Host::Ip(ip), port));
    }
    validate_hostname(host_str)?;
    let name = host_str.trim_end_matches('.').to_ascii_lowercase();
    Ok((Host::Name(name), port))
}

/// Why an address literal cannot be a destination, if it cannot: the rule
/// DNS answers are held to ([`unusable_address`]: unspecified,
/// multicast, broadcast, IPv4-mapped).
pub(crate) fn undialable(ip: IpAddr) -> Option<String> {
    let why = unusable_address(ip)?;
    let hint = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| format!("; write it as {v4}"))
            .unwrap_or_default(),
        IpAddr::V4(_) => String::new(),
    };
    Some(format!("{ip} cannot be dialed ({why} address){hint}"))
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("the port after ':' is empty".into());
    }
    match p.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be dialed".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{p:?} is not a port number (1-65535)")),
    }
}

/// RFC 1123 host names: labels of letters, digits and hyphens, not starting
/// or ending with a hyphen, at most 63 octets each and 253 in all.
fn validate_hostname(h: &str) -> Result<(), String> {
    let name = h.strip_suffix('.').unwrap_or(h);
    if name.is_empty() {
        return Err("the host is missing".into());
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("the host name {h:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "the host name label {label:?} is longer than 63 characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("the host name {h:?} contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "the host name label {label:?} starts or ends with '-'"
            ));
        }
    }
    if name
        .split('.')
        .all(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("{h:?} is not a valid IPv4 address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Target {
        Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        Target::parse(s).expect_err(s).reason
    }

    #[test]
    fn full_uri() {
        let t = ok("sip:alice@Example.TEST:5070;transport=TCP;lr");
        assert_eq!(t.scheme, Scheme::Sip);
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert_eq!(t.host, Host::Name("example.test".into()));
        assert_eq!(t.port, Some(5070));
        assert_eq!(t.transport, Some(Transport::Tcp));
        assert_eq!(t.to_string(), "sip:alice@example.test:5070;transport=tcp");
    }

    #[test]
    fn literals_and_bare_hosts() {
        assert_eq!(
            ok("sip:[2001:db8::1]:5062").host,
            Host::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(ok("sip:[2001:db8::1]:5062").port, Some(5062));
        assert_eq!(ok("192.0.2.7").host, Host::Ip("192.0.2.7".parse().unwrap()));
        assert_eq!(ok("[::1]").port, None);
        let bare = ok("proxy.example.test:5080");
        assert_eq!((bare.scheme, bare.port), (Scheme::Sip, Some(5080)));
        assert_eq!(ok("example.test.").host, Host::Name("example.test".into()));
    }

    #[test]
    fn sips_keeps_tls_only() {
        let t = ok("sips:example.test");
        assert_eq!(t.allowed_transports(), vec![Transport::Tls]);
        assert_eq!(
            ok("sips:example.test;transport=tcp").transport,
            Some(Transport::Tls)
        );
        assert!(err("sips:example.test;transport=udp").contains("requires TLS"));
        assert_eq!(ok("sip:example.test").allowed_transports().len(), 4);
    }

    #[test]
    fn malformed_inputs_name_the_problem() {
        assert!(err("").contains("empty"));
        assert!(err("sip:").contains("host is missing"));
        assert!(err("sip:example.test:99999").contains("not a port"));
        assert!(err("sip:example.test:0").contains("port 0"));
        assert!(err("sip:[2001:db8::1").contains("closing ']'"));
        assert!(err("sip:[2001:db8::zz]").contains("not a valid IPv6"));
        assert!(err("sip:2001:db8::1").contains("brackets"));
        assert!(err("sip:example.test;transport=ws").contains("unsupported transport"));
        assert!(err("http://example.test").contains("scheme"));
        assert!(err("sip:exa mple.test").contains("' '"));
        assert!(err("sip:bad_.-x.test").contains("'-'"));
        assert!(err("sip:a..b").contains("empty label"));
        assert!(err("sip:@example.test").contains("user part"));
        assert!(err("sip:999.1.1.1").contains("IPv4"));
        assert!(err("sip:example.test:").contains("empty"));
    }

    #[test]
    fn addresses_that_cannot_be_destinations_are_refused() {
        for (input, why) in [
            ("sip:0.0.0.0", "unspecified"),
            ("sip:[::]", "unspecified"),
            ("sip:[::]:5060", "unspecified"),
            ("sip:224.0.0.1", "multicast"),
            ("sips:[ff02::1]", "multicast"),
            ("255.255.255.255:5060", "broadcast"),
            ("sip:[::ffff:192.0.2.1]", "IPv4-mapped"),
        ] {
            let reason = err(input);
            assert!(reason.contains("cannot be dialed"), "{input}: {reason}");
            assert!(reason.contains(why), "{input}: {reason}");
        }
        assert!(err("sip:[::ffff:192.0.2.1]").contains("write it as 192.0.2.1"));
        // Neighbours of those stay dialable.
        for good in [
            "sip:192.0.2.1",
            "sip:[::1]",
            "sip:223.255.255.255",
            "sip:[fe80::1]",
        ] {
            ok(good);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text() {
        use proptest::prelude::*;
        proptest!(|(s in "\\PC{0,64}")| { let _ = Target::parse(&s); });
        proptest!(|(s in "(sips?:)?[a-z0-9@:.;=\\[\\]-]{0,40}")| { let _ = Target::parse(&s); });
    }
}
