//! The pure half of RFC 3263 location: NAPTR filtering and ordering, SRV
//! ordering (RFC 2782), the fallbacks, the address sanity filter and the
//! resulting [`TargetSpec`]s. Nothing here touches the network, so all of it
//! is unit-tested.
//!
//! # NAPTR ORDER: a deliberate extension of RFC 3403
//!
//! RFC 3403 §4.1 says that once a record of some ORDER matches, records of a
//! higher ORDER must not be considered. siprace keeps the usable services of
//! **every** ORDER, as fallback ranks: [`select_naptr`] sorts by (ORDER,
//! PREFERENCE), so every service of the lowest ORDER with a usable service is
//! always ranked before any service of a higher ORDER, and the race only
//! reaches the higher-ORDER services once the lower ones have failed or are
//! slow. A dead transport then falls over to the next usable one, the way
//! RFC 3263 §4.3 moves on across SRV targets and Happy Eyeballs v3 across
//! protocol groups, instead of failing the whole location. Strict RFC 3403
//! behaviour would be to keep only the lowest usable ORDER.
//!
//! # Bounded selection without starving a level
//!
//! A hostile or broken answer can hold thousands of NAPTR or SRV records.
//! siprace bounds the work (how many services it queries, how many targets
//! it resolves and races) but never by cutting a sorted list at its head:
//! 999 dead targets at priority 0 would then hide the one live target at
//! priority 1. [`level_quotas`] shares a budget among preference levels
//! (SRV priorities, NAPTR ORDERs, services): first one item of every level,
//! then a few more each, then the rest to the most preferred levels.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::Rng;

pub use crate::endpoint::unusable_address;
use crate::endpoint::{TargetSpec, Transport};
use crate::target::Scheme;

/// A NAPTR record as far as RFC 3263 cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    /// ORDER: lower values are used first (RFC 3403 §4.1).
    pub order: u16,
    /// PREFERENCE: breaks ties within one ORDER, lower first.
    pub preference: u16,
    /// FLAGS, e.g. `s` (the next lookup is SRV); RFC 3263 uses only terminal `s` records.
    pub flags: String,
    /// SERVICES, e.g. `SIP+D2U` or `SIPS+D2T` (see [`naptr_service`]).
    pub services: String,
    /// Normalised with [`normalize_name`].
    pub replacement: String,
}

/// An SRV record. `target` is normalised with [`normalize_name`], so the
/// root (RFC 2782's "service not offered") is `"."`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrvRecord {
    /// PRIORITY: lower values are tried first.
    pub priority: u16,
    /// WEIGHT: within one priority, the share of selections (RFC 2782's weighted order).
    pub weight: u16,
    /// The port on the target; 0 means nothing to dial there.
    pub port: u16,
    /// The host to resolve, or `"."` for "service not offered".
    pub target: String,
}

/// Lowercases a domain name and drops its trailing dot; the root stays `"."`.
pub fn normalize_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.trim_end_matches('.') {
        "" => ".".to_string(),
        n => n.to_string(),
    }
}

/// The SRV owner name for a transport at a domain: `_sip._tcp.example.test`.
pub fn srv_name(transport: Transport, domain: &str) -> String {
    format!("{}.{}", transport.srv_prefix(), normalize_name(domain))
}

/// What a NAPTR `services` field means for SIP (RFC 3263 §4.1, RFC 4168).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NaptrService {
    /// A SIP service siprace can use.
    Usable {
        /// A SIPS service (`SIPS+D2T`): fit for a `sips:` URI.
        secure: bool,
        /// The transport it names (D2U: UDP, D2T: TCP or TLS, D2S: SCTP).
        transport: Transport,
    },
    /// A SIP service without a transport here (SIPS+D2S, SIP+D2W...).
    Unsupported,
    /// Not SIP at all (E2U+sip, x-foo...).
    NotSip,
}

/// Classifies a NAPTR `services` field (case-insensitive).
pub fn naptr_service(services: &str) -> NaptrService {
    let s = services.to_ascii_uppercase();
    let usable = |secure, transport| NaptrService::Usable { secure, transport };
    match s.as_str() {
        "SIP+D2U" => usable(false, Transport::Udp),
        "SIP+D2T" => usable(false, Transport::Tcp),
        "SIP+D2S" => usable(false, Transport::Sctp),
        "SIPS+D2T" => usable(true, Transport::Tls),
        _ if s.starts_with("SIP+D2") || s.starts_with("SIPS+D2") => NaptrService::Unsupported,
        _ => NaptrService::NotSip,
    }
}

/// The outcome of NAPTR selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NaptrChoice {
    /// Usable services in NAPTR order: the transport and the SRV name to query.
    Services(Vec<(Transport, String)>),
    /// No SIP service among the records: behave as if there were no NAPTR.
    NoSip,
    /// SIP services are published but none fits the scheme or the allowed
    /// transports: the domain's NAPTR set is authoritative, so location fails.
    NoneUsable {
        /// The SIP services the records offer, uppercased, each once (peer text).
        offered: Vec<String>,
    },
}

/// RFC 3263 §4.1 NAPTR selection: order by (order, preference); keep
/// terminal (`"s"` flag) SIP services siprace has a transport for; a `sips:`
/// URI keeps only SIPS services; only allowed transports; no duplicates.
///
/// Services of higher ORDER values are kept after those of the lowest one,
/// as fallbacks: a deliberate extension of RFC 3403 §4.1 (see the
/// [module documentation](self)). At most `limit` services are kept (each
/// costs an SRV query), shared among the ORDER values by [`level_quotas`]
/// so that a crowd of services at one ORDER cannot hide the next ORDER.
pub fn select_naptr(
    records: &[NaptrRecord],
    scheme: Scheme,
    allowed: &[Transport],
    limit: usize,
) -> NaptrChoice {
    let mut sorted: Vec<&NaptrRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.order, r.preference));
    let mut offered = Vec::new();
    // Usable services with their ORDER, best first, without duplicates.
    let mut usable: Vec<(u16, (Transport, String))> = Vec::new();
    let mut seen: HashSet<(Transport, &str)> = HashSet::new();
    for r in sorted {
        let service = naptr_service(&r.services);
        if service == NaptrService::NotSip {
            continue;
        }
        let name = r.services.to_ascii_uppercase();
        if !offered.contains(&name) {
            offered.push(name);
        }
        let NaptrService::Usable { secure, transport } = service else {
            continue;
        };
        let terminal_srv = r.flags.eq_ignore_ascii_case("s");
        let replacement_ok = r.replacement != "." && !r.replacement.is_empty();
        if !terminal_srv
            || !replacement_ok
            || (scheme == Scheme::Sips && !secure)
            || !allowed.contains(&transport)
        {
            continue;
        }
        if seen.insert((transport, r.replacement.as_str())) {
            usable.push((r.order, (transport, r.replacement.clone())));
        }
    }
    if usable.is_empty() {
        return if offered.is_empty() {
            NaptrChoice::NoSip
        } else {
            NaptrChoice::NoneUsable { offered }
        };
    }
    let levels: Vec<&[(u16, (Transport, String))]> = usable.chunk_by(|a, b| a.0 == b.0).collect();
    let sizes: Vec<usize> = levels.iter().map(|l| l.len()).collect();
    let quotas = level_quotas(&sizes, limit);
    let services: Vec<(Transport, String)> = levels
        .iter()
        .zip(quotas)
        .flat_map(|(level, quota)| level[..quota].iter().map(|(_, s)| s.clone()))
        .collect();
    if services.len() < usable.len() {
        tracing::debug!(
            kept = services.len(),
            dropped = usable.len() - services.len(),
            "NAPTR: usable services beyond the limit dropped"
        );
    }
    NaptrChoice::Services(services)
}

/// Explains why [`NaptrChoice::NoneUsable`] happened, for an error message.
pub fn none_usable_reason(scheme: Scheme, allowed: &[Transport]) -> String {
    let list = allowed
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match scheme {
        Scheme::Sips => format!(
            "a sips: URI needs a SIPS+D2T (TLS) service with the \"s\" flag (allowed transports: {list})"
        ),
        Scheme::Sip => format!(
            "siprace needs a SIP+D2U, SIP+D2T, SIP+D2S or SIPS+D2T service with the \"s\" flag over an allowed transport ({list})"
        ),
    }
}

/// What an SRV answer offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvChoice {
    /// Targets in the order to try them, bounded by [`rfc2782_order`];
    /// `dropped` dialable records did not fit the budget.
    Targets {
        /// The dialable records, in the order to try them.
        ordered: Vec<SrvRecord>,
        /// How many dialable records were left out.
        dropped: usize,
    },
    /// Only a `"."` target: the service is decidedly not offered (RFC 2782).
    NotOffered,
    /// Nothing usable (no records, or only port-0 entries).
    Empty,
}

/// True if an SRV record names something to dial: not the root (`"."`,
/// "not offered") and not port 0.
pub fn dialable(r: &SrvRecord) -> bool {
    r.target != "." && r.port != 0
}

/// Filters an SRV answer (a `"."` target only counts when it is alone in
/// the answer; port 0 cannot be dialed) and orders at most `budget` of its
/// records with [`rfc2782_order`].
pub fn choose_srv<R: Rng + ?Sized>(records: &[SrvRecord], budget: usize, rng: &mut R) -> SrvChoice {
    let usable: Vec<SrvRecord> = records.iter().filter(|r| dialable(r)).cloned().collect();
    if usable.is_empty() {
        if records.iter().any(|r| r.target == ".") {
            SrvChoice::NotOffered
        } else {
            SrvChoice::Empty
        }
    } else {
        let total = usable.len();
        let ordered = rfc2782_order(usable, budget, rng);
        SrvChoice::Targets {
            dropped: total - ordered.len(),
            ordered,
        }
    }
}

/// Shares `budget` items among preference levels, most preferred first:
/// `sizes[i]` items are available at level `i`; the result says how many
/// to keep of each. Three passes, each in level order and each until the
/// budget runs out: one item per level, so a crowded level cannot starve
/// the levels after it; then up to a quarter of the budget per level; then
/// whatever is left to the most preferred levels. The total is at most
/// `budget`, and with budget to spare every item is kept.
pub fn level_quotas(sizes: &[usize], budget: usize) -> Vec<usize> {
    let mut quotas = vec![0usize; sizes.len()];
    let mut left = budget;
    for cap in [1, (budget / 4).max(1), usize::MAX] {
        for (quota, &size) in quotas.iter_mut().zip(sizes) {
            let more = size.min(cap).saturating_sub(*quota).min(left);
            *quota += more;
            left -= more;
        }
    }
    quotas
}

/// RFC 2782 ordering, bounded: priority ascending; within a priority,
/// repeatedly pick a record at random with probability proportional to its
/// weight, where weight-0 records are placed first and so only win when the
/// random sum is 0. At most `limit` records are returned, shared among the
/// priority levels by [`level_quotas`] (every level keeps at least its
/// first pick while the limit allows), so a live target behind a crowd of
/// dead ones at a better priority is still tried. Picking is
/// O(`limit` × records).
pub fn rfc2782_order<R: Rng + ?Sized>(
    mut records: Vec<SrvRecord>,
    limit: usize,
    rng: &mut R,
) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.priority);
    let levels: Vec<&[SrvRecord]> = records.chunk_by(|a, b| a.priority == b.priority).collect();
    let sizes: Vec<usize> = levels.iter().map(|l| l.len()).collect();
    let quotas = level_quotas(&sizes, limit);
    let mut out = Vec::with_capacity(quotas.iter().sum());
    for (level, quota) in levels.into_iter().zip(quotas) {
        if quota > 0 {
            weighted_picks(level.to_vec(), quota, rng, &mut out);
        }
    }
    out
}

/// The first `n` RFC 2782 picks from one priority level, appended to `out`.
fn weighted_picks<R: Rng + ?Sized>(
    mut group: Vec<SrvRecord>,
    n: usize,
    rng: &mut R,
    out: &mut Vec<SrvRecord>,
) {
    // "Arrange in any order, except that weight-0 records go first":
    // shuffle, then a stable sort moves the zeros to the front.
    for i in (1..group.len()).rev() {
        let j = rng.random_range(0..=i);
        group.swap(i, j);
    }
    group.sort_by_key(|r| r.weight != 0);
    for _ in 0..n.min(group.len()) {
        let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
        let pick = rng.random_range(0..=total);
        let mut running = 0u64;
        let idx = group
            .iter()
            .position(|r| {
                running += u64::from(r.weight);
                running >= pick
            })
            .unwrap_or(0);
        out.push(group.remove(idx));
    }
}

/// The transports to use without SRV (explicit port, IP literal, or the
/// no-SRV fallback): the `;transport=` parameter if given; else TLS for
/// `sips:`; else for `sip:` UDP (RFC 3263 §4.1) and, as siprace's
/// extension, TCP as the next rank; if neither is allowed, every allowed
/// transport. Always restricted to `allowed`.
pub fn default_transports(
    scheme: Scheme,
    param: Option<Transport>,
    allowed: &[Transport],
) -> Vec<Transport> {
    let pick = |wanted: &[Transport]| -> Vec<Transport> {
        wanted
            .iter()
            .copied()
            .filter(|t| allowed.contains(t))
            .collect()
    };
    match (param, scheme) {
        (Some(t), _) => pick(&[t]),
        (None, Scheme::Sips) => pick(&[Transport::Tls]),
        (None, Scheme::Sip) => {
            let v = pick(&[Transport::Udp, Transport::Tcp]);
            if v.is_empty() {
                pick(&[Transport::Tls, Transport::Sctp])
            } else {
                v
            }
        }
    }
}

/// The SRV names to query without NAPTR, in siprace's preference order:
/// `_sip._udp`, `_sip._tcp`, `_sip._sctp`, `_sips._tcp` (only `_sips._tcp`
/// for a `sips:` URI), restricted to `allowed`.
pub fn constructed_services(
    scheme: Scheme,
    domain: &str,
    allowed: &[Transport],
) -> Vec<(Transport, String)> {
    let order: &[Transport] = match scheme {
        Scheme::Sips => &[Transport::Tls],
        Scheme::Sip => &[
            Transport::Udp,
            Transport::Tcp,
            Transport::Sctp,
            Transport::Tls,
        ],
    };
    order
        .iter()
        .copied()
        .filter(|t| allowed.contains(t))
        .map(|t| (t, srv_name(t, domain)))
        .collect()
}

/// One spec per transport for `host`, on `port` or each transport's default
/// port, ranked in the given order.
pub fn direct_specs(host: &str, port: Option<u16>, transports: &[Transport]) -> Vec<TargetSpec> {
    let host: Arc<str> = Arc::from(host);
    transports
        .iter()
        .enumerate()
        .map(|(i, &t)| TargetSpec {
            host: host.clone(),
            port: port.unwrap_or_else(|| t.default_port()),
            transport: t,
            rank: i as u32,
        })
        .collect()
}

/// How many SRV targets each service may contribute: each at most
/// `per_service`, together at most `total`, shared by [`level_quotas`] in
/// service order so that the first services cannot crowd out the rest.
/// `dialable[i]` is the number of dialable records service `i` has.
pub fn service_budgets(dialable: &[usize], per_service: usize, total: usize) -> Vec<usize> {
    let sizes: Vec<usize> = dialable.iter().map(|&n| n.min(per_service)).collect();
    level_quotas(&sizes, total)
}

/// Flattens ordered SRV targets per service (in service order) into specs
/// ranked 0, 1, 2...; duplicates (same host, port, transport) are dropped and
/// at most `limit` specs are kept.
pub fn specs_from_srv(services: &[(Transport, Vec<SrvRecord>)], limit: usize) -> Vec<TargetSpec> {
    let mut specs: Vec<TargetSpec> = Vec::new();
    let mut seen: HashSet<(&str, u16, Transport)> = HashSet::new();
    // Share one Arc per host so the address stage can group them.
    let mut hosts: HashMap<&str, Arc<str>> = HashMap::new();
    for (transport, records) in services {
        for r in records {
            if specs.len() >= limit {
                return specs;
            }
            if !seen.insert((r.target.as_str(), r.port, *transport)) {
                continue;
            }
            let host = hosts
                .entry(r.target.as_str())
                .or_insert_with(|| Arc::from(r.target.as_str()))
                .clone();
            specs.push(TargetSpec {
                host,
                port: r.port,
                transport: *transport,
                rank: specs.len() as u32,
            });
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn naptr(order: u16, pref: u16, flags: &str, services: &str, repl: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference: pref,
            flags: flags.into(),
            services: services.into(),
            replacement: normalize_name(repl),
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: normalize_name(target),
        }
    }

    const ALL: [Transport; 4] = Transport::ALL;

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("Sip1.Example.TEST."), "sip1.example.test");
        assert_eq!(normalize_name("."), ".");
        assert_eq!(normalize_name(""), ".");
        assert_eq!(
            srv_name(Transport::Tls, "example.test."),
            "_sips._tcp.example.test"
        );
        assert_eq!(
            srv_name(Transport::Sctp, "example.test"),
            "_sip._sctp.example.test"
        );
    }

    #[test]
    fn naptr_sorted_by_order_then_preference_and_filtered() {
        let recs = vec![
            naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.test."),
            naptr(10, 60, "S", "sip+d2t", "_sip._tcp.example.test."),
            naptr(10, 50, "s", "SIPS+D2T", "_sips._tcp.example.test."),
            naptr(5, 1, "s", "SIPS+D2S", "_sips._sctp.example.test."),
            naptr(5, 2, "s", "E2U+sip", "whatever.example.test."),
            naptr(5, 3, "", "SIP+D2T", "loop.example.test."),
            naptr(30, 1, "s", "SIP+D2S", "_sip._sctp.example.test."),
        ];
        let got = select_naptr(&recs, Scheme::Sip, &ALL, 32);
        assert_eq!(
            got,
            NaptrChoice::Services(vec![
                (Transport::Tls, "_sips._tcp.example.test".into()),
                (Transport::Tcp, "_sip._tcp.example.test".into()),
                (Transport::Udp, "_sip._udp.example.test".into()),
                (Transport::Sctp, "_sip._sctp.example.test".into()),
            ])
        );
        // Allowed transports filter.
        let got = select_naptr(&recs, Scheme::Sip, &[Transport::Udp], 32);
        assert_eq!(
            got,
            NaptrChoice::Services(vec![(Transport::Udp, "_sip._udp.example.test".into())])
        );
        // sips keeps SIPS only.
        let got = select_naptr(&recs, Scheme::Sips, &[Transport::Tls], 32);
        assert_eq!(
            got,
            NaptrChoice::Services(vec![(Transport::Tls, "_sips._tcp.example.test".into())])
        );
    }

    #[test]
    fn naptr_without_sip_or_usable_services() {
        let other = vec![naptr(10, 10, "u", "E2U+sip", "!^.*$!sip:x@y!")];
        assert_eq!(
            select_naptr(&other, Scheme::Sip, &ALL, 32),
            NaptrChoice::NoSip
        );
        assert_eq!(select_naptr(&[], Scheme::Sip, &ALL, 32), NaptrChoice::NoSip);
        let plain = vec![
            naptr(10, 10, "s", "SIP+D2U", "_sip._udp.example.test."),
            naptr(10, 20, "s", "SIP+D2T", "_sip._tcp.example.test."),
        ];
        assert_eq!(
            select_naptr(&plain, Scheme::Sips, &[Transport::Tls], 32),
            NaptrChoice::NoneUsable {
                offered: vec!["SIP+D2U".into(), "SIP+D2T".into()]
            }
        );
        // Only SIPS over SCTP: a SIP service, but no transport for it.
        let sctp = vec![naptr(10, 10, "s", "SIPS+D2S", "_sips._sctp.example.test.")];
        assert!(matches!(
            select_naptr(&sctp, Scheme::Sip, &ALL, 32),
            NaptrChoice::NoneUsable { .. }
        ));
        // A "." replacement is no service.
        let root = vec![naptr(10, 10, "s", "SIP+D2T", ".")];
        assert!(matches!(
            select_naptr(&root, Scheme::Sip, &ALL, 32),
            NaptrChoice::NoneUsable { .. }
        ));
        assert!(none_usable_reason(Scheme::Sips, &[Transport::Tls]).contains("SIPS+D2T"));
    }

    #[test]
    fn naptr_lower_order_always_ranks_first() {
        // A higher ORDER with a better PREFERENCE still comes after every
        // service of the lower ORDER (the fallback extension keeps it).
        let recs = vec![
            naptr(50, 1, "s", "SIP+D2U", "_sip._udp.example.test."),
            naptr(10, 90, "s", "SIP+D2T", "_sip._tcp.example.test."),
            naptr(10, 80, "s", "SIP+D2S", "_sip._sctp.example.test."),
        ];
        assert_eq!(
            select_naptr(&recs, Scheme::Sip, &ALL, 32),
            NaptrChoice::Services(vec![
                (Transport::Sctp, "_sip._sctp.example.test".into()),
                (Transport::Tcp, "_sip._tcp.example.test".into()),
                (Transport::Udp, "_sip._udp.example.test".into()),
            ])
        );
        // The lowest ORDER without a usable service does not block the next.
        assert_eq!(
            select_naptr(&recs, Scheme::Sip, &[Transport::Udp], 32),
            NaptrChoice::Services(vec![(Transport::Udp, "_sip._udp.example.test".into())])
        );
    }

    #[test]
    fn address_sanity() {
        let bad = |s: &str| unusable_address(s.parse().unwrap());
        assert_eq!(bad("0.0.0.0"), Some("unspecified"));
        assert_eq!(bad("::"), Some("unspecified"));
        assert_eq!(bad("224.0.0.1"), Some("multicast"));
        assert_eq!(bad("239.255.255.250"), Some("multicast"));
        assert_eq!(bad("ff02::1"), Some("multicast"));
        assert_eq!(bad("255.255.255.255"), Some("broadcast"));
        assert_eq!(bad("::ffff:192.0.2.1"), Some("IPv4-mapped"));
        for good in [
            "127.0.0.1",
            "::1",
            "::2",
            "192.0.2.1",
            "10.0.0.1",
            "2001:db8::1",
            "64:ff9b::c000:201",
            "fe80::1",
        ] {
            assert_eq!(bad(good), None, "{good}");
        }
    }

    #[test]
    fn naptr_duplicates_collapse() {
        let recs = vec![
            naptr(10, 10, "s", "SIP+D2T", "_sip._tcp.example.test."),
            naptr(10, 20, "s", "SIP+D2T", "_SIP._tcp.example.test"),
        ];
        assert_eq!(
            select_naptr(&recs, Scheme::Sip, &ALL, 32),
            NaptrChoice::Services(vec![(Transport::Tcp, "_sip._tcp.example.test".into())])
        );
    }

    #[test]
    fn srv_root_target_means_not_offered() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            choose_srv(&[srv(0, 0, 0, ".")], 32, &mut rng),
            SrvChoice::NotOffered
        );
        assert_eq!(choose_srv(&[], 32, &mut rng), SrvChoice::Empty);
        assert_eq!(
            choose_srv(&[srv(0, 0, 0, "a.test")], 32, &mut rng),
            SrvChoice::Empty
        );
        // A "." among real targets is ignored.
        assert_eq!(
            choose_srv(
                &[srv(0, 0, 0, "."), srv(1, 0, 5060, "a.test")],
                32,
                &mut rng
            ),
            SrvChoice::Targets {
                ordered: vec![srv(1, 0, 5060, "a.test")],
                dropped: 0
            }
        );
    }

    #[test]
    fn srv_priority_first_and_capped() {
        let mut rng = StdRng::seed_from_u64(7);
        let recs = vec![
            srv(20, 0, 1, "c.test"),
            srv(10, 5, 2, "b.test"),
            srv(0, 1, 3, "a.test"),
            srv(10, 5, 4, "b2.test"),
        ];
        let out = rfc2782_order(recs.clone(), 10, &mut rng);
        let prios: Vec<u16> = out.iter().map(|r| r.priority).collect();
        assert_eq!(prios, vec![0, 10, 10, 20]);
        let out = rfc2782_order(recs, 2, &mut rng);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].target, "a.test");
        assert_eq!(out[1].priority, 10);
        let many: Vec<SrvRecord> = (0..500)
            .map(|i| srv(0, 1, 5060, &format!("h{i}.test")))
            .collect();
        assert_eq!(rfc2782_order(many, 32, &mut rng).len(), 32);
    }

    #[test]
    fn level_quotas_share_the_budget() {
        assert_eq!(level_quotas(&[34, 33, 33], 8), vec![4, 2, 2]);
        // A crowd at the best level does not hide the next one.
        assert_eq!(level_quotas(&[999, 1], 32), vec![31, 1]);
        // More levels than budget: the first pick of the best levels.
        let many = level_quotas(&[1; 1000], 32);
        assert!(many[..32].iter().all(|&q| q == 1) && many[32..].iter().all(|&q| q == 0));
        // Budget to spare: everything.
        assert_eq!(level_quotas(&[5, 0, 5], 100), vec![5, 0, 5]);
        assert_eq!(level_quotas(&[3, 3], 0), vec![0, 0]);
        use proptest::prelude::*;
        proptest!(|(sizes in proptest::collection::vec(0usize..50, 0..40), budget in 0usize..200)| {
            let q = level_quotas(&sizes, budget);
            let available: usize = sizes.iter().sum();
            prop_assert_eq!(q.iter().sum::<usize>(), budget.min(available));
            prop_assert!(q.iter().zip(&sizes).all(|(q, s)| q <= s));
            // Every non-empty level gets one before any level gets a second.
            let nonempty = sizes.iter().filter(|&&s| s > 0).count();
            if budget >= nonempty {
                prop_assert!(q.iter().zip(&sizes).all(|(q, s)| *s == 0 || *q >= 1));
            }
        });
    }

    #[test]
    fn srv_live_target_behind_999_dead_is_kept() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut recs: Vec<SrvRecord> = (0..999)
            .map(|i| srv(i % 10, 1, 5060, &format!("dead{i}.test")))
            .collect();
        recs.push(srv(10, 1, 5060, "live.test"));
        let SrvChoice::Targets { ordered, dropped } = choose_srv(&recs, 32, &mut rng) else {
            panic!("targets expected")
        };
        assert_eq!(ordered.len(), 32);
        assert_eq!(dropped, 1000 - 32);
        // Every priority level is there, in priority order, the live one last.
        let prios: HashSet<u16> = ordered.iter().map(|r| r.priority).collect();
        assert_eq!(prios.len(), 11);
        assert!(ordered.windows(2).all(|w| w[0].priority <= w[1].priority));
        assert_eq!(ordered.last().unwrap().target, "live.test");
    }

    #[test]
    fn naptr_crowd_at_one_order_does_not_hide_the_next() {
        let mut recs: Vec<NaptrRecord> = (0..200)
            .map(|i| naptr(10, i, "s", "SIP+D2U", &format!("_sip._udp.d{i}.test.")))
            .collect();
        recs.push(naptr(20, 1, "s", "SIP+D2T", "_sip._tcp.live.test."));
        let NaptrChoice::Services(services) = select_naptr(&recs, Scheme::Sip, &ALL, 32) else {
            panic!("services expected")
        };
        assert_eq!(services.len(), 32);
        assert_eq!(
            services.last(),
            Some(&(Transport::Tcp, "_sip._tcp.live.test".to_string()))
        );
        // The kept ORDER-10 services are the most preferred ones, in order.
        assert_eq!(services[0].1, "_sip._udp.d0.test");
        assert_eq!(services[30].1, "_sip._udp.d30.test");
    }

    #[test]
    fn service_budgets_reach_every_service() {
        assert_eq!(
            service_budgets(&[100, 100, 100, 100, 100, 100], 32, 128),
            vec![32, 32, 32, 30, 1, 1]
        );
        assert_eq!(service_budgets(&[3, 0, 2], 32, 128), vec![3, 0, 2]);
    }

    #[test]
    fn srv_weights_are_roughly_proportional() {
        let mut rng = StdRng::seed_from_u64(42);
        let recs = vec![
            srv(0, 10, 1, "a.test"),
            srv(0, 30, 2, "b.test"),
            srv(0, 60, 3, "c.test"),
        ];
        let mut first = [0u32; 3];
        let draws = 10_000;
        for _ in 0..draws {
            let out = rfc2782_order(recs.clone(), 3, &mut rng);
            assert_eq!(out.len(), 3);
            first[usize::from(out[0].port - 1)] += 1;
        }
        // Expected ≈ 11/101, 30/101, 60/101 (the inclusive 0 draw favours the first in list).
        let share = |i: usize| f64::from(first[i]) / f64::from(draws);
        assert!((share(0) - 0.10).abs() < 0.03, "{first:?}");
        assert!((share(1) - 0.30).abs() < 0.03, "{first:?}");
        assert!((share(2) - 0.60).abs() < 0.03, "{first:?}");
    }

    #[test]
    fn srv_weight_zero_rarely_first_and_all_zero_uniform() {
        let mut rng = StdRng::seed_from_u64(3);
        let recs = vec![srv(0, 0, 1, "zero.test"), srv(0, 100, 2, "heavy.test")];
        let zero_first = (0..10_000)
            .filter(|_| rfc2782_order(recs.clone(), 2, &mut rng)[0].port == 1)
            .count();
        // Only the 0 draw out of 0..=100 picks it: about 1%.
        assert!(zero_first < 300, "{zero_first}");
        assert!(zero_first > 20, "{zero_first}");

        let zeros: Vec<SrvRecord> = (1..=4)
            .map(|p| srv(0, 0, p, &format!("z{p}.test")))
            .collect();
        let mut first = [0u32; 4];
        for _ in 0..10_000 {
            let out = rfc2782_order(zeros.clone(), 4, &mut rng);
            assert_eq!(out.len(), 4);
            first[usize::from(out[0].port - 1)] += 1;
        }
        for n in first {
            assert!((2_000..3_000).contains(&n), "{first:?}");
        }
    }

    #[test]
    fn srv_order_is_a_permutation() {
        use proptest::prelude::*;
        proptest!(|(recs in proptest::collection::vec((0u16..4, any::<u16>(), 1u16..10), 0..40), seed in any::<u64>())| {
            let recs: Vec<SrvRecord> = recs
                .into_iter()
                .enumerate()
                .map(|(i, (p, w, port))| srv(p, w, port, &format!("h{i}.test")))
                .collect();
            let mut rng = StdRng::seed_from_u64(seed);
            let out = rfc2782_order(recs.clone(), usize::MAX, &mut rng);
            prop_assert_eq!(out.len(), recs.len());
            prop_assert!(out.windows(2).all(|w| w[0].priority <= w[1].priority));
            let mut a = out.clone();
            let mut b = recs.clone();
            a.sort_by(|x, y| x.target.cmp(&y.target));
            b.sort_by(|x, y| x.target.cmp(&y.target));
            prop_assert_eq!(a, b);
        });
    }

    #[test]
    fn default_transport_rules() {
        use Transport::*;
        assert_eq!(default_transports(Scheme::Sip, None, &ALL), vec![Udp, Tcp]);
        assert_eq!(
            default_transports(Scheme::Sip, None, &[Tcp, Tls]),
            vec![Tcp]
        );
        assert_eq!(default_transports(Scheme::Sip, None, &[Sctp]), vec![Sctp]);
        assert_eq!(default_transports(Scheme::Sips, None, &[Tls]), vec![Tls]);
        assert_eq!(
            default_transports(Scheme::Sips, None, &[Tcp]),
            Vec::<Transport>::new()
        );
        assert_eq!(default_transports(Scheme::Sip, Some(Tcp), &ALL), vec![Tcp]);
        assert_eq!(
            default_transports(Scheme::Sip, Some(Tcp), &[Udp]),
            Vec::<Transport>::new()
        );
    }

    #[test]
    fn constructed_order_and_specs() {
        use Transport::*;
        let names: Vec<Transport> =
            constructed_services(Scheme::Sip, "example.test", &[Tls, Tcp, Udp, Sctp])
                .into_iter()
                .map(|(t, _)| t)
                .collect();
        assert_eq!(names, vec![Udp, Tcp, Sctp, Tls]);
        assert_eq!(
            constructed_services(Scheme::Sips, "example.test", &ALL),
            vec![(Tls, "_sips._tcp.example.test".to_string())]
        );
        let specs = direct_specs("example.test", None, &[Udp, Tls]);
        assert_eq!((specs[0].port, specs[0].rank), (5060, 0));
        assert_eq!((specs[1].port, specs[1].rank), (5061, 1));
        assert_eq!(direct_specs("h", Some(5070), &[Tls])[0].port, 5070);

        let services = vec![
            (
                Tcp,
                vec![srv(0, 0, 5060, "a.test"), srv(0, 0, 5060, "b.test")],
            ),
            (
                Udp,
                vec![srv(0, 0, 5060, "a.test"), srv(0, 0, 5060, "a.test")],
            ),
        ];
        let specs = specs_from_srv(&services, 100);
        let got: Vec<(&str, Transport, u32)> = specs
            .iter()
            .map(|s| (&*s.host, s.transport, s.rank))
            .collect();
        assert_eq!(
            got,
            vec![("a.test", Tcp, 0), ("b.test", Tcp, 1), ("a.test", Udp, 2)]
        );
        assert!(Arc::ptr_eq(&specs[0].host, &specs[2].host));
        assert_eq!(specs_from_srv(&services, 1).len(), 1);
    }
}
