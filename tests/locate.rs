//! RFC 3263 location against the lab DNS server on 127.0.0.1:0: the
//! location machine driven by real lookups ([`siprace::dns::locate`]). The
//! exact query sequences are tested with a fake clock in `src/locate/tests.rs`.
#![cfg(feature = "tools")]

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::proto::rr::RecordType as WireType;
use siprace::dns::locate;
use siprace::endpoint::{Family, TargetSpec, Transport};
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::locate::{DnsOutcome, LocateConfig, LocateError, Location, QueryRecord, RecordType};
use siprace::target::Target;

mod common;

/// The name server's own records, above every zone's body.
const NS: &str = "@ IN NS ns\nns IN A 127.0.0.1\n";

const HOSTS: &str =
    "sip1 IN AAAA ::1\nsip1 IN A 127.0.0.1\nsip2 IN AAAA ::2\nsip2 IN A 127.0.0.2\n";

const FULL: &str = "@ IN NAPTR 30 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.test.\n\
@ IN NAPTR 10 50 \"s\" \"SIPS+D2T\" \"\" _sips._tcp.example.test.\n\
@ IN NAPTR 20 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.example.test.\n\
_sips._tcp IN SRV 0 10 5061 sip1.example.test.\n\
_sip._tcp IN SRV 10 10 5060 sip2.example.test.\n\
_sip._tcp IN SRV 0 10 5060 sip1.example.test.\n\
_sip._udp IN SRV 0 10 5060 sip2.example.test.\n";

struct Lab {
    server: DnsServer,
    cfg: LocateConfig,
}

async fn lab(body: &str, faults: &str) -> Lab {
    lab_with(body, faults, false).await
}

async fn lab_with(body: &str, faults: &str, srv_additionals: bool) -> Lab {
    let zone = common::zone(&format!("{NS}{body}"));
    let config = DnsServerConfig::parse(&zone, faults)
        .expect("zone parses")
        .with_srv_additionals(srv_additionals);
    let server = common::serve(config).await;
    let cfg = LocateConfig {
        dns_server: Some(server.addrs()[0]),
        pipelined: true,
        query_timeout: Duration::from_secs(2),
        max_records: 32,
        families: vec![Family::V6, Family::V4],
    };
    Lab { server, cfg }
}

/// Runs location to its end (done or failed) with real lookups and checks
/// the result's contract.
async fn run(uri: &str, transports: Option<&[Transport]>, cfg: &LocateConfig) -> Location {
    let target = Target::parse(uri).unwrap();
    let allowed: Vec<Transport> = match transports {
        Some(t) => target
            .allowed_transports()
            .into_iter()
            .filter(|x| t.contains(x))
            .collect(),
        None => target.allowed_transports(),
    };
    let location = tokio::time::timeout(Duration::from_secs(20), locate(&target, &allowed, cfg))
        .await
        .expect("locate ends")
        .expect("a resolver");
    check_contract(&location, cfg);
    location
}

fn check_contract(location: &Location, cfg: &LocateConfig) {
    let result = location.result().expect("location is over");
    let specs = location.targets();
    if result.is_err() {
        assert!(specs.is_empty(), "{location:#?}");
        assert!(location.address_answers().is_empty(), "{location:#?}");
        return;
    }
    assert!(!specs.is_empty());
    for (i, s) in specs.iter().enumerate() {
        assert_eq!(s.rank, i as u32);
    }
    let mut seen = HashSet::new();
    for a in location.address_answers() {
        assert!(
            seen.insert((a.host.to_string(), a.family)),
            "duplicate address answer: {location:#?}"
        );
    }
    let hosts: HashSet<&str> = specs.iter().map(|s| &*s.host).collect();
    let expected: HashSet<(String, Family)> = hosts
        .iter()
        .flat_map(|h| cfg.families.iter().map(move |f| (h.to_string(), *f)))
        .collect();
    assert_eq!(seen, expected, "{location:#?}");
    // Every query was answered or timed out: nothing left in flight.
    assert!(location.queries().iter().all(|q| q.outcome.is_some()));
}

fn targets(location: &Location) -> Vec<TargetSpec> {
    assert!(!location.targets().is_empty(), "no targets: {location:#?}");
    location.targets().to_vec()
}

fn summary(specs: &[TargetSpec]) -> Vec<(String, u16, Transport)> {
    specs
        .iter()
        .map(|s| (s.host.to_string(), s.port, s.transport))
        .collect()
}

fn of_type(location: &Location, rt: RecordType) -> impl Iterator<Item = &QueryRecord> {
    location.queries().iter().filter(move |q| q.rtype == rt)
}

fn queries_of(location: &Location, rt: RecordType) -> Vec<String> {
    of_type(location, rt).map(|q| q.name.clone()).collect()
}

fn query<'a>(location: &'a Location, n: &str, rt: RecordType) -> &'a QueryRecord {
    of_type(location, rt)
        .find(|q| q.name == n)
        .unwrap_or_else(|| panic!("no {rt:?} query for {n}: {location:#?}"))
}

fn answered(q: &QueryRecord) -> Instant {
    q.answered.unwrap_or_else(|| panic!("unanswered: {q:?}"))
}

/// The address answer for `h`, `fam`: its place among the address
/// answers, its addresses and its time.
fn addresses(location: &Location, h: &str, fam: Family) -> (usize, Vec<IpAddr>, Instant) {
    location
        .address_answers()
        .iter()
        .enumerate()
        .find(|(_, a)| &*a.host == h && a.family == fam)
        .map(|(i, a)| (i, a.addrs.clone(), a.at))
        .unwrap_or_else(|| panic!("no address answer for {h} {fam}: {location:#?}"))
}

fn answer(location: &Location, n: &str, rt: RecordType) -> DnsOutcome {
    query(location, n, rt)
        .outcome
        .clone()
        .unwrap_or_else(|| panic!("no {rt:?} answer for {n}"))
}

fn failure(location: &Location) -> LocateError {
    match location.result() {
        Some(Err(e)) => e.clone(),
        _ => panic!("expected a failure: {location:#?}"),
    }
}

fn full_chain_targets() -> Vec<(String, u16, Transport)> {
    vec![
        ("sip1.example.test".into(), 5061, Transport::Tls),
        ("sip1.example.test".into(), 5060, Transport::Tcp),
        ("sip2.example.test".into(), 5060, Transport::Tcp),
        ("sip2.example.test".into(), 5060, Transport::Udp),
    ]
}

#[tokio::test]
async fn full_chain_pipelined_sends_srv_with_naptr() {
    // A delayed NAPTR makes the overlap visible: the SRV answers come back first.
    let lab = lab(&format!("{FULL}{HOSTS}"), "NAPTR=delay:150ms").await;
    let location = run(
        "sip:example.test",
        Some(&[Transport::Udp, Transport::Tcp, Transport::Tls]),
        &lab.cfg,
    )
    .await;
    assert_eq!(summary(&targets(&location)), full_chain_targets());
    let naptr = query(&location, "example.test", RecordType::Naptr);
    let srv: Vec<&QueryRecord> = of_type(&location, RecordType::Srv).collect();
    // Sent with NAPTR, answered before it.
    assert!(srv.iter().all(|q| q.sent == naptr.sent), "{location:#?}");
    assert!(answered(srv[0]) < answered(naptr), "{location:#?}");
    // The replacements equal the constructed names: no second SRV round.
    let mut srv = queries_of(&location, RecordType::Srv);
    srv.sort();
    assert_eq!(
        srv,
        vec![
            "_sip._tcp.example.test",
            "_sip._udp.example.test",
            "_sips._tcp.example.test"
        ]
    );
    let (_, v6, _) = addresses(&location, "sip1.example.test", Family::V6);
    let (_, v4, _) = addresses(&location, "sip2.example.test", Family::V4);
    assert_eq!(v6, vec!["::1".parse::<IpAddr>().unwrap()]);
    assert_eq!(v4, vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(location.result(), Some(&Ok(())));
    assert!(lab.server.queries().get(WireType::NAPTR) >= 1);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn full_chain_sequential_waits_for_naptr() {
    let mut lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    lab.cfg.pipelined = false;
    let location = run("sip:example.test", None, &lab.cfg).await;
    assert_eq!(summary(&targets(&location)), full_chain_targets());
    let naptr_answer = answered(query(&location, "example.test", RecordType::Naptr));
    let srv: Vec<&QueryRecord> = of_type(&location, RecordType::Srv).collect();
    assert!(srv.iter().all(|q| q.sent >= naptr_answer), "{location:#?}");
    // Only the NAPTR replacements are queried (no _sip._sctp).
    assert_eq!(srv.len(), 3);
    let last_srv_answer = srv.iter().map(|q| answered(q)).max().unwrap();
    let addr_queries =
        of_type(&location, RecordType::Aaaa).chain(of_type(&location, RecordType::A));
    assert!(addr_queries.into_iter().all(|q| q.sent >= last_srv_answer));
    lab.server.shutdown().await;
}

#[tokio::test]
async fn naptr_replacement_outside_the_constructed_names_is_queried_after() {
    let body = "@ IN NAPTR 10 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.pool.example.test.\n\
                _sip._tcp.pool IN SRV 0 0 5070 sip1.example.test.\n\
                _sip._tcp IN SRV 0 0 5060 sip2.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let location = run("sip:example.test", Some(&[Transport::Tcp]), &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("sip1.example.test".into(), 5070, Transport::Tcp)]
    );
    let naptr_answer = answered(query(&location, "example.test", RecordType::Naptr));
    let pool = query(&location, "_sip._tcp.pool.example.test", RecordType::Srv);
    assert!(pool.sent >= naptr_answer);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn no_naptr_uses_srv_per_transport() {
    let body = "_sip._tcp IN SRV 0 0 5062 sip1.example.test.\n\
                _sip._udp IN SRV 0 0 5064 sip2.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let location = run("sip:example.test", None, &lab.cfg).await;
    assert_eq!(
        answer(&location, "example.test", RecordType::Naptr),
        DnsOutcome::NoRecords
    );
    assert_eq!(
        summary(&targets(&location)),
        vec![
            ("sip2.example.test".into(), 5064, Transport::Udp),
            ("sip1.example.test".into(), 5062, Transport::Tcp),
        ]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn naptr_servfail_still_falls_back_to_srv() {
    let body = "_sip._tcp IN SRV 0 0 5062 sip1.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "NAPTR=servfail").await;
    let location = run("sip:example.test", Some(&[Transport::Tcp]), &lab.cfg).await;
    assert_eq!(
        answer(&location, "example.test", RecordType::Naptr),
        DnsOutcome::ServFail
    );
    assert_eq!(
        summary(&targets(&location)),
        vec![("sip1.example.test".into(), 5062, Transport::Tcp)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn unknown_naptr_services_are_ignored() {
    let body = "@ IN NAPTR 10 50 \"u\" \"E2U+sip\" \"!^.*$!sip:info@example.test!\" .\n\
                @ IN NAPTR 10 60 \"s\" \"X-FOO\" \"\" _foo._tcp.example.test.\n\
                _sip._tcp IN SRV 0 0 5062 sip1.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let location = run("sip:example.test", Some(&[Transport::Tcp]), &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("sip1.example.test".into(), 5062, Transport::Tcp)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn no_srv_falls_back_to_the_domain_on_default_ports() {
    let body = "@ IN AAAA ::1\n@ IN A 127.0.0.1\n";
    let lab = lab(body, "").await;
    let location = run("sip:example.test", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![
            ("example.test".into(), 5060, Transport::Udp),
            ("example.test".into(), 5060, Transport::Tcp),
        ]
    );
    let (_, v4, _) = addresses(&location, "example.test", Family::V4);
    assert_eq!(v4, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    // sips: falls back to TLS on 5061.
    let location = run("sips:example.test", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("example.test".into(), 5061, Transport::Tls)]
    );
    assert_eq!(
        queries_of(&location, RecordType::Srv),
        vec!["_sips._tcp.example.test"]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn transport_param_queries_only_its_srv() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let location = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    assert!(queries_of(&location, RecordType::Naptr).is_empty());
    assert_eq!(
        queries_of(&location, RecordType::Srv),
        vec!["_sip._tcp.example.test"]
    );
    assert_eq!(
        summary(&targets(&location)),
        vec![
            ("sip1.example.test".into(), 5060, Transport::Tcp),
            ("sip2.example.test".into(), 5060, Transport::Tcp),
        ]
    );
    assert_eq!(lab.server.queries().get(WireType::NAPTR), 0);
    // Without its SRV: the host on the default port.
    let location = run("sip:sip1.example.test;transport=udp", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("sip1.example.test".into(), 5060, Transport::Udp)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn explicit_port_skips_naptr_and_srv() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let location = run("sip:sip1.example.test:5080", None, &lab.cfg).await;
    assert!(queries_of(&location, RecordType::Naptr).is_empty());
    assert!(queries_of(&location, RecordType::Srv).is_empty());
    assert_eq!(
        summary(&targets(&location)),
        vec![
            ("sip1.example.test".into(), 5080, Transport::Udp),
            ("sip1.example.test".into(), 5080, Transport::Tcp),
        ]
    );
    let q = lab.server.queries();
    assert_eq!(q.get(WireType::NAPTR) + q.get(WireType::SRV), 0);
    assert!(q.get(WireType::AAAA) >= 1 && q.get(WireType::A) >= 1);
    let location = run("sips:sip1.example.test:5081", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("sip1.example.test".into(), 5081, Transport::Tls)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn numeric_ip_sends_no_query() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let location = run("sip:127.0.0.1:5070;transport=tcp", None, &lab.cfg).await;
    assert!(location.queries().is_empty());
    assert_eq!(
        summary(&targets(&location)),
        vec![("127.0.0.1".into(), 5070, Transport::Tcp)]
    );
    let (_, v4, _) = addresses(&location, "127.0.0.1", Family::V4);
    assert_eq!(v4, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    let location = run("sips:[::1]", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("::1".into(), 5061, Transport::Tls)]
    );
    assert_eq!(lab.server.queries().total(), 0);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn sips_with_plaintext_only_naptr_fails_clearly() {
    let body = "@ IN NAPTR 10 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.example.test.\n\
                @ IN NAPTR 20 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.test.\n\
                _sip._tcp IN SRV 0 0 5060 sip1.example.test.\n\
                _sips._tcp IN SRV 0 0 5061 sip1.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let location = run("sips:example.test", None, &lab.cfg).await;
    let err = failure(&location);
    assert!(
        matches!(err, LocateError::NoUsableService { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("example.test"), "{msg}");
    assert!(msg.contains("SIP+D2T") && msg.contains("SIP+D2U"), "{msg}");
    assert!(msg.contains("sips:") && msg.contains("SIPS+D2T"), "{msg}");
    lab.server.shutdown().await;
}

#[tokio::test]
async fn srv_root_target_means_not_offered() {
    let body = "_sip._tcp IN SRV 0 0 0 .\n_sip._udp IN SRV 0 0 0 .\n@ IN A 127.0.0.1\n";
    let lab = lab(body, "").await;
    let location = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    let err = failure(&location);
    assert!(
        matches!(err, LocateError::ServiceNotOffered { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("_sip._tcp.example.test"), "{err}");
    // Both allowed transports say ".": nothing to fall back to.
    let location = run(
        "sip:example.test",
        Some(&[Transport::Udp, Transport::Tcp]),
        &lab.cfg,
    )
    .await;
    assert!(matches!(
        failure(&location),
        LocateError::ServiceNotOffered { .. }
    ));
    // With TLS allowed too and no _sips._tcp SRV, TLS is still tried on the domain.
    let location = run(
        "sip:example.test",
        Some(&[Transport::Udp, Transport::Tcp, Transport::Tls]),
        &lab.cfg,
    )
    .await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("example.test".into(), 5061, Transport::Tls)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn delayed_aaaa_does_not_hold_back_a() {
    let lab = lab(HOSTS, "AAAA=delay:300ms").await;
    let location = run("sip:sip1.example.test:5060", None, &lab.cfg).await;
    let (i4, v4, at4) = addresses(&location, "sip1.example.test", Family::V4);
    let (i6, v6, at6) = addresses(&location, "sip1.example.test", Family::V6);
    assert!(i4 < i6, "{location:#?}");
    assert!(at4 < at6);
    assert_eq!(v4.len(), 1);
    assert_eq!(v6, vec!["::1".parse::<IpAddr>().unwrap()]);
    let q6 = query(&location, "sip1.example.test", RecordType::Aaaa).sent;
    assert!(
        at6.duration_since(q6) >= Duration::from_millis(300),
        "{:?}",
        at6 - q6
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn dropped_aaaa_times_out_empty_while_a_arrives() {
    let mut lab = lab(HOSTS, "AAAA=drop").await;
    lab.cfg.query_timeout = Duration::from_millis(800);
    let location = run("sip:sip1.example.test:5060", None, &lab.cfg).await;
    let (i4, v4, at4) = addresses(&location, "sip1.example.test", Family::V4);
    let (i6, v6, at6) = addresses(&location, "sip1.example.test", Family::V6);
    assert_eq!(v4.len(), 1);
    assert!(v6.is_empty());
    // A is answered and its addresses are out before AAAA gives up.
    let a_answer = answered(query(&location, "sip1.example.test", RecordType::A));
    let aaaa_answer = answered(query(&location, "sip1.example.test", RecordType::Aaaa));
    assert_eq!(a_answer, at4);
    assert!(i4 < i6, "{location:#?}");
    assert!(at4 < aaaa_answer, "{location:#?}");
    assert_eq!(aaaa_answer, at6);
    assert_eq!(
        answer(&location, "sip1.example.test", RecordType::Aaaa),
        DnsOutcome::Timeout
    );
    // The dropped query gets no answer, so AAAA ends at the timeout at the earliest.
    let q6 = query(&location, "sip1.example.test", RecordType::Aaaa).sent;
    let waited = at6.duration_since(q6);
    assert!(waited >= Duration::from_millis(790), "{waited:?}");
    assert_eq!(location.result(), Some(&Ok(())));
    lab.server.shutdown().await;
}

#[tokio::test]
async fn unusable_addresses_are_dropped() {
    let body = "bad IN AAAA ::
bad IN AAAA ::ffff:127.0.0.1
bad IN AAAA ::1
\
                bad IN A 224.0.0.1
bad IN A 0.0.0.0
bad IN A 255.255.255.255
\
                bad IN A 127.0.0.1
\
                worse IN AAAA ::
worse IN A 224.0.0.1
";
    let lab = lab(body, "").await;
    let location = run("sip:bad.example.test:5060", None, &lab.cfg).await;
    assert_eq!(
        addresses(&location, "bad.example.test", Family::V6).1,
        vec!["::1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        addresses(&location, "bad.example.test", Family::V4).1,
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    // The timeline still shows what DNS said, and what was dropped.
    match answer(&location, "bad.example.test", RecordType::A) {
        DnsOutcome::Records { shown: r, .. } => {
            assert_eq!(r.len(), 4, "{r:?}");
            assert!(
                r.contains(&"224.0.0.1 (dropped: multicast)".to_string()),
                "{r:?}"
            );
            assert!(r.contains(&"127.0.0.1".to_string()), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    match answer(&location, "bad.example.test", RecordType::Aaaa) {
        DnsOutcome::Records { shown: r, .. } => {
            assert!(
                r.contains(&":: (dropped: unspecified)".to_string()),
                "{r:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing usable at all: empty Addresses, location itself still done.
    let location = run("sip:worse.example.test:5060", None, &lab.cfg).await;
    assert!(addresses(&location, "worse.example.test", Family::V6)
        .1
        .is_empty());
    assert!(addresses(&location, "worse.example.test", Family::V4)
        .1
        .is_empty());
    assert_eq!(location.result(), Some(&Ok(())));
    lab.server.shutdown().await;
}

#[tokio::test]
async fn servfail_and_nxdomain_give_empty_addresses() {
    let sf = lab(HOSTS, "AAAA=servfail").await;
    let location = run("sip:sip1.example.test:5060", None, &sf.cfg).await;
    assert_eq!(
        answer(&location, "sip1.example.test", RecordType::Aaaa),
        DnsOutcome::ServFail
    );
    assert!(addresses(&location, "sip1.example.test", Family::V6)
        .1
        .is_empty());
    assert_eq!(
        addresses(&location, "sip1.example.test", Family::V4)
            .1
            .len(),
        1
    );
    // A name that does not exist.
    let location = run("sip:nowhere.example.test:5060", None, &sf.cfg).await;
    assert_eq!(
        answer(&location, "nowhere.example.test", RecordType::A),
        DnsOutcome::NxDomain
    );
    assert!(addresses(&location, "nowhere.example.test", Family::V4)
        .1
        .is_empty());
    assert_eq!(location.result(), Some(&Ok(())));
    sf.server.shutdown().await;
    // The NXDOMAIN fault.
    let lab = lab(HOSTS, "A=nxdomain").await;
    let location = run("sip:sip1.example.test:5060", None, &lab.cfg).await;
    assert_eq!(
        answer(&location, "sip1.example.test", RecordType::A),
        DnsOutcome::NxDomain
    );
    assert_eq!(
        addresses(&location, "sip1.example.test", Family::V6)
            .1
            .len(),
        1
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn cname_chains_are_followed() {
    let body = "alias IN CNAME sip1.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let location = run("sip:alias.example.test:5060", None, &lab.cfg).await;
    assert_eq!(
        addresses(&location, "alias.example.test", Family::V4).1,
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn huge_srv_set_is_capped_without_starving_a_priority() {
    let mut body = String::new();
    for i in 0..100 {
        body.push_str(&format!(
            "_sip._tcp IN SRV {} 1 5060 h{i}.example.test.\n",
            i % 3
        ));
        body.push_str(&format!("h{i} IN A 127.0.1.{}\n", i + 1));
    }
    // With the additionals hickory adds, the UDP answer overflows and is truncated.
    let mut lab = lab_with(&body, "", true).await;
    lab.cfg.max_records = 8;
    lab.cfg.families = vec![Family::V4];
    let location = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    let specs = targets(&location);
    // Priority 0 holds 34 records, 1 and 2 hold 33 each. The 8 kept share
    // the levels: one each, then up to 2 each, then the rest to priority 0.
    let priorities: Vec<u32> = specs
        .iter()
        .map(|s| {
            let i: u32 = s
                .host
                .trim_start_matches('h')
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            i % 3
        })
        .collect();
    assert_eq!(priorities, vec![0, 0, 0, 0, 1, 1, 2, 2], "{specs:?}");
    // The answer says how many records arrived, not how many are shown.
    match answer(&location, "_sip._tcp.example.test", RecordType::Srv) {
        DnsOutcome::Records { shown, total } => {
            assert_eq!(shown.len(), 8);
            assert_eq!(total, 100);
        }
        other => panic!("{other:?}"),
    }
    lab.server.shutdown().await;
}

#[tokio::test]
async fn truncated_udp_answers_are_retried_over_tcp() {
    let body = "_sip._tcp IN SRV 0 0 5062 sip1.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "SRV=truncate").await;
    let location = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&location)),
        vec![("sip1.example.test".into(), 5062, Transport::Tcp)]
    );
    assert!(lab.server.queries().tcp(WireType::SRV) >= 1);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn srv_weights_shape_the_order() {
    let body = "_sip._tcp IN SRV 0 0 5060 first.example.test.\n\
                _sip._tcp IN SRV 5 90 5060 heavy.example.test.\n\
                _sip._tcp IN SRV 5 10 5060 light.example.test.\n\
                _sip._tcp IN SRV 9 50 5060 last.example.test.\n";
    let mut lab = lab(body, "").await;
    lab.cfg.families = vec![Family::V4];
    let mut heavy_second = 0;
    // P(light second) ≈ 0.1 per run: 40 runs missed it ~1.2% of the time;
    // 200 runs miss it with probability ~3e-10.
    let runs = 200;
    for _ in 0..runs {
        let location = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
        let hosts: Vec<String> = targets(&location)
            .iter()
            .map(|s| s.host.to_string())
            .collect();
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[0], "first.example.test");
        assert_eq!(hosts[3], "last.example.test");
        if hosts[1] == "heavy.example.test" {
            heavy_second += 1;
        }
    }
    // P(heavy second) ≈ 0.9: 200 runs give about 179 (σ ≈ 4.3); fewer than
    // 150 is ~1e-11 likely.
    assert!(heavy_second >= 150, "{heavy_second}/{runs}");
    assert!(
        heavy_second < runs,
        "light never came second in {runs} runs"
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn shared_hosts_are_resolved_once() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let location = run("sip:example.test", None, &lab.cfg).await;
    let aaaa = queries_of(&location, RecordType::Aaaa);
    assert_eq!(aaaa.len(), 2, "{aaaa:?}");
    let hosts: Vec<Arc<str>> = targets(&location).into_iter().map(|s| s.host).collect();
    assert!(Arc::ptr_eq(&hosts[0], &hosts[1]));
    lab.server.shutdown().await;
}
