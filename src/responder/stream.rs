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

use super::alias::{self, AliasRefusal, ConnectionSecurity, Outbound};
use super::bindings::FlowRef;
use super::config::ResponderConfig;
use super::counters::{bump, Cell};
use super::registrar::FlowCommand;
use super::slots::{SlotGuard, Slots};
use super::Ctx;
use crate::connect::sctp::{SctpListener, SctpStream};
use crate::connect::tls::CertIdentities;
use crate::endpoint::Transport;
use crate::sip::{
    parse_response, reject_invalid_request, Frame, OptionsProbe, SipParseError, StreamFramer, Via,
};

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

/// Makes closing `stream` send a TCP RST instead of a FIN (SO_LINGER 0):
/// the registrar breaking a flow as a failing network or peer would.
fn reset_on_close(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("SO_LINGER 0: {e}");
    }
}

/// How a connection's service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Closed (by the peer, a bound, shutdown): close normally.
    Closed,
    /// The registrar asked for a reset: close with RST where possible.
    Reset,
}

/// The local address of a connection, for the Via of requests sent over
/// it; the unspecified address if the socket cannot tell.
fn local_or_unspecified(local: io::Result<SocketAddr>, peer: SocketAddr) -> SocketAddr {
    local.unwrap_or_else(|_| {
        let any: std::net::IpAddr = if peer.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        SocketAddr::new(any, 0)
    })
}

/// The SIP identities of the certificate a TLS client presented (and rustls
/// verified against the client CA), if it presented one. A certificate that
/// cannot be read holds no identity, so it covers no sent-by.
fn client_identities(conn: &rustls::ServerConnection) -> Option<CertIdentities> {
    let leaf = conn.peer_certificates()?.first()?;
    Some(CertIdentities::from_der(leaf.as_ref()).unwrap_or_default())
}

async fn serve_accepted(
    accepted: Accepted,
    peer: SocketAddr,
    ctx: Ctx,
    limits: StreamLimits,
    slot: SlotGuard,
) {
    match accepted {
        Accepted::Tcp(mut stream) => {
            let _ = stream.set_nodelay(true);
            limit_send_buffer(&stream, limits.send_buffer);
            let conn = Conn::plain(Transport::Tcp, peer, stream.local_addr());
            if serve_connection(&mut stream, conn, ctx, limits, slot).await == Ending::Reset {
                reset_on_close(&stream);
            }
        }
        Accepted::Sctp(stream) => {
            // A reset SCTP association is just closed (no linger trick).
            let conn = Conn::plain(Transport::Sctp, peer, stream.local_addr());
            serve_connection(stream, conn, ctx, limits, slot).await;
        }
        Accepted::Tls(stream, acceptor) => {
            let _ = stream.set_nodelay(true);
            limit_send_buffer(&stream, limits.send_buffer);
            let local = local_or_unspecified(stream.local_addr(), peer);
            let cell = ctx.stats.cell(Transport::Tls, &peer);
            match tokio::time::timeout(limits.request, acceptor.accept(stream)).await {
                Ok(Ok(mut tls)) => {
                    let conn = Conn {
                        transport: Transport::Tls,
                        peer,
                        local,
                        security: ConnectionSecurity::Tls {
                            client: client_identities(tls.get_ref().1),
                        },
                    };
                    if serve_connection(&mut tls, conn, ctx, limits, slot).await == Ending::Reset {
                        reset_on_close(tls.get_ref().0);
                    }
                }
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

/// One served connection: its transport, ends and security.
struct Conn {
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    security: ConnectionSecurity,
}

impl Conn {
    /// A connection without TLS (TCP or SCTP).
    fn plain(transport: Transport, peer: SocketAddr, local: io::Result<SocketAddr>) -> Conn {
        Conn {
            transport,
            peer,
            local: local_or_unspecified(local, peer),
            security: ConnectionSecurity::Plain,
        }
    }
}

/// A connection's part in RFC 5923 reuse: the aliases it was recorded
/// under, its outbound queue (made when the first alias is honoured), and
/// the call-backs sent over it that await an answer.
struct Reuse {
    connection: u64,
    aliases: std::sync::Arc<alias::AliasTable>,
    recorded: Vec<alias::AliasKey>,
    queue: Option<tokio::sync::mpsc::Receiver<Outbound>>,
    queue_sender: Option<tokio::sync::mpsc::Sender<Outbound>>,
    awaiting: Vec<OptionsProbe>,
    reused: bool,
}

/// Most call-backs queued on one connection, unsent.
const OUTBOUND_QUEUE: usize = 8;
/// Most call-backs awaiting an answer on one connection; older ones are
/// forgotten (a client that never answers does not grow the list).
const MAX_AWAITING: usize = 16;

impl Drop for Reuse {
    fn drop(&mut self) {
        // However the connection ends (closed, timed out, evicted, shut
        // down), nothing may be sent to its aliases through it any more.
        if !self.recorded.is_empty() {
            self.aliases.forget(self.connection);
        }
    }
}

impl Reuse {
    fn new(connection: u64, ctx: &Ctx) -> Reuse {
        Reuse {
            connection,
            aliases: ctx.aliases.clone(),
            recorded: Vec::new(),
            queue: None,
            queue_sender: None,
            awaiting: Vec::new(),
            reused: false,
        }
    }

    /// Applies the alias rule to a request's top Via, counts the decision,
    /// records an honoured alias and, with call-back on, sends the client an
    /// OPTIONS through the alias table.
    fn on_request(&mut self, via: &Via, conn: &Conn, ctx: &Ctx, cell: &Cell) {
        let key = match alias::decide(via, conn.transport, &conn.security) {
            None => return,
            Some(Err(why)) => {
                tracing::debug!(peer = %conn.peer, ?why, "alias ignored");
                bump(match why {
                    AliasRefusal::NotTls => &cell.alias_refused_not_tls,
                    AliasRefusal::NoClientCertificate => &cell.alias_refused_no_client_cert,
                    AliasRefusal::CertificateDoesNotCover => &cell.alias_refused_cert_mismatch,
                });
                return;
            }
            Some(Ok(key)) => key,
        };
        bump(&cell.alias_accepted);
        if self.recorded.contains(&key) {
            return; // already recorded (and called back) over this connection
        }
        let sender = match &self.queue_sender {
            Some(s) => s.clone(),
            None => {
                let (tx, rx) = tokio::sync::mpsc::channel(OUTBOUND_QUEUE);
                self.queue = Some(rx);
                self.queue_sender = Some(tx.clone());
                tx
            }
        };
        self.aliases.record(key.clone(), self.connection, sender);
        self.recorded.push(key.clone());
        if ctx.call_back && !ctx.aliases.call_back(&key, conn.local) {
            bump(&cell.callbacks_unsent);
        }
    }

    /// True (and counted) if `msg` is a response to one of our call-backs.
    fn take_answer(&mut self, msg: &[u8], cell: &Cell) -> bool {
        if self.awaiting.is_empty() {
            return false;
        }
        let Ok(response) = parse_response(msg) else {
            return false;
        };
        let Some(i) = self.awaiting.iter().position(|p| response.matches(p)) else {
            return false;
        };
        bump(&cell.messages);
        if response.status >= 200 {
            self.awaiting.remove(i);
            bump(&cell.callbacks_answered);
        }
        true
    }

    /// Writes a call-back; false if the connection failed (or timed out).
    async fn send<S>(&mut self, stream: &mut S, out: Outbound, cell: &Cell, limit: Duration) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        if write_answer(stream, &out.probe.to_bytes(), limit)
            .await
            .is_err()
        {
            bump(&cell.callbacks_unsent);
            return false;
        }
        bump(&cell.callbacks_sent);
        if !self.reused {
            self.reused = true;
            bump(&cell.connections_reused);
        }
        if self.awaiting.len() >= MAX_AWAITING {
            self.awaiting.remove(0);
        }
        self.awaiting.push(out.probe);
        true
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

/// What ended a wait on a connection: bytes (or not) from the peer, or a
/// request of ours to send.
enum Woken {
    Read(Result<io::Result<usize>, tokio::time::error::Elapsed>),
    Send(Outbound),
    /// A registrar's command for this flow.
    Flow(FlowCommand),
}

/// Serves one stream connection until the peer closes it or breaks a bound:
/// idle for `limits.idle`, a request not complete `limits.request` after its
/// first byte, an answer not written within `limits.write`, a framing error.
/// Meanwhile it writes the requests queued for it through the alias table
/// (RFC 5923 call-backs) and matches their answers.
async fn serve_connection<S>(
    mut stream: S,
    conn: Conn,
    ctx: Ctx,
    limits: StreamLimits,
    slot: SlotGuard,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (transport, peer) = (conn.transport, conn.peer);
    let cell = ctx.stats.cell(transport, &peer);
    let mut reuse = Reuse::new(slot.id, &ctx);
    // As a registrar: the queue of requests down this flow (and resets),
    // registered while the connection lives.
    let (mut flow_commands, _flow_guard) = match &ctx.registrar {
        Some(registrar) => {
            let (rx, guard) = registrar.attach_stream(slot.id);
            (Some(rx), Some(guard))
        }
        None => (None, None),
    };
    let flow = FlowRef {
        transport,
        local: conn.local,
        peer,
        connection: Some(slot.id),
    };
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
                    return Ending::Closed;
                }
            };
            completed = true;
            slot.touch();
            let mut top_via = None;
            let reply = match frame {
                Frame::KeepAlive => {
                    bump(&cell.keepalives);
                    ctx.stats.touched();
                    (!ctx.silent).then(|| b"\r\n".to_vec()) // RFC 5626 pong
                }
                Frame::Message(msg) if reuse.take_answer(&msg, cell) => {
                    ctx.stats.touched();
                    None
                }
                Frame::Message(msg)
                    if ctx
                        .registrar
                        .as_ref()
                        .is_some_and(|r| r.take_response(&msg)) =>
                {
                    None
                }
                Frame::Message(msg) => {
                    let (reply, via) = ctx.handle_request(flow, &msg);
                    top_via = via;
                    reply
                }
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
                        return Ending::Closed;
                    }
                }
            }
            // After the answer, so that the client has it before any
            // call-back this request's alias may cause.
            if let Some(via) = top_via.filter(|_| !ctx.silent) {
                reuse.on_request(&via, &conn, &ctx, cell);
                ctx.stats.touched();
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
        let woken = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => Woken::Read(read),
            Some(out) = next_queued(&mut reuse.queue) => Woken::Send(out),
            Some(command) = next_queued(&mut flow_commands) => Woken::Flow(command),
        };
        let n = match woken {
            Woken::Flow(FlowCommand::Send(bytes, written)) => {
                let ok = write_answer(&mut stream, &bytes, limits.write)
                    .await
                    .is_ok();
                let _ = written.send(ok);
                if !ok {
                    return Ending::Closed;
                }
                continue;
            }
            Woken::Flow(FlowCommand::Reset(done)) => {
                tracing::debug!(%peer, "resetting a flow's connection as asked");
                // Said before the socket closes: the caller's wait is for the
                // task to act, and the close follows at once.
                let _ = done.send(());
                return Ending::Reset;
            }
            Woken::Send(out) => {
                let sent = reuse.send(&mut stream, out, cell, limits.write).await;
                ctx.stats.touched();
                if !sent {
                    return Ending::Closed;
                }
                continue;
            }
            Woken::Read(Ok(Ok(0)) | Ok(Err(_))) => return Ending::Closed,
            Woken::Read(Ok(Ok(n))) => n,
            Woken::Read(Err(_)) => {
                if request_deadline.is_some_and(|r| r <= idle_deadline) {
                    tracing::debug!(%peer, "closing a connection whose request is too slow");
                    bump(&cell.connections_request_timeout);
                } else {
                    bump(&cell.connections_idle_closed);
                }
                ctx.stats.touched();
                return Ending::Closed;
            }
        };
        framer.push(&buf[..n]);
    }
}

/// The next item of a connection's queue (call-backs, a registrar's
/// commands); never ready when the connection has no such queue.
async fn next_queued<T>(queue: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match queue {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
