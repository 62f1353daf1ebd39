//! Exact action sequences for the race engine, driven by a fake clock.

use super::*;
use crate::endpoint::Transport;
use crate::race::history::RttEstimate;
use std::time::Duration;

const HOST: &str = "sip.example.test";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A race plus a fake clock, with helpers that read like the scenarios.
struct Script {
    race: Race,
    t0: Instant,
}

impl Script {
    fn new(cfg: RaceConfig) -> Script {
        Script::with_history(cfg, HistoryView::default())
    }

    fn with_history(cfg: RaceConfig, history: HistoryView) -> Script {
        let t0 = Instant::now();
        let deadline = cfg.deadline;
        let mut race = Race::new(cfg, history, &[Family::V6, Family::V4], t0);
        let acts = race.step(t0, Input::Targets(vec![host_spec(HOST, Transport::Udp, 0)]));
        assert_eq!(acts, vec![Action::WakeAt(t0 + deadline)]);
        Script { race, t0 }
    }

    fn at(&self, t: u64) -> Instant {
        self.t0 + ms(t)
    }

    fn step(&mut self, t: u64, input: Input) -> Vec<Action> {
        self.race.step(self.at(t), input)
    }

    fn answer(&mut self, t: u64, family: Family, addrs: &[&str]) -> Vec<Action> {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.step(
            t,
            Input::Addresses {
                host: Arc::from(HOST),
                family,
                addrs,
            },
        )
    }
}

/// A service location of `host` on port 5060.
fn host_spec(host: &str, transport: Transport, rank: u32) -> TargetSpec {
    TargetSpec {
        host: Arc::from(host),
        port: 5060,
        transport,
        rank,
    }
}

/// One address answer for `host`.
fn host_answer(host: &str, family: Family, ip: &str) -> Input {
    Input::Addresses {
        host: Arc::from(host),
        family,
        addrs: vec![ip.parse().unwrap()],
    }
}

/// A race with the default configuration given these service locations at its start.
fn race_of(specs: Vec<TargetSpec>) -> Race {
    let t0 = Instant::now();
    let mut race = Race::new(
        RaceConfig::default(),
        HistoryView::default(),
        &[Family::V6, Family::V4],
        t0,
    );
    race.step(t0, Input::Targets(specs));
    race
}

fn ep(addr: &str) -> Endpoint {
    Endpoint {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
        host: Arc::from(HOST),
        rank: 0,
    }
}

fn start(id: u32, addr: &str) -> Action {
    Action::Start {
        id: AttemptId(id),
        endpoint: ep(addr),
    }
}

fn won(id: u32, addr: &str) -> Action {
    Action::Done(Outcome::Won {
        id: AttemptId(id),
        endpoint: ep(addr),
    })
}

fn refused() -> AttemptError {
    AttemptError::new(ErrorClass::Refused, "connection refused")
}

const V6: &str = "[2001:db8::1]:5060";
const V6B: &str = "[2001:db8::2]:5060";
const V4: &str = "192.0.2.1:5060";
const V4B: &str = "192.0.2.2:5060";

#[test]
fn aaaa_first_starts_at_once_then_ipv4_after_the_attempt_delay() {
    let mut s = Script::new(RaceConfig::default());
    // Nothing else to start yet: the only wake-up needed is the deadline.
    assert_eq!(
        s.answer(5, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(32_000))]
    );
    // A arrives while the IPv6 attempt runs: nothing starts before the delay.
    assert_eq!(
        s.answer(8, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(255))]
    );
    assert_eq!(
        s.step(255, Input::Timer),
        vec![start(2, V4), Action::WakeAt(s.at(32_000))]
    );
    // IPv4 wins; the IPv6 attempt is cancelled.
    assert_eq!(
        s.step(260, Input::Succeeded(AttemptId(2))),
        vec![
            Action::Cancel {
                id: AttemptId(1),
                reason: CancelReason::LostRace
            },
            won(2, V4)
        ]
    );
}

#[test]
fn a_first_then_aaaa_within_the_resolution_delay() {
    let mut s = Script::new(RaceConfig::default());
    assert_eq!(
        s.answer(10, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(60))]
    );
    assert_eq!(
        s.answer(40, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(290))]
    );
    assert_eq!(
        s.step(290, Input::Timer),
        vec![start(2, V4), Action::WakeAt(s.at(32_000))]
    );
}

#[test]
fn a_first_then_aaaa_after_the_resolution_delay() {
    let mut s = Script::new(RaceConfig::default());
    assert_eq!(
        s.answer(10, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(60))]
    );
    assert_eq!(
        s.step(60, Input::Timer),
        vec![start(1, V4), Action::WakeAt(s.at(32_000))]
    );
    // The late AAAA is merged: IPv6 is next, after the attempt delay.
    assert_eq!(
        s.answer(100, Family::V6, &["2001:db8::1"]),
        vec![Action::WakeAt(s.at(310))]
    );
    assert_eq!(
        s.step(310, Input::Timer),
        vec![start(2, V6), Action::WakeAt(s.at(32_000))]
    );
}

#[test]
fn aaaa_never_answers() {
    let mut s = Script::new(RaceConfig::default());
    assert_eq!(
        s.answer(0, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(50))]
    );
    // A spurious early wake-up changes nothing.
    assert_eq!(s.step(20, Input::Timer), vec![Action::WakeAt(s.at(50))]);
    assert_eq!(
        s.step(50, Input::Timer),
        vec![start(1, V4), Action::WakeAt(s.at(32_000))]
    );
    assert_eq!(s.step(51, Input::Succeeded(AttemptId(1))), vec![won(1, V4)]);
}

#[test]
fn one_family_only() {
    let mut s = Script::new(RaceConfig::default());
    // AAAA answers first, but empty: nothing to wait for, A is awaited without delay.
    assert_eq!(
        s.answer(0, Family::V6, &[]),
        vec![Action::WakeAt(s.at(32_000))]
    );
    assert_eq!(
        s.answer(3, Family::V4, &["192.0.2.1", "192.0.2.2"]),
        vec![start(1, V4), Action::WakeAt(s.at(253))]
    );
    assert_eq!(
        s.step(253, Input::Timer),
        vec![start(2, V4B), Action::WakeAt(s.at(32_000))]
    );
}

#[test]
fn everything_fails_lists_every_reason() {
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    s.answer(1, Family::V4, &["192.0.2.1"]);
    s.step(2, Input::ResolutionDone);
    assert_eq!(
        s.step(3, Input::Failed(AttemptId(1), refused())),
        vec![start(2, V4), Action::WakeAt(s.at(32_000))]
    );
    assert_eq!(
        s.step(4, Input::Failed(AttemptId(2), refused())),
        vec![Action::Done(Outcome::Failed(RaceFailure::AllFailed))]
    );
    let ends: Vec<_> = s.race.attempts().iter().map(|a| a.end.clone()).collect();
    assert_eq!(
        ends,
        vec![AttemptEnd::Failed(refused()), AttemptEnd::Failed(refused())]
    );
    // After Done, inputs are ignored.
    assert_eq!(s.step(5, Input::Timer), vec![]);
}

#[test]
fn fast_failure_starts_the_next_attempt_at_once() {
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &["2001:db8::1", "2001:db8::2"]);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.step(1, Input::Failed(AttemptId(1), refused())),
        vec![start(2, V4), Action::WakeAt(s.at(251))]
    );
    assert_eq!(
        s.step(2, Input::Failed(AttemptId(2), refused())),
        vec![start(3, V6B), Action::WakeAt(s.at(32_000))]
    );
}

#[test]
fn late_answers_are_merged_by_resorting() {
    let mut s = Script::new(RaceConfig::default());
    assert_eq!(
        s.answer(0, Family::V6, &["2001:db8::1", "2001:db8::2"]),
        vec![start(1, V6), Action::WakeAt(s.at(250))]
    );
    // A arrives after the first IPv6 attempt started: the next must be IPv4.
    s.answer(100, Family::V4, &["192.0.2.1", "192.0.2.2"]);
    assert_eq!(s.step(250, Input::Timer)[0], start(2, V4));
    assert_eq!(s.step(500, Input::Timer)[0], start(3, V6B));
    assert_eq!(s.step(750, Input::Timer)[0], start(4, V4B));
}

#[test]
fn two_successes_at_the_same_instant_give_one_winner() {
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    s.step(250, Input::Timer);
    assert_eq!(
        s.step(300, Input::Succeeded(AttemptId(2))),
        vec![
            Action::Cancel {
                id: AttemptId(1),
                reason: CancelReason::LostRace
            },
            won(2, V4)
        ]
    );
    assert_eq!(s.step(300, Input::Succeeded(AttemptId(1))), vec![]);
    let winners = s
        .race
        .attempts()
        .iter()
        .filter(|a| a.end == AttemptEnd::Won)
        .count();
    assert_eq!(winners, 1);
}

#[test]
fn deadline_cancels_everything() {
    let mut s = Script::new(RaceConfig {
        deadline: ms(1000),
        ..RaceConfig::default()
    });
    s.answer(0, Family::V6, &["2001:db8::1"]);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.step(250, Input::Timer),
        vec![start(2, V4), Action::WakeAt(s.at(1000))]
    );
    assert_eq!(
        s.step(1000, Input::Timer),
        vec![
            Action::Cancel {
                id: AttemptId(1),
                reason: CancelReason::Deadline
            },
            Action::Cancel {
                id: AttemptId(2),
                reason: CancelReason::Deadline
            },
            Action::Done(Outcome::Failed(RaceFailure::Deadline))
        ]
    );
}

#[test]
fn concurrency_cap_holds_back_further_attempts() {
    let mut s = Script::new(RaceConfig {
        max_concurrent: 2,
        ..RaceConfig::default()
    });
    s.answer(0, Family::V6, &["2001:db8::1", "2001:db8::2"]);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(s.step(250, Input::Timer)[0], start(2, V4));
    // At the cap: no timer for pacing, only the deadline.
    assert_eq!(
        s.step(500, Input::Timer),
        vec![Action::WakeAt(s.at(32_000))]
    );
    // A failure frees a slot and the next starts at once.
    assert_eq!(
        s.step(600, Input::Failed(AttemptId(1), refused()))[0],
        start(3, V6B)
    );
}

#[test]
fn sequential_waits_for_all_dns_and_for_each_timeout() {
    let mut s = Script::new(strategy::Strategy::Sequential.race_config());
    assert_eq!(
        s.answer(0, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(130_000))]
    );
    assert_eq!(
        s.answer(400, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(32_400))]
    );
    assert_eq!(
        s.step(32_400, Input::Timer),
        vec![
            Action::Cancel {
                id: AttemptId(1),
                reason: CancelReason::AttemptTimeout
            },
            start(2, V4),
            Action::WakeAt(s.at(64_400))
        ]
    );
}

#[test]
fn no_addresses() {
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &[]);
    assert_eq!(
        s.answer(1, Family::V4, &[]),
        vec![Action::Done(Outcome::Failed(RaceFailure::NoAddresses))]
    );
    // Location done without any answer for a host: nothing to try either.
    let mut s = Script::new(RaceConfig::default());
    assert_eq!(
        s.step(2, Input::ResolutionDone),
        vec![Action::Done(Outcome::Failed(RaceFailure::NoAddresses))]
    );
}

fn worked(rtt_ms: u64) -> PathVerdict {
    PathVerdict::Worked {
        rtt: RttEstimate::of(ms(rtt_ms)),
    }
}

#[test]
fn history_puts_the_working_family_first_and_paces_by_its_rtt() {
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Failed);
    view.insert(&ep(V4), worked(20));
    let mut s = Script::with_history(RaceConfig::default(), view.clone());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    // IPv4 first; the next attempt after its RTT-based delay:
    // srtt + max(4·rttvar, leeway) = 20 + 4·10 = 60 ms.
    assert_eq!(
        s.answer(1, Family::V4, &["192.0.2.1"]),
        vec![start(1, V4), Action::WakeAt(s.at(61))]
    );
    assert_eq!(s.step(61, Input::Timer)[0], start(2, V6));

    // The same history is ignored by a strategy without history: A first,
    // AAAA within the Resolution Delay, IPv6 first, the full 250 ms delay.
    let mut s = Script::with_history(strategy::Strategy::Rfc8305.race_config(), view);
    assert_eq!(
        s.answer(0, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(50))]
    );
    assert_eq!(
        s.answer(10, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(260))]
    );
}

#[test]
fn a_steady_rtt_keeps_the_leeway_and_a_noisy_one_waits_longer() {
    // Both families' answers at 0; IPv6 known at 3 ms with little variance:
    // the delay is srtt + the 25 ms leeway (never less), not 3 ms.
    let steady = RttEstimate {
        srtt: ms(3),
        rttvar: ms(1),
    };
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Worked { rtt: steady });
    let mut s = Script::with_history(RaceConfig::default(), view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(0, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(28))]
    );
    // A noisy path (srtt 40 ms, rttvar 30 ms): 40 + 4·30 = 160 ms.
    let noisy = RttEstimate {
        srtt: ms(40),
        rttvar: ms(30),
    };
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Worked { rtt: noisy });
    let mut s = Script::with_history(RaceConfig::default(), view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(0, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(160))]
    );
    // ...clamped to the configured bounds: at most 100 ms here.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Worked { rtt: noisy });
    let bounded = RaceConfig {
        max_attempt_delay: ms(100),
        ..RaceConfig::default()
    };
    let mut s = Script::with_history(bounded, view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(0, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(100))]
    );
    // ...and at least the lower bound: the steady path's 28 ms become 50.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Worked { rtt: steady });
    let floored = RaceConfig {
        min_attempt_delay: ms(50),
        ..RaceConfig::default()
    };
    let mut s = Script::with_history(floored, view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(0, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(50))]
    );
}

#[test]
fn the_rtt_rule_leads_with_the_faster_family_beyond_the_leeway() {
    // IPv6 150 ms, IPv4 1 ms: IPv4 goes first, and the Resolution Delay
    // waits for A, not AAAA: A arriving first starts at once.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), worked(150));
    view.insert(&ep(V4), worked(1));
    let mut s = Script::with_history(RaceConfig::default(), view);
    assert_eq!(
        s.answer(0, Family::V4, &["192.0.2.1"]),
        vec![start(1, V4), Action::WakeAt(s.at(32_000))]
    );
    // IPv6 comes next, after IPv4's delay: 1 + max(4·0.5, 25) = 26 ms.
    assert_eq!(
        s.answer(5, Family::V6, &["2001:db8::1"]),
        vec![Action::WakeAt(s.at(26))]
    );
    assert_eq!(s.step(26, Input::Timer)[0], start(2, V6));

    // IPv6 30 ms, IPv4 10 ms: within the 25 ms leeway IPv6 keeps its place
    // (the Resolution Delay waits for AAAA) and its RTT-based delay:
    // 30 + 4·15 = 90 ms.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), worked(30));
    view.insert(&ep(V4), worked(10));
    let mut s = Script::with_history(RaceConfig::default(), view);
    assert_eq!(
        s.answer(0, Family::V4, &["192.0.2.1"]),
        vec![Action::WakeAt(s.at(50))]
    );
    assert_eq!(
        s.answer(5, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(95))]
    );
}

#[test]
fn a_family_suspect_on_the_network_keeps_its_place_with_the_shortest_head_start() {
    // A new host (no verdict of its own) on a network where IPv6 failed to
    // several hosts: IPv6 still goes first, IPv4 follows after the minimum
    // delay (10 ms) instead of the configured one.
    let cfg = strategy::Strategy::Siprace.race_config();
    let mut view = HistoryView::default();
    view.set_family_suspect(Family::V6, true);
    let mut s = Script::with_history(cfg.clone(), view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(1, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(11))]
    );
    assert_eq!(
        s.step(11, Input::Timer),
        vec![start(2, V4), Action::WakeAt(s.at(32_000))]
    );
    // A working IPv6 path still wins the race it started first.
    assert_eq!(
        s.step(12, Input::Succeeded(AttemptId(1))),
        vec![
            Action::Cancel {
                id: AttemptId(2),
                reason: CancelReason::LostRace
            },
            won(1, V6)
        ]
    );
    // Without suspicion, the cold delay.
    let mut s = Script::with_history(cfg.clone(), HistoryView::default());
    s.answer(0, Family::V4, &["192.0.2.1"]);
    let cold = cfg.attempt_delay.as_millis() as u64;
    assert_eq!(
        s.answer(1, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(1 + cold))]
    );
    // A path with its own RTT is paced by it, suspect family or not; a
    // suspect IPv4 does not change IPv6's head start.
    let mut view = HistoryView::default();
    view.set_family_suspect(Family::V6, true);
    view.insert(&ep(V6), worked(20));
    let mut s = Script::with_history(cfg.clone(), view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(1, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(61))]
    );
    let mut view = HistoryView::default();
    view.set_family_suspect(Family::V4, true);
    let mut s = Script::with_history(cfg, view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(1, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(1 + cold))]
    );
}

#[test]
fn a_doubtful_path_is_retried_first_with_the_shortest_head_start() {
    // Convergence: a path whose failure is older than the failure memory
    // goes first again; if it is still broken, the dial loses only 10 ms.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Doubtful);
    view.insert(&ep(V4), worked(1));
    let mut s = Script::with_history(RaceConfig::default(), view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(2, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(12))]
    );
    assert_eq!(s.step(12, Input::Timer)[0], start(2, V4));
    // While the failure is recent, IPv4 goes first instead.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Failed);
    view.insert(&ep(V4), worked(1));
    let mut s = Script::with_history(RaceConfig::default(), view);
    assert_eq!(s.answer(0, Family::V4, &["192.0.2.1"])[0], start(1, V4));
}

#[test]
fn an_expired_resolution_delay_does_not_ask_to_be_woken_now() {
    // Two candidates of IPv4 (UDP and TCP of one host), AAAA still pending:
    // after the first starts, the next waits for the attempt delay, not "now".
    let spec = |transport, rank| host_spec(HOST, transport, rank);
    let mut race = race_of(vec![spec(Transport::Udp, 0), spec(Transport::Tcp, 0)]);
    let t0 = race.started_at;
    let a = Input::Addresses {
        host: Arc::from(HOST),
        family: Family::V4,
        addrs: vec!["192.0.2.1".parse().unwrap()],
    };
    assert_eq!(race.step(t0, a), vec![Action::WakeAt(t0 + ms(50))]);
    let acts = race.step(t0 + ms(50), Input::Timer);
    assert!(matches!(acts[0], Action::Start { .. }));
    assert_eq!(acts[1], Action::WakeAt(t0 + ms(300)));
}

#[test]
fn transport_up_extends_the_attempt_delay() {
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.step(200, Input::TransportUp(AttemptId(1), s.at(200))),
        vec![Action::WakeAt(s.at(450))]
    );
    assert_eq!(s.step(450, Input::Timer)[0], start(2, V4));
}

#[test]
fn better_ranked_host_is_waited_for_within_the_resolution_delay() {
    let spec = |host, rank| host_spec(host, Transport::Tcp, rank);
    let mut race = race_of(vec![spec("a.test", 0), spec("b.test", 1)]);
    let t0 = race.started_at;
    // The second-ranked host answers first: hold for the first-ranked one.
    assert_eq!(
        race.step(t0 + ms(1), host_answer("b.test", Family::V6, "2001:db8::b")),
        vec![Action::WakeAt(t0 + ms(51))]
    );
    let acts = race.step(t0 + ms(2), host_answer("a.test", Family::V6, "2001:db8::a"));
    match &acts[0] {
        Action::Start { endpoint, .. } => assert_eq!(&*endpoint.host, "a.test"),
        other => panic!("expected a start, got {other:?}"),
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Answer { v6: bool, n: u8 },
        Done,
        Succeed(u8),
        Fail(u8),
        Up(u8),
        Advance(u16),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (any::<bool>(), 0u8..4).prop_map(|(v6, n)| Event::Answer { v6, n }),
            Just(Event::Done),
            (0u8..8).prop_map(Event::Succeed),
            (0u8..8).prop_map(Event::Fail),
            (0u8..8).prop_map(Event::Up),
            (0u16..3000).prop_map(Event::Advance),
        ]
    }

    proptest! {
        #[test]
        fn engine_invariants(
            cap in 1usize..4,
            events in proptest::collection::vec(event(), 0..60),
            staggered in any::<bool>(),
        ) {
            let cfg = RaceConfig { max_concurrent: cap, staggered, deadline: ms(20_000), ..RaceConfig::default() };
            let t0 = Instant::now();
            let mut now = t0;
            let mut race = Race::new(cfg, HistoryView::default(), &[Family::V6, Family::V4], t0);
            race.step(now, Input::Targets(vec![host_spec(HOST, Transport::Tcp, 0)]));
            let mut wins = 0;
            let mut done = false;
            let mut answered = 0u32;
            for ev in events {
                let input = match ev {
                    Event::Answer { v6, n } => {
                        answered += 1;
                        let addrs = (0..n).map(|i| if v6 {
                            format!("2001:db8::{}", answered * 10 + u32::from(i)).parse().unwrap()
                        } else {
                            format!("192.0.2.{}", answered * 10 + u32::from(i)).parse().unwrap()
                        }).collect();
                        Input::Addresses { host: Arc::from(HOST), family: if v6 { Family::V6 } else { Family::V4 }, addrs }
                    }
                    Event::Done => Input::ResolutionDone,
                    Event::Succeed(i) => Input::Succeeded(AttemptId(u32::from(i))),
                    Event::Fail(i) => Input::Failed(AttemptId(u32::from(i)), refused()),
                    Event::Up(i) => Input::TransportUp(AttemptId(u32::from(i)), now),
                    Event::Advance(d) => { now += ms(u64::from(d)); Input::Timer }
                };
                let actions = race.step(now, input);
                for a in &actions {
                    match a {
                        Action::Done(Outcome::Won { .. }) => { wins += 1; done = true; }
                        Action::Done(_) => done = true,
                        // Never "now": that would make the driver spin.
                        Action::WakeAt(t) => prop_assert!(*t > now, "WakeAt({:?}) not after now", *t - t0),
                        _ => {}
                    }
                }
                let in_flight = race.attempts().iter().filter(|a| a.end == AttemptEnd::InFlight).count();
                prop_assert!(in_flight <= cap, "{} in flight over cap {}", in_flight, cap);
                prop_assert!(wins <= 1);
                if done {
                    prop_assert!(race.is_finished());
                    prop_assert_eq!(in_flight, 0, "an attempt outlived the race");
                }
            }
            // Drive to the end: time past the deadline always finishes the race.
            if !race.is_finished() {
                race.step(t0 + ms(20_000), Input::Timer);
            }
            prop_assert!(race.is_finished());
            prop_assert!(race.attempts().iter().all(|a| a.end != AttemptEnd::InFlight));
            prop_assert!(race.attempts().iter().filter(|a| a.end == AttemptEnd::Won).count() <= 1);
        }
    }
}

#[test]
fn sequential_v4_tries_ipv4_first_one_at_a_time() {
    let mut s = Script::new(strategy::Strategy::SequentialV4.race_config());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    assert_eq!(
        s.answer(1, Family::V4, &["192.0.2.1"]),
        vec![start(1, V4), Action::WakeAt(s.at(32_001))]
    );
    assert_eq!(
        s.step(2, Input::Failed(AttemptId(1), refused())),
        vec![start(2, V6), Action::WakeAt(s.at(32_002))]
    );
}

#[test]
fn a_dead_first_target_is_skipped_even_when_it_answers_first() {
    let t0 = Instant::now();
    let dead = |a: &str| Endpoint {
        host: Arc::from("dead.test"),
        transport: Transport::Udp,
        addr: a.parse().unwrap(),
        rank: 0,
    };
    let mut view = HistoryView::default();
    view.insert(&dead("[2001:db8::d]:5060"), PathVerdict::Failed);
    view.insert(&dead("192.0.2.13:5060"), PathVerdict::Failed);
    let mut race = Race::new(RaceConfig::default(), view, &[Family::V6, Family::V4], t0);
    let spec = |host, rank| host_spec(host, Transport::Udp, rank);
    race.step(
        t0,
        Input::Targets(vec![spec("dead.test", 0), spec("live.test", 1)]),
    );
    // The dead target answers first: wait (within the Resolution Delay) for the live one.
    race.step(t0, host_answer("dead.test", Family::V6, "2001:db8::d"));
    assert_eq!(
        race.step(
            t0 + ms(1),
            host_answer("dead.test", Family::V4, "192.0.2.13")
        ),
        vec![Action::WakeAt(t0 + ms(50))]
    );
    let acts = race.step(
        t0 + ms(2),
        host_answer("live.test", Family::V6, "2001:db8::1"),
    );
    match &acts[0] {
        Action::Start { endpoint, .. } => assert_eq!(&*endpoint.host, "live.test"),
        other => panic!("expected the live target first, got {other:?}"),
    }
}

#[test]
fn validation_names_the_field_and_its_range() {
    type Edit = fn(&mut RaceConfig);
    let cases: [(Edit, &str); 10] = [
        (|c| c.deadline = Duration::ZERO, "race.deadline"),
        (|c| c.deadline = Duration::MAX, "race.deadline"),
        (
            |c| c.resolution_delay = Some(Duration::MAX),
            "race.resolution_delay",
        ),
        (|c| c.min_attempt_delay = ms(5), "race.min_attempt_delay"),
        (|c| c.max_attempt_delay = ms(11), "race.max_attempt_delay"),
        (|c| c.attempt_delay = Duration::MAX, "race.attempt_delay"),
        (
            |c| c.attempt_timeout = Some(Duration::ZERO),
            "race.attempt_timeout",
        ),
        (
            |c| c.preferred_family_count = usize::MAX,
            "race.preferred_family_count",
        ),
        (|c| c.max_concurrent = 0, "race.max_concurrent"),
        (|c| c.max_concurrent = usize::MAX, "race.max_concurrent"),
    ];
    for (edit, field) in cases {
        let mut cfg = RaceConfig::default();
        if field == "race.max_attempt_delay" {
            cfg.min_attempt_delay = ms(20);
        }
        edit(&mut cfg);
        let err = cfg.validated().expect_err(field);
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().contains("between"), "{err}");
    }
    // Every preset is valid, and the bounds themselves are allowed.
    for strategy in strategy::Strategy::ALL {
        strategy.race_config().validated().unwrap();
    }
    let edge = RaceConfig {
        deadline: limits::MAX_DEADLINE,
        preferred_family_count: limits::MAX_PREFERRED_FAMILY_COUNT,
        max_concurrent: limits::MAX_CONCURRENT,
        max_attempt_delay: limits::MAX_ATTEMPT_DELAY,
        ..RaceConfig::default()
    };
    assert_eq!(edge.clone().validated(), Ok(edge));
}

#[test]
fn an_unvalidated_config_is_bounded_by_the_engine() {
    // Values no validation would let through: the engine must neither spin
    // (family count), overflow its clock (durations) nor panic (history RTT).
    let cfg = RaceConfig {
        deadline: Duration::MAX,
        attempt_delay: Duration::MAX,
        max_attempt_delay: Duration::MAX,
        resolution_delay: Some(Duration::MAX),
        attempt_timeout: Some(Duration::MAX),
        preferred_family_count: usize::MAX,
        max_concurrent: usize::MAX,
        ..RaceConfig::default()
    };
    let mut history = HistoryView::default();
    history.insert(
        &ep(V6),
        PathVerdict::Worked {
            rtt: RttEstimate::of(Duration::MAX),
        },
    );
    let t0 = Instant::now();
    let mut race = Race::new(cfg, history, &[Family::V6, Family::V4], t0);
    let deadline = t0 + limits::MAX_DEADLINE;
    assert_eq!(
        race.step(t0, Input::Targets(vec![host_spec(HOST, Transport::Udp, 0)])),
        vec![Action::WakeAt(deadline)]
    );
    race.step(t0, host_answer(HOST, Family::V6, "2001:db8::1"));
    let acts = race.step(t0, host_answer(HOST, Family::V4, "192.0.2.1"));
    assert!(
        matches!(acts.last(), Some(Action::WakeAt(t)) if *t <= deadline),
        "{acts:?}"
    );
    let acts = race.step(deadline, Input::Timer);
    assert_eq!(
        acts.last(),
        Some(&Action::Done(Outcome::Failed(RaceFailure::Deadline)))
    );
}

#[test]
fn a_repeated_transport_up_keeps_the_first_time() {
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    s.step(100, Input::TransportUp(AttemptId(1), s.at(100)));
    // The driver passes it again with a later time: the pacing stays.
    assert_eq!(
        s.step(200, Input::TransportUp(AttemptId(1), s.at(200))),
        vec![Action::WakeAt(s.at(350))]
    );
    assert_eq!(s.race.attempts()[0].transport_up, Some(s.at(100)));
}

/// `n` documentation addresses of `family`, distinct.
fn many(family: Family, n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| match family {
            Family::V6 => format!("2001:db8::{:x}", i + 1).parse().unwrap(),
            Family::V4 => format!("10.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
        })
        .collect()
}

fn answer_of(race: &mut Race, host: &str, family: Family, addrs: Vec<IpAddr>) {
    let at = race.started_at;
    race.step(
        at,
        Input::Addresses {
            host: Arc::from(host),
            family,
            addrs,
        },
    );
}

#[test]
fn a_crowded_host_answering_first_cannot_crowd_out_a_better_one() {
    // The worse-ranked host answers first with more addresses than the bound.
    let mut race = race_of(vec![
        host_spec("live.example.test", Transport::Udp, 0),
        host_spec("crowd.example.test", Transport::Udp, 1),
    ]);
    answer_of(
        &mut race,
        "crowd.example.test",
        Family::V6,
        many(Family::V6, 300),
    );
    answer_of(
        &mut race,
        "live.example.test",
        Family::V6,
        many(Family::V6, 1),
    );
    assert!(race.order.len() <= MAX_CANDIDATES);
    assert_eq!(
        &*race.order[0].host, "live.example.test",
        "live is tried first"
    );
    // The crowd keeps its share, not the whole bound.
    let crowd = race.order.iter().filter(|e| e.rank == 1).count();
    assert_eq!(crowd, MAX_CANDIDATES / 4);
}

#[test]
fn a_crowded_family_cannot_crowd_out_the_other() {
    let mut race = race_of(vec![host_spec(HOST, Transport::Udp, 0)]);
    answer_of(&mut race, HOST, Family::V6, many(Family::V6, 300));
    answer_of(&mut race, HOST, Family::V4, many(Family::V4, 1));
    let v4 = race
        .order
        .iter()
        .filter(|e| e.family() == Family::V4)
        .count();
    assert_eq!(v4, 1);
    assert_eq!(race.order.len(), MAX_CANDIDATES / 2 + 1);
}

#[test]
fn past_the_bound_the_best_ranked_candidates_stay() {
    // 200 locations, two addresses each: 400 candidates for 256 places.
    // Answers arrive worst rank first; the better ones must displace them.
    let specs: Vec<TargetSpec> = (0..200)
        .map(|i| host_spec(&format!("h{i}.example.test"), Transport::Udp, i))
        .collect();
    let mut race = race_of(specs);
    for i in (0..200).rev() {
        let host = format!("h{i}.example.test");
        answer_of(&mut race, &host, Family::V6, many(Family::V6, 1));
        answer_of(&mut race, &host, Family::V4, many(Family::V4, 1));
    }
    assert_eq!(race.order.len(), MAX_CANDIDATES);
    let worst = race.order.iter().map(|e| e.rank).max().unwrap();
    assert_eq!(worst, (MAX_CANDIDATES / 2 - 1) as u32);
    // Candidates already tried are never dropped.
    assert!(race
        .order
        .iter()
        .all(|e| e.rank < 128 || race.tried.contains(e)));
}

/// The explanation fields of attempt `id`: the delay, where it came from,
/// the bound it was clamped to, and history's note.
fn explained(
    race: &Race,
    id: u32,
) -> (
    Duration,
    DelaySource,
    Option<DelayBound>,
    Option<HistoryNote>,
) {
    let a = &race.attempts()[id as usize - 1];
    (a.delay, a.delay_source, a.delay_clamped, a.history_note)
}

#[test]
fn each_attempt_says_where_its_delay_came_from_and_what_history_changed() {
    // Cold: the configured delay, nothing clamped, no history note.
    let mut s = Script::new(RaceConfig::default());
    s.answer(0, Family::V6, &["2001:db8::1"]);
    assert_eq!(
        explained(&s.race, 1),
        (ms(250), DelaySource::Configured, None, None)
    );

    // IPv6 failed 12 s ago, IPv4 worked at 20 ms: IPv4 first with its
    // RTT-based delay (20 + 4·10 = 60 ms); IPv6 next, tried last because
    // of the failure, with the configured delay.
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Failed);
    view.set_failed_ago(&ep(V6), ms(12_000));
    view.insert(&ep(V4), worked(20));
    let mut s = Script::with_history(RaceConfig::default(), view);
    s.answer(0, Family::V6, &["2001:db8::1"]);
    assert_eq!(
        s.answer(1, Family::V4, &["192.0.2.1"]),
        vec![start(1, V4), Action::WakeAt(s.at(61))]
    );
    assert_eq!(s.step(61, Input::Timer)[0], start(2, V6));
    let rtt20 = RttEstimate::of(ms(20));
    assert_eq!(
        explained(&s.race, 1),
        (
            ms(60),
            DelaySource::HistoryRtt(rtt20),
            None,
            Some(HistoryNote::PreferredFailed {
                ago: Some(ms(12_000))
            })
        )
    );
    assert_eq!(
        explained(&s.race, 2),
        (
            ms(250),
            DelaySource::Configured,
            None,
            Some(HistoryNote::FailedRecently {
                ago: Some(ms(12_000))
            })
        )
    );

    // IPv4 3 ms vs IPv6 40 ms: IPv4 goes first and says why; a history
    // delay above the maximum is clamped to it (and says so).
    let mut view = HistoryView::default();
    view.insert(&ep(V6), worked(40));
    view.insert(&ep(V4), worked(3));
    let capped = RaceConfig {
        max_attempt_delay: ms(20),
        ..RaceConfig::default()
    };
    let mut s = Script::with_history(capped, view);
    assert_eq!(
        s.answer(0, Family::V4, &["192.0.2.1"]),
        vec![start(1, V4), Action::WakeAt(s.at(32_000))]
    );
    assert_eq!(
        explained(&s.race, 1),
        (
            ms(20),
            DelaySource::HistoryRtt(RttEstimate::of(ms(3))),
            Some(DelayBound::Max),
            Some(HistoryNote::FasterFamily {
                ours: ms(3),
                theirs: ms(40)
            })
        )
    );

    // A doubtful path and a suspect family get the minimum (here 30 ms).
    let mut view = HistoryView::default();
    view.insert(&ep(V6), PathVerdict::Doubtful);
    view.set_family_suspect(Family::V4, true);
    let floored = RaceConfig {
        min_attempt_delay: ms(30),
        ..RaceConfig::default()
    };
    let mut s = Script::with_history(floored, view);
    s.answer(0, Family::V4, &["192.0.2.1"]);
    assert_eq!(
        s.answer(0, Family::V6, &["2001:db8::1"]),
        vec![start(1, V6), Action::WakeAt(s.at(30))]
    );
    assert_eq!(s.step(30, Input::Timer)[0], start(2, V4));
    assert_eq!(
        explained(&s.race, 1),
        (ms(30), DelaySource::DoubtfulPath, None, None)
    );
    assert_eq!(
        explained(&s.race, 2),
        (ms(30), DelaySource::SuspectFamily, None, None)
    );
}
