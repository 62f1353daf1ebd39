//! Dials on loopback against hostile answers: a real DNS server (the lab's)
//! serving records crafted to hurt the dialer, and real sockets.
//!
//! - An SRV answer of 1000 records, 999 of them dead at better priorities,
//!   must still lead to the one live target, and the timeline must say that
//!   1000 records arrived.
#![cfg(feature = "tools")]

use std::time::Duration;

use siprace::dialer::{DialError, Dialer, DialerConfig};
use siprace::endpoint::Family;
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::report::Report;

const HEAD: &str = "$ORIGIN example.test.\n$TTL 0\n\
@ IN SOA ns.example.test. admin.example.test. 1 60 60 60 0\n";

async fn dns(body: &str) -> DnsServer {
    let zone = format!("{HEAD}{body}");
    let cfg = DnsServerConfig::parse(&zone, "")
        .expect("zone parses")
        .with_srv_additionals(false);
    DnsServer::start(cfg, &["127.0.0.1:0".parse().unwrap()])
        .await
        .expect("lab dns starts")
}

fn config(dns: &DnsServer) -> DialerConfig {
    let mut cfg = DialerConfig::default();
    cfg.locate.dns_server = Some(dns.addrs()[0]);
    cfg.locate.query_timeout = Duration::from_secs(2);
    cfg.locate.families = vec![Family::V4];
    cfg.race.deadline = Duration::from_secs(10);
    cfg
}

/// The report of a dial, whether it connected or not.
fn report_of(result: Result<siprace::dialer::Dial, DialError>) -> Report {
    match result {
        Ok(dial) => dial.report,
        Err(DialError::Failed(r)) | Err(DialError::Resolution(r)) => *r,
        Err(e) => panic!("dial did not run: {e}"),
    }
}

#[tokio::test]
async fn srv_live_target_behind_999_dead_ones_is_reached() {
    // The live server: a TCP listener on 127.0.0.1 (the kernel completes
    // the handshake, which is all a TCP attempt without --probe needs).
    let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = live.local_addr().unwrap().port();
    // 999 dead targets at priorities 0..=9, each its own host on another
    // loopback address where nothing listens on that port (the live socket
    // holds it on 127.0.0.1, so no wildcard listener can): refused at once.
    // The live target has the worst priority.
    let mut body = String::new();
    for i in 0..999u32 {
        body += &format!(
            "_sip._tcp IN SRV {} 1 {port} d{i}.example.test.\nd{i} IN A 127.1.{}.{}\n",
            i % 10,
            i / 200,
            i % 200 + 1
        );
    }
    body += &format!("_sip._tcp IN SRV 10 1 {port} live.example.test.\nlive IN A 127.0.0.1\n");
    let dns = dns(&body).await;
    let cfg = config(&dns);
    let max_records = cfg.locate.max_records;
    let result = Dialer::new(cfg)
        .unwrap()
        .dial("sip:example.test;transport=tcp")
        .await;
    let report = report_of(result);
    let text = report.render();
    println!("{text}");

    let winner = report
        .winner_entry()
        .unwrap_or_else(|| panic!("the live target was not reached:\n{text}"));
    assert_eq!(winner.host, "live.example.test");
    assert_eq!(winner.addr.port(), port);
    // Work stayed bounded: at most max_records targets from the one answer.
    assert!(
        report.targets.len() <= max_records,
        "{}",
        report.targets.len()
    );
    assert!(
        report.attempts.len() <= max_records,
        "{}",
        report.attempts.len()
    );
    assert!(
        report.attempts.iter().all(|a| a.outcome == "won"
            || a.error_class.as_deref() == Some("refused")
            || a.outcome == "cancelled"),
        "{text}"
    );
    // The timeline tells how many records arrived, and the JSON how many it lists.
    let srv = report
        .dns
        .iter()
        .find(|q| q.rtype == "SRV")
        .expect("an SRV entry");
    assert_eq!(srv.records_total, 1000);
    assert_eq!(srv.records.len(), max_records);
    assert!(
        text.contains("SRV _sip._tcp.example.test: 1000 record(s)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "... 992 more (--json lists the first {max_records})"
        )),
        "{text}"
    );
    drop(live);
    dns.shutdown().await;
}
