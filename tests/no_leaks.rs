//! No socket outlives its dial: after dials with losers (a silent IPv6
//! server, so every dial cancels an attempt), failed dials and dials that hit
//! their deadline, the process holds exactly the file descriptors it held
//! before. This file has a single test so nothing else opens descriptors
//! meanwhile.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use siprace::dialer::{Dialer, DialerConfig};
use siprace::endpoint::Transport;
use siprace::lab::dns::DnsServerConfig;
use siprace::race::strategy::Strategy;
use siprace::responder::{self, ListenerConfig, ResponderConfig};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_leave_no_descriptor_behind() {
    // The three listeners share one port (the SRV record names one). A port found free
    // can be taken by another process before the responder binds it: then take another.
    let mut started = None;
    for _ in 0..20 {
        let probe = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let listener = |ip: &str, transport, silent| ListenerConfig {
            transport,
            addr: SocketAddr::new(ip.parse().unwrap(), port),
            silent,
        };
        let config = ResponderConfig {
            listeners: vec![
                listener("::1", Transport::Udp, true),
                listener("127.0.0.1", Transport::Udp, false),
                listener("127.0.0.1", Transport::Tcp, false),
            ],
            ..ResponderConfig::default()
        };
        match responder::start(config).await {
            Ok(r) => {
                started = Some((r, port));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("responder: {e}"),
        }
    }
    let (responder, port) = started.expect("a port free for the responder in 20 tries");
    let zone = common::zone(&format!(
        "{}{}{}",
        common::srv("_sip._udp", port, "sip1"),
        common::srv("_sip._tcp", port, "sip1"),
        common::SIP1_LOOPBACK
    ));
    let dns = common::serve(DnsServerConfig::new(zone)).await;

    let config = |strategy, transport, deadline_ms| {
        let mut cfg = DialerConfig::for_strategy(strategy);
        cfg.locate.dns_server = Some(dns.addrs()[0]);
        cfg.transports = Some(vec![transport]);
        // Start only once both address answers are in, so IPv6 always goes first and
        // every UDP dial has a loser. (With a Resolution Delay, an A answer handled
        // 50 ms before the AAAA one on a loaded machine lets IPv4 win alone.)
        cfg.race.resolution_delay = None;
        cfg.race.attempt_delay = Duration::from_millis(20);
        cfg.race.deadline = Duration::from_millis(deadline_ms);
        cfg
    };
    // Warm up once so lazily created runtime resources exist before counting.
    let _ = Dialer::new(config(Strategy::Siprace, Transport::Udp, 5000))
        .unwrap()
        .dial("sip:example.test")
        .await;
    let before = open_fds();

    for _ in 0..10 {
        // UDP: the IPv6 attempt loses the race and is cancelled.
        let dial = Dialer::new(config(Strategy::Siprace, Transport::Udp, 5000))
            .unwrap()
            .dial("sip:example.test")
            .await
            .expect("IPv4 answers");
        assert_eq!(dial.report.abandoned_attempts(), 1);
        drop(dial);
        // TCP: nothing listens on ::1, the IPv6 attempt is refused.
        let dial = Dialer::new(config(Strategy::Siprace, Transport::Tcp, 5000))
            .unwrap()
            .dial("sip:example.test")
            .await
            .expect("IPv4 answers");
        drop(dial);
        // A deadline shorter than the attempt delay: everything is cancelled.
        let err = Dialer::new(config(Strategy::Siprace, Transport::Udp, 10))
            .unwrap()
            .dial("sip:example.test")
            .await;
        assert!(err.is_err());
    }
    let after = open_fds();
    assert_eq!(before, after, "descriptors before and after 30 dials");
    responder.shutdown().await;
    dns.shutdown().await;
}
