//! Dials on loopback against hostile answers: a real DNS server (the lab's)
//! serving records crafted to hurt the dialer, and real sockets.
//!
//! - Text from peers and DNS (a NAPTR `services`/`regexp` field, a SIP
//!   reason phrase) carrying ESC, CR, LF, C1 and bidi controls must reach
//!   the human timeline escaped, and the JSON report exactly.
//! - An SRV answer of 1000 records, 999 of them dead at better priorities,
//!   must still lead to the one live target, and the timeline must say that
//!   1000 records arrived.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::time::Duration;

use siprace::dialer::{DialError, Dialer, DialerConfig};
use siprace::endpoint::{Family, Transport};
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::report::Report;

mod common;

/// The forged line a hostile peer tries to print.
const FORGED: &str = "\x1b[2J\r\n* winner: forged";

async fn dns(body: &str) -> DnsServer {
    let cfg = DnsServerConfig::parse(&common::zone(body), "")
        .expect("zone parses")
        .with_srv_additionals(false);
    common::serve(cfg).await
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

/// True for characters that must never reach a terminal raw.
fn hostile(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// A UDP "server" that answers every OPTIONS with a 200 whose reason phrase
/// is hostile (ESC, a bare CR, OSC, BEL, C1 CSI, a bidi override). The
/// parser splits lines at LF, so the phrase carries everything but LF.
async fn hostile_udp_peer(reason: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        // Bounded: the dial needs one answer (a few with retransmissions).
        for _ in 0..100 {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = siprace::sip::parse_request(&buf[..n]) else {
                continue;
            };
            let response = request.response(200).reason(reason).build();
            let _ = socket.send_to(&response, from).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn hostile_text_is_escaped_in_the_timeline_and_exact_in_json() {
    const REASON: &str = "OK \x1b[2J\r* winner: forged \x1b]0;pwned\x07 \u{9b}31m \u{202e}desrever";
    let (peer, peer_task) = hostile_udp_peer(REASON).await;
    // The usable NAPTR leads to the peer; the other one (an unsupported SIP
    // service, so only the timeline shows it) carries the control bytes raw
    // in its services and regexp fields.
    let body = format!(
        "@ IN NAPTR 10 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.test.\n\
         @ IN NAPTR 20 50 \"s\" \"SIP+D2W{FORGED}\" \"!^.*$!\x1b]0;pwned\x07\r\n* winner: forged!\" _sip._ws.example.test.\n\
         _sip._udp IN SRV 0 10 {port} sip1.example.test.\n\
         sip1 IN A 127.0.0.1\n",
        port = peer.port()
    );
    let dns = dns(&body).await;
    let mut cfg = config(&dns);
    cfg.transports = Some(vec![Transport::Udp]);
    // Short SIP timers, in case a stricter parser rejects the reply.
    cfg.connect.t1 = Duration::from_millis(20);
    let report = report_of(Dialer::new(cfg).unwrap().dial("sip:example.test").await);
    let text = report.render();
    println!("{text}");

    // No raw control byte at all, only the line breaks of the timeline.
    for (i, c) in text.char_indices() {
        assert!(!hostile(c), "raw {c:?} at byte {i} of\n{text:?}");
    }
    for (i, b) in text.bytes().enumerate() {
        assert!(
            b == b'\n' || (b >= 0x20 && b != 0x7f),
            "byte {b:#04x} at {i} of\n{text:?}"
        );
    }
    // The forged line did not become a line: the only "* winner" line (if
    // any) is the real one, and the hostile text is there, escaped.
    assert!(
        text.lines().filter(|l| l.starts_with("* winner:")).count() <= 1,
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("* winner: forged")),
        "{text}"
    );
    assert!(
        text.contains(r#"SIP+D2W\x1b[2J\r\n* winner: forged"#),
        "{text}"
    );
    assert!(
        text.contains(r"!^.*$!\x1b]0;pwned\x07\r\n* winner: forged!"),
        "{text}"
    );

    // The JSON report keeps the exact values.
    let json = serde_json::to_value(&report).unwrap();
    let naptr = json["dns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["type"] == "NAPTR")
        .expect("a NAPTR entry");
    let records: Vec<&str> = naptr["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r.contains(&format!("SIP+D2W{FORGED}"))
                && r.contains("!^.*$!\x1b]0;pwned\x07\r\n* winner: forged!")),
        "{records:?}"
    );
    // With today's parser the peer's 200 wins and its reason phrase is in
    // the report as sent; the timeline shows it escaped.
    if let Some(winner) = report.winner_entry() {
        let reason = winner.response.as_ref().map_or("", |r| r.reason.as_str());
        assert_eq!(reason, REASON);
        let escaped = siprace::report::terminal_safe(REASON);
        assert!(text.contains(&*escaped), "{escaped} not in\n{text}");
        assert!(escaped.contains(r"\x1b[2J\r* winner: forged"), "{escaped}");
        assert!(escaped.contains(r"\u{9b}31m \u{202e}desrever"), "{escaped}");
    }
    peer_task.abort();
    dns.shutdown().await;
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
