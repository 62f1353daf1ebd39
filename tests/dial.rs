//! End-to-end dials on loopback: a real DNS server (the lab's, on
//! hickory-server) serving NAPTR/SRV/AAAA/A that point at real responders on
//! `::1` and `127.0.0.1`. Each test breaks one thing and checks what the
//! dialer did about it from its report and from the responder's counters.
//!
//! No assertion here is a latency claim: where time matters, the test sets
//! a delay so long (10 s) that only the behaviour under test can finish the
//! dial in time, or checks an order or a lower bound the engine guarantees.

use std::net::SocketAddr;
use std::time::Duration;

use siprace::dialer::{Dial, DialError, Dialer, DialerConfig};
use siprace::endpoint::{Family, Transport};
use siprace::lab::dns::{DnsFault, DnsServer, DnsServerConfig};
use siprace::race::strategy::Strategy;
use siprace::report::{DialResult, Report};
use siprace::responder::{self, ListenerConfig, ResponderConfig, ResponderHandle};

mod common;
use common::DOMAIN;

/// Which kind of records the zone has above the addresses.
#[derive(Clone, Copy, PartialEq)]
enum Records {
    NaptrSrv,
    SrvOnly,
    AddressesOnly,
}

fn zone(port: u16, records: Records, transport: Transport) -> String {
    let (service, srv) = match transport {
        Transport::Udp => ("SIP+D2U", "_sip._udp"),
        Transport::Tcp => ("SIP+D2T", "_sip._tcp"),
        other => panic!("no zone for {other}"),
    };
    let mut body = format!("@ IN AAAA ::1\n@ IN A 127.0.0.1\n{}", common::SIP1_LOOPBACK);
    if records == Records::NaptrSrv {
        body += &common::naptr(10, service, srv);
    }
    if records != Records::AddressesOnly {
        body += &common::srv(srv, port, "sip1");
    }
    common::zone(&body)
}

/// How each family's server behaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Server {
    Answers,
    /// Nothing listens: UDP gets ICMP port unreachable, TCP a RST.
    Closed,
    /// A socket that reads and never answers.
    Silent,
}

struct Bed {
    dns: DnsServer,
    responder: ResponderHandle,
    port: u16,
}

impl Bed {
    /// A responder on one port for both families (so one SRV record reaches
    /// both), plus the DNS server. `fixed_port` is for the no-SRV case.
    async fn start(
        v6: Server,
        v4: Server,
        records: Records,
        transport: Transport,
        faults: &[(hickory_proto_rtype::RecordType, DnsFault)],
        fixed_port: Option<u16>,
    ) -> Bed {
        let mut last_err = None;
        for _ in 0..20 {
            let port = match fixed_port {
                Some(p) => p,
                None => common::free_port_on_both(),
            };
            let mut listeners = Vec::new();
            for (server, ip) in [(v6, "::1"), (v4, "127.0.0.1")] {
                if server == Server::Closed {
                    continue;
                }
                let addr = SocketAddr::new(ip.parse().unwrap(), port);
                listeners.push(ListenerConfig {
                    transport,
                    addr,
                    silent: server == Server::Silent,
                });
            }
            let cfg = ResponderConfig {
                listeners,
                ..ResponderConfig::default()
            };
            match responder::start(cfg).await {
                Ok(responder) => {
                    let mut dns_cfg = DnsServerConfig::new(zone(port, records, transport));
                    for (rtype, fault) in faults {
                        dns_cfg = dns_cfg.with_fault(*rtype, *fault);
                    }
                    let dns = common::serve(dns_cfg).await;
                    return Bed {
                        dns,
                        responder,
                        port,
                    };
                }
                Err(e) => last_err = Some(e),
            }
        }
        panic!("could not bind the responder: {last_err:?}");
    }

    fn config(&self, strategy: Strategy) -> DialerConfig {
        let mut cfg = DialerConfig::for_strategy(strategy);
        cfg.locate.dns_server = Some(self.dns.addrs()[0]);
        // Generous: a loaded machine must not turn a slow answer into a
        // timeout (no test here is about DNS timeouts).
        cfg.locate.query_timeout = Duration::from_secs(5);
        // Wait for both address answers: these tests assert what happens to
        // the attempts (IPv6 first), which must not depend on whether a
        // loaded machine handles the AAAA answer within 50 ms of the A
        // answer. The test of the Resolution Delay itself sets it back.
        cfg.race.resolution_delay = None;
        cfg
    }

    /// Dials `<scheme>example.test` with a fresh dialer.
    async fn dial(&self, cfg: DialerConfig, scheme: &str) -> Result<Dial, DialError> {
        Dialer::new(cfg)
            .unwrap()
            .dial(&format!("{scheme}{DOMAIN}"))
            .await
    }

    async fn stop(self) {
        self.responder.shutdown().await;
        self.dns.shutdown().await;
    }
}

/// hickory's record type, re-exported through the lab DNS module's dependency.
mod hickory_proto_rtype {
    pub use hickory_server::proto::rr::RecordType;
}
use hickory_proto_rtype::RecordType;

fn winner(report: &Report) -> (Family, Transport) {
    let w = report.winner_entry().expect("a winner");
    (w.family, w.transport)
}

fn attempt_of(report: &Report, family: Family) -> &siprace::report::AttemptEntry {
    report
        .attempts
        .iter()
        .find(|a| a.family == family)
        .unwrap_or_else(|| panic!("no {family} attempt in\n{}", report.render()))
}

#[tokio::test]
async fn healthy_dual_stack_uses_ipv6_with_a_single_attempt() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let bed = Bed::start(
            Server::Answers,
            Server::Answers,
            Records::NaptrSrv,
            transport,
            &[],
            None,
        )
        .await;
        let mut cfg = bed.config(Strategy::Siprace);
        cfg.connect.probe_streams = true;
        let dial = bed.dial(cfg, "sip:").await.unwrap();
        let report = &dial.report;
        println!("{}", report.render());
        assert_eq!(winner(report), (Family::V6, transport));
        assert_eq!(
            report.attempts.len(),
            1,
            "no second attempt on a healthy path"
        );
        assert_eq!(dial.endpoint.addr.port(), bed.port);
        assert_eq!(dial.response.as_ref().map(|r| r.status), Some(200));
        // The DNS chain really ran: NAPTR, SRV, then AAAA and A for the target.
        let types: Vec<&str> = report.dns.iter().map(|q| q.rtype).collect();
        for t in ["NAPTR", "SRV", "AAAA", "A"] {
            assert!(types.contains(&t), "no {t} query in {types:?}");
        }
        let stats = bed.responder.stats();
        assert_eq!(stats.get(transport, Family::V6).options, 1);
        assert_eq!(stats.get(transport, Family::V4).options, 0);
        bed.stop().await;
    }
}

#[tokio::test]
async fn ipv6_refused_fails_over_at_once() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let bed = Bed::start(
            Server::Closed,
            Server::Answers,
            Records::NaptrSrv,
            transport,
            &[],
            None,
        )
        .await;
        let mut cfg = bed.config(Strategy::Siprace);
        // With a 10 s attempt delay, only the failure itself can start IPv4 in time.
        cfg.race.attempt_delay = Duration::from_secs(10);
        cfg.race.max_attempt_delay = Duration::from_secs(10);
        let dial = bed.dial(cfg, "sip:").await.unwrap();
        let report = &dial.report;
        println!("{}", report.render());
        assert_eq!(winner(report), (Family::V4, transport));
        let v6 = attempt_of(report, Family::V6);
        assert_eq!(v6.outcome, "failed");
        assert_eq!(v6.error_class.as_deref(), Some("refused"));
        let v4 = attempt_of(report, Family::V4);
        assert!(v4.started_ms >= v6.ended_ms.unwrap());
        assert!(report.total_ms < 5_000.0, "failover waited for the timer");
        bed.stop().await;
    }
}

#[tokio::test]
async fn ipv6_silent_over_udp_ipv4_wins_after_the_attempt_delay() {
    let bed = Bed::start(
        Server::Silent,
        Server::Answers,
        Records::NaptrSrv,
        Transport::Udp,
        &[],
        None,
    )
    .await;
    let cfg = bed.config(Strategy::Siprace);
    let delay_ms = cfg.race.attempt_delay.as_secs_f64() * 1000.0;
    let dial = bed.dial(cfg, "sip:").await.unwrap();
    let report = &dial.report;
    println!("{}", report.render());
    assert_eq!(winner(report), (Family::V4, Transport::Udp));
    let v6 = attempt_of(report, Family::V6);
    assert_eq!(v6.outcome, "cancelled");
    assert_eq!(v6.error_class.as_deref(), Some("lost-race"));
    // A fresh dialer knows nothing: the cold attempt delay.
    assert_eq!(v6.attempt_delay_ms, delay_ms);
    let v4 = attempt_of(report, Family::V4);
    // The engine never starts the fallback before the attempt delay.
    assert!(v4.started_ms - v6.started_ms >= delay_ms - 0.001);
    // The silent server did receive the IPv6 probe.
    let stats = bed.responder.stats();
    assert!(stats.get(Transport::Udp, Family::V6).dropped_silent >= 1);
    bed.stop().await;
}

#[tokio::test]
async fn delayed_aaaa_does_not_hold_ipv4_beyond_the_resolution_delay() {
    let faults = [(
        RecordType::AAAA,
        DnsFault::Delay(Duration::from_millis(300)),
    )];
    let bed = Bed::start(
        Server::Answers,
        Server::Answers,
        Records::NaptrSrv,
        Transport::Udp,
        &faults,
        None,
    )
    .await;
    let mut cfg = bed.config(Strategy::Siprace);
    cfg.race.resolution_delay = Strategy::Siprace.race_config().resolution_delay;
    let dial = bed.dial(cfg, "sip:").await.unwrap();
    let report = &dial.report;
    println!("{}", report.render());
    assert_eq!(winner(report), (Family::V4, Transport::Udp));
    let a_at = report
        .addresses
        .iter()
        .find(|a| a.family == Family::V4)
        .unwrap()
        .at_ms;
    let v4 = attempt_of(report, Family::V4);
    assert!(
        v4.started_ms >= a_at + 50.0 - 0.001,
        "started inside the Resolution Delay"
    );
    let aaaa = report.dns.iter().find(|q| q.rtype == "AAAA").unwrap();
    assert!(
        aaaa.answered_ms.is_none_or(|t| t > v4.started_ms),
        "IPv4 waited for AAAA"
    );
    bed.stop().await;
}

#[tokio::test]
async fn without_naptr_srv_is_used() {
    let bed = Bed::start(
        Server::Answers,
        Server::Answers,
        Records::SrvOnly,
        Transport::Tcp,
        &[],
        None,
    )
    .await;
    let mut cfg = bed.config(Strategy::Siprace);
    cfg.transports = Some(vec![Transport::Udp, Transport::Tcp]);
    let dial = bed.dial(cfg, "sip:").await.unwrap();
    let report = &dial.report;
    println!("{}", report.render());
    let naptr = report
        .dns
        .iter()
        .find(|q| q.rtype == "NAPTR")
        .expect("a NAPTR query");
    assert_eq!(naptr.outcome.as_deref(), Some("no-records"));
    assert_eq!(winner(report), (Family::V6, Transport::Tcp));
    assert_eq!(dial.endpoint.addr.port(), bed.port);
    bed.stop().await;
}

#[tokio::test]
async fn without_srv_the_default_port_is_used() {
    // This test alone uses port 5060 on loopback.
    let bed = Bed::start(
        Server::Answers,
        Server::Answers,
        Records::AddressesOnly,
        Transport::Udp,
        &[],
        Some(5060),
    )
    .await;
    let dial = bed
        .dial(bed.config(Strategy::Siprace), "sip:")
        .await
        .unwrap();
    println!("{}", dial.report.render());
    assert_eq!(dial.endpoint.addr.port(), 5060);
    assert_eq!(dial.endpoint.transport, Transport::Udp);
    assert_eq!(&*dial.endpoint.host, DOMAIN);
    bed.stop().await;
}

#[tokio::test]
async fn sips_never_falls_back_to_plaintext() {
    let bed = Bed::start(
        Server::Answers,
        Server::Answers,
        Records::NaptrSrv,
        Transport::Udp,
        &[],
        None,
    )
    .await;
    let err = bed
        .dial(bed.config(Strategy::Siprace), "sips:")
        .await
        .expect_err("a sips: dial to a plaintext-only domain must fail");
    let report = err.report().expect("a report").clone();
    println!("{}", report.render());
    assert!(matches!(err, DialError::Resolution(_)));
    assert!(
        report.attempts.is_empty(),
        "a plaintext attempt was started"
    );
    assert!(report.reason.unwrap().contains("SIPS"));
    assert_eq!(bed.responder.stats().total().messages, 0);
    bed.stop().await;
}

#[tokio::test]
async fn everything_silent_ends_at_the_deadline_with_every_attempt_cancelled() {
    let bed = Bed::start(
        Server::Silent,
        Server::Silent,
        Records::NaptrSrv,
        Transport::Udp,
        &[],
        None,
    )
    .await;
    let mut cfg = bed.config(Strategy::Siprace);
    cfg.race.deadline = Duration::from_millis(700);
    let err = bed.dial(cfg, "sip:").await.unwrap_err();
    let report = err.report().unwrap();
    println!("{}", report.render());
    assert_eq!(report.result, DialResult::Failed);
    assert!(report.reason.as_deref().unwrap().contains("deadline"));
    assert_eq!(report.attempts.len(), 2);
    assert!(report
        .attempts
        .iter()
        .all(|a| a.error_class.as_deref() == Some("deadline")));
    bed.stop().await;
}

#[tokio::test]
async fn history_sends_the_next_dial_straight_to_the_working_family() {
    let bed = Bed::start(
        Server::Silent,
        Server::Answers,
        Records::NaptrSrv,
        Transport::Udp,
        &[],
        None,
    )
    .await;
    let dialer = Dialer::new(bed.config(Strategy::Siprace)).unwrap();
    let cold = dialer.dial(&format!("sip:{DOMAIN}")).await.unwrap();
    assert_eq!(cold.report.attempts.len(), 2);
    let warm = dialer.dial(&format!("sip:{DOMAIN}")).await.unwrap();
    println!("{}", warm.report.render());
    assert_eq!(warm.report.attempts[0].family, Family::V4);
    assert_eq!(winner(&warm.report), (Family::V4, Transport::Udp));
    bed.stop().await;
}

#[tokio::test]
async fn sequential_also_moves_on_after_a_refusal() {
    let bed = Bed::start(
        Server::Closed,
        Server::Answers,
        Records::NaptrSrv,
        Transport::Tcp,
        &[],
        None,
    )
    .await;
    let dial = bed
        .dial(bed.config(Strategy::Sequential), "sip:")
        .await
        .unwrap();
    println!("{}", dial.report.render());
    assert_eq!(winner(&dial.report), (Family::V4, Transport::Tcp));
    assert_eq!(dial.report.attempts[0].family, Family::V6);
    bed.stop().await;
}

/// The largest settings validation allows, everywhere at once, with a short
/// deadline: whatever holds the dial up (a DNS server that never answers, a
/// SIP server that never answers), the deadline is what ends it.
#[tokio::test]
async fn extreme_but_valid_settings_still_end_at_the_deadline() {
    use siprace::race::limits;
    // A DNS server that reads nothing and a SIP port that answers nothing.
    let silent_dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_sip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Duration::from_millis(800);
    let extreme = |cfg: &mut DialerConfig| {
        cfg.race.deadline = deadline;
        cfg.race.preferred_family_count = limits::MAX_PREFERRED_FAMILY_COUNT;
        cfg.race.max_concurrent = limits::MAX_CONCURRENT;
        cfg.race.resolution_delay = Some(limits::MAX_RESOLUTION_DELAY);
        cfg.race.attempt_delay = limits::MAX_ATTEMPT_DELAY;
        cfg.race.max_attempt_delay = limits::MAX_ATTEMPT_DELAY;
        cfg.race.attempt_timeout = Some(limits::MAX_DEADLINE);
        cfg.locate.query_timeout = siprace::locate::MAX_QUERY_TIMEOUT;
        cfg.locate.max_records = siprace::locate::MAX_RECORDS;
        cfg.locate.dns_server = Some(silent_dns.local_addr().unwrap());
        cfg.connect.t1 = siprace::connect::MAX_T1;
        cfg.connect.t2 = siprace::connect::MAX_T2;
    };
    let targets = [
        format!("sip:{DOMAIN}"),
        format!("sip:{};transport=udp", silent_sip.local_addr().unwrap()),
    ];
    for target in targets {
        let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
        extreme(&mut cfg);
        let dialer = Dialer::new(cfg).expect("every setting is within its limits");
        let started = std::time::Instant::now();
        // Far below every other timer in play (DNS 60 s, Timer F 640 s):
        // only the deadline can end the dial inside this bound.
        let bound = siprace::locate::MAX_QUERY_TIMEOUT / 2;
        let err = tokio::time::timeout(bound, dialer.dial(&target))
            .await
            .unwrap_or_else(|_| panic!("{target}: the dial outlived its deadline"))
            .expect_err("nothing answers");
        let took = started.elapsed();
        let report = err.report().expect("a report");
        println!("{}", report.render());
        assert_eq!(report.result, DialResult::Failed, "{target}");
        assert!(
            report.reason.as_deref().unwrap().contains("deadline"),
            "{target}: {:?}",
            report.reason
        );
        assert!(took >= deadline, "{target}: ended before its deadline");
    }
}

#[tokio::test]
async fn a_hand_built_target_with_an_unusable_literal_is_refused() {
    use siprace::target::{Host, Scheme, Target};
    let dialer = Dialer::new(DialerConfig::default()).unwrap();
    for ip in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255"] {
        // Built field by field, so the parser never saw it.
        let target = Target {
            scheme: Scheme::Sip,
            user: None,
            host: Host::Ip(ip.parse().unwrap()),
            port: Some(5060),
            transport: None,
        };
        match dialer.dial_target(&target).await {
            Err(DialError::Target(e)) => assert!(e.reason.contains("cannot be dialed"), "{e}"),
            other => panic!("{ip}: {other:?}"),
        }
    }
}
