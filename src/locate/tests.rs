//! Exact query sequences of the location machine, driven by a fake clock
//! and a fixed seed, the way the race engine is tested. The live-DNS side
//! of location is tested in `tests/locate.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::select::NaptrRecord;
use super::testing::{self, addr, naptr, srv};
use super::*;
use crate::endpoint::{Family, TargetSpec, Transport};
use crate::target::Target;

const SEED: u64 = 7;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(pipelined: bool) -> LocateConfig {
    LocateConfig {
        pipelined,
        ..LocateConfig::default()
    }
}

/// A location plus a fake clock.
struct Script {
    location: Location,
    t0: Instant,
}

impl Script {
    /// Starts locating `uri` over `transports` at 0 ms; returns the first actions.
    fn start(uri: &str, transports: &[Transport], cfg: &LocateConfig) -> (Script, Vec<Action>) {
        let target = Target::parse(uri).unwrap();
        let mut location = Location::new(&target, transports, cfg, SEED);
        let t0 = Instant::now();
        let first = location.start(t0);
        (Script { location, t0 }, first)
    }

    fn at(&self, t: u64) -> Instant {
        self.t0 + ms(t)
    }

    /// The answer to query `id` arrives at `t` ms.
    fn answer(&mut self, t: u64, id: u32, result: Result<Vec<Record>, DnsFailure>) -> Vec<Action> {
        let answer = Answer {
            id: QueryId(id),
            at: self.at(t),
            result,
        };
        self.location.step(self.at(t), Input::Answer(answer))
    }

    fn records(&mut self, t: u64, id: u32, records: Vec<Record>) -> Vec<Action> {
        self.answer(t, id, Ok(records))
    }

    fn timer(&mut self, t: u64) -> Vec<Action> {
        self.location.step(self.at(t), Input::Timer)
    }

    fn record(&self, id: u32) -> &QueryRecord {
        &self.location.queries()[id as usize - 1]
    }
}

fn query(id: u32, name: &str, rtype: RecordType) -> Action {
    Action::Query(testing::query(id, name, rtype))
}

fn srv_query(id: u32, name: &str) -> Action {
    query(id, name, RecordType::Srv)
}

fn spec(host: &str, port: u16, transport: Transport, rank: u32) -> TargetSpec {
    TargetSpec {
        host: Arc::from(host),
        port,
        transport,
        rank,
    }
}

fn addresses(host: &str, family: Family, ips: &[&str]) -> Action {
    Action::Addresses {
        host: Arc::from(host),
        family,
        addrs: ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect(),
    }
}

/// The queries of the first address stage of one host: AAAA then A.
fn address_queries(first_id: u32, host: &str) -> [Action; 2] {
    [
        query(first_id, host, RecordType::Aaaa),
        query(first_id + 1, host, RecordType::A),
    ]
}

const DOMAIN: &str = "example.test";
const UDP: &str = "_sip._udp.example.test";
const TCP: &str = "_sip._tcp.example.test";
const SCTP: &str = "_sip._sctp.example.test";
const TLS: &str = "_sips._tcp.example.test";
const ALL: [Transport; 4] = Transport::ALL;

#[test]
fn pipelined_naptr_and_srv_leave_together_and_the_naptr_answer_orders_them() {
    let (mut s, first) = Script::start("sip:example.test", &ALL, &cfg(true));
    // One round trip for NAPTR and every constructed SRV name together.
    assert_eq!(
        first,
        vec![
            query(1, DOMAIN, RecordType::Naptr),
            srv_query(2, UDP),
            srv_query(3, TCP),
            srv_query(4, SCTP),
            srv_query(5, TLS),
        ]
    );
    assert_eq!(s.location.next_wake(), Some(s.at(2000)));
    // SRV answers come first; nothing can be decided before NAPTR's.
    assert_eq!(
        s.records(40, 3, vec![srv(0, 0, 5060, "sip1.example.test")]),
        vec![]
    );
    assert_eq!(
        s.records(45, 5, vec![srv(0, 0, 5061, "sip2.example.test")]),
        vec![]
    );
    assert_eq!(
        s.records(50, 2, vec![srv(0, 0, 5060, "sip2.example.test")]),
        vec![]
    );
    // NAPTR at 100 ms puts TLS before TCP and leaves UDP and SCTP out: the
    // address queries leave at once (the second round trip), and the SCTP
    // query still in flight is abandoned.
    let mut expected = vec![
        Action::Abandon(QueryId(4)),
        Action::Targets(vec![
            spec("sip2.example.test", 5061, Transport::Tls, 0),
            spec("sip1.example.test", 5060, Transport::Tcp, 1),
        ]),
    ];
    expected.extend(address_queries(6, "sip2.example.test"));
    expected.extend(address_queries(8, "sip1.example.test"));
    assert_eq!(
        s.records(
            100,
            1,
            vec![naptr(10, "SIPS+D2T", TLS), naptr(20, "SIP+D2T", TCP)]
        ),
        expected
    );
    assert_eq!(s.record(6).sent, s.at(100));
    assert_eq!(s.record(4).answered, None, "abandoned, never answered");
    // ... and recorded as not needed (not as unanswered), at 100 ms.
    assert_eq!(
        s.record(4).abandoned,
        Some((s.at(100), Abandoned::NotNeeded))
    );
    assert_eq!(s.record(3).abandoned, None, "answered");
    // Each address answer is handed on as it arrives; the last ends location.
    assert_eq!(
        s.records(103, 7, vec![addr("192.0.2.2")]),
        vec![addresses("sip2.example.test", Family::V4, &["192.0.2.2"])]
    );
    assert_eq!(
        s.records(104, 6, vec![addr("2001:db8::2")]),
        vec![addresses("sip2.example.test", Family::V6, &["2001:db8::2"])]
    );
    assert_eq!(
        s.answer(105, 8, Ok(vec![])),
        vec![addresses("sip1.example.test", Family::V6, &[])]
    );
    assert_eq!(
        s.records(106, 9, vec![addr("192.0.2.1")]),
        vec![
            addresses("sip1.example.test", Family::V4, &["192.0.2.1"]),
            Action::Done
        ]
    );
    assert_eq!(s.location.next_wake(), None);
    assert_eq!(s.location.result(), Some(&Ok(())));
    assert_eq!(s.record(8).outcome, Some(DnsOutcome::NoRecords));
    assert_eq!(
        s.record(1).outcome,
        Some(DnsOutcome::Records {
            shown: vec![
                format!("10 50 \"s\" \"SIPS+D2T\" \"\" {TLS}."),
                format!("20 50 \"s\" \"SIP+D2T\" \"\" {TCP}."),
            ],
            total: 2
        })
    );
}

#[test]
fn a_slow_srv_answer_sets_the_second_round_trip() {
    let (mut s, _) = Script::start("sip:example.test", &[Transport::Tcp], &cfg(true));
    // NAPTR (1) and SRV _sip._tcp (2) left together at 0 ms.
    assert_eq!(s.records(100, 1, vec![naptr(10, "SIP+D2T", TCP)]), vec![]);
    let mut expected = vec![Action::Targets(vec![spec(
        "sip1.example.test",
        5060,
        Transport::Tcp,
        0,
    )])];
    expected.extend(address_queries(3, "sip1.example.test"));
    assert_eq!(
        s.records(130, 2, vec![srv(0, 0, 5060, "sip1.example.test")]),
        expected
    );
    assert_eq!(s.record(3).sent, s.at(130));
}

#[test]
fn without_pipelining_srv_waits_for_naptr() {
    let (mut s, first) = Script::start("sip:example.test", &ALL, &cfg(false));
    assert_eq!(first, vec![query(1, DOMAIN, RecordType::Naptr)]);
    // Only the names NAPTR gives are queried, after its answer.
    assert_eq!(
        s.records(
            100,
            1,
            vec![naptr(20, "SIP+D2U", UDP), naptr(10, "SIP+D2T", TCP)]
        ),
        vec![srv_query(2, TCP), srv_query(3, UDP)]
    );
    assert_eq!(
        s.records(150, 2, vec![srv(0, 0, 5060, "sip1.example.test")]),
        vec![]
    );
    let mut expected = vec![Action::Targets(vec![
        spec("sip1.example.test", 5060, Transport::Tcp, 0),
        spec("sip1.example.test", 5070, Transport::Udp, 1),
    ])];
    // One host: resolved once for both services.
    expected.extend(address_queries(4, "sip1.example.test"));
    assert_eq!(
        s.records(160, 3, vec![srv(0, 0, 5070, "sip1.example.test")]),
        expected
    );
    // Three round trips: the address queries leave at 160 ms.
    assert_eq!(s.record(4).sent, s.at(160));
}

#[test]
fn a_naptr_replacement_outside_the_constructed_names_is_queried_after_naptr() {
    let (mut s, first) = Script::start("sip:example.test", &[Transport::Tcp], &cfg(true));
    assert_eq!(
        first,
        vec![query(1, DOMAIN, RecordType::Naptr), srv_query(2, TCP)]
    );
    let pool = "_sip._tcp.pool.example.test";
    // The constructed query is not needed any more, but it is already in
    // flight; it is abandoned once the SRV stage is over.
    assert_eq!(
        s.records(100, 1, vec![naptr(10, "SIP+D2T", pool)]),
        vec![srv_query(3, pool)]
    );
    let mut expected = vec![
        Action::Abandon(QueryId(2)),
        Action::Targets(vec![spec("sip1.example.test", 5070, Transport::Tcp, 0)]),
    ];
    expected.extend(address_queries(4, "sip1.example.test"));
    assert_eq!(
        s.records(120, 3, vec![srv(0, 0, 5070, "sip1.example.test")]),
        expected
    );
    // The abandoned query's late answer changes nothing.
    assert_eq!(
        s.records(130, 2, vec![srv(0, 0, 5060, "sip9.example.test")]),
        vec![]
    );
    assert_eq!(s.record(2).answered, None);
}

#[test]
fn without_sip_naptr_records_the_constructed_srv_names_are_used() {
    let (mut s, _) = Script::start("sip:example.test", &ALL, &cfg(false));
    // No NAPTR at all (NODATA), or only non-SIP services: the same.
    let e2u = Record {
        data: RecordData::Naptr(NaptrRecord {
            order: 10,
            preference: 10,
            flags: "u".into(),
            services: "E2U+sip".into(),
            replacement: ".".into(),
        }),
        text: "10 10 \"u\" \"E2U+sip\" \"!^.*$!sip:info@example.test!\" .".into(),
    };
    assert_eq!(
        s.records(30, 1, vec![e2u]),
        vec![
            srv_query(2, UDP),
            srv_query(3, TCP),
            srv_query(4, SCTP),
            srv_query(5, TLS)
        ]
    );
    for id in [2, 4, 5] {
        assert_eq!(s.answer(40, id, Err(DnsFailure::NxDomain)), vec![]);
    }
    let actions = s.records(45, 3, vec![srv(0, 0, 5062, "sip1.example.test")]);
    assert_eq!(
        actions[0],
        Action::Targets(vec![spec("sip1.example.test", 5062, Transport::Tcp, 0)])
    );
    // A failed NAPTR query (SERVFAIL, timeout) falls back the same way.
    let (mut s, _) = Script::start("sip:example.test", &[Transport::Tcp], &cfg(false));
    assert_eq!(
        s.answer(30, 1, Err(DnsFailure::ServFail)),
        vec![srv_query(2, TCP)]
    );
    assert_eq!(s.record(1).outcome, Some(DnsOutcome::ServFail));
}

#[test]
fn without_srv_the_domain_is_tried_on_default_ports() {
    let (mut s, _) = Script::start("sip:example.test", &ALL, &cfg(true));
    assert_eq!(s.answer(10, 1, Ok(vec![])), vec![]);
    for id in 2..=4 {
        assert_eq!(s.answer(20, id, Ok(vec![])), vec![]);
    }
    // RFC 3263 §4.2: UDP, then TCP (siprace's extension), on 5060.
    let mut expected = vec![Action::Targets(vec![
        spec(DOMAIN, 5060, Transport::Udp, 0),
        spec(DOMAIN, 5060, Transport::Tcp, 1),
    ])];
    expected.extend(address_queries(6, DOMAIN));
    assert_eq!(s.answer(25, 5, Err(DnsFailure::NxDomain)), expected);
    // sips: TLS on 5061.
    let (mut s, first) = Script::start("sips:example.test", &[Transport::Tls], &cfg(true));
    assert_eq!(
        first,
        vec![query(1, DOMAIN, RecordType::Naptr), srv_query(2, TLS)]
    );
    assert_eq!(s.answer(10, 1, Ok(vec![])), vec![]);
    assert_eq!(
        s.answer(12, 2, Ok(vec![]))[0],
        Action::Targets(vec![spec(DOMAIN, 5061, Transport::Tls, 0)])
    );
}

#[test]
fn an_srv_root_target_means_not_offered_and_leaves_the_fallback() {
    // UDP and TCP say ".": the fallback keeps only TLS.
    let (mut s, _) = Script::start(
        "sip:example.test",
        &[Transport::Udp, Transport::Tcp, Transport::Tls],
        &cfg(true),
    );
    assert_eq!(s.answer(10, 1, Ok(vec![])), vec![]);
    assert_eq!(s.records(11, 2, vec![srv(0, 0, 0, ".")]), vec![]);
    assert_eq!(s.records(12, 3, vec![srv(0, 0, 0, ".")]), vec![]);
    assert_eq!(
        s.answer(13, 4, Ok(vec![]))[0],
        Action::Targets(vec![spec(DOMAIN, 5061, Transport::Tls, 0)])
    );
    // Only UDP and TCP allowed, both ".": nothing left.
    let (mut s, _) = Script::start(
        "sip:example.test",
        &[Transport::Udp, Transport::Tcp],
        &cfg(true),
    );
    assert_eq!(s.answer(10, 1, Ok(vec![])), vec![]);
    assert_eq!(s.records(11, 2, vec![srv(0, 0, 0, ".")]), vec![]);
    let failed = s.records(12, 3, vec![srv(0, 0, 0, ".")]);
    assert_eq!(
        failed,
        vec![Action::Failed(LocateError::ServiceNotOffered {
            domain: DOMAIN.into(),
            names: format!("{UDP}, {TCP}"),
        })]
    );
    assert!(s.location.targets().is_empty());
}

#[test]
fn an_explicit_port_skips_naptr_and_srv() {
    let (_, first) = Script::start("sip:sip1.example.test:5080", &ALL, &cfg(true));
    let mut expected = vec![Action::Targets(vec![
        spec("sip1.example.test", 5080, Transport::Udp, 0),
        spec("sip1.example.test", 5080, Transport::Tcp, 1),
    ])];
    expected.extend(address_queries(1, "sip1.example.test"));
    assert_eq!(first, expected);
}

#[test]
fn a_transport_parameter_queries_only_its_srv() {
    let (mut s, first) = Script::start(
        "sip:example.test;transport=tcp",
        &[Transport::Tcp],
        &cfg(true),
    );
    assert_eq!(first, vec![srv_query(1, TCP)]);
    // Without its SRV: the host on the transport's default port.
    assert_eq!(
        s.answer(10, 1, Ok(vec![]))[0],
        Action::Targets(vec![spec(DOMAIN, 5060, Transport::Tcp, 0)])
    );
}

#[test]
fn a_sips_target_never_yields_a_plaintext_transport() {
    // Given every transport, a sips: target still only looks for TLS.
    let (mut s, first) = Script::start("sips:example.test", &ALL, &cfg(true));
    assert_eq!(
        first,
        vec![query(1, DOMAIN, RecordType::Naptr), srv_query(2, TLS)]
    );
    // A plaintext-only NAPTR set is authoritative: location fails, and the
    // pipelined query is abandoned.
    let actions = s.records(
        10,
        1,
        vec![naptr(10, "SIP+D2T", TCP), naptr(20, "SIP+D2U", UDP)],
    );
    assert_eq!(actions[0], Action::Abandon(QueryId(2)));
    assert_eq!(
        s.record(2).abandoned,
        Some((s.at(10), Abandoned::LocationFailed))
    );
    let Action::Failed(LocateError::NoUsableService { offered, .. }) = &actions[1] else {
        panic!("{actions:?}")
    };
    assert_eq!(offered, "SIP+D2T, SIP+D2U");
    assert_eq!(actions.len(), 2);
    // SRV records of the TLS service over plaintext ports stay TLS.
    let (mut s, _) = Script::start("sips:example.test", &ALL, &cfg(true));
    assert_eq!(s.answer(10, 1, Ok(vec![])), vec![]);
    let actions = s.records(12, 2, vec![srv(0, 0, 5060, "sip1.example.test")]);
    assert_eq!(
        actions[0],
        Action::Targets(vec![spec("sip1.example.test", 5060, Transport::Tls, 0)])
    );
    // Nothing secure allowed: no query at all.
    let (_, first) = Script::start(
        "sips:example.test",
        &[Transport::Udp, Transport::Tcp],
        &cfg(true),
    );
    assert!(matches!(
        &first[..],
        [Action::Failed(LocateError::NoTransport { .. })]
    ));
}

#[test]
fn a_query_past_its_timeout_is_recorded_abandoned_and_location_goes_on() {
    let cfg = LocateConfig {
        query_timeout: ms(800),
        ..cfg(true)
    };
    let (mut s, _) = Script::start("sip:sip1.example.test:5060", &[Transport::Udp], &cfg);
    // AAAA (1) and A (2) at 0 ms; A answers, AAAA never does.
    assert_eq!(
        s.records(5, 2, vec![addr("192.0.2.1")]),
        vec![addresses("sip1.example.test", Family::V4, &["192.0.2.1"])]
    );
    assert_eq!(s.location.next_wake(), Some(s.at(800)));
    assert_eq!(s.timer(799), vec![], "not yet");
    assert_eq!(
        s.timer(800),
        vec![
            Action::Abandon(QueryId(1)),
            addresses("sip1.example.test", Family::V6, &[]),
            Action::Done
        ]
    );
    assert_eq!(s.record(1).outcome, Some(DnsOutcome::Timeout));
    assert_eq!(s.record(1).answered, Some(s.at(800)));
    // Its answer after the timeout is ignored.
    assert_eq!(s.records(900, 1, vec![addr("2001:db8::1")]), vec![]);
    assert_eq!(s.record(1).outcome, Some(DnsOutcome::Timeout));

    // A NAPTR and its pipelined SRV timing out together: the constructed
    // service decides, then the domain's addresses.
    let (mut s, _) = Script::start("sip:example.test", &[Transport::Tcp], &cfg);
    let mut expected = vec![
        Action::Abandon(QueryId(1)),
        Action::Abandon(QueryId(2)),
        Action::Targets(vec![spec(DOMAIN, 5060, Transport::Tcp, 0)]),
    ];
    expected.extend(address_queries(3, DOMAIN));
    assert_eq!(s.timer(800), expected);
    assert_eq!(s.location.next_wake(), Some(s.at(1600)));
}

#[test]
fn hostile_answers_are_bounded() {
    let pipelined = cfg(true);
    let max = pipelined.max_records;
    let (mut s, _) = Script::start(
        "sip:example.test;transport=tcp",
        &[Transport::Tcp],
        &pipelined,
    );
    // 1000 SRV records, 999 dead at better priorities, one live at the worst.
    let mut records: Vec<Record> = (0..999)
        .map(|i| srv((i % 10) as u16, 1, 5060, &format!("dead{i}.example.test")))
        .collect();
    records.push(srv(10, 1, 5060, "live.example.test"));
    let actions = s.records(10, 1, records);
    let Action::Targets(specs) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(specs.len(), max);
    assert_eq!(&*specs.last().unwrap().host, "live.example.test");
    // Every host resolved once per family: bounded by the targets.
    assert_eq!(actions.len(), 1 + 2 * specs.len());
    match &s.record(1).outcome {
        Some(DnsOutcome::Records { shown, total }) => {
            assert_eq!((shown.len(), *total), (max, 1000));
        }
        other => panic!("{other:?}"),
    }
    // 1000 NAPTR services: at most max_records SRV queries; NAPTR's one
    // stage cannot recurse (a replacement naming the domain is just a name).
    let (mut s, _) = Script::start("sip:example.test", &[Transport::Tcp], &cfg(false));
    let mut naptrs: Vec<Record> = (0..1000)
        .map(|i| naptr(10, "SIP+D2T", &format!("_sip._tcp.d{i}.example.test")))
        .collect();
    naptrs.push(naptr(5, "SIP+D2T", DOMAIN));
    let actions = s.records(10, 1, naptrs);
    assert_eq!(actions.len(), max);
    assert_eq!(actions[0], srv_query(2, DOMAIN));
    assert!(actions
        .iter()
        .all(|a| matches!(a, Action::Query(q) if q.rtype == RecordType::Srv)));
    // 1000 addresses in an answer: the first max_records are used.
    let (mut s, _) = Script::start("sip:h.example.test:5060", &[Transport::Udp], &pipelined);
    let many: Vec<Record> = (0..1000u32)
        .map(|i| addr(&format!("10.{}.{}.1", i / 256, i % 256)))
        .collect();
    let actions = s.records(10, 2, many);
    let [Action::Addresses { addrs, .. }] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(addrs.len(), max);
}

#[test]
fn an_ip_literal_sends_no_query() {
    let (s, first) = Script::start("sip:[2001:db8::1]:5070", &ALL, &cfg(true));
    assert_eq!(
        first,
        vec![
            Action::Targets(vec![
                spec("2001:db8::1", 5070, Transport::Udp, 0),
                spec("2001:db8::1", 5070, Transport::Tcp, 1),
            ]),
            addresses("2001:db8::1", Family::V6, &["2001:db8::1"]),
            addresses("2001:db8::1", Family::V4, &[]),
            Action::Done,
        ]
    );
    assert!(s.location.queries().is_empty());
    // A literal of a disabled family fails.
    let v6_only = LocateConfig {
        families: vec![Family::V6],
        ..cfg(true)
    };
    let (_, first) = Script::start("sip:192.0.2.1", &ALL, &v6_only);
    assert!(matches!(
        &first[..],
        [Action::Failed(LocateError::FamilyDisabled { .. })]
    ));
}

#[test]
fn unusable_addresses_are_dropped_and_marked() {
    let (mut s, _) = Script::start("sip:bad.example.test:5060", &[Transport::Udp], &cfg(true));
    let v6 = ["::", "ff02::1", "::ffff:192.0.2.1", "2001:db8::1"];
    assert_eq!(
        s.records(5, 1, v6.iter().map(|ip| addr(ip)).collect()),
        vec![addresses("bad.example.test", Family::V6, &["2001:db8::1"])]
    );
    let v4 = ["0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1"];
    s.records(6, 2, v4.iter().map(|ip| addr(ip)).collect());
    assert_eq!(
        s.record(2).outcome,
        Some(DnsOutcome::Records {
            shown: vec![
                "0.0.0.0 (dropped: unspecified)".into(),
                "224.0.0.1 (dropped: multicast)".into(),
                "255.255.255.255 (dropped: broadcast)".into(),
                "192.0.2.1".into(),
            ],
            total: 4
        })
    );
    // Records of another type (an A in an AAAA answer) are not counted.
    let (mut s, _) = Script::start("sip:h.example.test:5060", &[Transport::Udp], &cfg(true));
    s.records(5, 1, vec![addr("192.0.2.1"), addr("2001:db8::1")]);
    assert_eq!(
        s.record(1).outcome,
        Some(DnsOutcome::Records {
            shown: vec!["2001:db8::1".into()],
            total: 1
        })
    );
}

#[test]
fn the_seed_decides_the_weighted_order() {
    let order = |seed: u64| -> Vec<String> {
        let target = Target::parse("sip:example.test;transport=tcp").unwrap();
        let mut location = Location::new(&target, &[Transport::Tcp], &cfg(true), seed);
        let t0 = Instant::now();
        location.start(t0);
        let records = (0..8)
            .map(|i| srv(0, 10, 5060, &format!("h{i}.example.test")))
            .collect();
        let answer = Answer {
            id: QueryId(1),
            at: t0,
            result: Ok(records),
        };
        location.step(t0, Input::Answer(answer));
        location
            .targets()
            .iter()
            .map(|s| s.host.to_string())
            .collect()
    };
    assert_eq!(order(1), order(1));
    assert!(
        (2..20).any(|seed| order(seed) != order(1)),
        "the seed changes nothing"
    );
}

#[test]
fn unknown_and_repeated_answers_are_ignored() {
    let (mut s, _) = Script::start("sip:h.example.test:5060", &[Transport::Udp], &cfg(true));
    assert_eq!(s.records(1, 99, vec![addr("192.0.2.9")]), vec![]);
    assert_eq!(s.records(2, 2, vec![addr("192.0.2.1")]).len(), 1);
    assert_eq!(s.records(3, 2, vec![addr("192.0.2.2")]), vec![]);
    assert_eq!(s.location.address_answers().len(), 1);
    // Stopped (the dial is over): what is in flight is returned, and
    // every later answer is ignored.
    assert_eq!(s.location.stop(s.at(5)), vec![QueryId(1)]);
    assert_eq!(
        s.record(1).abandoned,
        Some((s.at(5), Abandoned::DialDecided))
    );
    assert_eq!(s.records(4, 1, vec![addr("2001:db8::1")]), vec![]);
    assert_eq!(s.location.result(), None);
}

#[test]
fn configuration_and_transport_failures_come_first() {
    let none = LocateConfig {
        families: vec![],
        ..cfg(true)
    };
    let (_, first) = Script::start("sip:example.test", &ALL, &none);
    assert_eq!(first, vec![Action::Failed(LocateError::NoFamilies)]);
    let (_, first) = Script::start("sip:example.test", &[], &cfg(true));
    assert_eq!(
        first,
        vec![Action::Failed(LocateError::NoTransport {
            target: "sip:example.test".into(),
            allowed: "none".into()
        })]
    );
}

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
    assert_eq!(
        parse_dns_server("dns.example"),
        Err(DnsServerError::Syntax("dns.example".into()))
    );
    // Nothing can be sent to port 0 or to these addresses.
    for bad in [
        "127.0.0.1:0",
        "[::1]:0",
        "0.0.0.0",
        "[::]:53",
        "224.0.0.251:5353",
    ] {
        let err = parse_dns_server(bad).unwrap_err();
        assert!(
            matches!(err, DnsServerError::Unusable { .. }),
            "{bad}: {err:?}"
        );
        assert!(
            err.to_string().contains("cannot be the DNS server"),
            "{bad}: {err}"
        );
    }
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
