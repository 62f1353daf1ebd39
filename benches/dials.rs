//! Dials per second over loopback: the whole pipeline (a real DNS server,
//! NAPTR → SRV → AAAA/A, the engine, UDP and TCP probes to a real
//! responder), one dial at a time and 32 at once; once with a zone TTL of 0
//! (every dial sends its four queries) and once with a TTL of 300 s (the
//! dialer's cache answers them; the goal is 10,000 dials/s on 2 cores).
//! Prints its own figures; `cargo bench --bench dials`. Under `cargo test`
//! it runs a few dials only.

use std::time::{Duration, Instant};

use siprace::dialer::{Dialer, DialerConfig};
use siprace::endpoint::Transport;
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::race::strategy::Strategy;
use siprace::responder::{self, ListenerConfig, ResponderConfig};

fn zone(port: u16, ttl: u32) -> String {
    format!(
        "$ORIGIN example.test.\n$TTL {ttl}\n@ IN SOA ns admin 1 60 60 60 0\n\
         @ IN NAPTR 10 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.test.\n\
         @ IN NAPTR 20 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.example.test.\n\
         _sip._udp IN SRV 0 10 {port} sip1.example.test.\n\
         _sip._tcp IN SRV 0 10 {port} sip1.example.test.\n\
         sip1 IN AAAA ::1\nsip1 IN A 127.0.0.1\n"
    )
}

async fn run(total: usize, concurrency: usize, dialer: &Dialer, target: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut ok = 0;
    let mut left = total;
    while left > 0 {
        let batch = left.min(concurrency);
        let dials = (0..batch).map(|_| dialer.dial(target));
        ok += futures_join_all(dials)
            .await
            .into_iter()
            .filter(|r| r.is_ok())
            .count();
        left -= batch;
    }
    (start.elapsed(), ok)
}

/// A small join_all on a JoinSet-free path (the dials borrow the dialer).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The four listeners share one port (the SRV record names one). A port found free
        // can be taken by another process before the responder binds it: then take another.
        let mut started = None;
        for _ in 0..20 {
            let probe = std::net::UdpSocket::bind("[::1]:0").expect("bind");
            let port = probe.local_addr().unwrap().port();
            drop(probe);
            let listeners = ["[::1]", "127.0.0.1"]
                .iter()
                .flat_map(|ip| {
                    let addr = format!("{ip}:{port}").parse().unwrap();
                    [Transport::Udp, Transport::Tcp].map(|transport| ListenerConfig { transport, addr, silent: false })
                })
                .collect();
            match responder::start(ResponderConfig { listeners, ..ResponderConfig::default() }).await {
                Ok(r) => {
                    started = Some((r, port));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("responder: {e}"),
            }
        }
        let (responder, port) = started.expect("a port free for the responder in 20 tries");
        for ttl in [0, 300] {
            let dns = DnsServer::start(DnsServerConfig::new(zone(port, ttl)), &["127.0.0.1:0".parse().unwrap()])
                .await
                .expect("dns");
            let dns_note = if ttl == 0 {
                "full NAPTR/SRV/AAAA/A chain, TTL 0".to_string()
            } else {
                format!("DNS answers cached, TTL {ttl} s")
            };
            let n = if quick { 20 } else if ttl == 0 { 2000 } else { 20_000 };
            for (label, transports) in [("udp", vec![Transport::Udp]), ("tcp", vec![Transport::Tcp])] {
                let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
                cfg.locate.dns_server = Some(dns.addrs()[0]);
                cfg.transports = Some(transports);
                let dialer = Dialer::new(cfg).expect("dialer");
                for concurrency in [1, 32] {
                    let (took, ok) = run(n, concurrency, &dialer, "sip:example.test").await;
                    println!(
                        "dials over loopback ({label}, {dns_note}, concurrency {concurrency}): {ok}/{n} ok, {:.0} dials/s, {:.3} ms/dial",
                        ok as f64 / took.as_secs_f64(),
                        took.as_secs_f64() * 1000.0 / n as f64
                    );
                    assert_eq!(ok, n, "every loopback dial must succeed");
                }
            }
            dns.shutdown().await;
        }
        responder.shutdown().await;
    });
}
