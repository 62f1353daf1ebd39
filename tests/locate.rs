//! RFC 3263 location against the lab DNS server on 127.0.0.1:0.
#![cfg(feature = "tools")]

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::rr::RecordType;
use siprace::endpoint::{Family, TargetSpec, Transport};
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::locate::{locate, DnsOutcome, LocateConfig, LocateError, LocateEvent};
use siprace::target::Target;

const HEAD: &str = "$ORIGIN example.test.\n$TTL 0\n\
@ IN SOA ns.example.test. admin.example.test. 1 60 60 60 0\n\
@ IN NS ns\nns IN A 127.0.0.1\n";

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
    let zone = format!("{HEAD}{body}");
    let config = DnsServerConfig::parse(&zone, faults)
        .expect("zone parses")
        .with_srv_additionals(srv_additionals);
    let server = DnsServer::start(config, &["127.0.0.1:0".parse().unwrap()])
        .await
        .expect("lab dns starts");
    let cfg = LocateConfig {
        dns_server: Some(server.addrs()[0]),
        pipelined: true,
        query_timeout: Duration::from_secs(2),
        max_records: 32,
        families: vec![Family::V6, Family::V4],
    };
    Lab { server, cfg }
}

/// Runs location to its end (Done or Failed) and checks the event contract.
async fn run(uri: &str, transports: Option<&[Transport]>, cfg: &LocateConfig) -> Vec<LocateEvent> {
    let target = Target::parse(uri).unwrap();
    let allowed: Vec<Transport> = match transports {
        Some(t) => target
            .allowed_transports()
            .into_iter()
            .filter(|x| t.contains(x))
            .collect(),
        None => target.allowed_transports(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cfg2 = cfg.clone();
    let task = tokio::spawn(async move { locate(&target, &allowed, &cfg2, tx).await });
    let mut events = Vec::new();
    let collect = async {
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("locate ends");
    task.await.unwrap();
    check_contract(&events, cfg);
    events
}

fn check_contract(events: &[LocateEvent], cfg: &LocateConfig) {
    let last = events.last().expect("some event");
    let terminal = events
        .iter()
        .filter(|e| matches!(e, LocateEvent::Done | LocateEvent::Failed(_)))
        .count();
    assert_eq!(terminal, 1, "{events:#?}");
    assert!(matches!(last, LocateEvent::Done | LocateEvent::Failed(_)));
    let targets_at = events
        .iter()
        .position(|e| matches!(e, LocateEvent::Targets(_)));
    let targets_count = events
        .iter()
        .filter(|e| matches!(e, LocateEvent::Targets(_)))
        .count();
    if let LocateEvent::Failed(_) = last {
        assert_eq!(targets_count, 0, "{events:#?}");
        return;
    }
    assert_eq!(targets_count, 1, "{events:#?}");
    let targets_at = targets_at.unwrap();
    let LocateEvent::Targets(specs) = &events[targets_at] else {
        unreachable!()
    };
    assert!(!specs.is_empty());
    for (i, s) in specs.iter().enumerate() {
        assert_eq!(s.rank, i as u32);
    }
    let mut seen = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        if let LocateEvent::Addresses { host, family, .. } = e {
            assert!(i > targets_at, "Addresses before Targets: {events:#?}");
            assert!(
                seen.insert((host.to_string(), *family)),
                "duplicate Addresses: {events:#?}"
            );
        }
    }
    let hosts: HashSet<&str> = specs.iter().map(|s| &*s.host).collect();
    let expected: HashSet<(String, Family)> = hosts
        .iter()
        .flat_map(|h| cfg.families.iter().map(move |f| (h.to_string(), *f)))
        .collect();
    assert_eq!(seen, expected, "{events:#?}");
}

fn targets(events: &[LocateEvent]) -> Vec<TargetSpec> {
    events
        .iter()
        .find_map(|e| match e {
            LocateEvent::Targets(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Targets: {events:#?}"))
}

fn summary(specs: &[TargetSpec]) -> Vec<(String, u16, Transport)> {
    specs
        .iter()
        .map(|s| (s.host.to_string(), s.port, s.transport))
        .collect()
}

fn pos(events: &[LocateEvent], f: impl Fn(&LocateEvent) -> bool) -> Option<usize> {
    events.iter().position(f)
}

fn is_query(e: &LocateEvent, rt: &str) -> bool {
    matches!(e, LocateEvent::Query { rtype, .. } if *rtype == rt)
}

fn is_answer(e: &LocateEvent, rt: &str) -> bool {
    matches!(e, LocateEvent::Answer { rtype, .. } if *rtype == rt)
}

fn queries_of(events: &[LocateEvent], rt: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            LocateEvent::Query { name, rtype, .. } if *rtype == rt => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn addresses(
    events: &[LocateEvent],
    h: &str,
    fam: Family,
) -> (usize, Vec<IpAddr>, tokio::time::Instant) {
    events
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            LocateEvent::Addresses {
                host,
                family,
                addrs,
                at,
            } if &**host == h && *family == fam => Some((i, addrs.clone(), *at)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Addresses for {h} {fam}: {events:#?}"))
}

fn query_at(events: &[LocateEvent], n: &str, rt: &str) -> tokio::time::Instant {
    events
        .iter()
        .find_map(|e| match e {
            LocateEvent::Query { name, rtype, at } if name == n && *rtype == rt => Some(*at),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {rt} query for {n}"))
}

fn answer(events: &[LocateEvent], n: &str, rt: &str) -> DnsOutcome {
    events
        .iter()
        .find_map(|e| match e {
            LocateEvent::Answer {
                name,
                rtype,
                outcome,
                ..
            } if name == n && *rtype == rt => Some(outcome.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {rt} answer for {n}"))
}

fn failure(events: &[LocateEvent]) -> LocateError {
    match events.last() {
        Some(LocateEvent::Failed(e)) => e.clone(),
        _ => panic!("expected Failed: {events:#?}"),
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
    let events = run(
        "sip:example.test",
        Some(&[Transport::Udp, Transport::Tcp, Transport::Tls]),
        &lab.cfg,
    )
    .await;
    assert_eq!(summary(&targets(&events)), full_chain_targets());
    let naptr_answer = pos(&events, |e| is_answer(e, "NAPTR")).unwrap();
    let first_srv_query = pos(&events, |e| is_query(e, "SRV")).unwrap();
    let first_srv_answer = pos(&events, |e| is_answer(e, "SRV")).unwrap();
    assert!(first_srv_query < naptr_answer, "{events:#?}");
    assert!(first_srv_answer < naptr_answer, "{events:#?}");
    // The replacements equal the constructed names: no second SRV round.
    let mut srv = queries_of(&events, "SRV");
    srv.sort();
    assert_eq!(
        srv,
        vec![
            "_sip._tcp.example.test",
            "_sip._udp.example.test",
            "_sips._tcp.example.test"
        ]
    );
    let (_, v6, _) = addresses(&events, "sip1.example.test", Family::V6);
    let (_, v4, _) = addresses(&events, "sip2.example.test", Family::V4);
    assert_eq!(v6, vec!["::1".parse::<IpAddr>().unwrap()]);
    assert_eq!(v4, vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(events.last(), Some(&LocateEvent::Done));
    assert!(lab.server.queries().get(RecordType::NAPTR) >= 1);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn full_chain_sequential_waits_for_naptr() {
    let mut lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    lab.cfg.pipelined = false;
    let events = run("sip:example.test", None, &lab.cfg).await;
    assert_eq!(summary(&targets(&events)), full_chain_targets());
    let naptr_answer = pos(&events, |e| is_answer(e, "NAPTR")).unwrap();
    let first_srv_query = pos(&events, |e| is_query(e, "SRV")).unwrap();
    assert!(first_srv_query > naptr_answer, "{events:#?}");
    // Only the NAPTR replacements are queried (no _sip._sctp).
    assert_eq!(queries_of(&events, "SRV").len(), 3);
    let first_addr_query = pos(&events, |e| is_query(e, "AAAA") || is_query(e, "A")).unwrap();
    let last_srv_answer = events.iter().rposition(|e| is_answer(e, "SRV")).unwrap();
    assert!(first_addr_query > last_srv_answer);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn naptr_replacement_outside_the_constructed_names_is_queried_after() {
    let body = "@ IN NAPTR 10 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.pool.example.test.\n\
                _sip._tcp.pool IN SRV 0 0 5070 sip1.example.test.\n\
                _sip._tcp IN SRV 0 0 5060 sip2.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let events = run("sip:example.test", Some(&[Transport::Tcp]), &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("sip1.example.test".into(), 5070, Transport::Tcp)]
    );
    let naptr_answer = pos(&events, |e| is_answer(e, "NAPTR")).unwrap();
    let pool_query = pos(&events, |e| {
        matches!(e, LocateEvent::Query { name, rtype: "SRV", .. } if name == "_sip._tcp.pool.example.test")
    })
    .unwrap();
    assert!(pool_query > naptr_answer);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn no_naptr_uses_srv_per_transport() {
    let body = "_sip._tcp IN SRV 0 0 5062 sip1.example.test.\n\
                _sip._udp IN SRV 0 0 5064 sip2.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let events = run("sip:example.test", None, &lab.cfg).await;
    assert_eq!(
        answer(&events, "example.test", "NAPTR"),
        DnsOutcome::NoRecords
    );
    assert_eq!(
        summary(&targets(&events)),
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
    let events = run("sip:example.test", Some(&[Transport::Tcp]), &lab.cfg).await;
    assert_eq!(
        answer(&events, "example.test", "NAPTR"),
        DnsOutcome::ServFail
    );
    assert_eq!(
        summary(&targets(&events)),
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
    let events = run("sip:example.test", Some(&[Transport::Tcp]), &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("sip1.example.test".into(), 5062, Transport::Tcp)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn no_srv_falls_back_to_the_domain_on_default_ports() {
    let body = "@ IN AAAA ::1\n@ IN A 127.0.0.1\n";
    let lab = lab(body, "").await;
    let events = run("sip:example.test", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![
            ("example.test".into(), 5060, Transport::Udp),
            ("example.test".into(), 5060, Transport::Tcp),
        ]
    );
    let (_, v4, _) = addresses(&events, "example.test", Family::V4);
    assert_eq!(v4, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    // sips: falls back to TLS on 5061.
    let events = run("sips:example.test", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("example.test".into(), 5061, Transport::Tls)]
    );
    assert_eq!(queries_of(&events, "SRV"), vec!["_sips._tcp.example.test"]);
    lab.server.shutdown().await;
}

#[tokio::test]
async fn transport_param_queries_only_its_srv() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let events = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    assert!(queries_of(&events, "NAPTR").is_empty());
    assert_eq!(queries_of(&events, "SRV"), vec!["_sip._tcp.example.test"]);
    assert_eq!(
        summary(&targets(&events)),
        vec![
            ("sip1.example.test".into(), 5060, Transport::Tcp),
            ("sip2.example.test".into(), 5060, Transport::Tcp),
        ]
    );
    assert_eq!(lab.server.queries().get(RecordType::NAPTR), 0);
    // Without its SRV: the host on the default port.
    let events = run("sip:sip1.example.test;transport=udp", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("sip1.example.test".into(), 5060, Transport::Udp)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn explicit_port_skips_naptr_and_srv() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let events = run("sip:sip1.example.test:5080", None, &lab.cfg).await;
    assert!(queries_of(&events, "NAPTR").is_empty());
    assert!(queries_of(&events, "SRV").is_empty());
    assert_eq!(
        summary(&targets(&events)),
        vec![
            ("sip1.example.test".into(), 5080, Transport::Udp),
            ("sip1.example.test".into(), 5080, Transport::Tcp),
        ]
    );
    let q = lab.server.queries();
    assert_eq!(q.get(RecordType::NAPTR) + q.get(RecordType::SRV), 0);
    assert!(q.get(RecordType::AAAA) >= 1 && q.get(RecordType::A) >= 1);
    let events = run("sips:sip1.example.test:5081", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("sip1.example.test".into(), 5081, Transport::Tls)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn numeric_ip_sends_no_query() {
    let lab = lab(&format!("{FULL}{HOSTS}"), "").await;
    let events = run("sip:127.0.0.1:5070;transport=tcp", None, &lab.cfg).await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, LocateEvent::Query { .. })));
    assert_eq!(
        summary(&targets(&events)),
        vec![("127.0.0.1".into(), 5070, Transport::Tcp)]
    );
    let (_, v4, _) = addresses(&events, "127.0.0.1", Family::V4);
    assert_eq!(v4, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    let events = run("sips:[::1]", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
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
    let events = run("sips:example.test", None, &lab.cfg).await;
    let err = failure(&events);
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
    let events = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    let err = failure(&events);
    assert!(
        matches!(err, LocateError::ServiceNotOffered { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("_sip._tcp.example.test"), "{err}");
    // Both allowed transports say ".": nothing to fall back to.
    let events = run(
        "sip:example.test",
        Some(&[Transport::Udp, Transport::Tcp]),
        &lab.cfg,
    )
    .await;
    assert!(matches!(
        failure(&events),
        LocateError::ServiceNotOffered { .. }
    ));
    // With TLS allowed too and no _sips._tcp SRV, TLS is still tried on the domain.
    let events = run(
        "sip:example.test",
        Some(&[Transport::Udp, Transport::Tcp, Transport::Tls]),
        &lab.cfg,
    )
    .await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("example.test".into(), 5061, Transport::Tls)]
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn delayed_aaaa_does_not_hold_back_a() {
    let lab = lab(HOSTS, "AAAA=delay:300ms").await;
    let events = run("sip:sip1.example.test:5060", None, &lab.cfg).await;
    let (i4, v4, at4) = addresses(&events, "sip1.example.test", Family::V4);
    let (i6, v6, at6) = addresses(&events, "sip1.example.test", Family::V6);
    assert!(i4 < i6, "{events:#?}");
    assert!(at4 < at6);
    assert_eq!(v4.len(), 1);
    assert_eq!(v6, vec!["::1".parse::<IpAddr>().unwrap()]);
    let q6 = query_at(&events, "sip1.example.test", "AAAA");
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
    let events = run("sip:sip1.example.test:5060", None, &lab.cfg).await;
    let (i4, v4, at4) = addresses(&events, "sip1.example.test", Family::V4);
    let (i6, v6, at6) = addresses(&events, "sip1.example.test", Family::V6);
    assert_eq!(v4.len(), 1);
    assert!(v6.is_empty());
    // A is answered and its addresses are out before AAAA gives up.
    let a_answer = pos(&events, |e| is_answer(e, "A")).unwrap();
    let aaaa_answer = pos(&events, |e| is_answer(e, "AAAA")).unwrap();
    assert!(a_answer < i4, "{events:#?}");
    assert!(i4 < aaaa_answer, "{events:#?}");
    assert!(aaaa_answer < i6, "{events:#?}");
    assert!(at4 <= at6);
    assert_eq!(
        answer(&events, "sip1.example.test", "AAAA"),
        DnsOutcome::Timeout
    );
    // The dropped query gets no answer, so AAAA ends at the timeout at the earliest.
    let q6 = query_at(&events, "sip1.example.test", "AAAA");
    let waited = at6.duration_since(q6);
    assert!(waited >= Duration::from_millis(790), "{waited:?}");
    assert_eq!(events.last(), Some(&LocateEvent::Done));
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
    let events = run("sip:bad.example.test:5060", None, &lab.cfg).await;
    assert_eq!(
        addresses(&events, "bad.example.test", Family::V6).1,
        vec!["::1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        addresses(&events, "bad.example.test", Family::V4).1,
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    // The timeline still shows what DNS said, and what was dropped.
    match answer(&events, "bad.example.test", "A") {
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
    match answer(&events, "bad.example.test", "AAAA") {
        DnsOutcome::Records { shown: r, .. } => {
            assert!(
                r.contains(&":: (dropped: unspecified)".to_string()),
                "{r:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing usable at all: empty Addresses, location itself still done.
    let events = run("sip:worse.example.test:5060", None, &lab.cfg).await;
    assert!(addresses(&events, "worse.example.test", Family::V6)
        .1
        .is_empty());
    assert!(addresses(&events, "worse.example.test", Family::V4)
        .1
        .is_empty());
    assert_eq!(events.last(), Some(&LocateEvent::Done));
    lab.server.shutdown().await;
}

#[tokio::test]
async fn servfail_and_nxdomain_give_empty_addresses() {
    let sf = lab(HOSTS, "AAAA=servfail").await;
    let events = run("sip:sip1.example.test:5060", None, &sf.cfg).await;
    assert_eq!(
        answer(&events, "sip1.example.test", "AAAA"),
        DnsOutcome::ServFail
    );
    assert!(addresses(&events, "sip1.example.test", Family::V6)
        .1
        .is_empty());
    assert_eq!(
        addresses(&events, "sip1.example.test", Family::V4).1.len(),
        1
    );
    // A name that does not exist.
    let events = run("sip:nowhere.example.test:5060", None, &sf.cfg).await;
    assert_eq!(
        answer(&events, "nowhere.example.test", "A"),
        DnsOutcome::NxDomain
    );
    assert!(addresses(&events, "nowhere.example.test", Family::V4)
        .1
        .is_empty());
    assert_eq!(events.last(), Some(&LocateEvent::Done));
    sf.server.shutdown().await;
    // The NXDOMAIN fault.
    let lab = lab(HOSTS, "A=nxdomain").await;
    let events = run("sip:sip1.example.test:5060", None, &lab.cfg).await;
    assert_eq!(
        answer(&events, "sip1.example.test", "A"),
        DnsOutcome::NxDomain
    );
    assert_eq!(
        addresses(&events, "sip1.example.test", Family::V6).1.len(),
        1
    );
    lab.server.shutdown().await;
}

#[tokio::test]
async fn cname_chains_are_followed() {
    let body = "alias IN CNAME sip1.example.test.\n";
    let lab = lab(&format!("{body}{HOSTS}"), "").await;
    let events = run("sip:alias.example.test:5060", None, &lab.cfg).await;
    assert_eq!(
        addresses(&events, "alias.example.test", Family::V4).1,
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
    let events = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    let specs = targets(&events);
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
    match answer(&events, "_sip._tcp.example.test", "SRV") {
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
    let events = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
    assert_eq!(
        summary(&targets(&events)),
        vec![("sip1.example.test".into(), 5062, Transport::Tcp)]
    );
    assert!(lab.server.queries().tcp(RecordType::SRV) >= 1);
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
        let events = run("sip:example.test;transport=tcp", None, &lab.cfg).await;
        let hosts: Vec<String> = targets(&events)
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
    let events = run("sip:example.test", None, &lab.cfg).await;
    let aaaa = queries_of(&events, "AAAA");
    assert_eq!(aaaa.len(), 2, "{aaaa:?}");
    let hosts: Vec<Arc<str>> = targets(&events).into_iter().map(|s| s.host).collect();
    assert!(Arc::ptr_eq(&hosts[0], &hosts[1]));
    lab.server.shutdown().await;
}
