//! Candidate ordering: RFC 3263 rank, then RFC 6724 destination ordering
//! with the RFC 8305 §4 history rule, then family interleaving (RFC 8305 §4,
//! "First/Preferred Address Family Count").
//!
//! Only the RFC 6724 rules that need no knowledge of the source address are
//! applied here (rule 6, precedence, and rule 8, smaller scope); the rules
//! that compare with the source address (1, 2, 5, 9) are the kernel's job
//! when it picks a source, and an unusable family shows up as an immediate
//! attempt failure anyway.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use crate::endpoint::{Endpoint, Family};
use crate::race::history::{HistoryView, PathVerdict};

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

/// Historical RTTs are compared in buckets of this width, so that noise
/// does not override the RFC 6724 order (after Apple's documented 25 ms
/// leeway); buckets keep the comparison a total order.
const RTT_BUCKET: Duration = Duration::from_millis(25);

/// The sort key of an endpoint within its rank: a path that failed goes
/// last; then a clearly faster path (by RTT bucket) goes first; then RFC
/// 6724 precedence (higher first) and scope (smaller first). A path without
/// history counts as being in the fastest bucket of its group, so that
/// history only ever reorders paths it knows. Equal keys keep DNS order.
fn sort_key(
    e: &Endpoint,
    verdict: PathVerdict,
    fastest_bucket: u128,
) -> (bool, u128, Reverse<u8>, u8) {
    let ip = e.addr.ip();
    let bucket = match verdict {
        PathVerdict::Worked { rtt } => rtt.as_micros() / RTT_BUCKET.as_micros(),
        _ => fastest_bucket,
    };
    (
        verdict == PathVerdict::Failed,
        bucket,
        Reverse(precedence(&ip)),
        scope(&ip),
    )
}

/// Sorts one rank's endpoints by [`sort_key`].
fn sort_by_history_and_rfc6724(group: &mut [Endpoint], history: &HistoryView) {
    let verdicts: Vec<PathVerdict> = group.iter().map(|e| history.verdict(e)).collect();
    let fastest_bucket = verdicts
        .iter()
        .filter_map(|v| match v {
            PathVerdict::Worked { rtt } => Some(rtt.as_micros() / RTT_BUCKET.as_micros()),
            _ => None,
        })
        .min()
        .unwrap_or(0);
    let mut keyed: Vec<_> = group
        .iter()
        .cloned()
        .zip(verdicts)
        .map(|(e, v)| (sort_key(&e, v, fastest_bucket), e))
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    for (slot, (_, e)) in group.iter_mut().zip(keyed) {
        *slot = e;
    }
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
    /// Alternate families after this many endpoints of the first one
    /// (RFC 8305 "Preferred Address Family Count"); 0 disables interleaving.
    pub preferred_family_count: usize,
}

/// Orders every known endpoint: by rank, then inside each rank by
/// `sort_key` and interleaving. The result includes endpoints already
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
            sort_by_history_and_rfc6724(&mut group, history);
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

    #[test]
    fn history_order_is_total_with_many_rtts() {
        // Pairwise leeway comparisons would not be transitive here.
        let list: Vec<Endpoint> = (1..=6)
            .map(|i| ep(&format!("[2001:db8::{i}]:1"), 0))
            .chain((1..=6).map(|i| ep(&format!("192.0.2.{i}:1"), 0)))
            .collect();
        let mut view = HistoryView::default();
        let host_v6 = &list[0];
        view.insert(
            host_v6,
            PathVerdict::Worked {
                rtt: Duration::from_millis(70),
            },
        );
        view.insert(
            &list[6],
            PathVerdict::Worked {
                rtt: Duration::from_millis(20),
            },
        );
        let out = order(&list, &view, POLICY);
        assert_eq!(out.len(), 12);
        // IPv4 (20 ms) is a bucket ahead of IPv6 (70 ms): it leads.
        assert_eq!(out[0].family(), Family::V4);
    }

    #[test]
    fn history_rtt_beats_precedence_only_beyond_leeway() {
        let list = [ep("[2001:db8::1]:1", 0), ep("192.0.2.1:1", 0)];
        let mut view = HistoryView::default();
        view.insert(
            &list[0],
            PathVerdict::Worked {
                rtt: Duration::from_millis(40),
            },
        );
        view.insert(
            &list[1],
            PathVerdict::Worked {
                rtt: Duration::from_millis(30),
            },
        );
        assert_eq!(addrs(&order(&list, &view, POLICY))[0], "[2001:db8::1]:1");
        view.insert(
            &list[0],
            PathVerdict::Worked {
                rtt: Duration::from_millis(90),
            },
        );
        assert_eq!(addrs(&order(&list, &view, POLICY))[0], "192.0.2.1:1");
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
