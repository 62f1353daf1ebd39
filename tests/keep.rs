//! The connection table over real TCP on loopback: a peer written here
//! answers the dialer's OPTIONS, then sends a request of its own over the
//! same connection (what a server honouring RFC 5923 alias does), which
//! must reach the caller through the kept connection's inbound channel.
//! TLS reuse, virtual hosting and peer close are in tests/tls.rs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use siprace::dialer::{Dialer, DialerConfig};
use siprace::endpoint::Transport;
use siprace::keep::KeepConfig;
use siprace::sip::{parse_request, parse_response, Frame, OptionsProbe, StreamFramer};

/// Reads the next SIP message from `stream` (bounded by the test's timeout).
async fn next_message(stream: &mut TcpStream, framer: &mut StreamFramer) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(Frame::Message(msg)) = framer.next_frame().unwrap() {
            return msg;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the dialer closed the connection");
        framer.push(&buf[..n]);
    }
}

fn keeping() -> DialerConfig {
    let mut cfg = DialerConfig {
        keep: Some(KeepConfig::default()),
        ..DialerConfig::default()
    };
    cfg.connect.probe_streams = true;
    cfg.connect.local_name = Some("ua.example.test".into());
    cfg
}

#[tokio::test]
async fn a_kept_tcp_connection_carries_requests_both_ways() {
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dialer = Dialer::new(keeping()).unwrap();
    let target = format!("sip:[::1]:{port};transport=tcp");

    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut framer = StreamFramer::default();
        // Two OPTIONS from two dials, on this one connection.
        let mut vias = Vec::new();
        for _ in 0..2 {
            let req = parse_request(&next_message(&mut stream, &mut framer).await).unwrap();
            vias.push(req.vias[0].clone());
            stream.write_all(&req.options_ok(None)).await.unwrap();
        }
        // Then a request of the peer's own, the other way.
        let local = stream.local_addr().unwrap();
        let probe = OptionsProbe::new("sip:ua.example.test", Transport::Tcp, local);
        stream.write_all(&probe.to_bytes()).await.unwrap();
        let resp = parse_response(&next_message(&mut stream, &mut framer).await).unwrap();
        assert!(resp.matches(&probe));
        // No second connection was ever opened.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), listener.accept())
                .await
                .is_err()
        );
        (vias, resp.status)
    });

    let first = dialer.dial(&target).await.unwrap();
    let reuse = first.report.reuse.as_ref().unwrap();
    assert_eq!((reuse.connection, reuse.id), ("new", Some(1)));
    let kept = first.kept.clone().unwrap();
    let mut inbound = kept.take_inbound().expect("the inbound channel, once");
    assert!(kept.take_inbound().is_none());

    let second = dialer.dial(&target).await.unwrap();
    let reuse = second.report.reuse.as_ref().unwrap();
    assert_eq!((reuse.connection, reuse.id), ("reused", Some(1)));
    assert!(second.report.attempts.is_empty());
    assert_eq!(second.response.as_ref().unwrap().status, 200);

    let request = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
        .await
        .expect("the peer's request arrives")
        .expect("the channel is open");
    assert_eq!(request.method, "OPTIONS");
    kept.send(&request.options_ok(None)).await.unwrap();

    let (vias, status) = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .expect("the peer finishes")
        .unwrap();
    assert_eq!(status, 200);
    // The local name, not the IP literal; plain TCP never carries alias.
    for via in &vias {
        assert!(via.starts_with("SIP/2.0/TCP ua.example.test:"), "{via}");
        assert!(!via.contains("alias"), "{via}");
    }
}

#[tokio::test]
async fn without_the_table_every_dial_races_and_hands_over_its_socket() {
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dialer = Dialer::new(DialerConfig::default()).unwrap();
    let target = format!("sip:[::1]:{port};transport=tcp");
    for _ in 0..2 {
        let dial = dialer.dial(&target).await.unwrap();
        assert!(dial.report.reuse.is_none());
        assert!(dial.kept.is_none());
        assert!(matches!(dial.connection, Some(siprace::Connection::Tcp(_))));
        listener.accept().await.unwrap();
    }
    assert_eq!(dialer.kept_connections(), 0);
}

#[tokio::test]
async fn a_kept_connection_found_dead_at_first_use_falls_back_to_a_fresh_race() {
    // The peer answers the first dial, then goes silent on that connection
    // without closing it (a NAT binding that timed out looks like this):
    // the reused dial's OPTIONS gets no answer within Timer F, the entry
    // is dropped and the dial races afresh, within the same call.
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = keeping();
    cfg.connect.t1 = Duration::from_millis(5); // Timer F = 320 ms
    let dialer = Dialer::new(cfg).unwrap();
    let target = format!("sip:[::1]:{port};transport=tcp");

    let peer = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut framer = StreamFramer::default();
            let req = parse_request(&next_message(&mut stream, &mut framer).await).unwrap();
            stream.write_all(&req.options_ok(None)).await.unwrap();
            // Kept open, never read again.
            held.push(stream);
        }
        held
    });

    let first = dialer.dial(&target).await.unwrap();
    assert_eq!(first.report.reuse.as_ref().unwrap().connection, "new");
    let second = dialer.dial(&target).await.unwrap();
    let reuse = second.report.reuse.as_ref().unwrap();
    assert_eq!((reuse.connection, reuse.id), ("new", Some(2)), "{reuse:?}");
    assert_eq!(reuse.found_dead, [1]);
    assert!(second
        .report
        .render()
        .contains("connection #1 found dead at first use: raced afresh"));
    assert!(first.kept.unwrap().is_dead());
    assert_eq!(dialer.kept_connections(), 1);
    let held = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .expect("the peer saw two connections")
        .unwrap();
    assert_eq!(held.len(), 2);
}
