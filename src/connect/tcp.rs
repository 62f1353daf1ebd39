//! TCP attempts: a non-blocking connect (V6ONLY, TCP_NODELAY, optional source
//! address) handed to tokio; with `probe_streams`, an OPTIONS on the new
//! connection and its answer read as the shared stream probe does for every
//! stream (`connect/stream.rs`).

use std::time::Duration;

use socket2::{Protocol, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::stream::probe_stream;
use super::{canonical, local_error, new_socket, ConnectConfig, Connected, Connection, Progress};
use crate::endpoint::{AttemptError, Endpoint, ErrorClass};

/// Connects over TCP, then optionally probes with OPTIONS.
///
/// The handshake is bounded by Timer F (64·T1) so that a black-holed SYN does
/// not wait for the kernel's ~2 minute give-up; so is the probe's answer.
pub async fn attempt(
    endpoint: &Endpoint,
    cfg: &ConnectConfig,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Connected, AttemptError> {
    let (mut stream, transport_ready, local, dst) = connect(endpoint, cfg).await?;
    let mut requests_sent = 0;
    let response = if cfg.probe_streams {
        progress(Progress::TransportUp {
            after: transport_ready,
        });
        let probe = cfg.probe_for(endpoint, local);
        requests_sent = 1;
        Some(probe_stream(&mut stream, &probe, cfg.timer_f(), dst).await?)
    } else {
        None
    };
    Ok(Connected {
        connection: Connection::Tcp(stream),
        local,
        transport_ready,
        response,
        requests_sent,
    })
}

/// The TCP connect itself, shared with TLS: the stream, the time since the
/// start, the local address and the (canonical) destination.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    cfg: &ConnectConfig,
) -> Result<
    (
        TcpStream,
        Duration,
        std::net::SocketAddr,
        std::net::SocketAddr,
    ),
    AttemptError,
> {
    let start = Instant::now();
    let dst = canonical(endpoint.addr);
    let socket = new_socket(&dst, Type::STREAM, Protocol::TCP, cfg)?;
    socket
        .set_tcp_nodelay(true)
        .map_err(|e| local_error("TCP_NODELAY", &e))?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let stream = match tokio::time::timeout(cfg.timer_f(), socket.connect(dst)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(AttemptError::io(&format!("connect {dst}"), &e)),
        Err(_) => {
            return Err(AttemptError::new(
                ErrorClass::Timeout,
                format!("connect {dst}: no answer to SYN in {:?}", cfg.timer_f()),
            ))
        }
    };
    let transport_ready = start.elapsed();
    let local = stream
        .local_addr()
        .map_err(|e| local_error("local address", &e))?;
    Ok((stream, transport_ready, local, dst))
}

/// The stream of a TCP [`Connection`], if it is one.
pub fn into_stream(connection: Connection) -> Option<TcpStream> {
    match connection {
        Connection::Tcp(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::attempt as dispatch;
    use crate::connect::stream::{
        probe_stream_counted, PeerWork, MAX_IGNORED_MESSAGES, MAX_PEER_BYTES,
    };
    use crate::endpoint::Transport;
    use crate::sip::OptionsProbe;
    use crate::sip::{parse_request, Frame, StreamFramer};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn run(
        addr: SocketAddr,
        cfg: ConnectConfig,
        progress: &(dyn Fn(crate::connect::Progress) + Send + Sync),
    ) -> Result<Connected, AttemptError> {
        dispatch(&endpoint(addr), &cfg, progress).await
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint {
            transport: Transport::Tcp,
            addr,
            host: Arc::from("test"),
            rank: 0,
        }
    }

    fn probing() -> ConnectConfig {
        ConnectConfig {
            probe_streams: true,
            t1: Duration::from_millis(10),
            ..ConnectConfig::default()
        }
    }

    /// Reads one framed request from `s`.
    async fn read_request(s: &mut TcpStream) -> crate::sip::Request {
        let mut framer = StreamFramer::default();
        let mut buf = vec![0; 4096];
        loop {
            if let Some(Frame::Message(m)) = framer.next_frame().unwrap() {
                return parse_request(&m).unwrap();
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            framer.push(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn connect_without_probe() {
        for ip in ["127.0.0.1", "[::1]"] {
            let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let calls = Mutex::new(0);
            let count = |_| *calls.lock().unwrap() += 1;
            let (res, accepted) = tokio::join!(
                run(addr, ConnectConfig::default(), &count),
                listener.accept()
            );
            let c = res.unwrap();
            assert_eq!(accepted.unwrap().1, c.local);
            assert!(c.response.is_none());
            assert_eq!(c.requests_sent, 0);
            assert_eq!(
                *calls.lock().unwrap(),
                0,
                "no TransportUp when nothing follows"
            );
            let stream = into_stream(c.connection).unwrap();
            assert_eq!(stream.peer_addr().unwrap(), addr);
            assert!(stream.nodelay().unwrap());
        }
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        for ip in ["127.0.0.1", "[::1]"] {
            let addr = TcpListener::bind(format!("{ip}:0"))
                .await
                .unwrap()
                .local_addr()
                .unwrap(); // listener dropped: port closed
            let err = run(addr, ConnectConfig::default(), &|_| {})
                .await
                .unwrap_err();
            assert_eq!(err.class, ErrorClass::Refused, "{err}");
        }
    }

    #[tokio::test]
    async fn probe_gets_its_response() {
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events = Mutex::new(Vec::new());
        let serve = async {
            let (mut s, peer) = listener.accept().await.unwrap();
            let req = read_request(&mut s).await;
            assert_eq!(req.method, "OPTIONS");
            assert!(req.vias[0].starts_with("SIP/2.0/TCP [::1]:"));
            // A keep-alive, a non-matching response, a server request, then the answer,
            // written in one go to exercise framing of several messages per read.
            let mut out = b"\r\n\r\n".to_vec();
            out.extend(
                String::from_utf8(req.response(200).build())
                    .unwrap()
                    .replace(&req.call_id, "other")
                    .into_bytes(),
            );
            out.extend(
                b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP s\r\nFrom: <sip:s>;tag=1\r\nTo: <sip:x>\r\n\
                  Call-ID: srv\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            );
            out.extend(req.options_ok(Some(peer)));
            s.write_all(&out).await.unwrap();
            s
        };
        let progress = |p: Progress| events.lock().unwrap().push(p);
        let (res, _server_side) = tokio::join!(run(addr, probing(), &progress), serve);
        let c = res.unwrap();
        let r = c.response.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(c.requests_sent, 1);
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1);
        let Progress::TransportUp { after } = events[0];
        assert_eq!(after, c.transport_ready);
    }

    #[tokio::test]
    async fn probe_peer_close_is_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = async {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            drop(s);
        };
        let (res, ()) = tokio::join!(run(addr, probing(), &|_| {}), serve);
        assert_eq!(res.unwrap_err().class, ErrorClass::Reset);
    }

    #[tokio::test]
    async fn probe_garbage_is_invalid() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = async {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            s
        };
        let (res, _s) = tokio::join!(run(addr, probing(), &|_| {}), serve);
        assert_eq!(res.unwrap_err().class, ErrorClass::InvalidResponse);
    }

    #[tokio::test]
    async fn probe_silence_is_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = async {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s // keep it open, never answer
        };
        let (res, _s) = tokio::join!(run(addr, probing(), &|_| {}), serve);
        assert_eq!(res.unwrap_err().class, ErrorClass::Timeout);
    }

    #[tokio::test]
    async fn probe_work_is_capped_against_a_flooding_peer() {
        // What the peer streams after reading the OPTIONS, and what the cap
        // that stops the attempt says.
        type Flood = fn(&crate::sip::Request) -> Vec<u8>;
        let floods: [(&str, Flood, &str); 3] = [
            (
                "keep-alives",
                |_| b"\r\n\r\n".to_vec(),
                "non-matching messages",
            ),
            (
                "other transactions' responses",
                |req| {
                    String::from_utf8(req.response(200).build())
                        .unwrap()
                        .replace(&req.call_id, "someone-else")
                        .into_bytes()
                },
                "non-matching messages",
            ),
            (
                "bare line ends",
                |_| b"\n".to_vec(),
                "bytes without answering",
            ),
        ];
        for (what, unit, cap) in floods {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let flood = async {
                let (mut s, _) = listener.accept().await.unwrap();
                let req = read_request(&mut s).await;
                let batch = unit(&req).repeat(64 * 1024 / unit(&req).len() + 1);
                let mut written = 0usize;
                // Until the attempt hangs up (bounded: 256 MiB).
                while written < 256 << 20 && s.write_all(&batch).await.is_ok() {
                    written += batch.len();
                }
                written
            };
            let probe_it = async {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let local = stream.local_addr().unwrap();
                let probe = OptionsProbe::new("sip:x", Transport::Tcp, local);
                let mut work = PeerWork::default();
                // Timer F is far away: only the cap can end this early.
                let result = probe_stream_counted(
                    &mut stream,
                    &probe,
                    Duration::from_secs(60),
                    addr,
                    &mut work,
                )
                .await;
                drop(stream);
                (result, work)
            };
            let ((result, work), written) = tokio::time::timeout(Duration::from_secs(30), async {
                tokio::join!(probe_it, flood)
            })
            .await
            .expect("the cap ends the attempt");
            let err = result.unwrap_err();
            assert_eq!(err.class, ErrorClass::InvalidResponse, "{what}: {err}");
            assert!(err.detail.contains(cap), "{what}: {err}");
            // The work done stays within the caps (plus one read), while the
            // peer kept sending.
            assert!(work.ignored <= MAX_IGNORED_MESSAGES, "{what}: {work:?}");
            assert!(work.bytes <= MAX_PEER_BYTES + 16 * 1024, "{what}: {work:?}");
            assert!(written >= work.bytes, "{what}");
        }
    }

    #[tokio::test]
    async fn dropping_the_attempt_closes_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = ConnectConfig {
            probe_streams: true,
            ..ConnectConfig::default()
        };
        let ep = endpoint(addr);
        let serve = async {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s
        };
        // The server got the OPTIONS and never answers: the attempt is
        // mid-probe when select! drops it.
        let mut server_side = tokio::select! {
            _ = dispatch(&ep, &cfg, &|_| {}) => panic!("the attempt cannot finish"),
            s = serve => s,
        };
        let mut buf = [0u8; 16];
        let n = server_side.read(&mut buf).await.unwrap();
        assert_eq!(n, 0, "the dropped attempt closed its socket");
    }
}
