//! The responder against the connect layer, over loopback.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use siprace::connect::{attempt, ConnectConfig, Connected};
use siprace::responder::{start, ListenerConfig, ResponderConfig, ResponderHandle, StatsSnapshot};
use siprace::sip::{parse_response, Frame, OptionsProbe, StreamFramer};
use siprace::{AttemptError, Endpoint, ErrorClass, Family, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Bound on every wait in these tests: generous, only hit when something is broken.
const LIMIT: Duration = Duration::from_secs(10);

fn listeners(silent: bool) -> Vec<ListenerConfig> {
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            out.push(ListenerConfig {
                transport,
                addr: addr.parse().unwrap(),
                silent,
            });
        }
    }
    out
}

async fn responder(silent: bool) -> ResponderHandle {
    start(ResponderConfig {
        listeners: listeners(silent),
        ..ResponderConfig::default()
    })
    .await
    .unwrap()
}

async fn dial(
    addr: SocketAddr,
    transport: Transport,
    cfg: &ConnectConfig,
) -> Result<Connected, AttemptError> {
    let endpoint = Endpoint {
        transport,
        addr,
        host: Arc::from("localhost"),
        rank: 0,
    };
    tokio::time::timeout(LIMIT, attempt(&endpoint, cfg, &|_| {}))
        .await
        .expect("the attempt ends by itself")
}

async fn wait(handle: &ResponderHandle, pred: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
    tokio::time::timeout(LIMIT, handle.wait_for_stats(pred))
        .await
        .expect("the counters reach the expected values")
}

/// Probing with a long T1, so that no retransmission can happen on a slow machine.
fn probing() -> ConnectConfig {
    ConnectConfig {
        probe_streams: true,
        t1: Duration::from_secs(2),
        t2: Duration::from_secs(4),
        ..ConnectConfig::default()
    }
}

fn fast_probing() -> ConnectConfig {
    ConnectConfig {
        probe_streams: true,
        t1: Duration::from_millis(10),
        t2: Duration::from_millis(40),
        ..ConnectConfig::default()
    }
}

#[tokio::test]
async fn options_answered_and_counted_per_family_and_transport() {
    let handle = responder(false).await;
    assert_eq!(handle.listeners().len(), 4);
    let cells = [
        (Transport::Udp, Family::V4),
        (Transport::Udp, Family::V6),
        (Transport::Tcp, Family::V4),
        (Transport::Tcp, Family::V6),
    ];
    for (i, (transport, family)) in cells.into_iter().enumerate() {
        let addr = handle.addr(transport, family).unwrap();
        assert_ne!(addr.port(), 0);
        let c = dial(addr, transport, &probing()).await.unwrap();
        let r = c.response.expect("a probe response");
        assert_eq!(
            (r.status, r.reason.as_str()),
            (200, "OK"),
            "{transport} {family}"
        );
        assert_eq!(c.requests_sent, 1);

        // Only this cell moved; the ones not yet dialed are still zero.
        let snap = handle.stats();
        let counters = snap.get(transport, family);
        assert_eq!(counters.requests, 1, "{transport} {family}: {snap:?}");
        assert_eq!(counters.options, 1);
        assert_eq!(counters.responses, 1);
        assert_eq!(counters.invalid, 0);
        let tcp = u64::from(transport == Transport::Tcp);
        let snap = wait(&handle, |s| s.get(transport, family).connections == tcp).await;
        for (t, f) in &cells[i + 1..] {
            assert_eq!(
                snap.get(*t, *f),
                Default::default(),
                "{t} {f} untouched yet"
            );
        }
    }
    let last = handle.shutdown().await;
    assert_eq!(last.total().requests, 4);
    assert_eq!(last.total().connections, 2);
}

#[tokio::test]
async fn silent_listeners_make_attempts_time_out() {
    let handle = responder(true).await;
    for family in [Family::V4, Family::V6] {
        // UDP: every Timer E transmission arrives, none is answered.
        let addr = handle.addr(Transport::Udp, family).unwrap();
        let err = dial(addr, Transport::Udp, &fast_probing())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Timeout, "{err}");
        let sent = siprace::connect::udp::transmit_schedule(
            Duration::from_millis(10),
            Duration::from_millis(40),
        )
        .len() as u64;
        let snap = wait(&handle, |s| s.get(Transport::Udp, family).requests == sent).await;
        let udp = snap.get(Transport::Udp, family);
        assert_eq!((udp.dropped_silent, udp.responses), (sent, 0));

        // TCP: the connection is accepted, the OPTIONS never answered.
        let addr = handle.addr(Transport::Tcp, family).unwrap();
        let err = dial(addr, Transport::Tcp, &fast_probing())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Timeout, "{err}");
        let snap = wait(&handle, |s| s.get(Transport::Tcp, family).requests == 1).await;
        let tcp = snap.get(Transport::Tcp, family);
        assert_eq!(
            (tcp.connections, tcp.dropped_silent, tcp.responses),
            (1, 1, 0)
        );

        // A plain TCP connect (no probe) still succeeds: the port is open.
        assert!(dial(addr, Transport::Tcp, &ConnectConfig::default())
            .await
            .is_ok());
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn garbage_does_not_kill_the_responder() {
    let handle = responder(false).await;
    for family in [Family::V4, Family::V6] {
        // UDP garbage, then a probe: answered, garbage counted.
        let addr = handle.addr(Transport::Udp, family).unwrap();
        let junk = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
            .await
            .unwrap();
        for g in [
            &b"\x00\x01\x02\xff"[..],
            b"OPTIONS\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            &[b'x'; 9000],
        ] {
            junk.send_to(g, addr).await.unwrap();
        }
        let c = dial(addr, Transport::Udp, &probing()).await.unwrap();
        assert_eq!(c.response.unwrap().status, 200);
        let snap = wait(&handle, |s| s.get(Transport::Udp, family).invalid == 4).await;
        assert_eq!(snap.get(Transport::Udp, family).requests, 1);

        // TCP: an invalid but framed message leaves the connection usable.
        let addr = handle.addr(Transport::Tcp, family).unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let probe = OptionsProbe::new("sip:localhost", Transport::Tcp, s.local_addr().unwrap());
        let mut bytes = b"HELLO THERE\r\nContent-Length: 2\r\n\r\nhi".to_vec();
        bytes.extend(probe.to_bytes());
        s.write_all(&bytes).await.unwrap();
        let resp = tokio::time::timeout(LIMIT, read_message(&mut s))
            .await
            .unwrap()
            .expect("an answer");
        let resp = parse_response(&resp).unwrap();
        assert!(resp.matches(&probe));
        assert_eq!(resp.status, 200);

        // TCP: a framing error (bad Content-Length) closes that connection only.
        let mut bad = TcpStream::connect(addr).await.unwrap();
        bad.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: many\r\n\r\n")
            .await
            .unwrap();
        assert!(tokio::time::timeout(LIMIT, read_message(&mut bad))
            .await
            .unwrap()
            .is_none());
        let c = dial(addr, Transport::Tcp, &probing()).await.unwrap();
        assert_eq!(c.response.unwrap().status, 200);
        let snap = wait(&handle, |s| s.get(Transport::Tcp, family).invalid == 2).await;
        let tcp = snap.get(Transport::Tcp, family);
        assert_eq!((tcp.requests, tcp.responses, tcp.connections), (2, 2, 3));
    }
    handle.shutdown().await;
}

/// Sends an OPTIONS on an open connection: the status of its answer, `None`
/// if the connection closes first.
async fn options_over(s: &mut TcpStream) -> Option<u16> {
    let probe = OptionsProbe::new("sip:x", Transport::Tcp, s.local_addr().unwrap());
    s.write_all(&probe.to_bytes()).await.ok()?;
    let answer = parse_response(&read_message(s).await?).unwrap();
    assert!(answer.matches(&probe));
    Some(answer.status)
}

/// Reads one framed message; `None` when the peer closes first.
async fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut framer = StreamFramer::default();
    let mut buf = vec![0; 4096];
    loop {
        if let Some(Frame::Message(m)) = framer.next_frame().unwrap() {
            return Some(m);
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => framer.push(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn other_methods_get_final_responses_and_ack_none() {
    let handle = responder(false).await;
    let addr = handle.addr(Transport::Udp, Family::V6).unwrap();
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut buf = vec![0; 65536];
    for (method, expected) in [
        ("ACK", None),
        ("INVITE", Some(486)),
        ("FROB", Some(501)),
        ("REGISTER", Some(200)),
    ] {
        let raw = format!(
            "{method} sip:x@[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:{port};branch=z9hG4bK{method}\r\n\
             From: <sip:t@[::1]>;tag=1\r\nTo: <sip:x@[::1]>\r\nCall-ID: {method}@t\r\nCSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n",
            port = local.port()
        );
        sock.send(raw.as_bytes()).await.unwrap();
        let Some(status) = expected else { continue };
        // The first datagram back answers this request: ACK got nothing.
        let n = tokio::time::timeout(LIMIT, sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let r = parse_response(&buf[..n]).unwrap();
        assert_eq!((r.status, r.cseq.method.as_str()), (status, method));
    }
    let snap = handle.shutdown().await;
    let c = snap.get(Transport::Udp, Family::V6);
    assert_eq!((c.requests, c.responses, c.options), (4, 3, 0));
}

/// A responder on one TCP listener (127.0.0.1) with these bounds.
async fn tcp_responder(cfg: ResponderConfig) -> (ResponderHandle, SocketAddr) {
    let handle = start(ResponderConfig {
        listeners: vec![ListenerConfig {
            transport: Transport::Tcp,
            addr: "127.0.0.1:0".parse().unwrap(),
            silent: false,
        }],
        ..cfg
    })
    .await
    .unwrap();
    let addr = handle.addr(Transport::Tcp, Family::V4).unwrap();
    (handle, addr)
}

#[tokio::test]
async fn idle_timeout_and_shutdown() {
    let (handle, addr) = tcp_responder(ResponderConfig {
        idle_timeout: Duration::from_millis(200),
        ..ResponderConfig::default()
    })
    .await;

    // A silent connection is closed for idleness.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(tokio::time::timeout(LIMIT, read_message(&mut silent))
        .await
        .unwrap()
        .is_none());
    wait(&handle, |s| s.tcp.ipv4.connections_idle_closed == 1).await;
    let c = dial(addr, Transport::Tcp, &probing()).await.unwrap();
    assert_eq!(c.response.unwrap().status, 200);

    // After shutdown the port is closed and open connections are closed too.
    let siprace::connect::Connection::Tcp(mut open) = c.connection else {
        panic!("tcp connection expected")
    };
    handle.shutdown().await;
    assert!(tokio::time::timeout(LIMIT, read_message(&mut open))
        .await
        .unwrap()
        .is_none());
    let err = dial(addr, Transport::Tcp, &ConnectConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Refused);
}

#[tokio::test]
async fn full_slots_go_to_a_newcomer_by_evicting_the_stalest() {
    // Idle connections would hold their slots for a minute; the grace (the
    // request timeout) is what a newcomer waits at most.
    let (handle, addr) = tcp_responder(ResponderConfig {
        max_tcp_connections: 2,
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_millis(300),
        ..ResponderConfig::default()
    })
    .await;
    let mut oldest = TcpStream::connect(addr).await.unwrap();
    wait(&handle, |s| s.tcp.ipv4.connections == 1).await;
    let mut younger = TcpStream::connect(addr).await.unwrap();
    wait(&handle, |s| s.tcp.ipv4.connections == 2).await;

    // A newcomer is served: the connection that went longest without
    // progress, the oldest idle one, made room.
    let c = dial(addr, Transport::Tcp, &probing()).await.unwrap();
    assert_eq!(c.response.as_ref().unwrap().status, 200);
    assert!(tokio::time::timeout(LIMIT, read_message(&mut oldest))
        .await
        .unwrap()
        .is_none());
    let snap = handle.stats();
    assert_eq!(
        (
            snap.tcp.ipv4.connections_evicted,
            snap.tcp.ipv4.connections_rejected
        ),
        (1, 0)
    );
    drop(c);

    // The younger one kept its slot and is still served.
    let answered = tokio::time::timeout(LIMIT, options_over(&mut younger)).await;
    assert_eq!(
        answered.unwrap(),
        Some(200),
        "the younger connection is still open"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn newcomer_is_refused_while_every_slot_makes_progress() {
    // The grace is generous so that a stalled test thread cannot make the
    // busy connection look stale.
    let (handle, addr) = tcp_responder(ResponderConfig {
        max_tcp_connections: 1,
        request_timeout: Duration::from_secs(2),
        ..ResponderConfig::default()
    })
    .await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    wait(&handle, |s| s.tcp.ipv4.connections == 1).await;
    let mut newcomer = TcpStream::connect(addr).await.unwrap();
    let refused = async {
        let closed = tokio::time::timeout(LIMIT, read_message(&mut newcomer)).await;
        assert!(closed.expect("the newcomer is closed").is_none());
    };
    // The busy connection sends OPTIONS and reads each answer until the
    // newcomer is turned away: it never goes a grace without progress.
    let keep_busy = async {
        for round in 0.. {
            assert!(round < 1_000_000, "the newcomer was never turned away");
            assert_eq!(
                options_over(&mut busy).await,
                Some(200),
                "busy stays served"
            );
        }
    };
    tokio::select! {
        () = refused => {}
        () = keep_busy => unreachable!(),
    }
    let snap = wait(&handle, |s| s.tcp.ipv4.connections_rejected == 1).await;
    assert_eq!(snap.tcp.ipv4.connections_evicted, 0);
    assert_eq!(snap.tcp.ipv4.connections, 1);
    handle.shutdown().await;
}

/// The two ways of holding a slot that the deadlines are for.
#[derive(Debug, Clone, Copy)]
enum Abuser {
    /// Sends a request one byte at a time, never finishing it in time.
    Trickler,
    /// Pipelines requests and never reads the answers, with a small
    /// receive buffer.
    NonReader,
}

/// How often a trickler sends its next byte: faster than the idle timeout
/// of the tests, so only the request deadline can stop it.
const TRICKLE: Duration = Duration::from_millis(100);

/// One abusive connection; returns once the responder has closed it.
async fn abuse_once(addr: SocketAddr, kind: Abuser) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Abuser::NonReader = kind {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let mut s = socket.connect(addr).await.unwrap();
    let request = OptionsProbe::new("sip:x", Transport::Tcp, s.local_addr().unwrap()).to_bytes();
    match kind {
        Abuser::Trickler => {
            let mut tick = tokio::time::interval(TRICKLE);
            let mut buf = [0u8; 512];
            // A whole request at this pace takes half a minute or more.
            for byte in request.iter().take(request.len() - 1) {
                tokio::select! {
                    read = s.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return, // cut off
                        Ok(_) => panic!("an incomplete request got an answer"),
                    },
                    _ = tick.tick() => {
                        if s.write_all(std::slice::from_ref(byte)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            panic!("the trickler was never cut off");
        }
        Abuser::NonReader => {
            let batch = request.repeat(50);
            for _ in 0..10_000 {
                if s.write_all(&batch).await.is_err() {
                    return; // cut off (reset)
                }
            }
            panic!("the non-reader was never cut off");
        }
    }
}

/// Abusive connections one after the other until `stop` (at most 100).
async fn keep_abusing(addr: SocketAddr, kind: Abuser, stop: Arc<AtomicBool>) {
    for _ in 0..100 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        abuse_once(addr, kind).await;
    }
}

/// Bounds that make abusers cost little: long idle timeout (so it is not
/// what saves the service), short request and write timeouts, a small send
/// buffer.
fn abuse_bounds(max_tcp_connections: usize) -> ResponderConfig {
    ResponderConfig {
        max_tcp_connections,
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        max_pending_output: 8 * 1024,
        ..ResponderConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stalled_connections_are_cut_off() {
    let (handle, addr) = tcp_responder(abuse_bounds(16)).await;
    tokio::time::timeout(LIMIT, async {
        tokio::join!(
            abuse_once(addr, Abuser::Trickler),
            abuse_once(addr, Abuser::NonReader)
        )
    })
    .await
    .expect("both abusers are cut off");
    let snap = wait(&handle, |s| {
        s.tcp.ipv4.connections_request_timeout == 1 && s.tcp.ipv4.connections_write_timeout == 1
    })
    .await;
    let tcp = snap.tcp.ipv4;
    assert_eq!(
        (
            tcp.connections_idle_closed,
            tcp.connections_evicted,
            tcp.connections_rejected
        ),
        (0, 0, 0),
        "{tcp:?}"
    );
    // The non-reader got some answers before its writes stalled.
    assert!(tcp.responses > 0);
    let c = dial(addr, Transport::Tcp, &probing()).await.unwrap();
    assert_eq!(c.response.unwrap().status, 200);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abused_slots_do_not_stop_service() {
    let (handle, addr) = tcp_responder(abuse_bounds(4)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut abusers = tokio::task::JoinSet::new();
    for kind in [
        Abuser::Trickler,
        Abuser::Trickler,
        Abuser::NonReader,
        Abuser::NonReader,
    ] {
        abusers.spawn(keep_abusing(addr, kind, stop.clone()));
    }
    // Every slot is taken by an abuser, and they keep coming back.
    wait(&handle, |s| s.tcp.ipv4.connections >= 4).await;
    for _ in 0..3 {
        let c = dial(addr, Transport::Tcp, &probing())
            .await
            .expect("a well-behaved client is served while the slots are abused");
        assert_eq!(c.response.unwrap().status, 200);
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(LIMIT, async {
        while let Some(done) = abusers.join_next().await {
            done.unwrap();
        }
    })
    .await
    .expect("every abusive connection ends");
    let tcp = handle.shutdown().await.tcp.ipv4;
    // Every abusive connection was cut off by a deadline or evicted.
    assert!(
        tcp.connections_request_timeout + tcp.connections_write_timeout + tcp.connections_evicted
            >= 4,
        "{tcp:?}"
    );
}
