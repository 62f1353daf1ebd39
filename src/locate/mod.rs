//! RFC 3263 §4 location (with RFC 7984's dual-stack rules) as a pure
//! (sans-IO) state machine, [`Location`] (in `machine.rs`): it says which
//! DNS query to send when, and turns the answers into the ordered service
//! locations ([`Action::Targets`], once), then one [`Action::Addresses`] per
//! (host, family) **the moment that answer arrives**, and finally
//! [`Action::Done`], or [`Action::Failed`] if no service location could be
//! found at all. The driver side (hickory-resolver, the lookups) is
//! [`crate::dns`]; the dial composes location with the race in
//! [`crate::dial_machine`].
//!
//! The steps:
//!
//! * IP literal: no DNS. The `;transport=` parameter, else UDP (then TCP,
//!   siprace's extension) for `sip:`, TLS for `sips:`; the URI port or the
//!   transport's default port.
//! * Explicit port: no NAPTR/SRV, only AAAA and A of the host, with the same
//!   transport rule.
//! * `;transport=` without a port: the SRV of that transport only, else
//!   AAAA/A of the host on the default port.
//! * Otherwise NAPTR of the domain, ordered by order then preference,
//!   keeping SIP+D2U, SIP+D2T, SIP+D2S and SIPS+D2T with the `s` flag (only
//!   SIPS+D2T for `sips:`) over allowed transports, then SRV of each
//!   replacement. Services of higher ORDER values are kept as fallback ranks
//!   after those of the lowest one, a deliberate extension of RFC 3403 §4.1
//!   (see [`select`]). If the NAPTR set publishes SIP services but none is usable,
//!   location fails (a `sips:` URI at a plaintext-only domain, say). Without
//!   SIP NAPTR records: SRV for each allowed transport (`_sip._udp`,
//!   `_sip._tcp`, `_sip._sctp`, `_sips._tcp`, in that preference order).
//!   Without any SRV record: AAAA/A of the domain on the default port with
//!   the default transports (for `sip:`, UDP then TCP as ranks 0 and 1; the
//!   NAPTR services' transports when NAPTR named them).
//!   An SRV answer whose only target is `"."` means the service is not
//!   offered: it is skipped and excluded from the fallback; if nothing is
//!   left, location fails.
//! * SRV records: priority ascending, RFC 2782 weighted random order within a
//!   priority ([`select::rfc2782_order`], with the machine's seeded random
//!   source), at most `max_records` per answer shared among the priority
//!   levels so that every level keeps its first pick while the budget
//!   allows (a live target behind 999 dead ones at a better priority is
//!   still tried).
//! * With [`LocateConfig::pipelined`], the constructed SRV queries go out
//!   together with the NAPTR query (one round trip for both); NAPTR
//!   replacements equal to one of them reuse its answer, others are queried
//!   after NAPTR. Unused in-flight SRV queries are abandoned
//!   ([`Action::Abandon`]; the timeline shows them unanswered).
//! * Every distinct host of the targets is resolved once, AAAA and A as two
//!   separate concurrent queries (never `lookup_ip`, which joins them).
//!   Addresses that cannot be destinations (unspecified, multicast,
//!   broadcast, IPv4-mapped; [`select::unusable_address`]) are dropped from
//!   [`Action::Addresses`]; the timeline still renders them, marked
//!   `(dropped: why)`.
//!
//! Every query is bounded by [`LocateConfig::query_timeout`], a timer of
//! the machine ([`Location::next_wake`]): past it, the query is recorded as
//! a timeout and abandoned, and location goes on. Every answer is capped at
//! [`LocateConfig::max_records`] records of the queried type (others, like
//! CNAMEs, are ignored). NAPTR and SRV answers are read whole (up to 4096
//! records) and bounded by selection, never by cutting the sorted list: at
//! most `max_records` NAPTR services shared among the ORDER values, at most
//! `max_records` targets per SRV answer shared among the priorities, at most
//! four times `max_records` targets in all shared among the services
//! ([`select::level_quotas`]). The timeline counts every record that
//! arrived and renders the first `max_records`. There is one NAPTR stage
//! only, so NAPTR/SRV loops cannot recurse, and NAPTR records without the
//! `s` flag are ignored.
//!
//! Times are `std::time::Instant`s given by the caller; nothing here reads
//! a clock, touches a socket or draws OS randomness.

mod machine;
pub mod select;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::endpoint::{ConfigError, Family};

pub use machine::{
    Abandoned, Action, AddressAnswer, Answer, DnsFailure, Input, Location, Query, QueryId,
    QueryRecord, Record, RecordData, RecordType,
};

/// How to locate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocateConfig {
    /// The DNS server to ask (`--dns IP[:PORT]`, see [`parse_dns_server`]);
    /// `None`: the `nameserver` lines of `/etc/resolv.conf`.
    pub dns_server: Option<SocketAddr>,
    /// Send the SRV queries for the allowed transports together with NAPTR.
    pub pipelined: bool,
    /// Bound on each query, retries included.
    pub query_timeout: Duration,
    /// Records taken per address answer and rendered per answer; also the
    /// budget of NAPTR services and of SRV targets per answer (four times
    /// this for all SRV answers together), see the module documentation.
    pub max_records: usize,
    /// Which of AAAA / A to query, in this order.
    pub families: Vec<Family>,
}

impl Default for LocateConfig {
    fn default() -> Self {
        LocateConfig {
            dns_server: None,
            pipelined: true,
            query_timeout: Duration::from_secs(2),
            max_records: 32,
            families: vec![Family::V6, Family::V4],
        }
    }
}

/// The longest per-query DNS timeout: a server that needs more than this
/// is as good as absent.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The most records taken from one answer (the race never uses more than
/// [`crate::race::MAX_CANDIDATES`] endpoints anyway).
pub const MAX_RECORDS: usize = 256;

impl LocateConfig {
    /// Checks every field; the error names it (`locate.<name>`) and the
    /// allowed range.
    pub fn validated(self) -> Result<LocateConfig, ConfigError> {
        ConfigError::check_duration(
            "locate.query_timeout",
            self.query_timeout,
            Duration::from_millis(1),
            MAX_QUERY_TIMEOUT,
        )?;
        ConfigError::check_count("locate.max_records", self.max_records, 1, MAX_RECORDS)?;
        if self.families.is_empty() {
            return Err(ConfigError::new(
                "locate.families",
                "at least one address family",
                "none",
            ));
        }
        if let Some(server) = self.dns_server {
            if let Some(problem) = UnusableServer::of(server) {
                return Err(ConfigError::new(
                    "locate.dns_server",
                    problem.requirement(),
                    server,
                ));
            }
        }
        Ok(self)
    }
}

/// What makes an address unfit to be the DNS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnusableServer {
    /// Nothing can be sent to port 0.
    PortZero,
    /// Not a destination (the rule DNS answers are held to): unspecified,
    /// multicast, broadcast or IPv4-mapped, as named.
    NotADestination(&'static str),
}

impl UnusableServer {
    /// Whether `server` can be sent a query, and if not why.
    pub fn of(server: SocketAddr) -> Option<UnusableServer> {
        if server.port() == 0 {
            return Some(UnusableServer::PortZero);
        }
        select::unusable_address(server.ip()).map(UnusableServer::NotADestination)
    }

    /// What the server must be instead, for an error message.
    pub fn requirement(self) -> String {
        match self {
            UnusableServer::PortZero => "an address with a port from 1 to 65535".into(),
            UnusableServer::NotADestination(why) => {
                format!("an address that can be a destination (this one is {why})")
            }
        }
    }
}

/// Why `--dns` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsServerError {
    /// The text (given here) is not an address with an optional port.
    #[error("{0:?} is not IP, IP:PORT or [IPv6]:PORT")]
    Syntax(String),
    /// The text parses, but the address cannot be a DNS server.
    #[error("{given:?} cannot be the DNS server: it must be {}", .problem.requirement())]
    Unusable {
        /// The text as given.
        given: String,
        /// What is wrong with the address.
        problem: UnusableServer,
    },
}

/// How a query ended. Serialised with its [`label`](DnsOutcome::label) as
/// the `outcome` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "detail")]
pub enum DnsOutcome {
    /// Records of the queried type: the first [`LocateConfig::max_records`]
    /// rendered as zone-file RDATA text (an address that location drops is
    /// followed by `(dropped: why)`), and how many the answer held.
    Records {
        /// RDATA text of the first records, at most `max_records` of them.
        shown: Vec<String>,
        /// How many records of the type the answer held.
        total: usize,
    },
    /// NOERROR without records of the type (NODATA).
    NoRecords,
    /// The name does not exist (NXDOMAIN, RFC 1035 §4.1.1 RCODE 3).
    #[serde(rename = "nxdomain")]
    NxDomain,
    /// The server failed to answer (SERVFAIL, RCODE 2).
    #[serde(rename = "servfail")]
    ServFail,
    /// No answer within the query timeout.
    Timeout,
    /// Anything else (REFUSED, a network error...).
    Error(String),
}

impl DnsOutcome {
    /// The outcome's name, the same as its serde tag: "records",
    /// "no-records", "nxdomain", "servfail", "timeout" or "error".
    pub fn label(&self) -> &'static str {
        match self {
            DnsOutcome::Records { .. } => "records",
            DnsOutcome::NoRecords => "no-records",
            DnsOutcome::NxDomain => "nxdomain",
            DnsOutcome::ServFail => "servfail",
            DnsOutcome::Timeout => "timeout",
            DnsOutcome::Error(_) => "error",
        }
    }
}

impl fmt::Display for DnsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsOutcome::Records { shown, total } => {
                write!(f, "{total} record(s)")?;
                if shown.len() < *total {
                    write!(f, " (showing {})", shown.len())?;
                }
                write!(f, ": {}", shown.join("; "))
            }
            DnsOutcome::NoRecords => f.write_str("no records"),
            DnsOutcome::NxDomain => f.write_str("NXDOMAIN"),
            DnsOutcome::ServFail => f.write_str("SERVFAIL"),
            DnsOutcome::Timeout => f.write_str("timeout"),
            DnsOutcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Why nothing could be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// The resolver could not be built (its error's text).
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    /// No DNS server was given and the system names none usable (why).
    #[error("no DNS server: {0} (give one with --dns)")]
    NoNameServer(String),
    /// The target's scheme, port or `;transport=` and the allowed transports
    /// leave no transport to try (RFC 3263 §4.1).
    #[error("{target} cannot be reached over any allowed transport ({allowed})")]
    NoTransport {
        /// The target as written.
        target: String,
        /// The allowed transports, comma-separated, or `none`.
        allowed: String,
    },
    /// NAPTR records exist, but none names a service siprace may use
    /// (RFC 3263 §4.1).
    #[error("{domain}: its NAPTR records offer {offered}, none usable: {reason}")]
    NoUsableService {
        /// The domain whose NAPTR records were read.
        domain: String,
        /// The services the records offer, comma-separated (peer text).
        offered: String,
        /// What a usable service would have needed.
        reason: String,
    },
    /// SRV records with the target `.` (RFC 2782: "decidedly not available")
    /// rule out every transport that was left to try.
    #[error("{domain}: the SRV records say the service is not offered (target \".\" at {names})")]
    ServiceNotOffered {
        /// The domain being located.
        domain: String,
        /// The SRV names that answered `.`, comma-separated.
        names: String,
    },
    /// The target is an IP literal of a family the configuration disables.
    #[error("{ip} is an {family} address, but {family} is not enabled")]
    FamilyDisabled {
        /// The literal address.
        ip: IpAddr,
        /// Its family.
        family: Family,
    },
    /// The configuration enables neither IPv6 nor IPv4.
    #[error("no address family is enabled")]
    NoFamilies,
}

/// Parses `--dns`: `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT` (port 53 by
/// default). Port 0 and addresses that cannot be a destination (unspecified,
/// multicast, broadcast) are refused.
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, DnsServerError> {
    let s = s.trim();
    let server = match s.parse::<SocketAddr>() {
        Ok(sa) => sa,
        Err(_) => {
            let bare = s
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(s);
            bare.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
                .map_err(|_| DnsServerError::Syntax(s.to_string()))?
        }
    };
    match UnusableServer::of(server) {
        Some(problem) => Err(DnsServerError::Unusable {
            given: s.to_string(),
            problem,
        }),
        None => Ok(server),
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
