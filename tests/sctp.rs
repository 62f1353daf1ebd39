//! SCTP (RFC 4168) on loopback.
//!
//! Where the kernel has no SCTP (socket() fails with EPROTONOSUPPORT, as on
//! the development machines), SCTP candidates must fail at once as
//! "unsupported" and the dial must go on over TCP without waiting. Where the
//! kernel has SCTP, a live dial to the responder runs instead. A test that
//! cannot run its part here says so on stderr ("SKIPPED: ...", written past
//! the test harness's capture) and asserts nothing about that part.
//!
//! No assertion here is a latency claim: the attempt delay is set to 10 s so
//! that only an immediate failure can let TCP start in time.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use siprace::connect::sctp::{kernel_supported, UNSUPPORTED};
use siprace::connect::{self, ConnectConfig};
use siprace::dialer::{Dialer, DialerConfig};
use siprace::endpoint::{Endpoint, ErrorClass, Family, Transport};
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::race::strategy::Strategy;
use siprace::responder::{self, ListenerConfig, ResponderConfig, ResponderHandle};

mod common;

const DOMAIN: &str = "example.test";

/// Says, past the harness's output capture, that part of a test did not run.
fn skipped(what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: kernel has no SCTP (EPROTONOSUPPORT): {what}"
    );
}

async fn responder_on_both(transport: Transport) -> ResponderHandle {
    common::responder_on_both(&[transport], ResponderConfig::default()).await
}

#[tokio::test]
async fn sctp_first_in_naptr_unsupported_kernel_moves_on_to_tcp_at_once() {
    let responder = responder_on_both(Transport::Tcp).await;
    let port = responder.addr(Transport::Tcp, Family::V6).unwrap().port();
    // SIP+D2S first, SIP+D2T second; the same host and port for both.
    let zone = format!(
        "$ORIGIN {DOMAIN}.\n$TTL 0\n@ IN SOA ns.{DOMAIN}. admin.{DOMAIN}. 1 60 60 60 0\n\
         sip1 IN AAAA ::1\nsip1 IN A 127.0.0.1\n\
         @ IN NAPTR 10 50 \"s\" \"SIP+D2S\" \"\" _sip._sctp.{DOMAIN}.\n\
         @ IN NAPTR 20 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.{DOMAIN}.\n\
         _sip._sctp IN SRV 0 10 {port} sip1.{DOMAIN}.\n\
         _sip._tcp IN SRV 0 10 {port} sip1.{DOMAIN}.\n"
    );
    let dns = DnsServer::start(
        DnsServerConfig::new(zone),
        &["127.0.0.1:0".parse().unwrap()],
    )
    .await
    .unwrap();
    let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
    cfg.locate.dns_server = Some(dns.addrs()[0]);
    cfg.locate.query_timeout = Duration::from_millis(800);
    cfg.race.attempt_delay = Duration::from_secs(10);
    cfg.race.max_attempt_delay = Duration::from_secs(10);
    let dial = Dialer::new(cfg)
        .unwrap()
        .dial(&format!("sip:{DOMAIN}"))
        .await
        .unwrap();
    let report = &dial.report;
    println!("{}", report.render());
    let w = report.winner_entry().unwrap();
    assert_eq!((w.transport, w.family), (Transport::Tcp, Family::V6));
    responder.shutdown().await;
    dns.shutdown().await;

    if kernel_supported() {
        skipped("this kernel HAS SCTP, so the unsupported path was not taken; only the TCP win was checked");
        return;
    }
    let sctp: Vec<_> = report
        .attempts
        .iter()
        .filter(|a| a.transport == Transport::Sctp)
        .collect();
    assert!(!sctp.is_empty(), "SCTP was not tried first");
    assert_eq!(report.attempts[0].transport, Transport::Sctp);
    for a in &sctp {
        assert_eq!(a.error_class.as_deref(), Some("unsupported"), "{a:?}");
        assert_eq!(a.detail.as_deref(), Some(UNSUPPORTED));
    }
    let last_sctp_end = sctp.iter().filter_map(|a| a.ended_ms).fold(0.0, f64::max);
    let first_tcp = report
        .attempts
        .iter()
        .find(|a| a.transport == Transport::Tcp)
        .unwrap();
    assert!(first_tcp.started_ms >= last_sctp_end);
    assert!(
        report.total_ms < 5_000.0,
        "TCP waited for the 10 s attempt delay instead of starting when SCTP failed"
    );
}

#[tokio::test]
async fn responder_refuses_sctp_clearly_where_the_kernel_has_none() {
    let res = responder::start(ResponderConfig {
        listeners: vec![ListenerConfig {
            transport: Transport::Sctp,
            addr: "127.0.0.1:0".parse().unwrap(),
            silent: false,
        }],
        ..ResponderConfig::default()
    })
    .await;
    if kernel_supported() {
        skipped("this kernel HAS SCTP: the refusal cannot be observed here");
        res.expect("an SCTP listener where the kernel has SCTP")
            .shutdown()
            .await;
        return;
    }
    let err = res.expect_err("no SCTP listener without kernel support");
    println!("{err}");
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    assert!(err.to_string().contains(UNSUPPORTED), "{err}");
    assert!(err.to_string().contains("sctp:127.0.0.1:0"), "{err}");
}

#[tokio::test]
async fn live_sctp_dial_to_the_responder() {
    if !kernel_supported() {
        skipped("live SCTP dial not run (nothing about it is claimed)");
        return;
    }
    let responder = responder_on_both(Transport::Sctp).await;
    for family in [Family::V6, Family::V4] {
        let addr = responder.addr(Transport::Sctp, family).unwrap();
        let endpoint = Endpoint {
            transport: Transport::Sctp,
            addr,
            host: Arc::from("sip1.example.test"),
            rank: 0,
        };
        let cfg = ConnectConfig {
            probe_streams: true,
            ..ConnectConfig::default()
        };
        let c = connect::attempt(&endpoint, &cfg, &|_| {}).await.unwrap();
        assert_eq!(c.response.unwrap().status, 200);
        let stream = connect::sctp::into_stream(c.connection).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
    }
    // And through the dialer, to an IP literal with ;transport=sctp.
    let port = responder.addr(Transport::Sctp, Family::V6).unwrap().port();
    let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
    cfg.connect.probe_streams = true;
    let dial = Dialer::new(cfg)
        .unwrap()
        .dial(&format!("sip:[::1]:{port};transport=sctp"))
        .await
        .unwrap();
    println!("{}", dial.report.render());
    assert_eq!(dial.endpoint.transport, Transport::Sctp);
    let stats = responder.shutdown().await;
    assert_eq!(stats.sctp.ipv6.options, 2);
    assert_eq!(stats.sctp.ipv4.options, 1);
}

#[tokio::test]
async fn sctp_attempt_fails_at_once_as_unsupported_without_kernel_support() {
    if kernel_supported() {
        skipped("this kernel HAS SCTP: the unsupported attempt cannot be observed here");
        return;
    }
    let endpoint = Endpoint {
        transport: Transport::Sctp,
        addr: "[::1]:5060".parse().unwrap(),
        host: Arc::from("sip1.example.test"),
        rank: 0,
    };
    let err = connect::attempt(&endpoint, &ConnectConfig::default(), &|_| {})
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Unsupported);
    assert_eq!(err.detail, UNSUPPORTED);
}
