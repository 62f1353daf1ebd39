//! Whole dials through the composed machine, with a fake clock: DNS
//! queries, then attempts, then Done, each at an exact instant.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::endpoint::{ErrorClass, Family};
use crate::locate::testing::{self, addr, naptr, srv};
use crate::locate::{DnsFailure, Record, RecordType};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A dial plus a fake clock.
struct Script {
    dial: DialMachine,
    t0: Instant,
}

impl Script {
    /// Starts dialing `uri` over `transports` at 0 ms with the siprace
    /// strategy's settings; returns the first actions.
    fn start(
        uri: &str,
        transports: &[Transport],
        edit: impl FnOnce(&mut LocateConfig, &mut RaceConfig),
    ) -> (Script, Vec<Action>) {
        let target = Target::parse(uri).unwrap();
        let mut locate = LocateConfig::default();
        let mut race = RaceConfig::default();
        edit(&mut locate, &mut race);
        let t0 = Instant::now();
        let mut dial = DialMachine::new(
            &target,
            transports,
            &locate,
            race,
            HistoryView::default(),
            7,
            t0,
        );
        let first = dial.start(t0);
        (Script { dial, t0 }, first)
    }

    fn at(&self, t: u64) -> Instant {
        self.t0 + ms(t)
    }

    fn step(&mut self, t: u64, input: Input) -> Vec<Action> {
        self.dial.step(self.at(t), input)
    }

    fn answer(&mut self, t: u64, id: u32, records: Vec<Record>) -> Vec<Action> {
        let answer = Answer {
            id: QueryId(id),
            at: self.at(t),
            result: Ok(records),
        };
        self.step(t, Input::DnsAnswer(answer))
    }
}

fn query(id: u32, name: &str, rtype: RecordType) -> Action {
    Action::Query(testing::query(id, name, rtype))
}

fn endpoint(transport: Transport, addr: &str, host: &str) -> Endpoint {
    Endpoint {
        transport,
        addr: addr.parse().unwrap(),
        host: Arc::from(host),
        rank: 0,
    }
}

fn start(id: u32, endpoint: &Endpoint) -> Action {
    Action::Start {
        id: AttemptId(id),
        endpoint: endpoint.clone(),
    }
}

fn won(id: u32, endpoint: &Endpoint) -> Action {
    Action::Done(Outcome::Won {
        id: AttemptId(id),
        endpoint: endpoint.clone(),
    })
}

const HOST: &str = "sip1.example.test";

#[test]
fn a_full_chain_dial_takes_two_round_trips_of_dns_then_one_attempt() {
    let (mut s, first) = Script::start("sip:example.test", &[Transport::Udp], |_, _| {});
    assert_eq!(
        first,
        vec![
            query(1, "example.test", RecordType::Naptr),
            query(2, "_sip._udp.example.test", RecordType::Srv),
            Action::WakeAt(s.at(2000)),
        ]
    );
    assert_eq!(
        s.answer(60, 2, vec![srv(0, 0, 5060, HOST)]),
        vec![Action::WakeAt(s.at(2000))]
    );
    // NAPTR at 100 ms: the address queries leave at once.
    assert_eq!(
        s.answer(100, 1, vec![naptr(10, "SIP+D2U", "_sip._udp.example.test")]),
        vec![
            query(3, HOST, RecordType::Aaaa),
            query(4, HOST, RecordType::A),
            Action::WakeAt(s.at(2100)),
        ]
    );
    // A first: the Resolution Delay waits 50 ms for AAAA.
    assert_eq!(
        s.answer(120, 4, vec![addr("192.0.2.1")]),
        vec![Action::WakeAt(s.at(170))]
    );
    // AAAA within it: IPv6 starts at once.
    let v6 = endpoint(Transport::Udp, "[2001:db8::1]:5060", HOST);
    assert_eq!(
        s.answer(130, 3, vec![addr("2001:db8::1")]),
        vec![start(1, &v6), Action::WakeAt(s.at(380))]
    );
    assert_eq!(
        s.step(135, Input::Succeeded(AttemptId(1))),
        vec![won(1, &v6)]
    );
    // Decided: nothing more happens.
    assert_eq!(s.step(140, Input::Timer), vec![]);
    let attempts = s.dial.race().attempts();
    assert_eq!((attempts.len(), attempts[0].started), (1, s.at(130)));
    let sent: Vec<Instant> = s.dial.location().queries().iter().map(|q| q.sent).collect();
    assert_eq!(sent, vec![s.at(0), s.at(0), s.at(100), s.at(100)]);
}

#[test]
fn a_win_before_the_last_answer_abandons_its_query() {
    let (mut s, first) = Script::start("sip:sip1.example.test:5060", &[Transport::Udp], |_, _| {});
    assert_eq!(
        first,
        vec![
            query(1, HOST, RecordType::Aaaa),
            query(2, HOST, RecordType::A),
            Action::WakeAt(s.at(2000)),
        ]
    );
    let v6 = endpoint(Transport::Udp, "[2001:db8::1]:5060", HOST);
    assert_eq!(
        s.answer(10, 1, vec![addr("2001:db8::1")]),
        vec![start(1, &v6), Action::WakeAt(s.at(2000))]
    );
    assert_eq!(
        s.step(15, Input::Succeeded(AttemptId(1))),
        vec![Action::AbandonQuery(QueryId(2)), won(1, &v6)]
    );
    assert_eq!(s.dial.location().queries()[1].answered, None);
}

#[test]
fn a_query_timeout_and_the_race_share_one_timer() {
    let (mut s, _) = Script::start(
        "sip:sip1.example.test:5060",
        &[Transport::Udp],
        |locate, _| locate.query_timeout = ms(800),
    );
    // A answers; AAAA never will.
    assert_eq!(
        s.answer(10, 2, vec![addr("192.0.2.1")]),
        vec![Action::WakeAt(s.at(60))]
    );
    let v4 = endpoint(Transport::Udp, "192.0.2.1:5060", HOST);
    // The Resolution Delay ends: IPv4 starts; the next wake-up is AAAA's timeout.
    assert_eq!(
        s.step(60, Input::Timer),
        vec![start(1, &v4), Action::WakeAt(s.at(800))]
    );
    // AAAA times out: recorded, abandoned, location done; the attempt runs on.
    assert_eq!(
        s.step(800, Input::Timer),
        vec![
            Action::AbandonQuery(QueryId(1)),
            Action::WakeAt(s.at(32_000))
        ]
    );
    assert_eq!(
        s.dial.location().queries()[0].outcome,
        Some(crate::locate::DnsOutcome::Timeout)
    );
    let refused = AttemptError::new(ErrorClass::Refused, "refused");
    assert_eq!(
        s.step(900, Input::Failed(AttemptId(1), refused)),
        vec![Action::Done(Outcome::Failed(RaceFailure::AllFailed))]
    );
}

#[test]
fn a_location_failure_ends_the_dial_and_abandons_its_queries() {
    let (mut s, first) = Script::start("sips:example.test", &[Transport::Tls], |_, _| {});
    assert_eq!(first.len(), 3, "NAPTR, SRV, wake: {first:?}");
    let actions = s.answer(10, 1, vec![naptr(10, "SIP+D2T", "_sip._tcp.example.test")]);
    assert_eq!(actions[0], Action::AbandonQuery(QueryId(2)));
    assert!(
        matches!(
            &actions[1..],
            [Action::Done(Outcome::LocationFailed(
                LocateError::NoUsableService { .. }
            ))]
        ),
        "{actions:?}"
    );
}

#[test]
fn the_deadline_ends_a_dial_stuck_in_dns() {
    let (mut s, first) = Script::start("sip:example.test", &[Transport::Tcp], |_, race| {
        race.deadline = ms(1000)
    });
    assert_eq!(first.last(), Some(&Action::WakeAt(s.at(1000))));
    assert_eq!(
        s.step(1000, Input::Timer),
        vec![
            Action::AbandonQuery(QueryId(1)),
            Action::AbandonQuery(QueryId(2)),
            Action::Done(Outcome::Failed(RaceFailure::Deadline)),
        ]
    );
}

#[test]
fn an_ip_literal_starts_its_attempt_at_once() {
    let (s, first) = Script::start("sip:192.0.2.1:5060", &[Transport::Udp], |_, _| {});
    let v4 = endpoint(Transport::Udp, "192.0.2.1:5060", "192.0.2.1");
    assert_eq!(first, vec![start(1, &v4), Action::WakeAt(s.at(32_000))]);
    assert!(s.dial.location().queries().is_empty());
}

#[test]
fn no_address_at_all_fails_once_location_is_done() {
    let (mut s, _) = Script::start("sip:sip1.example.test:5060", &[Transport::Udp], |_, _| {});
    let nx = |s: &mut Script, t, id| {
        let answer = Answer {
            id: QueryId(id),
            at: s.at(t),
            result: Err(DnsFailure::NxDomain),
        };
        s.step(t, Input::DnsAnswer(answer))
    };
    assert_eq!(nx(&mut s, 5, 1), vec![Action::WakeAt(s.at(2000))]);
    assert_eq!(
        nx(&mut s, 6, 2),
        vec![Action::Done(Outcome::Failed(RaceFailure::NoAddresses))]
    );
    let families: Vec<Family> = s
        .dial
        .location()
        .address_answers()
        .iter()
        .map(|a| a.family)
        .collect();
    assert_eq!(families, vec![Family::V6, Family::V4]);
}

/// A dial machine told of reusable destinations before its start.
fn start_reusing(
    uri: &str,
    transports: &[Transport],
    reusable: &[(Transport, &str)],
) -> (Script, Vec<Action>) {
    let target = Target::parse(uri).unwrap();
    let t0 = Instant::now();
    let mut dial = DialMachine::new(
        &target,
        transports,
        &LocateConfig::default(),
        RaceConfig::default(),
        HistoryView::default(),
        7,
        t0,
    );
    dial.reuse_any_of(
        reusable
            .iter()
            .map(|(t, a)| (*t, a.parse().unwrap()))
            .collect(),
    );
    let first = dial.start(t0);
    (Script { dial, t0 }, first)
}

#[test]
fn a_literal_with_a_kept_connection_is_reused_without_any_attempt() {
    let (s, first) = start_reusing(
        "sips:[2001:db8::10]:5061",
        &[Transport::Tls],
        &[(Transport::Tls, "[2001:db8::10]:5061")],
    );
    let ep = endpoint(Transport::Tls, "[2001:db8::10]:5061", "2001:db8::10");
    assert_eq!(first, vec![Action::Done(Outcome::Reused { endpoint: ep })]);
    assert!(s.dial.race().attempts().is_empty());
}

#[test]
fn another_port_or_transport_is_not_the_kept_connection() {
    for reusable in [
        (Transport::Tls, "[2001:db8::10]:5062"),
        (Transport::Tcp, "[2001:db8::10]:5061"),
    ] {
        let (_, first) = start_reusing("sips:[2001:db8::10]:5061", &[Transport::Tls], &[reusable]);
        assert!(
            matches!(first[0], Action::Start { .. }),
            "{reusable:?}: {first:?}"
        );
    }
}

#[test]
fn a_kept_connection_found_by_a_later_answer_cancels_the_running_attempt() {
    let (mut s, first) = start_reusing(
        "sip:example.test:5060;transport=tcp",
        &[Transport::Tcp],
        &[(Transport::Tcp, "192.0.2.10:5060")],
    );
    assert_eq!(
        first[..2],
        [
            query(1, "example.test", RecordType::Aaaa),
            query(2, "example.test", RecordType::A),
        ]
    );
    // AAAA first: no kept connection there, the race starts IPv6.
    let v6 = endpoint(Transport::Tcp, "[2001:db8::10]:5060", "example.test");
    let after_aaaa = s.answer(10, 1, vec![addr("2001:db8::10")]);
    assert_eq!(after_aaaa[0], start(1, &v6));
    // The A answer names the kept connection: the attempt is cancelled and
    // the dial decided, with no second attempt.
    let v4 = endpoint(Transport::Tcp, "192.0.2.10:5060", "example.test");
    let after_a = s.answer(20, 2, vec![addr("192.0.2.10")]);
    assert_eq!(
        after_a,
        vec![
            Action::Cancel {
                id: AttemptId(1),
                reason: CancelReason::LostRace
            },
            Action::Done(Outcome::Reused { endpoint: v4 }),
        ]
    );
    assert_eq!(s.dial.race().attempts().len(), 1);
    // Decided: later inputs change nothing.
    assert!(s.step(30, Input::Succeeded(AttemptId(1))).is_empty());
}
