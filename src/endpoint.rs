//! The vocabulary shared by every stage of the pipeline: transports, address
//! families, endpoints (what the race engine orders and the connectors dial)
//! and the classified errors an attempt can end with.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A SIP transport (RFC 3261 §18, RFC 4168 for SCTP, RFC 5630 for TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
}

impl Transport {
    /// Every transport siprace can dial, in the order RFC 3263 §4.1 lists them
    /// for a client without NAPTR records.
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Sctp,
    ];

    /// The lowercase token used in `;transport=` and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Sctp => "sctp",
        }
    }

    /// Parses a `;transport=` value (case-insensitive).
    pub fn parse(token: &str) -> Option<Transport> {
        match token.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            "sctp" => Some(Transport::Sctp),
            _ => None,
        }
    }

    /// True for the transports that give a SIPS (secure) connection.
    /// TLS over SCTP is not offered, so only TLS qualifies.
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls)
    }

    /// The port used when neither the URI nor SRV names one (RFC 3263 §4.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }

    /// The SRV owner-name prefix for a domain (RFC 3263 §4.1).
    pub fn srv_prefix(self) -> &'static str {
        match self {
            Transport::Udp => "_sip._udp",
            Transport::Tcp => "_sip._tcp",
            Transport::Tls => "_sips._tcp",
            Transport::Sctp => "_sip._sctp",
        }
    }

    /// The Via header token (RFC 3261 §20.42; "SCTP" per RFC 4168).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport name that is none of `udp`, `tcp`, `tls`, `sctp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (udp, tcp, tls, sctp)")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// [`Transport::parse`], with an error that names the choices.
    fn from_str(s: &str) -> Result<Transport, UnknownTransport> {
        Transport::parse(s).ok_or_else(|| UnknownTransport(s.to_string()))
    }
}

/// An IP address family. Its one text form, `ipv6` / `ipv4`, is the same
/// in [`Display`](fmt::Display), [`Family::as_str`], [`FromStr`] and serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv6 (AAAA records).
    #[serde(rename = "ipv6")]
    V6,
    /// IPv4 (A records).
    #[serde(rename = "ipv4")]
    V4,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Family::V6,
            IpAddr::V6(_) => Family::V4,
            IpAddr::V4(_) => Family::V4,
        }
    }

    pub fn other(self) -> Family {
        match self {
            Family::V6 => Family::V4,
            Family::V4 => Family::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::V6 => "ipv6",
            Family::V4 => "ipv4",
        }
    }

    /// The DNS record type that carries this family's addresses.
    pub fn record_type(self) -> &'static str {
        match self {
            Family::V6 => "AAAA",
            Family::V4 => "A",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A family name that is neither `ipv6` nor `ipv4`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown address family {0:?} (ipv6, ipv4)")]
pub struct UnknownFamily(pub String);

impl FromStr for Family {
    type Err = UnknownFamily;

    /// `ipv6` or `ipv4`, in any case.
    fn from_str(s: &str) -> Result<Family, UnknownFamily> {
        [Family::V6, Family::V4]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFamily(s.to_string()))
    }
}

/// Why an address cannot be a destination, if it cannot (the rule for
/// A/AAAA answers, address literals and the DNS server): unspecified (`0.0.0.0`, `::`), multicast, the limited broadcast
/// `255.255.255.255`, or an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, an
/// IPv4 destination in disguise that would be raced as IPv6). Loopback,
/// private and documentation addresses are fine.
pub fn unusable_address(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_multicast() {
        return Some("multicast");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some("IPv4-mapped"),
        _ => None,
    }
}

/// One place to try: a transport to a socket address, found through a
/// target host name (kept for the report, for history and, for TLS, to know
/// which SIP domain the certificate must match — that is the URI's domain,
/// never this host).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The SRV target (or URI host) whose A/AAAA answer gave `addr`.
    pub host: Arc<str>,
    /// Rank of the service this endpoint belongs to in NAPTR/SRV order;
    /// lower ranks are tried first (HEv3 grouping levels 1 and 2).
    pub rank: u32,
}

impl Endpoint {
    pub fn family(&self) -> Family {
        Family::of(&self.addr.ip())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)
    }
}

/// Why an attempt did not succeed, in classes a report can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// ICMP port unreachable or TCP RST (`ECONNREFUSED`).
    Refused,
    /// No route, host or network unreachable (ICMP/ICMPv6 destination unreachable).
    Unreachable,
    /// Nothing came back in time.
    Timeout,
    /// The connection was reset or closed by the peer after it was set up.
    Reset,
    /// The peer answered with something that is not a valid SIP response.
    InvalidResponse,
    /// The TLS handshake failed.
    Tls,
    /// The peer's certificate did not verify or did not match the SIP domain.
    Certificate,
    /// This host cannot use the transport (e.g. no SCTP in the kernel).
    Unsupported,
    /// A local error (socket creation, bind, address in use...).
    Local,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Refused => "refused",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Reset => "reset",
            ErrorClass::InvalidResponse => "invalid-response",
            ErrorClass::Tls => "tls",
            ErrorClass::Certificate => "certificate",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::Local => "local",
        }
    }

    /// Classifies an I/O error from a connect, send or receive.
    pub fn of_io(err: &std::io::Error) -> ErrorClass {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::ConnectionRefused => ErrorClass::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                ErrorClass::Reset
            }
            K::TimedOut => ErrorClass::Timeout,
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
                ErrorClass::Unreachable
            }
            _ => match err.raw_os_error() {
                Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) | Some(libc::EACCES) => {
                    ErrorClass::Unreachable
                }
                Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT) => ErrorClass::Unsupported,
                _ => ErrorClass::Local,
            },
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt's failure: its class plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptError {
    pub class: ErrorClass,
    pub detail: String,
}

impl AttemptError {
    pub fn new(class: ErrorClass, detail: impl Into<String>) -> Self {
        AttemptError {
            class,
            detail: detail.into(),
        }
    }

    pub fn io(context: &str, err: &std::io::Error) -> Self {
        AttemptError::new(ErrorClass::of_io(err), format!("{context}: {err}"))
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.detail)
    }
}

impl std::error::Error for AttemptError {}

/// One service location found by RFC 3263 (from NAPTR/SRV, or the URI
/// itself): a host name whose A/AAAA answers become endpoints with this
/// transport, port and rank. Several specs may share one host (e.g. the same
/// server for UDP and TCP); its address answers then serve all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TargetSpec {
    /// Host name without the trailing dot, or an IP literal's text.
    pub host: Arc<str>,
    pub port: u16,
    pub transport: Transport,
    /// Position in NAPTR order, then SRV priority and weighted order: 0 first.
    pub rank: u32,
}

/// A configuration value outside its allowed range. `field` is the value's
/// path in [`crate::dialer::DialerConfig`] (e.g. `race.deadline`), so the CLI
/// can name the flag that set it and a library user the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {allowed}, not {given}")]
pub struct ConfigError {
    pub field: &'static str,
    /// The allowed range or rule, e.g. "between 1 and 16".
    pub allowed: String,
    /// The value given, as the error shows it (durations in ms).
    pub given: String,
}

impl ConfigError {
    pub fn new(field: &'static str, allowed: impl Into<String>, given: impl fmt::Display) -> Self {
        ConfigError {
            field,
            allowed: allowed.into(),
            given: given.to_string(),
        }
    }

    /// Checks that a count lies in `min..=max`.
    pub fn check_count(
        field: &'static str,
        value: usize,
        min: usize,
        max: usize,
    ) -> Result<(), ConfigError> {
        check_range(field, value, min, max, |n| n.to_string())
    }

    /// Checks that a duration lies in `min..=max`; the error speaks in ms,
    /// the unit of every duration flag.
    pub fn check_duration(
        field: &'static str,
        value: std::time::Duration,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> Result<(), ConfigError> {
        check_range(field, value, min, max, |d| format!("{} ms", d.as_millis()))
    }
}

/// `Ok` if `value` lies in `min..=max`; otherwise the error, every value
/// written with `show`.
fn check_range<T: PartialOrd>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    show: impl Fn(&T) -> String,
) -> Result<(), ConfigError> {
    if min <= value && value <= max {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("between {} and {}", show(&min), show(&max)),
            show(&value),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_one_text_form() {
        for family in [Family::V6, Family::V4] {
            let text = family.as_str();
            assert_eq!(family.to_string(), text);
            assert_eq!(serde_json::to_value(family).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<Family>(text.into()).unwrap(),
                family
            );
            assert_eq!(text.parse::<Family>(), Ok(family));
            assert_eq!(text.to_uppercase().parse::<Family>(), Ok(family));
        }
        let err = "v6".parse::<Family>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown address family \"v6\" (ipv6, ipv4)"
        );
    }

    #[test]
    fn a_transport_has_one_text_form() {
        for transport in Transport::ALL {
            let text = transport.as_str();
            assert_eq!(transport.to_string(), text);
            assert_eq!(serde_json::to_value(transport).unwrap(), text);
            assert_eq!(text.parse::<Transport>(), Ok(transport));
        }
        assert_eq!(
            "quic".parse::<Transport>().unwrap_err().to_string(),
            "unknown transport \"quic\" (udp, tcp, tls, sctp)"
        );
    }
}
