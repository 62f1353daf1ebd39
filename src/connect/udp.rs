//! UDP attempts: an OPTIONS probe on a connected socket, retransmitted per
//! RFC 3261 Timer E and abandoned at Timer F.
//!
//! The socket is `connect()`ed so that an ICMP port/destination unreachable
//! comes back as an error on the next receive (`ECONNREFUSED`, ...): the
//! attempt then fails at once instead of waiting out Timer F, which is what
//! most SIP stacks do today (32 s).

use std::time::Duration;

use socket2::{Protocol, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::stream::PeerWork;
use super::{
    canonical, local_error, new_socket, ConnectConfig, Connected, Connection, ProbeResponse,
};
use crate::endpoint::{AttemptError, Endpoint, ErrorClass};
use crate::sip::parse_response;

/// Datagrams that are not SIP responses we tolerate before giving up with
/// [`ErrorClass::InvalidResponse`]: a peer spraying garbage is not a SIP server.
/// Well-formed responses to other transactions are capped too, by
/// [`MAX_IGNORED_MESSAGES`](super::stream::MAX_IGNORED_MESSAGES) in all and
/// [`MAX_PEER_BYTES`](super::stream::MAX_PEER_BYTES), so that a peer flooding
/// them costs bounded work, not a core until Timer F.
pub const MAX_GARBAGE_DATAGRAMS: u32 = 64;

/// The Timer E schedule (RFC 3261 §17.1.2.2): offsets from the first
/// transmission at which the request is (re)sent, all strictly before Timer F.
pub fn transmit_schedule(t1: Duration, t2: Duration) -> Vec<Duration> {
    let timer_f = t1.saturating_mul(64);
    let mut out = vec![Duration::ZERO];
    let (mut at, mut interval) = (Duration::ZERO, t1);
    if t1.is_zero() {
        return out;
    }
    loop {
        at += interval;
        if at >= timer_f {
            return out;
        }
        out.push(at);
        interval = interval.saturating_mul(2).min(t2.max(t1));
    }
}

/// Sends an OPTIONS over UDP and waits for its answer.
pub async fn attempt(endpoint: &Endpoint, cfg: &ConnectConfig) -> Result<Connected, AttemptError> {
    let start = Instant::now();
    let dst = canonical(endpoint.addr);
    let socket = new_socket(&dst, Type::DGRAM, Protocol::UDP, cfg)?;
    let socket =
        UdpSocket::from_std(socket.into()).map_err(|e| local_error("register socket", &e))?;
    socket
        .connect(dst)
        .await
        .map_err(|e| AttemptError::io(&format!("connect {dst}"), &e))?;
    let local = socket
        .local_addr()
        .map_err(|e| local_error("local address", &e))?;

    let probe = cfg.probe_for(endpoint, local);
    let request = probe.to_bytes();
    let schedule = transmit_schedule(cfg.t1, cfg.t2);

    let first_send = Instant::now();
    let deadline = first_send + cfg.timer_f();
    let mut sent: usize = 0;
    let mut garbage: u32 = 0;
    let mut strays: u32 = 0;
    let mut work = PeerWork::default();
    let mut buf = vec![0u8; 65_536];

    loop {
        // Send every transmission that is due. A late wake-up still sends the
        // retransmissions that fell before Timer F, so the count is the
        // schedule's whatever the scheduling jitter.
        let now = Instant::now();
        while sent < schedule.len() && first_send + schedule[sent] <= now {
            socket
                .send(&request)
                .await
                .map_err(|e| send_error(&e, sent, dst))?;
            sent += 1;
        }
        let next_send = schedule.get(sent).map(|off| first_send + *off);
        let wake = next_send.unwrap_or(deadline).min(deadline);

        tokio::select! {
            received = socket.recv(&mut buf) => {
                let n = match received {
                    Ok(n) => n,
                    Err(e) => {
                        return Err(AttemptError::new(
                            ErrorClass::of_io(&e),
                            format!("{dst}: {e} (after {sent} request(s))"),
                        ));
                    }
                };
                match parse_response(&buf[..n]) {
                    Ok(resp) if resp.matches(&probe) => {
                        let now = Instant::now();
                        return Ok(Connected {
                            connection: Connection::Udp(socket),
                            local,
                            transport_ready: now - start,
                            response: Some(ProbeResponse {
                                status: resp.status,
                                reason: resp.reason,
                                rtt: now - first_send,
                            }),
                            requests_sent: sent as u32,
                        });
                    }
                    Ok(_) => {
                        strays += 1;
                        work.received(n, dst)?;
                        work.ignored(dst)?;
                    }
                    Err(err) => {
                        garbage += 1;
                        tracing::debug!(%dst, %err, "ignoring an invalid datagram");
                        if garbage >= MAX_GARBAGE_DATAGRAMS {
                            return Err(AttemptError::new(
                                ErrorClass::InvalidResponse,
                                format!("{dst}: {garbage} invalid datagrams, last: {err}"),
                            ));
                        }
                        work.received(n, dst)?;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline && sent >= schedule.len() {
                    return Err(AttemptError::new(
                        ErrorClass::Timeout,
                        format!(
                            "{dst}: no response to {sent} request(s) in {:?} (Timer F){}",
                            cfg.timer_f(),
                            ignored(garbage, strays),
                        ),
                    ));
                }
            }
        }
    }
}

fn send_error(err: &std::io::Error, sent: usize, dst: std::net::SocketAddr) -> AttemptError {
    AttemptError::new(
        ErrorClass::of_io(err),
        format!("send to {dst}: {err} (after {sent} request(s))"),
    )
}

fn ignored(garbage: u32, strays: u32) -> String {
    match (garbage, strays) {
        (0, 0) => String::new(),
        _ => {
            format!("; ignored {garbage} invalid datagram(s) and {strays} non-matching response(s)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::attempt as dispatch;
    use crate::endpoint::Transport;
    use crate::sip::parse_request;
    use std::net::SocketAddr;
    use std::sync::Arc;

    async fn run(
        addr: SocketAddr,
        cfg: ConnectConfig,
        progress: &(dyn Fn(crate::connect::Progress) + Send + Sync),
    ) -> Result<Connected, AttemptError> {
        dispatch(&endpoint(addr), &cfg, progress).await
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint {
            transport: Transport::Udp,
            addr,
            host: Arc::from("test"),
            rank: 0,
        }
    }

    fn fast() -> ConnectConfig {
        ConnectConfig {
            t1: Duration::from_millis(10),
            t2: Duration::from_millis(40),
            ..ConnectConfig::default()
        }
    }

    /// A closed UDP port: bind, note the port, close.
    async fn closed_port(ip: &str) -> SocketAddr {
        let s = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
        s.local_addr().unwrap()
    }

    #[test]
    fn schedule_doubles_and_caps() {
        let ms = Duration::from_millis;
        // RFC 3261 defaults: 11 transmissions in 32 s.
        let s = transmit_schedule(ms(500), ms(4000));
        let expect: Vec<Duration> = [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(s, expect);
        let s = transmit_schedule(ms(10), ms(40));
        assert_eq!(&s[..5], &[ms(0), ms(10), ms(30), ms(70), ms(110)]);
        assert_eq!(*s.last().unwrap(), ms(630));
        assert_eq!(s.len(), 18);
    }

    #[tokio::test]
    async fn answers_from_a_responder() {
        for ip in ["127.0.0.1", "[::1]"] {
            let server = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
            let addr = server.local_addr().unwrap();
            let serve = async {
                let mut buf = vec![0; 65536];
                let (n, peer) = server.recv_from(&mut buf).await.unwrap();
                let req = parse_request(&buf[..n]).unwrap();
                server
                    .send_to(&req.options_ok(Some(peer)), peer)
                    .await
                    .unwrap();
                peer
            };
            let (res, peer) = tokio::join!(run(addr, ConnectConfig::default(), &|_| {}), serve);
            let c = res.unwrap();
            assert_eq!(c.local, peer);
            let r = c.response.unwrap();
            assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
            assert_eq!(c.requests_sent, 1);
            assert!(c.transport_ready >= r.rtt);
            match c.connection {
                Connection::Udp(s) => assert_eq!(s.peer_addr().unwrap(), addr),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        for ip in ["127.0.0.1", "[::1]"] {
            let addr = closed_port(ip).await;
            // Default timers: without the ICMP shortcut this would take 32 s.
            let err = tokio::time::timeout(
                Duration::from_secs(10),
                run(addr, ConnectConfig::default(), &|_| {}),
            )
            .await
            .expect("ICMP unreachable must end the attempt long before Timer F")
            .unwrap_err();
            assert_eq!(err.class, ErrorClass::Refused, "{ip}: {err}");
        }
    }

    #[tokio::test]
    async fn garbage_then_stray_then_valid_response() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let serve = async {
            let mut buf = vec![0; 65536];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            let req = parse_request(&buf[..n]).unwrap();
            server.send_to(b"\x00\xffgarbage", peer).await.unwrap();
            server
                .send_to(b"SIP/2.0 200 OK\r\n\r\n", peer)
                .await
                .unwrap();
            // A valid response to some other transaction.
            let other = String::from_utf8(req.options_ok(Some(peer)))
                .unwrap()
                .replace(&req.call_id, "someone-else");
            server.send_to(other.as_bytes(), peer).await.unwrap();
            server
                .send_to(&req.response(503).build(), peer)
                .await
                .unwrap();
        };
        let (res, ()) = tokio::join!(run(addr, fast(), &|_| {}), serve);
        let c = res.unwrap();
        // Any final status proves reachability; the 503 is what matched.
        assert_eq!(c.response.unwrap().status, 503);
    }

    #[tokio::test]
    async fn silent_server_times_out_after_the_timer_e_schedule() {
        let cfg = fast();
        let expected = transmit_schedule(cfg.t1, cfg.t2).len();
        let silent = UdpSocket::bind("[::1]:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let err = run(addr, cfg.clone(), &|_| {}).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Timeout, "{err}");
        assert!(
            err.detail.contains(&format!("{expected} request(s)")),
            "{err}"
        );

        // The silent socket saw exactly the schedule's transmissions, all
        // carrying the same branch (retransmissions, not new transactions).
        let mut buf = vec![0; 65536];
        let mut branches = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while branches.len() < expected {
                let n = silent.recv(&mut buf).await.unwrap();
                let req = parse_request(&buf[..n]).unwrap();
                branches.push(req.vias[0].clone());
            }
        })
        .await
        .expect("every scheduled transmission arrives");
        assert!(
            silent.try_recv(&mut buf).is_err(),
            "no transmission beyond the schedule"
        );
        assert!(branches.windows(2).all(|w| w[0] == w[1]));
    }

    #[tokio::test]
    async fn stray_response_flood_is_bounded() {
        use crate::connect::stream::MAX_IGNORED_MESSAGES;
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let done = std::cell::Cell::new(false);
        let flood = async {
            let mut buf = vec![0; 65536];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            let req = parse_request(&buf[..n]).unwrap();
            // Well-formed answers to some other transaction, far more than
            // the cap, until the attempt gives up.
            let stray = String::from_utf8(req.options_ok(Some(peer)))
                .unwrap()
                .replace(&req.call_id, "someone-else");
            let mut sent = 0u32;
            while !done.get() && sent < 20 * MAX_IGNORED_MESSAGES {
                server.send_to(stray.as_bytes(), peer).await.unwrap();
                sent += 1;
                if sent.is_multiple_of(16) {
                    tokio::task::yield_now().await; // let the attempt drain its socket
                }
            }
            sent
        };
        // Timer F (12.8 s) is far away: only the cap can end this early.
        let cfg = ConnectConfig {
            t1: Duration::from_millis(200),
            ..ConnectConfig::default()
        };
        let attempt = async {
            let res = run(addr, cfg, &|_| {}).await;
            done.set(true);
            res
        };
        let (res, sent) = tokio::join!(attempt, flood);
        let err = res.unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidResponse, "{err}");
        // It stopped exactly at the cap while the peer was still sending.
        assert!(
            err.detail.contains(&format!(
                "peer sent {MAX_IGNORED_MESSAGES} non-matching messages"
            )),
            "{err}"
        );
        assert!(sent >= MAX_IGNORED_MESSAGES, "{sent}");
    }

    #[tokio::test]
    async fn garbage_flood_is_bounded() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let serve = async {
            let mut buf = vec![0; 65536];
            let (_, peer) = server.recv_from(&mut buf).await.unwrap();
            for _ in 0..MAX_GARBAGE_DATAGRAMS {
                server.send_to(b"not sip", peer).await.unwrap();
            }
        };
        let (res, ()) = tokio::join!(run(addr, ConnectConfig::default(), &|_| {}), serve);
        assert_eq!(res.unwrap_err().class, ErrorClass::InvalidResponse);
    }
}
