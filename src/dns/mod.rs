//! The DNS side of the driver: hickory-resolver set up for location, the
//! lookups a dial runs for the location machine, and hickory's answers
//! turned into the machine's own records (the machine never sees a
//! hickory type).
//!
//! A dialer keeps the answers for their TTL ([`cache`]), so a dial whose
//! queries are cached sends none: the dial's lookups answer them at once.
//!
//! [`locate`] runs location on its own (no race), with real lookups: the
//! way to ask "where would a dial of this target go?".

pub mod cache;
mod runtime;

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType as WireType};
use hickory_resolver::Resolver;
use tokio::time::Instant;

use crate::endpoint::Transport;
use crate::locate::select::{self, NaptrRecord, SrvRecord};
use crate::locate::{
    Answer, DnsFailure, Input, LocateConfig, LocateError, Location, Query, QueryId, Record,
    RecordData, RecordType,
};
use crate::target::{Host, Target};
use crate::task_set::TaskSet;

pub use runtime::DnsResolver;

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

/// The DNS servers location asks: [`LocateConfig::dns_server`], else the
/// `nameserver` lines of `/etc/resolv.conf`.
pub fn name_servers(cfg: &LocateConfig) -> Result<Vec<SocketAddr>, LocateError> {
    if let Some(sa) = cfg.dns_server {
        return Ok(vec![sa]);
    }
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| LocateError::NoNameServer(format!("/etc/resolv.conf: {e}")))?;
    let servers = parse_resolv_conf(&text);
    if servers.is_empty() {
        return Err(LocateError::NoNameServer(
            "/etc/resolv.conf lists no usable nameserver".into(),
        ));
    }
    Ok(servers)
}

/// A resolver for location on [`name_servers`]; see [`resolver_on`].
pub fn build_resolver(cfg: &LocateConfig) -> Result<DnsResolver, LocateError> {
    resolver_on(&name_servers(cfg)?, cfg)
}

/// A resolver for location asking `servers`: no cache of its own (a
/// dialer keeps answers for their TTL in a [`cache::DnsCache`], where it
/// can tell which answers came from it), no hosts file, ndots 0, one retry,
/// servers in the given order, UDP with TCP for truncated answers, on
/// sockets that report refusals and local errors (see [`DnsResolver`]).
/// Its timeout is the query timeout, a backstop to the location machine's
/// own. Records keep their TTLs (hickory's cache is off, so nothing it
/// would clamp them for).
pub fn resolver_on(servers: &[SocketAddr], cfg: &LocateConfig) -> Result<DnsResolver, LocateError> {
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
    // Capacity 0 disables hickory's (moka) cache entirely: every lookup is
    // a query. positive_min_ttl stays unset, which would make hickory keep
    // TTL-0 answers.
    o.cache_size = 0;
    o.timeout = cfg.query_timeout;
    o.attempts = 1;
    o.ndots = 0;
    o.edns0 = true;
    o.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    o.max_active_requests = 512;
    let faults = runtime::Faults::default();
    let resolver = Resolver::builder_with_config(config, runtime::DnsRuntime::new(faults.clone()))
        .with_options(o)
        .build()
        .map_err(|e| LocateError::Resolver(e.to_string()))?;
    Ok(DnsResolver::new(resolver, faults))
}

/// The resolver a dial of `target` needs: none for an IP literal (no
/// query, and no `/etc/resolv.conf` either).
pub fn resolver_for(
    target: &Target,
    cfg: &LocateConfig,
) -> Result<Option<DnsResolver>, LocateError> {
    match target.host {
        Host::Ip(_) => Ok(None),
        Host::Name(_) => build_resolver(cfg).map(Some),
    }
}

/// Performs one query of the location machine: the records of the answer
/// in the machine's terms, or why there are none.
pub async fn lookup(resolver: &DnsResolver, query: &Query) -> Result<Vec<Record>, DnsFailure> {
    lookup_with_ttl(resolver, query).await.0
}

/// [`lookup`], with how long the answer may be kept: the smallest TTL of
/// its records, the negative TTL of NODATA and NXDOMAIN (RFC 2308), zero
/// for anything else.
pub async fn lookup_with_ttl(
    resolver: &DnsResolver,
    query: &Query,
) -> (Result<Vec<Record>, DnsFailure>, Duration) {
    let rtype = match query.rtype {
        RecordType::Naptr => WireType::NAPTR,
        RecordType::Srv => WireType::SRV,
        RecordType::Aaaa => WireType::AAAA,
        RecordType::A => WireType::A,
    };
    let fqdn = format!("{}.", query.name);
    match resolver.lookup(fqdn.as_str(), rtype).await {
        Ok(lookup) => {
            let ttl = lookup.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
            let records = lookup
                .answers()
                .iter()
                .filter_map(|r| record_of(&r.data))
                .collect();
            (Ok(records), Duration::from_secs(u64::from(ttl)))
        }
        Err(err) => {
            let ttl = match &err {
                NetError::Dns(DnsError::NoRecordsFound(NoRecords { negative_ttl, .. })) => {
                    negative_ttl.unwrap_or(0)
                }
                _ => 0,
            };
            (failure_of(&err), Duration::from_secs(u64::from(ttl)))
        }
    }
}

/// A record location reads, with hickory's zone-file text of it.
fn record_of(data: &RData) -> Option<Record> {
    let of = match data {
        RData::NAPTR(n) => RecordData::Naptr(NaptrRecord {
            order: n.order,
            preference: n.preference,
            flags: String::from_utf8_lossy(&n.flags).into_owned(),
            services: String::from_utf8_lossy(&n.services).into_owned(),
            replacement: select::normalize_name(&n.replacement.to_ascii()),
        }),
        RData::SRV(s) => RecordData::Srv(SrvRecord {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: select::normalize_name(&s.target.to_ascii()),
        }),
        RData::A(a) => RecordData::Address(IpAddr::V4(a.0)),
        RData::AAAA(a) => RecordData::Address(IpAddr::V6(a.0)),
        _ => return None,
    };
    Some(Record {
        data: of,
        text: data.to_string(),
    })
}

/// A failed lookup as location sees it: "no records" is an empty answer.
fn failure_of(err: &NetError) -> Result<Vec<Record>, DnsFailure> {
    if err.is_nx_domain() {
        return Err(DnsFailure::NxDomain);
    }
    if err.is_no_records_found() {
        return Ok(Vec::new());
    }
    Err(match err {
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => DnsFailure::ServFail,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => DnsFailure::NxDomain,
        NetError::Timeout => DnsFailure::Timeout,
        other => DnsFailure::Error(other.to_string()),
    })
}

/// A dialer's DNS cache, shared by its dials.
pub type SharedCache = Arc<Mutex<cache::DnsCache>>;

/// The lookups of one dial in flight, one task per query: spawned for each
/// query the machine sends (or answered at once from the cache), aborted
/// when it abandons one, joined into the machine's [`Answer`]s.
pub(crate) struct Lookups {
    resolver: Option<DnsResolver>,
    cache: Option<SharedCache>,
    tasks: TaskSet<QueryId, Answer>,
    /// Answers from the cache, not yet handed to the machine.
    ready: VecDeque<Answer>,
    /// The queries answered from the cache.
    cached: HashSet<QueryId>,
}

impl Lookups {
    /// `resolver` is `None` where the machine sends no query (an IP literal).
    pub(crate) fn new(resolver: Option<DnsResolver>, cache: Option<SharedCache>) -> Lookups {
        Lookups {
            resolver,
            cache,
            tasks: TaskSet::new(),
            ready: VecDeque::new(),
            cached: HashSet::new(),
        }
    }

    pub(crate) fn spawn(&mut self, query: Query) {
        let now = Instant::now().into_std();
        if let Some(cache) = &self.cache {
            let hit = cache
                .lock()
                .expect("dns cache")
                .get(&query.name, query.rtype, now);
            if let Some(result) = hit {
                self.cached.insert(query.id);
                self.ready.push_back(Answer {
                    id: query.id,
                    at: now,
                    result,
                });
                return;
            }
        }
        let resolver = self.resolver.clone();
        let cache = self.cache.clone();
        self.tasks.spawn(query.id, async move {
            let result = match &resolver {
                Some(resolver) => {
                    let (result, ttl) = lookup_with_ttl(resolver, &query).await;
                    if let Some(cache) = &cache {
                        let now = Instant::now().into_std();
                        cache.lock().expect("dns cache").insert(
                            &query.name,
                            query.rtype,
                            &result,
                            ttl,
                            now,
                        );
                    }
                    result
                }
                None => Err(DnsFailure::Error("no DNS resolver".into())),
            };
            Answer {
                id: query.id,
                // Stamped where it arrived: this task may run ahead of the dial's loop.
                at: Instant::now().into_std(),
                result,
            }
        });
    }

    pub(crate) fn abandon(&mut self, id: QueryId) {
        self.ready.retain(|a| a.id != id);
        self.tasks.abort(id);
    }

    /// Whether the answer to `id` came from the cache.
    pub(crate) fn was_cached(&self, id: QueryId) -> bool {
        self.cached.contains(&id)
    }

    /// The next answer: one from the cache first, else the next lookup's
    /// (a lookup that panicked answers with an error). Cancel-safe;
    /// pending for ever while nothing is left.
    pub(crate) async fn next(&mut self) -> Answer {
        if let Some(answer) = self.ready.pop_front() {
            return answer;
        }
        let (id, result) = self.tasks.next().await;
        result.unwrap_or_else(|panic| Answer {
            id,
            at: Instant::now().into_std(),
            result: Err(DnsFailure::Error(format!("the lookup panicked: {panic}"))),
        })
    }

    /// Aborts every lookup and waits until each has ended (and closed its sockets).
    pub(crate) async fn close(&mut self) {
        self.ready.clear();
        self.tasks.close().await;
    }
}

/// Locates `target` over the allowed `transports` on its own (no race),
/// with real lookups, until location is done or failed. The location
/// returned holds the targets, the address answers and the DNS timeline.
/// `Err`: no resolver could be set up (nothing was queried).
pub async fn locate(
    target: &Target,
    transports: &[Transport],
    cfg: &LocateConfig,
) -> Result<Location, LocateError> {
    let mut lookups = Lookups::new(resolver_for(target, cfg)?, None);
    let mut location = Location::new(target, transports, cfg, rand::random());
    let mut actions = location.start(Instant::now().into_std());
    loop {
        for action in actions {
            match action {
                crate::locate::Action::Query(query) => lookups.spawn(query),
                crate::locate::Action::Abandon(id) => lookups.abandon(id),
                _ => {}
            }
        }
        if location.result().is_some() {
            break;
        }
        let wake = location.next_wake().map(Instant::from_std);
        let input = tokio::select! {
            biased;
            answer = lookups.next() => Input::Answer(answer),
            _ = sleep_until(wake) => Input::Timer,
        };
        actions = location.step(Instant::now().into_std(), input);
    }
    lookups.close().await;
    Ok(location)
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA};

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
    fn records_keep_hickorys_text() {
        let v4 = record_of(&RData::A(A("192.0.2.1".parse().unwrap()))).unwrap();
        assert_eq!(v4, Record::address("192.0.2.1".parse().unwrap()));
        let v6 = record_of(&RData::AAAA(AAAA("::ffff:192.0.2.1".parse().unwrap()))).unwrap();
        assert_eq!(v6.text, "::ffff:192.0.2.1");
        assert_eq!(
            v6.data,
            RecordData::Address("::ffff:192.0.2.1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn an_ip_literal_needs_no_resolver() {
        let t = Target::parse("sip:[::1]:5070").unwrap();
        let cfg = LocateConfig {
            dns_server: Some("192.0.2.1:9".parse().unwrap()),
            ..LocateConfig::default()
        };
        let location = locate(&t, &Transport::ALL, &cfg).await.unwrap();
        let got: Vec<(Transport, u16)> = location
            .targets()
            .iter()
            .map(|s| (s.transport, s.port))
            .collect();
        assert_eq!(got, vec![(Transport::Udp, 5070), (Transport::Tcp, 5070)]);
        assert!(location.queries().is_empty());
        assert_eq!(location.address_answers().len(), 2);
        assert_eq!(location.result(), Some(&Ok(())));
    }
}
