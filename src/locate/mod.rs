//! RFC 3263 §4 location (with RFC 7984's dual-stack rules), streamed.
//!
//! [`locate`] turns a [`Target`] into [`LocateEvent`]s on a channel: every
//! DNS query and its answer (for the timeline), the ordered service
//! locations ([`LocateEvent::Targets`], once), then one
//! [`LocateEvent::Addresses`] per (host, family) **the moment that answer
//! arrives**, and finally [`LocateEvent::Done`] — or [`LocateEvent::Failed`]
//! if no service location could be found at all.
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
//!   the default transports (for `sip:`, UDP then TCP as ranks 0 and 1).
//!   An SRV answer whose only target is `"."` means the service is not
//!   offered: it is skipped and excluded from the fallback; if nothing is
//!   left, location fails.
//! * SRV records: priority ascending, RFC 2782 weighted random order within a
//!   priority ([`select::rfc2782_order`]), at most `max_records` per answer
//!   shared among the priority levels so that every level keeps its first
//!   pick while the budget allows (a live target behind 999 dead ones at a
//!   better priority is still tried).
//! * With [`LocateConfig::pipelined`], the constructed SRV queries go out
//!   together with the NAPTR query; NAPTR replacements equal to one of them
//!   reuse its answer, others are queried after NAPTR. Unused in-flight SRV
//!   queries are abandoned (their `Query` event has no `Answer`).
//! * Every distinct host of the targets is resolved once, AAAA and A as two
//!   separate concurrent queries (never `lookup_ip`, which joins them).
//!   Addresses that cannot be destinations (unspecified, multicast,
//!   broadcast, IPv4-mapped; [`select::unusable_address`]) are dropped from
//!   [`LocateEvent::Addresses`]; the Answer event still renders them, marked
//!   `(dropped: why)`.
//!
//! Every query is bounded by [`LocateConfig::query_timeout`]; every answer
//! is capped at [`LocateConfig::max_records`] records of the queried type
//! (others, like CNAMEs, are ignored). NAPTR and SRV answers are read whole
//! (up to 4096 records) and bounded by selection, never by cutting the
//! sorted list: at most `max_records` NAPTR services shared among the ORDER
//! values, at most `max_records` targets per SRV answer shared among the
//! priorities, at most four times `max_records` targets in all shared among
//! the services ([`select::level_quotas`]). The Answer event counts every
//! record that arrived and renders the first `max_records`. There is one
//! NAPTR stage only, so NAPTR/SRV loops cannot recurse, and NAPTR records
//! without the `s` flag are ignored.
//!
//! Event times are [`tokio::time::Instant`]s (re-exported as [`Instant`]).

mod dns_io;
mod machine;
pub mod select;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType as WireType};
use hickory_resolver::Resolver;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::endpoint::{ConfigError, Family, TargetSpec, Transport};
use crate::target::{Host, Scheme, Target};

pub use dns_io::DnsResolver;
pub use machine::{
    Action, AddressAnswer, Answer, DnsFailure, Input, Location, Query, QueryId, QueryRecord,
    Record, RecordData, RecordType,
};
use select::{NaptrChoice, NaptrRecord, SrvChoice, SrvRecord};

/// The clock of every event: tokio's, so paused-time tests work.
pub use tokio::time::Instant;

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
            check_dns_server(server)
                .map_err(|allowed| ConfigError::new("locate.dns_server", allowed, server))?;
        }
        Ok(self)
    }
}

/// Whether `server` can be sent a query: a real port, and an address that
/// can be a destination (the rule DNS answers are held to).
fn check_dns_server(server: SocketAddr) -> Result<(), String> {
    if server.port() == 0 {
        return Err("an address with a port from 1 to 65535".into());
    }
    if let Some(why) = select::unusable_address(server.ip()) {
        return Err(format!(
            "an address that can be a destination (this one is {why})"
        ));
    }
    Ok(())
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
        shown: Vec<String>,
        total: usize,
    },
    /// NOERROR without records of the type (NODATA).
    NoRecords,
    #[serde(rename = "nxdomain")]
    NxDomain,
    #[serde(rename = "servfail")]
    ServFail,
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

/// What location reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LocateEvent {
    /// A query was sent.
    Query {
        name: String,
        rtype: &'static str,
        at: Instant,
    },
    /// Its answer arrived.
    Answer {
        name: String,
        rtype: &'static str,
        at: Instant,
        outcome: DnsOutcome,
    },
    /// The ordered service locations (rank 0 first); once, before any Addresses.
    Targets(Vec<TargetSpec>),
    /// One per (host in Targets, family in `families`); empty on NODATA,
    /// NXDOMAIN, timeout or error.
    Addresses {
        host: Arc<str>,
        family: Family,
        addrs: Vec<IpAddr>,
        at: Instant,
    },
    /// Nothing more will come.
    Done,
    /// No target could be located; nothing more will come.
    Failed(LocateError),
}

/// Why nothing could be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    #[error("no DNS server: {0} (give one with --dns)")]
    NoNameServer(String),
    #[error("{target} cannot be reached over any allowed transport ({allowed})")]
    NoTransport { target: String, allowed: String },
    #[error("{domain}: its NAPTR records offer {offered}, none usable: {reason}")]
    NoUsableService {
        domain: String,
        offered: String,
        reason: String,
    },
    #[error("{domain}: the SRV records say the service is not offered (target \".\" at {names})")]
    ServiceNotOffered { domain: String, names: String },
    #[error("{ip} is an {family} address, but {family} is not enabled")]
    FamilyDisabled { ip: IpAddr, family: Family },
    #[error("no address family is enabled")]
    NoFamilies,
}

/// Parses `--dns`: `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT` (port 53 by
/// default). Port 0 and addresses that cannot be a destination (unspecified,
/// multicast, broadcast) are refused.
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
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
                .map_err(|_| format!("{s:?} is not IP, IP:PORT or [IPv6]:PORT"))?
        }
    };
    check_dns_server(server)
        .map_err(|allowed| format!("{s:?} cannot be the DNS server: it must be {allowed}"))?;
    Ok(server)
}

/// The `nameserver` lines of a resolv.conf (at most 3, like glibc; scoped
/// IPv6 link-local servers are skipped), on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

/// A resolver for location: no cache, no hosts file, ndots 0, one retry,
/// servers in the given order, UDP with TCP for truncated answers, on
/// sockets that report refusals and local errors (see [`DnsResolver`]).
pub fn build_resolver(cfg: &LocateConfig) -> Result<DnsResolver, LocateError> {
    let servers = match cfg.dns_server {
        Some(sa) => vec![sa],
        None => {
            let text = std::fs::read_to_string("/etc/resolv.conf")
                .map_err(|e| LocateError::NoNameServer(format!("/etc/resolv.conf: {e}")))?;
            let servers = parse_resolv_conf(&text);
            if servers.is_empty() {
                return Err(LocateError::NoNameServer(
                    "/etc/resolv.conf lists no usable nameserver".into(),
                ));
            }
            servers
        }
    };
    let name_servers = servers
        .iter()
        .map(|sa| {
            let mut udp = ConnectionConfig::udp();
            udp.port = sa.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = sa.port();
            NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], name_servers);
    let mut o = ResolverOpts::default();
    o.use_hosts_file = ResolveHosts::Never;
    o.cache_size = 0;
    o.positive_max_ttl = Some(Duration::ZERO);
    o.negative_max_ttl = Some(Duration::ZERO);
    o.timeout = cfg.query_timeout;
    o.attempts = 1;
    o.ndots = 0;
    o.edns0 = true;
    o.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    o.max_active_requests = 512;
    let faults = dns_io::Faults::default();
    let resolver = Resolver::builder_with_config(config, dns_io::DnsRuntime::new(faults.clone()))
        .with_options(o)
        .build()
        .map_err(|e| LocateError::Resolver(e.to_string()))?;
    Ok(DnsResolver::new(resolver, faults))
}

/// Locates `target` over the allowed `transports`, streaming events to `tx`.
/// Builds its own resolver from `cfg` (see [`locate_with`] to share one).
pub async fn locate(
    target: &Target,
    transports: &[Transport],
    cfg: &LocateConfig,
    tx: UnboundedSender<LocateEvent>,
) {
    // An IP literal needs no resolver (and no /etc/resolv.conf).
    if let Host::Ip(_) = target.host {
        return finish(run_literal(target, transports, cfg, &tx), &tx);
    }
    match build_resolver(cfg) {
        Ok(resolver) => locate_with(&resolver, target, transports, cfg, tx).await,
        Err(e) => {
            let _ = tx.send(LocateEvent::Failed(e));
        }
    }
}

/// [`locate`] with a given resolver.
pub async fn locate_with(
    resolver: &DnsResolver,
    target: &Target,
    transports: &[Transport],
    cfg: &LocateConfig,
    tx: UnboundedSender<LocateEvent>,
) {
    let result = match &target.host {
        Host::Ip(_) => run_literal(target, transports, cfg, &tx),
        Host::Name(domain) => {
            let ctx = Ctx {
                resolver: resolver.clone(),
                timeout: cfg.query_timeout,
                max: cfg.max_records.max(1),
                tx: tx.clone(),
            };
            run_name(&ctx, target, domain, transports, cfg).await
        }
    };
    finish(result, &tx)
}

fn finish(result: Result<(), LocateError>, tx: &UnboundedSender<LocateEvent>) {
    let _ = tx.send(match result {
        Ok(()) => LocateEvent::Done,
        Err(e) => LocateEvent::Failed(e),
    });
}

fn families(cfg: &LocateConfig) -> Result<Vec<Family>, LocateError> {
    let mut fams = Vec::new();
    for f in &cfg.families {
        if !fams.contains(f) {
            fams.push(*f);
        }
    }
    if fams.is_empty() {
        Err(LocateError::NoFamilies)
    } else {
        Ok(fams)
    }
}

/// The allowed transports, deduplicated, TLS only for `sips:`.
fn allowed(target: &Target, transports: &[Transport]) -> Result<Vec<Transport>, LocateError> {
    let mut v = Vec::new();
    for &t in transports {
        if !v.contains(&t) && (target.scheme == Scheme::Sip || t.is_secure()) {
            v.push(t);
        }
    }
    if v.is_empty() {
        return Err(no_transport(target, transports));
    }
    Ok(v)
}

fn no_transport(target: &Target, transports: &[Transport]) -> LocateError {
    let allowed = transports.iter().map(|t| t.as_str()).collect::<Vec<_>>();
    LocateError::NoTransport {
        target: target.to_string(),
        allowed: if allowed.is_empty() {
            "none".into()
        } else {
            allowed.join(", ")
        },
    }
}

fn run_literal(
    target: &Target,
    transports: &[Transport],
    cfg: &LocateConfig,
    tx: &UnboundedSender<LocateEvent>,
) -> Result<(), LocateError> {
    let Host::Ip(ip) = target.host else {
        unreachable!("run_literal is only called for IP literals")
    };
    let fams = families(cfg)?;
    let allowed = allowed(target, transports)?;
    let ts = select::default_transports(target.scheme, target.transport, &allowed);
    if ts.is_empty() {
        return Err(no_transport(target, transports));
    }
    let family = Family::of(&ip);
    if !fams.contains(&family) {
        return Err(LocateError::FamilyDisabled { ip, family });
    }
    let specs = select::direct_specs(&ip.to_string(), target.port, &ts);
    let host = specs[0].host.clone();
    let _ = tx.send(LocateEvent::Targets(specs));
    let at = Instant::now();
    for f in fams {
        let addrs = if f == family { vec![ip] } else { vec![] };
        let _ = tx.send(LocateEvent::Addresses {
            host: host.clone(),
            family: f,
            addrs,
            at,
        });
    }
    Ok(())
}

/// What a finished query gives back to the orchestration.
struct QueryResult {
    rdata: Vec<RData>,
    at: Instant,
}

#[derive(Clone)]
struct Ctx {
    resolver: DnsResolver,
    timeout: Duration,
    max: usize,
    tx: UnboundedSender<LocateEvent>,
}

/// How many NAPTR/SRV records of one answer selection looks at (a 64 KiB
/// message holds fewer SRV records than this).
const ORDERING_CAP: usize = 4096;

fn rtype_str(rtype: WireType) -> &'static str {
    match rtype {
        WireType::NAPTR => "NAPTR",
        WireType::SRV => "SRV",
        WireType::AAAA => "AAAA",
        WireType::A => "A",
        _ => "OTHER",
    }
}

fn family_rtype(f: Family) -> WireType {
    match f {
        Family::V6 => WireType::AAAA,
        Family::V4 => WireType::A,
    }
}

/// Zone-file text of a record; an address location drops is marked.
fn render_rdata(d: &RData) -> String {
    match d.ip_addr().and_then(select::unusable_address) {
        Some(why) => format!("{d} (dropped: {why})"),
        None => d.to_string(),
    }
}

/// The usable addresses of an A/AAAA answer for `family`; the others are
/// dropped with a debug trace.
fn usable_addresses(host: &str, family: Family, rdata: &[RData]) -> Vec<IpAddr> {
    rdata
        .iter()
        .filter_map(|d| d.ip_addr())
        .filter(|ip| Family::of(ip) == family)
        .filter(|ip| match select::unusable_address(*ip) {
            Some(why) => {
                tracing::debug!(%host, %ip, "dropping a {why} address from the {family} answer");
                false
            }
            None => true,
        })
        .collect()
}

fn classify(err: &NetError) -> DnsOutcome {
    if err.is_nx_domain() {
        DnsOutcome::NxDomain
    } else if err.is_no_records_found() {
        DnsOutcome::NoRecords
    } else {
        match err {
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => DnsOutcome::ServFail,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => DnsOutcome::NxDomain,
            NetError::Timeout => DnsOutcome::Timeout,
            other => DnsOutcome::Error(other.to_string()),
        }
    }
}

impl Ctx {
    /// Emits the Query event now and returns the lookup, which emits its
    /// Answer event when it completes. `name` has no trailing dot. Address
    /// answers are capped at `max` records; NAPTR and SRV answers are kept
    /// whole (up to [`ORDERING_CAP`]) so that selection sees every priority
    /// level before it bounds them. The event renders the first `max`
    /// records and counts all of them, so the timeline tells how many
    /// arrived.
    fn query(
        &self,
        name: &str,
        rtype: WireType,
    ) -> impl std::future::Future<Output = QueryResult> + Send + 'static {
        let take = match rtype {
            WireType::NAPTR | WireType::SRV => ORDERING_CAP.max(self.max),
            _ => self.max,
        };
        let label = rtype_str(rtype);
        let _ = self.tx.send(LocateEvent::Query {
            name: name.to_string(),
            rtype: label,
            at: Instant::now(),
        });
        let this = self.clone();
        let name = name.to_string();
        async move {
            let fqdn = format!("{name}.");
            let res =
                tokio::time::timeout(this.timeout, this.resolver.lookup(fqdn.as_str(), rtype))
                    .await;
            let at = Instant::now();
            let (rdata, outcome) = match res {
                Err(_) => (Vec::new(), DnsOutcome::Timeout),
                Ok(Err(e)) => (Vec::new(), classify(&e)),
                Ok(Ok(lookup)) => {
                    let of_type = || {
                        lookup
                            .answers()
                            .iter()
                            .map(|r| &r.data)
                            .filter(|d| d.record_type() == rtype)
                    };
                    let total = of_type().count();
                    let rdata: Vec<RData> = of_type().take(take).cloned().collect();
                    if rdata.is_empty() {
                        (rdata, DnsOutcome::NoRecords)
                    } else {
                        let shown = rdata.iter().take(this.max).map(render_rdata).collect();
                        (rdata, DnsOutcome::Records { shown, total })
                    }
                }
            };
            let _ = this.tx.send(LocateEvent::Answer {
                name,
                rtype: label,
                at,
                outcome,
            });
            QueryResult { rdata, at }
        }
    }
}

async fn run_name(
    ctx: &Ctx,
    target: &Target,
    domain: &str,
    transports: &[Transport],
    cfg: &LocateConfig,
) -> Result<(), LocateError> {
    let fams = families(cfg)?;
    let allowed = allowed(target, transports)?;
    let defaults = select::default_transports(target.scheme, target.transport, &allowed);
    let domain = select::normalize_name(domain);

    let specs = if target.port.is_some() {
        if defaults.is_empty() {
            return Err(no_transport(target, transports));
        }
        select::direct_specs(&domain, target.port, &defaults)
    } else if target.transport.is_some() {
        if defaults.is_empty() {
            return Err(no_transport(target, transports));
        }
        let services: Vec<(Transport, String)> = defaults
            .iter()
            .map(|&t| (t, select::srv_name(t, &domain)))
            .collect();
        let mut srv = SrvStage::new(ctx);
        srv.ensure(&services);
        let answers = srv.collect(&services).await;
        match srv_specs(ctx, &services, &answers) {
            SrvSpecs::Specs(specs) => specs,
            SrvSpecs::Fallback { not_offered } => {
                let left = without(&allowed, &not_offered);
                let ts = select::default_transports(target.scheme, target.transport, &left);
                fallback_specs(&domain, &ts, not_offered)?
            }
        }
    } else {
        let constructed = select::constructed_services(target.scheme, &domain, &allowed);
        let naptr = ctx.query(&domain, WireType::NAPTR);
        let mut srv = SrvStage::new(ctx);
        if cfg.pipelined {
            srv.ensure(&constructed);
        }
        let naptr = naptr.await;
        let records: Vec<NaptrRecord> = naptr
            .rdata
            .iter()
            .filter_map(|d| match d {
                RData::NAPTR(n) => Some(NaptrRecord {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    services: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: select::normalize_name(&n.replacement.to_ascii()),
                }),
                _ => None,
            })
            .collect();
        match select::select_naptr(&records, target.scheme, &allowed, ctx.max) {
            NaptrChoice::Services(services) => {
                srv.ensure(&services);
                let answers = srv.collect(&services).await;
                match srv_specs(ctx, &services, &answers) {
                    SrvSpecs::Specs(specs) => specs,
                    SrvSpecs::Fallback { not_offered } => {
                        let mut ts = Vec::new();
                        for (t, _) in &services {
                            if !ts.contains(t) {
                                ts.push(*t);
                            }
                        }
                        fallback_specs(&domain, &without(&ts, &not_offered), not_offered)?
                    }
                }
            }
            NaptrChoice::NoSip => {
                if constructed.is_empty() {
                    return Err(no_transport(target, transports));
                }
                srv.ensure(&constructed);
                let answers = srv.collect(&constructed).await;
                match srv_specs(ctx, &constructed, &answers) {
                    SrvSpecs::Specs(specs) => specs,
                    SrvSpecs::Fallback { not_offered } => {
                        let left = without(&allowed, &not_offered);
                        let ts = select::default_transports(target.scheme, None, &left);
                        fallback_specs(&domain, &ts, not_offered)?
                    }
                }
            }
            NaptrChoice::NoneUsable { offered } => {
                return Err(LocateError::NoUsableService {
                    domain,
                    offered: offered.join(", "),
                    reason: select::none_usable_reason(target.scheme, &allowed),
                })
            }
        }
    };
    debug_assert!(!specs.is_empty());
    if ctx.tx.send(LocateEvent::Targets(specs.clone())).is_err() {
        return Ok(());
    }
    resolve_hosts(ctx, &specs, &fams).await;
    Ok(())
}

/// SRV queries in flight, keyed by name; dropping it abandons the rest.
struct SrvStage<'a> {
    ctx: &'a Ctx,
    set: JoinSet<(String, QueryResult)>,
    started: Vec<String>,
}

impl<'a> SrvStage<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        SrvStage {
            ctx,
            set: JoinSet::new(),
            started: Vec::new(),
        }
    }

    /// Starts the queries for names not already in flight.
    fn ensure(&mut self, services: &[(Transport, String)]) {
        for (_, name) in services {
            if !self.started.contains(name) {
                self.started.push(name.clone());
                let fut = self.ctx.query(name, WireType::SRV);
                let name = name.clone();
                self.set.spawn(async move { (name, fut.await) });
            }
        }
    }

    /// Waits for the answers of these services' names (all started).
    async fn collect(&mut self, services: &[(Transport, String)]) -> HashMap<String, QueryResult> {
        let mut got: HashMap<String, QueryResult> = HashMap::new();
        let needed =
            |got: &HashMap<String, QueryResult>| services.iter().any(|(_, n)| !got.contains_key(n));
        while needed(&got) {
            match self.set.join_next().await {
                Some(Ok((name, result))) => {
                    got.insert(name, result);
                }
                Some(Err(_)) => continue,
                None => break,
            }
        }
        got
    }
}

/// What the SRV stage produced.
enum SrvSpecs {
    Specs(Vec<TargetSpec>),
    /// No SRV target at all; these services explicitly said "not offered".
    Fallback {
        not_offered: Vec<(Transport, String)>,
    },
}

/// Turns the SRV answers of `services` (in service order) into specs: at
/// most `max` targets per service and four times `max` in all, shared so
/// that neither a crowded priority level nor a crowded service hides the
/// targets after it (see [`select::level_quotas`]).
fn srv_specs(
    ctx: &Ctx,
    services: &[(Transport, String)],
    answers: &HashMap<String, QueryResult>,
) -> SrvSpecs {
    let answered: Vec<Vec<SrvRecord>> = services
        .iter()
        .map(|(_, name)| {
            answers
                .get(name)
                .map(|r| {
                    r.rdata
                        .iter()
                        .filter_map(|d| match d {
                            RData::SRV(s) => Some(SrvRecord {
                                priority: s.priority,
                                weight: s.weight,
                                port: s.port,
                                target: select::normalize_name(&s.target.to_ascii()),
                            }),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let dialable: Vec<usize> = answered
        .iter()
        .map(|records| records.iter().filter(|r| select::dialable(r)).count())
        .collect();
    let budgets = select::service_budgets(&dialable, ctx.max, ctx.max.saturating_mul(4));
    let mut ordered: Vec<(Transport, Vec<SrvRecord>)> = Vec::new();
    let mut not_offered: Vec<(Transport, String)> = Vec::new();
    let mut rng = rand::rng();
    for (((t, name), records), budget) in services.iter().zip(&answered).zip(budgets) {
        match select::choose_srv(records, budget, &mut rng) {
            SrvChoice::Targets {
                ordered: v,
                dropped,
            } => {
                if dropped > 0 {
                    tracing::debug!(%name, kept = v.len(), dropped, "SRV targets beyond the budget dropped");
                }
                ordered.push((*t, v));
            }
            SrvChoice::NotOffered => not_offered.push((*t, name.clone())),
            SrvChoice::Empty => {}
        }
    }
    let specs = select::specs_from_srv(&ordered, ctx.max.saturating_mul(4));
    if specs.is_empty() {
        SrvSpecs::Fallback { not_offered }
    } else {
        SrvSpecs::Specs(specs)
    }
}

/// `transports` without those whose SRV said "not offered".
fn without(transports: &[Transport], not_offered: &[(Transport, String)]) -> Vec<Transport> {
    transports
        .iter()
        .copied()
        .filter(|t| !not_offered.iter().any(|(n, _)| n == t))
        .collect()
}

/// RFC 3263 §4.2 without SRV: the domain itself on default ports.
fn fallback_specs(
    domain: &str,
    transports: &[Transport],
    not_offered: Vec<(Transport, String)>,
) -> Result<Vec<TargetSpec>, LocateError> {
    if transports.is_empty() {
        let mut names: Vec<String> = not_offered.into_iter().map(|(_, n)| n).collect();
        names.dedup();
        return Err(LocateError::ServiceNotOffered {
            domain: domain.to_string(),
            names: names.join(", "),
        });
    }
    Ok(select::direct_specs(domain, None, transports))
}

/// Resolves every distinct host once per family, all concurrently, sending
/// each Addresses event as its answer arrives.
async fn resolve_hosts(ctx: &Ctx, specs: &[TargetSpec], fams: &[Family]) {
    let mut hosts: Vec<Arc<str>> = Vec::new();
    for s in specs {
        if !hosts.iter().any(|h| **h == *s.host) {
            hosts.push(s.host.clone());
        }
    }
    let mut set = JoinSet::new();
    for host in hosts {
        for &family in fams {
            let fut = ctx.query(&host, family_rtype(family));
            let tx = ctx.tx.clone();
            let host = host.clone();
            set.spawn(async move {
                let r = fut.await;
                let addrs = usable_addresses(&host, family, &r.rdata);
                let _ = tx.send(LocateEvent::Addresses {
                    host,
                    family,
                    addrs,
                    at: r.at,
                });
            });
        }
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod old_api_tests {
    use super::*;

    #[test]
    fn dns_server_syntax() {
        assert_eq!(
            parse_dns_server("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("::1").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[::1]").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[::1]:5300").unwrap(),
            "[::1]:5300".parse().unwrap()
        );
        assert!(parse_dns_server("dns.example").is_err());
        // Nothing can be sent to port 0 or to these addresses.
        for bad in [
            "127.0.0.1:0",
            "[::1]:0",
            "0.0.0.0",
            "[::]:53",
            "224.0.0.251:5353",
        ] {
            let err = parse_dns_server(bad).unwrap_err();
            assert!(err.contains("cannot be the DNS server"), "{bad}: {err}");
        }
    }

    #[test]
    fn resolv_conf_lines() {
        let text = "# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n\
                    nameserver 2001:db8::53 # trailing\nnameserver bogus\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn outcomes_render() {
        assert_eq!(DnsOutcome::Timeout.to_string(), "timeout");
        let capped = DnsOutcome::Records {
            shown: vec!["a".into(), "b".into()],
            total: 1000,
        };
        assert_eq!(capped.to_string(), "1000 record(s) (showing 2): a; b");
        let json = serde_json::to_string(&DnsOutcome::ServFail).unwrap();
        assert!(json.contains("\"servfail\""), "{json}");
    }

    #[test]
    fn labels_are_the_serde_tags() {
        let all = [
            DnsOutcome::Records {
                shown: vec!["192.0.2.1".into()],
                total: 1,
            },
            DnsOutcome::NoRecords,
            DnsOutcome::NxDomain,
            DnsOutcome::ServFail,
            DnsOutcome::Timeout,
            DnsOutcome::Error("refused".into()),
        ];
        let labels: Vec<&str> = all.iter().map(DnsOutcome::label).collect();
        assert_eq!(
            labels,
            [
                "records",
                "no-records",
                "nxdomain",
                "servfail",
                "timeout",
                "error"
            ]
        );
        for o in &all {
            let json = serde_json::to_value(o).unwrap();
            assert_eq!(json["outcome"], o.label(), "{json}");
        }
    }

    #[test]
    fn unusable_addresses_are_dropped_and_marked() {
        use hickory_resolver::proto::rr::rdata::{A, AAAA};
        let v6 = [
            RData::AAAA(AAAA("::".parse().unwrap())),
            RData::AAAA(AAAA("ff02::1".parse().unwrap())),
            RData::AAAA(AAAA("::ffff:192.0.2.1".parse().unwrap())),
            RData::AAAA(AAAA("2001:db8::1".parse().unwrap())),
        ];
        assert_eq!(
            usable_addresses("h", Family::V6, &v6),
            vec!["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
        let v4 = [
            RData::A(A("0.0.0.0".parse().unwrap())),
            RData::A(A("224.0.0.1".parse().unwrap())),
            RData::A(A("255.255.255.255".parse().unwrap())),
            RData::A(A("192.0.2.1".parse().unwrap())),
        ];
        assert_eq!(
            usable_addresses("h", Family::V4, &v4),
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(render_rdata(&v4[1]), "224.0.0.1 (dropped: multicast)");
        assert_eq!(render_rdata(&v4[3]), "192.0.2.1");
    }

    #[tokio::test]
    async fn ip_literal_needs_no_dns() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let t = Target::parse("sip:[::1]:5070").unwrap();
        let cfg = LocateConfig {
            dns_server: Some("192.0.2.1:9".parse().unwrap()),
            ..LocateConfig::default()
        };
        locate(&t, &Transport::ALL, &cfg, tx).await;
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        let LocateEvent::Targets(specs) = &events[0] else {
            panic!("{events:?}")
        };
        let got: Vec<(Transport, u16)> = specs.iter().map(|s| (s.transport, s.port)).collect();
        assert_eq!(got, vec![(Transport::Udp, 5070), (Transport::Tcp, 5070)]);
        assert!(
            matches!(&events[1], LocateEvent::Addresses { family: Family::V6, addrs, .. } if addrs.len() == 1)
        );
        assert!(
            matches!(&events[2], LocateEvent::Addresses { family: Family::V4, addrs, .. } if addrs.is_empty())
        );
        assert_eq!(events[3], LocateEvent::Done);
        assert_eq!(events.len(), 4);
    }
}
