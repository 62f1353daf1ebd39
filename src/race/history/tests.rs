//! History's rules, each at chosen instants of a fake wall clock.

use super::*;
use std::sync::Arc;

fn ep_at(host: &str, addr: &str) -> Endpoint {
    Endpoint {
        transport: Transport::Tcp,
        addr: addr.parse().unwrap(),
        host: Arc::from(host),
        rank: 0,
    }
}

fn ep(addr: &str) -> Endpoint {
    ep_at("sip.example.test", addr)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The fake clock's origin.
fn t0() -> SystemTime {
    UNIX_EPOCH + secs(1_000_000)
}

fn home() -> NetworkId {
    NetworkId::of("v6 default via fe80::1 dev eth0; dns 2001:db8:d5::53")
}

fn worked(rtt_ms: u64) -> PathVerdict {
    PathVerdict::Worked {
        rtt: RttEstimate::of(ms(rtt_ms)),
    }
}

#[test]
fn network_ids_are_stable_hashes() {
    // The same description gives the same key in every process and version.
    assert_eq!(NetworkId::of("").as_str(), "cbf29ce484222325");
    assert_eq!(NetworkId::of("a").as_str(), "af63dc4c8601ec8c");
    assert_ne!(NetworkId::of("eth0"), NetworkId::of("eth1"));
    assert_eq!(NetworkId::of("x").to_string().len(), 16);
}

#[test]
fn history_is_partitioned_by_network() {
    let (a, b) = (NetworkId::of("network a"), NetworkId::of("network b"));
    let v6 = ep("[2001:db8::1]:5060");
    let v4 = ep("192.0.2.1:5060");
    let mut h = History::default();
    h.record(
        t0(),
        &a,
        &[
            (v6.clone(), PathOutcome::Failed),
            (v4.clone(), PathOutcome::Worked(ms(20))),
        ],
    );
    // Learnt on network a, applied on network a only.
    assert_eq!(h.view(t0(), &a).verdict(&v6), PathVerdict::Failed);
    let on_b = h.view(t0(), &b);
    assert!(on_b.is_empty(), "a new network starts from a clean slate");
    assert_eq!(on_b.verdict(&v6), PathVerdict::Unknown);
    // What b teaches stays on b; a's partition is kept for a return to a.
    h.record(
        t0() + secs(1),
        &b,
        &[(v6.clone(), PathOutcome::Worked(ms(5)))],
    );
    assert_eq!(h.view(t0() + secs(2), &b).verdict(&v6), worked(5));
    assert_eq!(h.view(t0() + secs(2), &a).verdict(&v6), PathVerdict::Failed);
    assert_eq!(h.networks(), 2);
    assert_eq!(h.len(), 3);
}

#[test]
fn failure_demotes_then_doubts_then_expires() {
    let mut h = History::default();
    let v6 = ep("[2001:db8::1]:5060");
    let v4 = ep("192.0.2.1:5060");
    h.record(
        t0(),
        &home(),
        &[
            (v6.clone(), PathOutcome::Failed),
            (v4.clone(), PathOutcome::Worked(ms(20))),
        ],
    );
    let view = h.view(t0() + secs(5), &home());
    assert_eq!(view.verdict(&v6), PathVerdict::Failed);
    assert_eq!(view.verdict(&v4), worked(20));
    // For the report's explanation: how long ago it failed.
    assert_eq!(view.failed_ago(&v6), Some(secs(5)));
    assert_eq!(
        view.failed_ago_of_path(&v6.host, Family::V6, v6.transport),
        Some(secs(5))
    );
    assert_eq!(view.failed_ago(&v4), None, "it never failed");
    // Another address of the same host and family shares the verdict.
    assert_eq!(view.verdict(&ep("[2001:db8::2]:5060")), PathVerdict::Failed);
    // The failure memory is 30 s: up to then demoted, from then on doubtful
    // (back in its place with the shortest head start: convergence).
    let just_before = t0() + secs(30) - ms(1);
    assert_eq!(
        h.view(just_before, &home()).verdict(&v6),
        PathVerdict::Failed
    );
    assert_eq!(
        h.view(t0() + secs(30), &home()).verdict(&v6),
        PathVerdict::Doubtful
    );
    // A success ends the doubt.
    h.record(
        t0() + secs(31),
        &home(),
        &[(v6.clone(), PathOutcome::Worked(ms(8)))],
    );
    assert_eq!(h.view(t0() + secs(31), &home()).verdict(&v6), worked(8));
    // After expiry (10 min after the last observation) everything is gone.
    h.prune(t0() + secs(31 + 600));
    assert!(h.is_empty());
    assert_eq!(h.networks(), 0);
}

#[test]
fn rtt_is_smoothed_with_its_variance_rfc6298() {
    let mut h = History::default();
    let v4 = ep("192.0.2.1:5060");
    let at = |n: u64| t0() + ms(n);
    h.record(at(0), &home(), &[(v4.clone(), PathOutcome::Worked(ms(80)))]);
    // First sample: srtt = R, rttvar = R/2.
    let rtt = RttEstimate::of(ms(80));
    assert_eq!((rtt.srtt, rtt.rttvar), (ms(80), ms(40)));
    assert_eq!(h.view(at(0), &home()).verdict(&v4), worked(80));
    // A failure in between changes the verdict, not the estimate.
    h.record(at(1), &home(), &[(v4.clone(), PathOutcome::Failed)]);
    assert_eq!(h.view(at(1), &home()).verdict(&v4), PathVerdict::Failed);
    // Then R = 0: rttvar = 3/4·40 + 1/4·|80 − 0| = 50, srtt = 7/8·80 = 70;
    // the newer success clears the failure.
    h.record(at(2), &home(), &[(v4.clone(), PathOutcome::Worked(ms(0)))]);
    let expected = RttEstimate {
        srtt: ms(70),
        rttvar: ms(50),
    };
    assert_eq!(
        h.view(at(2), &home()).verdict(&v4),
        PathVerdict::Worked { rtt: expected }
    );
    // The attempt delay is srtt + 4·rttvar = 270 ms...
    assert_eq!(expected.attempt_delay(), ms(270));
    // ...and never less than srtt + the leeway, however steady the path.
    let steady = RttEstimate {
        srtt: ms(3),
        rttvar: ms(1),
    };
    assert_eq!(steady.attempt_delay(), ms(28));
    // Absurd values saturate instead of overflowing.
    let huge = RttEstimate::of(Duration::MAX);
    assert_eq!(huge.attempt_delay(), Duration::MAX);
}

#[test]
fn failures_to_two_distinct_hosts_make_the_family_suspect() {
    let host = |n: u32, addr: &str| ep_at(&format!("h{n}.example.test"), addr);
    let mut h = History::default();
    let at = |s: u64| t0() + secs(s);
    // One host's IPv6 failing (twice) is that host's problem.
    h.record(
        at(0),
        &home(),
        &[(host(1, "[2001:db8::1]:5060"), PathOutcome::Failed)],
    );
    h.record(
        at(1),
        &home(),
        &[(host(1, "[2001:db8::1]:5060"), PathOutcome::Failed)],
    );
    assert!(!h.view(at(1), &home()).family_suspect(Family::V6));
    // A second host fails over IPv6: the family is suspect on this network,
    // for every host, and IPv4 is not.
    h.record(
        at(2),
        &home(),
        &[
            (host(2, "[2001:db8::2]:5060"), PathOutcome::Failed),
            (host(2, "192.0.2.2:5060"), PathOutcome::Worked(ms(1))),
        ],
    );
    let view = h.view(at(2), &home());
    assert!(view.family_suspect(Family::V6));
    assert!(!view.family_suspect(Family::V4));
    // Not on another network.
    assert!(!h
        .view(at(2), &NetworkId::of("elsewhere"))
        .family_suspect(Family::V6));
    // Suspicion outlives the failure memory (it only shortens a head start)...
    assert!(h.view(at(2 + 60), &home()).family_suspect(Family::V6));
    // ...and ends with any IPv6 success on the network, on any transport.
    let udp_v6 = Endpoint {
        transport: Transport::Udp,
        ..host(3, "[2001:db8::3]:5060")
    };
    h.record(at(70), &home(), &[(udp_v6, PathOutcome::Worked(ms(2)))]);
    assert!(!h.view(at(70), &home()).family_suspect(Family::V6));
    // Failures after that success count afresh.
    h.record(
        at(71),
        &home(),
        &[(host(4, "[2001:db8::4]:5060"), PathOutcome::Failed)],
    );
    assert!(!h.view(at(71), &home()).family_suspect(Family::V6));
    h.record(
        at(72),
        &home(),
        &[(host(5, "[2001:db8::5]:5060"), PathOutcome::Failed)],
    );
    assert!(h.view(at(72), &home()).family_suspect(Family::V6));
    // The evidence expires with its entries.
    assert!(!h.view(at(72 + 600), &home()).family_suspect(Family::V6));
}

#[test]
fn a_success_in_the_same_dial_outweighs_a_failure_elsewhere() {
    // srv-first-dead: one target dead, the next works over IPv6 in the same
    // dial: IPv6 is not failing on this network.
    let mut h = History::default();
    h.record(
        t0(),
        &home(),
        &[
            (ep_at("dead1", "[2001:db8::1]:5060"), PathOutcome::Failed),
            (ep_at("dead2", "[2001:db8::2]:5060"), PathOutcome::Failed),
            (
                ep_at("live", "[2001:db8::3]:5060"),
                PathOutcome::Worked(ms(1)),
            ),
        ],
    );
    assert!(!h.view(t0(), &home()).family_suspect(Family::V6));
}

fn record(id: u32, addr: &str, started: u64, ended: u64, end: AttemptEnd) -> AttemptRecord {
    let t0 = std::time::Instant::now();
    AttemptRecord {
        id: crate::race::AttemptId(id),
        endpoint: ep(addr),
        started: t0 + ms(started),
        delay: ms(250),
        delay_source: crate::race::DelaySource::Configured,
        delay_clamped: None,
        history_note: None,
        transport_up: None,
        ended: Some(t0 + ms(ended)),
        end,
    }
}

#[test]
fn outcomes_keep_one_verdict_per_path() {
    let lost = AttemptEnd::Cancelled(CancelReason::LostRace);
    // IPv6 #1 wins; IPv6 #2 (same path) and IPv4, started later, lose: the
    // IPv6 path worked and nothing is learnt about IPv4.
    let out = outcomes_of(&[
        record(1, "[2001:db8::1]:5060", 0, 300, AttemptEnd::Won),
        record(2, "192.0.2.1:5060", 250, 300, lost.clone()),
        record(3, "[2001:db8::2]:5060", 280, 300, lost.clone()),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, PathOutcome::Worked(ms(300)));
    // IPv6 started first and lost to IPv4: IPv6 is demoted.
    let out = outcomes_of(&[
        record(1, "[2001:db8::1]:5060", 0, 260, lost),
        record(2, "192.0.2.1:5060", 250, 260, AttemptEnd::Won),
    ]);
    assert_eq!(out[0], (ep("[2001:db8::1]:5060"), PathOutcome::Failed));
    assert_eq!(out[1].1, PathOutcome::Worked(ms(10)));
}

#[test]
fn round_trips_through_json_in_format_2() {
    let mut h = History::default();
    h.record(
        t0(),
        &home(),
        &[(ep("192.0.2.1:5060"), PathOutcome::Failed)],
    );
    let text = serde_json::to_string(&h).unwrap();
    assert!(
        text.starts_with("{\"version\":2,\"networks\":[{\"network\":\""),
        "{text}"
    );
    let back: History = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back.view(t0(), &home()).verdict(&ep("192.0.2.9:1")),
        PathVerdict::Failed
    );
    assert_eq!(back.expiry, secs(600));
    assert_eq!(back.failure_memory, secs(30));
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
    // Another version, or the version-1 layout, is not a history.
    let v3 = text.replacen("\"version\":2", "\"version\":3", 1);
    let err = serde_json::from_str::<History>(&v3).unwrap_err();
    assert!(err.to_string().contains("version 3"), "{err}");
    let v1 = r#"{"entries":[{"key":{"host":"h","family":"ipv6","transport":"udp"},"srtt_us":null,"last_failed":true,"updated_s":1}]}"#;
    assert!(serde_json::from_str::<History>(v1).is_err());
}

#[test]
fn a_file_holding_a_path_twice_is_read_as_its_newest_entry() {
    // Found by fuzzing (fuzz/regressions/history_load): recording once
    // updated the first entry of a path while the view let the last one
    // win, so a failure just recorded stayed hidden behind a stale twin.
    // The same holds for a network listed twice.
    let now = UNIX_EPOCH + secs(1_700_000_060);
    let entry = |failed: bool, at_s: u64| {
        let at = at_s * 1000;
        let (worked, fail) = if failed {
            ("null".to_string(), at.to_string())
        } else {
            (at.to_string(), "null".to_string())
        };
        format!(
            r#"{{"host":"sip1.example.test","family":"ipv6","transport":"udp","srtt_us":12000,"rttvar_us":6000,"worked_ms":{worked},"failed_ms":{fail},"last_failed":{failed}}}"#
        )
    };
    let net = home();
    let text = format!(
        r#"{{"version":2,"networks":[{{"network":"{net}","paths":[{},{}]}},{{"network":"{net}","paths":[{}]}}]}}"#,
        entry(false, 1_700_000_000),
        entry(true, 1_700_000_050),
        entry(false, 1_700_000_010)
    );
    let mut h: History = serde_json::from_str(&text).unwrap();
    assert_eq!((h.networks(), h.len()), (1, 1), "one entry per path");
    let v6 = Endpoint {
        host: "sip1.example.test".into(),
        transport: Transport::Udp,
        ..ep("[2001:db8::1]:5060")
    };
    assert_eq!(
        h.view(now, &net).verdict(&v6),
        PathVerdict::Failed,
        "the newest entry counts"
    );
    h.record(now, &net, &[(v6.clone(), PathOutcome::Worked(ms(7)))]);
    assert!(matches!(
        h.view(now, &net).verdict(&v6),
        PathVerdict::Worked { .. }
    ));
    h.record(now, &net, &[(v6.clone(), PathOutcome::Failed)]);
    assert_eq!(
        h.view(now, &net).verdict(&v6),
        PathVerdict::Failed,
        "news is never hidden"
    );
}

#[test]
fn news_outranks_an_entry_dated_a_few_seconds_ahead() {
    // Found by fuzzing (fuzz/regressions/history_load/
    // entry-dated-seconds-ahead*.json): a file entry dated within
    // FUTURE_SKEW after `now` counts as current, and a failure recorded at
    // `now` was older than it, so the path kept its old verdict.
    let now = UNIX_EPOCH + secs(1_700_000_000);
    let net = home();
    let text = format!(
        r#"{{"version":2,"networks":[{{"network":"{net}","paths":[{{"host":"sip1.example.test","family":"ipv6","transport":"udp","srtt_us":12000,"rttvar_us":6000,"worked_ms":1700000005000,"failed_ms":null,"last_failed":false}}]}}]}}"#
    );
    let v6 = Endpoint {
        host: "sip1.example.test".into(),
        transport: Transport::Udp,
        ..ep("[2001:db8::1]:5060")
    };
    let mut h: History = serde_json::from_str(&text).unwrap();
    assert!(matches!(
        h.view(now, &net).verdict(&v6),
        PathVerdict::Worked { .. }
    ));
    h.record(now, &net, &[(v6.clone(), PathOutcome::Failed)]);
    assert_eq!(h.view(now, &net).verdict(&v6), PathVerdict::Failed);
    // Saving applies the same news over what the file holds.
    let file: History = serde_json::from_str(&text).unwrap();
    let saved = h.merged_into(file, now);
    assert_eq!(saved.view(now, &net).verdict(&v6), PathVerdict::Failed);
}

#[test]
fn future_dated_entries_do_not_demote() {
    let now = t0();
    let v6 = ep("[2001:db8::1]:5060");
    // Written an hour "ahead", before the clock stepped back.
    let mut h = History::default();
    h.record(
        now + secs(3600),
        &home(),
        &[(v6.clone(), PathOutcome::Failed)],
    );
    assert_eq!(h.view(now, &home()).verdict(&v6), PathVerdict::Unknown);
    // A small skew between clocks still counts as now.
    let mut near = History::default();
    near.record(
        now + FUTURE_SKEW,
        &home(),
        &[(v6.clone(), PathOutcome::Failed)],
    );
    assert_eq!(near.view(now, &home()).verdict(&v6), PathVerdict::Failed);
    // ...and this process's news about that path is not hidden behind it.
    near.record(now, &home(), &[(v6.clone(), PathOutcome::Worked(ms(4)))]);
    assert_eq!(near.view(now, &home()).verdict(&v6), worked(4));
    // Pruning drops the far future entry; a new observation stands alone.
    h.record(now, &home(), &[(v6.clone(), PathOutcome::Worked(ms(30)))]);
    assert_eq!(h.len(), 1);
    assert_eq!(h.view(now, &home()).verdict(&v6), worked(30));
    // A future-dated entry in the file does not outrank this process's news.
    let mut base = History::default();
    base.record(
        now + secs(3600),
        &home(),
        &[(v6.clone(), PathOutcome::Failed)],
    );
    let mut mine = History::default();
    mine.record(now, &home(), &[(v6.clone(), PathOutcome::Worked(ms(5)))]);
    let merged = mine.merged_into(base, now);
    assert_eq!(merged.view(now, &home()).verdict(&v6), worked(5));
}

#[test]
fn merge_keeps_both_processes_news_and_the_newer_verdict() {
    let a = ep_at("a.example.test", "192.0.2.1:5060");
    let b = ep_at("b.example.test", "192.0.2.2:5060");
    let shared = ep("192.0.2.3:5060");
    let other_net = NetworkId::of("other");
    // Two processes load the same file...
    let mut file = History::default();
    file.record(
        t0(),
        &home(),
        &[(shared.clone(), PathOutcome::Worked(ms(80)))],
    );
    file.unsaved.clear();
    let mut p1 = file.clone();
    let mut p2 = file.clone();
    // ...p1 learns about a (on two networks) and that the shared path failed (at t0+10)...
    p1.record(
        t0() + secs(10),
        &home(),
        &[
            (a.clone(), PathOutcome::Failed),
            (shared.clone(), PathOutcome::Failed),
        ],
    );
    p1.record(
        t0() + secs(10),
        &other_net,
        &[(a.clone(), PathOutcome::Worked(ms(3)))],
    );
    // ...p2 learns about b and that the shared path worked, later (t0+20).
    p2.record(
        t0() + secs(20),
        &home(),
        &[
            (b.clone(), PathOutcome::Worked(ms(10))),
            (shared.clone(), PathOutcome::Worked(ms(0))),
        ],
    );
    let now = t0() + secs(25);
    // p2 saves first, then p1 (whose shared-path news is older).
    let after_p2 = p2.merged_into(file.clone(), now);
    let after_both = p1.merged_into(after_p2.clone(), now);
    let view = after_both.view(now, &home());
    assert_eq!(view.verdict(&a), PathVerdict::Failed);
    assert_eq!(view.verdict(&b), worked(10));
    // The newer success wins over p1's older failure; the RTT is 80 ms
    // smoothed with p2's 0 ms sample.
    let smoothed = PathVerdict::Worked {
        rtt: RttEstimate {
            srtt: ms(70),
            rttvar: ms(50),
        },
    };
    assert_eq!(view.verdict(&shared), smoothed);
    assert_eq!(after_both.view(now, &other_net).verdict(&a), worked(3));
    // Saving in the other order gives the same verdicts.
    let other = p2.merged_into(p1.merged_into(file, now), now);
    let other_view = other.view(now, &home());
    assert_eq!(other_view.verdict(&a), PathVerdict::Failed);
    assert_eq!(other_view.verdict(&shared), smoothed);
    assert_eq!(other.view(now, &other_net).verdict(&a), worked(3));
}

#[test]
fn a_series_of_processes_learns_what_one_process_learns() {
    // Cross-host evidence lives in the per-path entries, so processes that
    // each record one dial and save learn the suspicion one process would.
    let dir_file = |h: &History| serde_json::to_string(h).unwrap();
    let mut file = dir_file(&History::default());
    let mut single = History::default();
    for (i, s) in [(1u32, 0u64), (2, 1), (3, 2)] {
        let host = ep_at(&format!("h{i}.example.test"), "[2001:db8::1]:5060");
        let at = t0() + secs(s);
        let mut process: History = serde_json::from_str(&file).unwrap();
        process.record(at, &home(), &[(host.clone(), PathOutcome::Failed)]);
        let base: History = serde_json::from_str(&file).unwrap();
        file = dir_file(&process.merged_into(base, at));
        single.record(at, &home(), &[(host, PathOutcome::Failed)]);
    }
    let from_file: History = serde_json::from_str(&file).unwrap();
    let at = t0() + secs(3);
    assert!(from_file.view(at, &home()).family_suspect(Family::V6));
    assert_eq!(
        from_file.view(at, &home()).family_suspect(Family::V6),
        single.view(at, &home()).family_suspect(Family::V6)
    );
    assert_eq!(dir_file(&from_file), dir_file(&single));
}

#[test]
fn networks_and_entries_are_bounded() {
    let mut h = History::default();
    for n in 0..(MAX_NETWORKS + 3) {
        let net = NetworkId::of(&format!("network {n}"));
        h.record(
            t0() + secs(n as u64),
            &net,
            &[(ep("192.0.2.1:5060"), PathOutcome::Worked(ms(1)))],
        );
    }
    assert_eq!(h.networks(), MAX_NETWORKS);
    // The least recently used went first.
    let at = t0() + secs(20);
    assert!(h.view(at, &NetworkId::of("network 0")).is_empty());
    assert!(!h
        .view(at, &NetworkId::of(&format!("network {}", MAX_NETWORKS + 2)))
        .is_empty());
    let many: Vec<(Endpoint, PathOutcome)> = (0..MAX_ENTRIES + 10)
        .map(|i| {
            (
                ep_at(&format!("h{i}"), "192.0.2.1:5060"),
                PathOutcome::Failed,
            )
        })
        .collect();
    h.record(at, &home(), &many);
    assert!(h.len() <= MAX_ENTRIES * MAX_NETWORKS);
    assert_eq!(
        h.networks
            .iter()
            .find(|p| p.network == home())
            .unwrap()
            .paths
            .len(),
        MAX_ENTRIES
    );
}

/// Convergence, with the bound the module docs state: a host's IPv6 is
/// broken, then repaired at a chosen instant; dials every few seconds
/// order their candidates with the engine's sort on this history and
/// record what a race would teach. The first dial started at least
/// `failure_memory` after the repair wins over IPv6 again, and a new host
/// is tried over IPv6 first all along (the family is never locked out).
#[test]
fn a_repaired_family_is_used_again_within_the_failure_memory() {
    use crate::race::sort::{order, SortPolicy};
    let policy = SortPolicy {
        rfc6724: true,
        first_family: Family::V6,
        family_first: None,
        preferred_family_count: 1,
    };
    let v6 = ep("[2001:db8::1]:5060");
    let v4 = ep("192.0.2.1:5060");
    let repaired_at = secs(95);
    let every = secs(7);
    let mut h = History::default();
    let mut back_on_v6 = None;
    for n in 0..40u32 {
        let at = every * n;
        let now = t0() + at;
        let view = h.view(now, &home());
        let first = order(&[v4.clone(), v6.clone()], &view, policy)[0].family();
        // A new host is never dialled over IPv4 first, however broken IPv6 is.
        let stranger = ep_at("new.example.test", "[2001:db8::9]:5060");
        let other = ep_at("new.example.test", "192.0.2.9:5060");
        assert_eq!(
            order(&[other, stranger], &view, policy)[0].family(),
            Family::V6
        );
        let v6_works = at >= repaired_at;
        // What the race teaches: IPv6 tried first either wins or fails
        // (IPv4 then wins); IPv4 first wins, and IPv6 is never tried.
        let outcomes = match (first, v6_works) {
            (Family::V6, true) => vec![(v6.clone(), PathOutcome::Worked(ms(20)))],
            (Family::V6, false) => vec![
                (v6.clone(), PathOutcome::Failed),
                (v4.clone(), PathOutcome::Worked(ms(20))),
            ],
            (Family::V4, _) => vec![(v4.clone(), PathOutcome::Worked(ms(20)))],
        };
        h.record(now, &home(), &outcomes);
        if first == Family::V6 && v6_works {
            back_on_v6 = Some(at);
            break;
        }
    }
    let back = back_on_v6.expect("IPv6 is used again");
    assert!(back >= repaired_at);
    assert!(
        back < repaired_at + h.failure_memory + every,
        "back on IPv6 {back:?} after a repair at {repaired_at:?}"
    );
}
