//! Candidate ordering: RFC 3263 rank, then RFC 6724 destination ordering
//! with history (a recently failed path last; HEv3's RTT rule between the
//! families, see [`history_first_family`]), then family interleaving
//! (RFC 8305 §4, "First/Preferred Address Family Count").
//!
//! Only the RFC 6724 rules that need no knowledge of the source address are
//! applied here (rule 6, precedence, and rule 8, smaller scope); the rules
//! that compare with the source address (1, 2, 5, 9) are the kernel's job
//! when it picks a source, and an unusable family shows up as an immediate
//! attempt failure anyway.

use crate::endpoint::{Endpoint, Family};
use crate::race::history::{HistoryView, PathVerdict, RTT_LEEWAY};
use std::cmp::Reverse;
use std::net::{IpAddr, Ipv6Addr};

/// RFC 6724 §2.1 default policy table: (prefix, length, precedence).
/// IPv4 addresses are looked up as IPv4-mapped addresses (`::ffff:0:0/96`).
const POLICY_TABLE: [(Ipv6Addr, u8, u8); 9] = [
    (Ipv6Addr::LOCALHOST, 128, 50),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96, 35),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, 30),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, 5),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, 3),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, 1),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, 1),
    (Ipv6Addr::new(0x3ffe, 0, 0, 0, 0, 0, 0, 0), 16, 1),
    (Ipv6Addr::UNSPECIFIED, 0, 40),
];

fn as_v6(ip: &IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => *v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}

fn prefix_matches(addr: Ipv6Addr, prefix: Ipv6Addr, len: u8) -> bool {
    let (a, p) = (u128::from(addr), u128::from(prefix));
    len == 0 || (a >> (128 - u32::from(len))) == (p >> (128 - u32::from(len)))
}

/// RFC 6724 precedence of a destination (the longest matching table entry).
pub fn precedence(ip: &IpAddr) -> u8 {
    let v6 = as_v6(ip);
    POLICY_TABLE
        .iter()
        .filter(|(prefix, len, _)| prefix_matches(v6, *prefix, *len))
        .max_by_key(|(_, len, _)| *len)
        .map(|(_, _, prec)| *prec)
        .unwrap_or(40)
}

/// RFC 4007 / RFC 6724 §3.1 scope: smaller is narrower.
pub fn scope(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_link_local() => 0x2,
        IpAddr::V4(_) => 0xe,
        IpAddr::V6(v6) if v6.is_loopback() => 0x2,
        IpAddr::V6(v6) if v6.is_multicast() => v6.octets()[1] & 0x0f,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => 0x2,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => scope(&IpAddr::V4(v4)),
            None => 0xe,
        },
    }
}

/// The family history puts first at a service location, given the
/// verdict of each family's path there ([`PathVerdict`]): the other family
/// when `preferred`'s path failed recently and the other's did not, or
/// when both worked and the other is faster by more than [`RTT_LEEWAY`]
/// (HEv3's RTT rule, with Apple's leeway); `preferred` otherwise. The
/// Resolution Delay waits for this family too (see `Race`).
pub fn history_first_family(preferred: Family, verdict: impl Fn(Family) -> PathVerdict) -> Family {
    let other = preferred.other();
    match (verdict(preferred), verdict(other)) {
        (PathVerdict::Failed, theirs) if theirs != PathVerdict::Failed => other,
        (PathVerdict::Worked { rtt: ours }, PathVerdict::Worked { rtt: theirs })
            if theirs.srtt.saturating_add(RTT_LEEWAY) < ours.srtt =>
        {
            other
        }
        _ => preferred,
    }
}

/// What history says of `family` among `group`'s paths: its fastest
/// success, else the first verdict it has (a group is one service
/// location, so normally there is one path per family).
fn family_verdict(group: &[Endpoint], history: &HistoryView, family: Family) -> PathVerdict {
    let verdicts = group
        .iter()
        .filter(|e| e.family() == family)
        .map(|e| history.verdict(e));
    let fastest = verdicts
        .clone()
        .filter_map(|v| match v {
            PathVerdict::Worked { rtt } => Some(rtt),
            _ => None,
        })
        .min_by_key(|rtt| rtt.srtt);
    match fastest {
        Some(rtt) => PathVerdict::Worked { rtt },
        None => verdicts
            .into_iter()
            .find(|v| *v != PathVerdict::Unknown)
            .unwrap_or(PathVerdict::Unknown),
    }
}

/// Sorts one rank's endpoints: a path that failed recently goes last; then
/// the family history puts first ([`history_first_family`], starting from
/// `family_first` if given, else the family RFC 6724 ranks first); then
/// RFC 6724 precedence (higher first) and scope (smaller first). Equal keys
/// keep DNS order.
fn sort_by_history_and_rfc6724(
    group: &mut [Endpoint],
    history: &HistoryView,
    family_first: Option<Family>,
) {
    let rfc6724 = |e: &Endpoint| {
        let ip = e.addr.ip();
        (Reverse(precedence(&ip)), scope(&ip))
    };
    let Some(preferred) = family_first.or_else(|| {
        group
            .iter()
            .min_by_key(|e| rfc6724(e))
            .map(Endpoint::family)
    }) else {
        return;
    };
    let first = history_first_family(preferred, |f| family_verdict(group, history, f));
    group.sort_by_key(|e| {
        (
            history.verdict(e) == PathVerdict::Failed,
            e.family() != first,
            rfc6724(e),
        )
    });
}

/// How to lay out the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortPolicy {
    /// Apply RFC 6724 + history; when false, keep DNS order with
    /// `first_family` first (what today's SIP stacks do: `getaddrinfo` gives
    /// IPv6 first, Kamailio and OpenSIPS take A records first).
    pub rfc6724: bool,
    /// The family that goes first when `rfc6724` is off.
    pub first_family: Family,
    /// With `rfc6724`: the family that goes first instead of RFC 6724's
    /// (see `RaceConfig::family_first`).
    pub family_first: Option<Family>,
    /// Alternate families after this many endpoints of the first one
    /// (RFC 8305 "Preferred Address Family Count"); 0 disables interleaving.
    pub preferred_family_count: usize,
}

/// Orders every known endpoint: by rank, then inside each rank by
/// `sort_by_history_and_rfc6724` and interleaving. The result includes endpoints already
/// attempted, so that re-sorting after a late DNS answer keeps the
/// interleaving consistent with what has already started.
pub fn order(endpoints: &[Endpoint], history: &HistoryView, policy: SortPolicy) -> Vec<Endpoint> {
    let mut by_rank: Vec<Endpoint> = endpoints.to_vec();
    by_rank.sort_by_key(|e| e.rank);
    if policy.rfc6724 {
        // A service location (rank) all of whose paths failed recently goes
        // after the others, so a dead first SRV target does not cost an
        // attempt delay per family on every dial. The failures stop counting
        // with the history's failure memory, so the order converges back.
        let dead_ranks: Vec<u32> = by_rank
            .chunk_by(|a, b| a.rank == b.rank)
            .filter(|group| {
                group
                    .iter()
                    .all(|e| history.verdict(e) == PathVerdict::Failed)
            })
            .map(|group| group[0].rank)
            .collect();
        by_rank.sort_by_key(|e| (dead_ranks.contains(&e.rank), e.rank));
    }
    let mut out = Vec::with_capacity(by_rank.len());
    for group in by_rank.chunk_by(|a, b| a.rank == b.rank) {
        let mut group = group.to_vec();
        if policy.rfc6724 {
            sort_by_history_and_rfc6724(&mut group, history, policy.family_first);
        } else {
            group.sort_by_key(|e| e.family() != policy.first_family);
        }
        out.extend(interleave(group, policy.preferred_family_count));
    }
    out
}

/// RFC 8305 §4: after `first_count` endpoints of the first family, alternate.
fn interleave(sorted: Vec<Endpoint>, first_count: usize) -> Vec<Endpoint> {
    let Some(first_family) = sorted.first().map(Endpoint::family) else {
        return sorted;
    };
    if first_count == 0 {
        return sorted;
    }
    let (mut first, mut other): (Vec<_>, Vec<_>) =
        sorted.into_iter().partition(|e| e.family() == first_family);
    first.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(first.len() + other.len());
    // Bounded by the endpoints, never by the count (which may be anything).
    let lead = first_count.min(first.len());
    out.extend(first.drain(first.len() - lead..).rev());
    loop {
        match (other.pop(), first.pop()) {
            (None, None) => break,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Transport;
    use crate::race::history::RttEstimate;
    use std::sync::Arc;

    fn ep(addr: &str, rank: u32) -> Endpoint {
        Endpoint {
            transport: Transport::Udp,
            addr: addr.parse().unwrap(),
            host: Arc::from("h"),
            rank,
        }
    }

    fn addrs(v: &[Endpoint]) -> Vec<String> {
        v.iter().map(|e| e.addr.to_string()).collect()
    }

    const POLICY: SortPolicy = SortPolicy {
        rfc6724: true,
        first_family: Family::V6,
        family_first: None,
        preferred_family_count: 1,
    };

    #[test]
    fn precedence_follows_the_default_table() {
        assert_eq!(precedence(&"::1".parse().unwrap()), 50);
        assert_eq!(precedence(&"2001:db8::1".parse().unwrap()), 40);
        assert_eq!(precedence(&"192.0.2.1".parse().unwrap()), 35);
        assert_eq!(precedence(&"2002::1".parse().unwrap()), 30);
        assert_eq!(precedence(&"2001:0:1::1".parse().unwrap()), 5);
        assert_eq!(precedence(&"fd00::1".parse().unwrap()), 3);
    }

    #[test]
    fn ipv6_first_then_interleaved() {
        let list = [
            ep("192.0.2.1:5060", 0),
            ep("192.0.2.2:5060", 0),
            ep("[2001:db8::1]:5060", 0),
            ep("[2001:db8::2]:5060", 0),
            ep("[2001:db8::3]:5060", 0),
        ];
        let out = order(&list, &HistoryView::default(), POLICY);
        assert_eq!(
            addrs(&out),
            [
                "[2001:db8::1]:5060",
                "192.0.2.1:5060",
                "[2001:db8::2]:5060",
                "192.0.2.2:5060",
                "[2001:db8::3]:5060"
            ]
        );
    }

    #[test]
    fn ula_sorts_after_ipv4_and_ranks_stay_grouped() {
        let list = [
            ep("[fd00::1]:5060", 0),
            ep("192.0.2.1:5060", 0),
            ep("[2001:db8::9]:5060", 1),
        ];
        let out = order(&list, &HistoryView::default(), POLICY);
        assert_eq!(
            addrs(&out),
            ["192.0.2.1:5060", "[fd00::1]:5060", "[2001:db8::9]:5060"]
        );
    }

    #[test]
    fn family_first_overrides_rfc6724_but_not_a_failed_path() {
        let list = [
            ep("[2001:db8::1]:5060", 0),
            ep("192.0.2.1:5060", 0),
            ep("[2001:db8::2]:5060", 0),
        ];
        let v4_first = SortPolicy {
            family_first: Some(Family::V4),
            ..POLICY
        };
        let out = order(&list, &HistoryView::default(), v4_first);
        assert_eq!(
            addrs(&out),
            ["192.0.2.1:5060", "[2001:db8::1]:5060", "[2001:db8::2]:5060"]
        );
        // History still puts the family whose path just failed last.
        let mut view = HistoryView::default();
        view.insert(&list[1], PathVerdict::Failed);
        let out = order(&list, &view, v4_first);
        assert_eq!(out[0].addr.to_string(), "[2001:db8::1]:5060");
    }

    #[test]
    fn preferred_family_count_two() {
        let list = [
            ep("[2001:db8::1]:1", 0),
            ep("[2001:db8::2]:1", 0),
            ep("[2001:db8::3]:1", 0),
            ep("192.0.2.1:1", 0),
        ];
        let policy = SortPolicy {
            preferred_family_count: 2,
            ..POLICY
        };
        let out = order(&list, &HistoryView::default(), policy);
        assert_eq!(
            addrs(&out),
            [
                "[2001:db8::1]:1",
                "[2001:db8::2]:1",
                "192.0.2.1:1",
                "[2001:db8::3]:1"
            ]
        );
    }

    #[test]
    fn history_demotes_a_failed_family() {
        let list = [ep("[2001:db8::1]:1", 0), ep("192.0.2.1:1", 0)];
        let mut view = HistoryView::default();
        view.insert(&list[0], PathVerdict::Failed);
        let out = order(&list, &view, POLICY);
        assert_eq!(addrs(&out), ["192.0.2.1:1", "[2001:db8::1]:1"]);
    }

    #[test]
    fn a_rank_whose_paths_all_failed_goes_last() {
        let dead = |addr: &str| Endpoint {
            host: Arc::from("dead"),
            ..ep(addr, 0)
        };
        let list = [
            dead("[2001:db8::1]:1"),
            dead("192.0.2.1:1"),
            ep("[2001:db8::2]:1", 1),
            ep("192.0.2.2:1", 1),
        ];
        let mut view = HistoryView::default();
        view.insert(&list[0], PathVerdict::Failed);
        let out = order(&list, &view, POLICY);
        // One family of the first target failed: rank order stays.
        assert_eq!(out[0].rank, 0);
        view.insert(&list[1], PathVerdict::Failed);
        let out = order(&list, &view, POLICY);
        assert_eq!(
            addrs(&out),
            [
                "[2001:db8::2]:1",
                "192.0.2.2:1",
                "[2001:db8::1]:1",
                "192.0.2.1:1"
            ]
        );
        // Without history (today's stacks), RFC 3263 order is kept.
        let plain = SortPolicy {
            rfc6724: false,
            ..POLICY
        };
        assert_eq!(order(&list, &view, plain)[0].rank, 0);
    }

    fn worked(rtt_ms: u64) -> PathVerdict {
        PathVerdict::Worked {
            rtt: RttEstimate::of(std::time::Duration::from_millis(rtt_ms)),
        }
    }

    #[test]
    fn the_rtt_rule_moves_whole_families_and_keeps_interleaving() {
        let list: Vec<Endpoint> = (1..=3)
            .map(|i| ep(&format!("[2001:db8::{i}]:1"), 0))
            .chain((1..=3).map(|i| ep(&format!("192.0.2.{i}:1"), 0)))
            .collect();
        let mut view = HistoryView::default();
        view.insert(&list[0], worked(70));
        view.insert(&list[3], worked(20));
        // IPv4 (20 ms) is more than the leeway faster than IPv6 (70 ms): it
        // leads, and the families still alternate.
        assert_eq!(
            addrs(&order(&list, &view, POLICY)),
            [
                "192.0.2.1:1",
                "[2001:db8::1]:1",
                "192.0.2.2:1",
                "[2001:db8::2]:1",
                "192.0.2.3:1",
                "[2001:db8::3]:1"
            ]
        );
    }

    #[test]
    fn the_rtt_rule_needs_both_families_and_a_gap_beyond_the_leeway() {
        let list = [ep("[2001:db8::1]:1", 0), ep("192.0.2.1:1", 0)];
        let first = |view: &HistoryView| addrs(&order(&list, view, POLICY))[0].clone();
        let mut view = HistoryView::default();
        // Only IPv6 known, however slow: nothing to compare, RFC 6724 order.
        view.insert(&list[0], worked(150));
        assert_eq!(first(&view), "[2001:db8::1]:1");
        // Within the leeway (IPv6 25 ms slower): the preferred family stays first.
        view.insert(&list[1], worked(125));
        assert_eq!(first(&view), "[2001:db8::1]:1");
        // Beyond it (26 ms): the faster family goes first.
        view.insert(&list[1], worked(124));
        assert_eq!(first(&view), "192.0.2.1:1");
        // A faster preferred family is never moved.
        view.insert(&list[0], worked(10));
        assert_eq!(first(&view), "[2001:db8::1]:1");
        // The leeway protects whichever family RFC 6724 prefers: IPv4 over a
        // ULA, which only goes first when it is clearly faster.
        let ula = [ep("[fd00::1]:1", 0), ep("192.0.2.1:1", 0)];
        let mut view = HistoryView::default();
        view.insert(&ula[0], worked(80));
        view.insert(&ula[1], worked(100));
        assert_eq!(addrs(&order(&ula, &view, POLICY))[0], "192.0.2.1:1");
        view.insert(&ula[0], worked(74));
        assert_eq!(addrs(&order(&ula, &view, POLICY))[0], "[fd00::1]:1");
    }

    #[test]
    fn doubtful_and_suspect_paths_keep_their_place() {
        // They only shorten the head start (see the race); order is RFC 6724's.
        let list = [ep("192.0.2.1:1", 0), ep("[2001:db8::1]:1", 0)];
        let mut view = HistoryView::default();
        view.insert(&list[1], PathVerdict::Doubtful);
        view.set_family_suspect(Family::V6, true);
        assert_eq!(addrs(&order(&list, &view, POLICY))[0], "[2001:db8::1]:1");
    }

    #[test]
    fn a_huge_family_count_is_bounded_by_the_endpoints() {
        // The count once bounded a loop: usize::MAX spun for ever.
        let list = [
            ep("[2001:db8::1]:1", 0),
            ep("192.0.2.1:1", 0),
            ep("[2001:db8::2]:1", 0),
        ];
        let policy = SortPolicy {
            preferred_family_count: usize::MAX,
            ..POLICY
        };
        let out = order(&list, &HistoryView::default(), policy);
        assert_eq!(
            addrs(&out),
            ["[2001:db8::1]:1", "[2001:db8::2]:1", "192.0.2.1:1"]
        );
    }

    #[test]
    fn without_rfc6724_ipv6_block_then_ipv4_block() {
        let list = [
            ep("192.0.2.1:1", 0),
            ep("[fd00::1]:1", 0),
            ep("[fd00::2]:1", 0),
        ];
        let policy = SortPolicy {
            rfc6724: false,
            first_family: Family::V6,
            family_first: None,
            preferred_family_count: 0,
        };
        let out = order(&list, &HistoryView::default(), policy);
        assert_eq!(addrs(&out), ["[fd00::1]:1", "[fd00::2]:1", "192.0.2.1:1"]);
        let v4_first = SortPolicy {
            first_family: Family::V4,
            ..policy
        };
        let out = order(&list, &HistoryView::default(), v4_first);
        assert_eq!(addrs(&out), ["192.0.2.1:1", "[fd00::1]:1", "[fd00::2]:1"]);
    }
}
