//! The stream listeners (TCP, TLS over TCP, SCTP): accepting under the
//! connection cap, and serving one connection within its bounds (idle,
//! request and write deadlines, a capped send buffer).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::config::ResponderConfig;
use super::counters::bump;
use super::slots::{SlotGuard, Slots};
use super::Ctx;
use crate::connect::sctp::{SctpListener, SctpStream};
use crate::endpoint::Transport;
use crate::sip::{reject_invalid_request, Frame, SipParseError, StreamFramer};

/// A listening stream socket: TCP, TLS over TCP, or SCTP.
pub(super) enum StreamListener {
    Tcp(TcpListener),
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
    Sctp(SctpListener),
}

/// A freshly accepted connection, before any TLS handshake.
enum Accepted {
    Tcp(TcpStream),
    Tls(TcpStream, tokio_rustls::TlsAcceptor),
    Sctp(SctpStream),
}

impl StreamListener {
    fn transport(&self) -> Transport {
        match self {
            StreamListener::Tcp(_) => Transport::Tcp,
            StreamListener::Tls(..) => Transport::Tls,
            StreamListener::Sctp(_) => Transport::Sctp,
        }
    }

    async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        Ok(match self {
            StreamListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                (Accepted::Tcp(s), peer)
            }
            StreamListener::Tls(l, acceptor) => {
                let (s, peer) = l.accept().await?;
                (Accepted::Tls(s, acceptor.clone()), peer)
            }
            StreamListener::Sctp(l) => {
                let (s, peer) = l.accept().await?;
                (Accepted::Sctp(s), peer)
            }
        })
    }
}

/// The per-connection bounds of the stream listeners.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamLimits {
    idle: Duration,
    request: Duration,
    write: Duration,
    send_buffer: usize,
}

impl StreamLimits {
    pub(super) fn of(cfg: &ResponderConfig) -> StreamLimits {
        // Zero would close every connection at once; a millisecond is the floor.
        let floor = |d: Duration| d.max(Duration::from_millis(1));
        StreamLimits {
            idle: floor(cfg.idle_timeout),
            request: floor(cfg.request_timeout),
            write: floor(cfg.write_timeout),
            send_buffer: cfg.max_pending_output,
        }
    }
}

/// Accepts on `listener` and serves each connection that gets a slot,
/// until `stop` changes; then closes every connection.
pub(super) async fn serve_stream_listener(
    listener: StreamListener,
    ctx: Ctx,
    mut stop: watch::Receiver<bool>,
    slots: Arc<Slots>,
    limits: StreamLimits,
) {
    let transport = listener.transport();
    // Dropping this set (on return or abort) aborts and closes every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                conns.shutdown().await;
                return;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off briefly instead of spinning.
                        tracing::warn!("{transport} accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // All slots may be taken: wait (at most the grace) for one.
                let slot = tokio::select! {
                    slot = slots.admit(transport, peer, &ctx.stats) => slot,
                    _ = stop.changed() => {
                        conns.shutdown().await;
                        return;
                    }
                };
                let cell = ctx.stats.cell(transport, &peer);
                match slot {
                    Some(slot) => {
                        bump(&cell.connections);
                        let id = slot.id;
                        let task = conns.spawn(serve_accepted(stream, peer, ctx.clone(), limits, slot));
                        slots.set_abort(id, task);
                    }
                    None => {
                        bump(&cell.connections_rejected);
                        drop(stream);
                    }
                }
                ctx.stats.touched();
            }
        }
    }
}

/// Caps the kernel send buffer of a TCP connection (see `max_pending_output`).
fn limit_send_buffer(stream: &TcpStream, bytes: usize) {
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(bytes) {
        tracing::debug!("SO_SNDBUF {bytes}: {e}");
    }
}

async fn serve_accepted(
    accepted: Accepted,
    peer: SocketAddr,
    ctx: Ctx,
    limits: StreamLimits,
    slot: SlotGuard,
) {
    match accepted {
        Accepted::Tcp(stream) => {
            let _ = stream.set_nodelay(true);
            limit_send_buffer(&stream, limits.send_buffer);
            serve_connection(stream, Transport::Tcp, peer, ctx, limits, slot).await
        }
        Accepted::Sctp(stream) => {
            serve_connection(stream, Transport::Sctp, peer, ctx, limits, slot).await
        }
        Accepted::Tls(stream, acceptor) => {
            let _ = stream.set_nodelay(true);
            limit_send_buffer(&stream, limits.send_buffer);
            let cell = ctx.stats.cell(Transport::Tls, &peer);
            match tokio::time::timeout(limits.request, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, Transport::Tls, peer, ctx, limits, slot).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    bump(&cell.handshake_failures);
                    ctx.stats.touched();
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    bump(&cell.handshake_failures);
                    bump(&cell.connections_request_timeout);
                    ctx.stats.touched();
                }
            }
        }
    }
}

/// Writes one answer within the write timeout. `Err(true)` if it timed out,
/// `Err(false)` if the connection failed.
async fn write_answer<S>(stream: &mut S, bytes: &[u8], limit: Duration) -> Result<(), bool>
where
    S: AsyncWrite + Unpin,
{
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// Serves one stream connection until the peer closes it or breaks a bound:
/// idle for `limits.idle`, a request not complete `limits.request` after its
/// first byte, an answer not written within `limits.write`, a framing error.
async fn serve_connection<S>(
    mut stream: S,
    transport: Transport,
    peer: SocketAddr,
    ctx: Ctx,
    limits: StreamLimits,
    slot: SlotGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cell = ctx.stats.cell(transport, &peer);
    let mut framer = StreamFramer::new(ctx.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    // When the first byte of the request being received arrived; None
    // between requests.
    let mut request_started: Option<Instant> = None;
    loop {
        let mut completed = false;
        loop {
            let frame = match framer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    // The stream cannot be resynchronised: answer 400 if the
                    // message can be answered (RFC 4475 §3.1.2.3, §3.3.9),
                    // then close.
                    tracing::debug!(%peer, %err, "closing a connection with a framing error");
                    bump(&cell.messages);
                    bump(&cell.invalid);
                    let too_large = matches!(err, SipParseError::TooLarge { .. });
                    let reply = (!ctx.silent && !too_large)
                        .then(|| reject_invalid_request(framer.pending(), Some(peer)))
                        .flatten();
                    if let Some(reply) = reply {
                        bump(&cell.responses);
                        let _ = write_answer(&mut stream, &reply, limits.write).await;
                    }
                    ctx.stats.touched();
                    return;
                }
            };
            completed = true;
            slot.touch();
            let reply = match frame {
                Frame::KeepAlive => {
                    bump(&cell.keepalives);
                    ctx.stats.touched();
                    (!ctx.silent).then(|| b"\r\n".to_vec()) // RFC 5626 pong
                }
                Frame::Message(msg) => ctx.handle(transport, peer, &msg),
            };
            if let Some(reply) = reply {
                match write_answer(&mut stream, &reply, limits.write).await {
                    Ok(()) => {}
                    Err(timed_out) => {
                        if timed_out {
                            tracing::debug!(%peer, "closing a connection that does not read");
                            bump(&cell.connections_write_timeout);
                            ctx.stats.touched();
                        }
                        return;
                    }
                }
            }
        }
        // A new request starts with its first byte that is not a line end
        // (a stray CRLF after a message is not a request in progress).
        if completed {
            request_started = None;
        }
        if framer.pending().iter().any(|b| !matches!(b, b'\r' | b'\n')) {
            request_started.get_or_insert_with(Instant::now);
        } else {
            request_started = None;
        }
        let idle_deadline = Instant::now() + limits.idle;
        let request_deadline = request_started.map(|t| t + limits.request);
        let deadline = request_deadline.map_or(idle_deadline, |r| r.min(idle_deadline));
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                if request_deadline.is_some_and(|r| r <= idle_deadline) {
                    tracing::debug!(%peer, "closing a connection whose request is too slow");
                    bump(&cell.connections_request_timeout);
                } else {
                    bump(&cell.connections_idle_closed);
                }
                ctx.stats.touched();
                return;
            }
        };
        framer.push(&buf[..n]);
    }
}
