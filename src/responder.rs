//! `siprace responder`: a minimal SIP UAS for tests and the lab.
//!
//! It answers OPTIONS with 200 OK over UDP and TCP, gives every other request a
//! sensible final response (never crashing on garbage), counts what it sees
//! per transport and address family, and can be told to stay silent (receive
//! but never answer) to play a black-holed server.
//!
//! Library use: [`start`] a [`ResponderConfig`], read the bound addresses and
//! [`stats`](ResponderHandle::stats) from the [`ResponderHandle`], then
//! [`shutdown`](ResponderHandle::shutdown). The CLI is [`ResponderArgs`] + [`run`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::endpoint::{Family, Transport};
use crate::sip::{parse_request, Frame, Request, StreamFramer, ALLOWED_METHODS, MAX_MESSAGE_SIZE};

/// Default cap on concurrent TCP connections (all listeners together).
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 1024;
/// Default time after which a TCP connection that sent nothing is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Configuration

/// One socket to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerConfig {
    /// [`Transport::Udp`] or [`Transport::Tcp`]; others are refused by [`start`].
    pub transport: Transport,
    /// Port 0 picks a free port; see [`ResponderHandle::listeners`].
    pub addr: SocketAddr,
    /// Receive and count, but never answer.
    pub silent: bool,
}

/// What the responder serves and its resource bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderConfig {
    pub listeners: Vec<ListenerConfig>,
    /// Connections beyond this are accepted and closed at once (counted as rejected).
    pub max_tcp_connections: usize,
    /// Larger messages are dropped (UDP) or close the connection (TCP).
    pub max_message_size: usize,
    /// A TCP connection silent for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            listeners: Vec::new(),
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            max_message_size: MAX_MESSAGE_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Which transports a `--listen` spec opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransports {
    Udp,
    Tcp,
    Both,
}

/// A `--listen` value: `udp:ADDR`, `tcp:ADDR` or `both:ADDR`, where ADDR is
/// `127.0.0.1:5060` or `[::1]:5060`, optionally followed by `,silent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    pub transports: ListenTransports,
    pub addr: SocketAddr,
    pub silent: bool,
}

impl ListenSpec {
    /// The listeners this spec stands for (two for `both`).
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        let ts: &[Transport] = match self.transports {
            ListenTransports::Udp => &[Transport::Udp],
            ListenTransports::Tcp => &[Transport::Tcp],
            ListenTransports::Both => &[Transport::Udp, Transport::Tcp],
        };
        ts.iter()
            .map(|&transport| ListenerConfig {
                transport,
                addr: self.addr,
                silent: self.silent,
            })
            .collect()
    }
}

/// Why a `--listen` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen spec {input:?}: {reason} (expected udp|tcp|both:ADDR:PORT[,silent], e.g. udp:[::1]:5060)")]
pub struct ListenSpecError {
    pub input: String,
    pub reason: String,
}

impl FromStr for ListenSpec {
    type Err = ListenSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ListenSpecError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (spec, silent) = match s.split_once(',') {
            Some((spec, "silent")) => (spec, true),
            Some(_) => return Err(fail("the only option after ',' is 'silent'")),
            None => (s, false),
        };
        let (kind, addr) = spec
            .split_once(':')
            .ok_or_else(|| fail("missing the transport prefix"))?;
        let transports = match kind.to_ascii_lowercase().as_str() {
            "udp" => ListenTransports::Udp,
            "tcp" => ListenTransports::Tcp,
            "both" => ListenTransports::Both,
            _ => return Err(fail("the transport must be udp, tcp or both")),
        };
        let addr = addr
            .parse()
            .map_err(|_| fail("the address must be IP:PORT, with IPv6 in brackets"))?;
        Ok(ListenSpec {
            transports,
            addr,
            silent,
        })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.transports {
            ListenTransports::Udp => "udp",
            ListenTransports::Tcp => "tcp",
            ListenTransports::Both => "both",
        };
        write!(f, "{kind}:{}", self.addr)?;
        if self.silent {
            f.write_str(",silent")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Counters

/// Counters for one transport and family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Datagrams or framed stream messages received (garbage included).
    pub messages: u64,
    /// Messages that parsed as requests.
    pub requests: u64,
    /// Of which OPTIONS.
    pub options: u64,
    /// Responses sent.
    pub responses: u64,
    /// Messages that were not valid requests (garbage, responses, framing errors).
    pub invalid: u64,
    /// Requests left unanswered because the listener is silent.
    pub dropped_silent: u64,
    /// CRLF keep-alives received.
    pub keepalives: u64,
    /// TCP connections accepted and served.
    pub connections: u64,
    /// TCP connections closed at once because of the connection cap.
    pub connections_rejected: u64,
    /// TCP connections closed for being idle.
    pub connections_idle_closed: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.messages += o.messages;
        self.requests += o.requests;
        self.options += o.options;
        self.responses += o.responses;
        self.invalid += o.invalid;
        self.dropped_silent += o.dropped_silent;
        self.keepalives += o.keepalives;
        self.connections += o.connections;
        self.connections_rejected += o.connections_rejected;
        self.connections_idle_closed += o.connections_idle_closed;
    }
}

/// Counters of one transport, per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FamilyCounters {
    pub ipv6: Counters,
    pub ipv4: Counters,
}

/// A snapshot of every counter; serialises as
/// `{"udp":{"ipv6":{...},"ipv4":{...}},"tcp":{...}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub udp: FamilyCounters,
    pub tcp: FamilyCounters,
}

impl StatsSnapshot {
    /// The counters of one transport and family (zero for TLS/SCTP).
    pub fn get(&self, transport: Transport, family: Family) -> Counters {
        let fc = match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            _ => return Counters::default(),
        };
        match family {
            Family::V6 => fc.ipv6,
            Family::V4 => fc.ipv4,
        }
    }

    /// Everything added up.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for c in [
            &self.udp.ipv6,
            &self.udp.ipv4,
            &self.tcp.ipv6,
            &self.tcp.ipv4,
        ] {
            t.add(c);
        }
        t
    }
}

#[derive(Default)]
struct Cell {
    messages: AtomicU64,
    requests: AtomicU64,
    options: AtomicU64,
    responses: AtomicU64,
    invalid: AtomicU64,
    dropped_silent: AtomicU64,
    keepalives: AtomicU64,
    connections: AtomicU64,
    connections_rejected: AtomicU64,
    connections_idle_closed: AtomicU64,
}

impl Cell {
    fn snapshot(&self) -> Counters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            messages: l(&self.messages),
            requests: l(&self.requests),
            options: l(&self.options),
            responses: l(&self.responses),
            invalid: l(&self.invalid),
            dropped_silent: l(&self.dropped_silent),
            keepalives: l(&self.keepalives),
            connections: l(&self.connections),
            connections_rejected: l(&self.connections_rejected),
            connections_idle_closed: l(&self.connections_idle_closed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Shared counters, plus a notification whenever one changes.
#[derive(Default)]
struct Stats {
    /// udp/v6, udp/v4, tcp/v6, tcp/v4.
    cells: [Cell; 4],
    changed: Notify,
}

impl Stats {
    fn cell(&self, transport: Transport, peer: &SocketAddr) -> &Cell {
        let t = usize::from(transport != Transport::Udp);
        let f = usize::from(Family::of(&peer.ip()) == Family::V4);
        &self.cells[t * 2 + f]
    }

    fn touched(&self) {
        self.changed.notify_waiters();
    }

    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            udp: FamilyCounters {
                ipv6: self.cells[0].snapshot(),
                ipv4: self.cells[1].snapshot(),
            },
            tcp: FamilyCounters {
                ipv6: self.cells[2].snapshot(),
                ipv4: self.cells[3].snapshot(),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The running responder

/// A listener as bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BoundListener {
    pub transport: Transport,
    /// The actual address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    pub silent: bool,
}

impl fmt::Display for BoundListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)?;
        if self.silent {
            f.write_str(" (silent)")?;
        }
        Ok(())
    }
}

/// A running responder. Dropping it stops every task at once; prefer
/// [`shutdown`](Self::shutdown) for the final counters.
pub struct ResponderHandle {
    listeners: Vec<BoundListener>,
    stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl fmt::Debug for ResponderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderHandle")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl ResponderHandle {
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The address of the first listener with this transport and family.
    pub fn addr(&self, transport: Transport, family: Family) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.transport == transport && Family::of(&l.addr.ip()) == family)
            .map(|l| l.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits until `pred` holds for the counters (re-checked after every
    /// change). Meant for tests and the lab: bound it with a timeout.
    pub async fn wait_for_stats(&self, pred: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        loop {
            let notified = self.stats.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let snap = self.stats.snapshot();
            if pred(&snap) {
                return snap;
            }
            notified.await;
        }
    }

    /// Stops accepting and receiving, closes every connection, waits for the
    /// tasks to end and returns the final counters.
    pub async fn shutdown(mut self) -> StatsSnapshot {
        let _ = self.shutdown.send(true);
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                if e.is_panic() {
                    tracing::error!("a responder task panicked: {e}");
                }
            }
        }
        self.stats.snapshot()
    }
}

/// Binds every listener and starts serving. Fails if any bind fails (nothing
/// keeps running then).
pub async fn start(cfg: ResponderConfig) -> io::Result<ResponderHandle> {
    let stats = Arc::new(Stats::default());
    let (shutdown, _) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(cfg.max_tcp_connections));
    let max_message = cfg.max_message_size.max(1);
    let mut tasks = JoinSet::new();
    let mut listeners = Vec::new();
    for l in &cfg.listeners {
        let ctx = Ctx {
            stats: stats.clone(),
            silent: l.silent,
            max_message,
        };
        let stop = shutdown.subscribe();
        let addr = match l.transport {
            Transport::Udp => {
                let socket = bind_socket(l.addr, Type::DGRAM, Protocol::UDP)?;
                let socket = UdpSocket::from_std(socket.into())?;
                let addr = socket.local_addr()?;
                tasks.spawn(serve_udp(socket, ctx, stop));
                addr
            }
            Transport::Tcp => {
                let socket = bind_socket(l.addr, Type::STREAM, Protocol::TCP)?;
                socket.listen(1024)?;
                let listener = TcpListener::from_std(socket.into())?;
                let addr = listener.local_addr()?;
                tasks.spawn(serve_tcp(
                    listener,
                    ctx,
                    stop,
                    permits.clone(),
                    cfg.idle_timeout,
                ));
                addr
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the responder does not serve {other}"),
                ))
            }
        };
        listeners.push(BoundListener {
            transport: l.transport,
            addr,
            silent: l.silent,
        });
    }
    Ok(ResponderHandle {
        listeners,
        stats,
        shutdown,
        tasks,
    })
}

/// A non-blocking bound socket; IPv6 sockets are V6ONLY so `[::]` and
/// `0.0.0.0` listeners can share a port and families are counted apart.
fn bind_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty.nonblocking(), Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    Ok(socket)
}

#[derive(Clone)]
struct Ctx {
    stats: Arc<Stats>,
    silent: bool,
    max_message: usize,
}

impl Ctx {
    /// Handles one datagram / framed message; returns the bytes to send back.
    fn handle(&self, transport: Transport, peer: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        let cell = self.stats.cell(transport, &peer);
        bump(&cell.messages);
        let reply = self.answer(cell, peer, bytes);
        if reply.is_some() {
            bump(&cell.responses);
        }
        self.stats.touched();
        reply
    }

    fn answer(&self, cell: &Cell, peer: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        if bytes.len() > self.max_message {
            bump(&cell.invalid);
            return None;
        }
        let req = match parse_request(bytes) {
            Ok(req) => req,
            Err(err) => {
                tracing::debug!(%peer, %err, "ignoring an invalid message");
                bump(&cell.invalid);
                return None;
            }
        };
        bump(&cell.requests);
        if req.method == "OPTIONS" {
            bump(&cell.options);
        }
        if self.silent {
            bump(&cell.dropped_silent);
            return None;
        }
        respond(&req, peer)
    }
}

/// The response the responder gives to `req`, if any (never to ACK).
pub fn respond(req: &Request, peer: SocketAddr) -> Option<Vec<u8>> {
    let src = Some(peer);
    let resp = match req.method.as_str() {
        "ACK" => return None,
        "OPTIONS" => return Some(req.options_ok(src)),
        "REGISTER" => {
            let mut b = req.response(200).received(src);
            for contact in req.headers.get_all("contact") {
                b = b.header("Contact", contact);
            }
            b
        }
        "INVITE" => req.response(486).received(src),
        "BYE" | "CANCEL" => req.response(481).received(src),
        "SUBSCRIBE" | "NOTIFY" | "MESSAGE" | "INFO" | "PRACK" | "UPDATE" | "REFER" | "PUBLISH" => {
            req.response(405)
                .received(src)
                .header("Allow", ALLOWED_METHODS)
        }
        _ => req
            .response(501)
            .received(src)
            .header("Allow", ALLOWED_METHODS),
    };
    Some(resp.build())
}

async fn serve_udp(socket: UdpSocket, ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = socket.recv_from(&mut buf) => {
                let (n, peer) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        // E.g. an ICMP error for an earlier answer: not fatal.
                        tracing::debug!("udp receive: {e}");
                        continue;
                    }
                };
                let bytes = &buf[..n];
                if bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    bump(&ctx.stats.cell(Transport::Udp, &peer).keepalives);
                    ctx.stats.touched();
                    continue;
                }
                if let Some(reply) = ctx.handle(Transport::Udp, peer, bytes) {
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        tracing::debug!(%peer, "udp send: {e}");
                    }
                }
            }
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    ctx: Ctx,
    mut stop: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
    idle: Duration,
) {
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
                        tracing::warn!("tcp accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let cell = ctx.stats.cell(Transport::Tcp, &peer);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        bump(&cell.connections);
                        conns.spawn(serve_connection(stream, peer, ctx.clone(), idle, permit));
                    }
                    Err(_) => {
                        bump(&cell.connections_rejected);
                        drop(stream);
                    }
                }
                ctx.stats.touched();
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Ctx,
    idle: Duration,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let cell = ctx.stats.cell(Transport::Tcp, &peer);
    let mut framer = StreamFramer::new(ctx.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        loop {
            let frame = match framer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    // The stream cannot be resynchronised: close it.
                    tracing::debug!(%peer, %err, "closing a connection with a framing error");
                    bump(&cell.messages);
                    bump(&cell.invalid);
                    ctx.stats.touched();
                    return;
                }
            };
            let reply = match frame {
                Frame::KeepAlive => {
                    bump(&cell.keepalives);
                    ctx.stats.touched();
                    (!ctx.silent).then(|| b"\r\n".to_vec()) // RFC 5626 pong
                }
                Frame::Message(msg) => ctx.handle(Transport::Tcp, peer, &msg),
            };
            if let Some(reply) = reply {
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
        let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                bump(&cell.connections_idle_closed);
                ctx.stats.touched();
                return;
            }
        };
        framer.push(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------
// CLI

/// `siprace responder`: answer SIP requests for tests and the lab.
#[derive(Debug, Clone, clap::Args)]
pub struct ResponderArgs {
    /// Where to listen: udp|tcp|both:ADDR:PORT[,silent], e.g. udp:[::1]:5060,
    /// tcp:127.0.0.1:5060, both:[::]:5060. Repeatable.
    #[arg(long = "listen", value_name = "SPEC", required = true)]
    pub listen: Vec<ListenSpec>,
    /// Never answer on any listener (receive and count only): a black-holed server.
    #[arg(long)]
    pub silent: bool,
    /// Print the counters as one JSON line every SECS seconds (and write --stats-file).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_every: Option<u64>,
    /// Write the counters as JSON to this file on shutdown (and every --stats-every).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Most TCP connections served at once; more are closed on accept.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TCP_CONNECTIONS)]
    pub max_connections: usize,
    /// Close TCP connections idle for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
}

impl ResponderArgs {
    pub fn config(&self) -> ResponderConfig {
        ResponderConfig {
            listeners: self
                .listen
                .iter()
                .flat_map(|spec| spec.listeners())
                .map(|mut l| {
                    l.silent |= self.silent;
                    l
                })
                .collect(),
            max_tcp_connections: self.max_connections,
            max_message_size: MAX_MESSAGE_SIZE,
            idle_timeout: Duration::from_secs(self.idle_timeout),
        }
    }
}

/// Runs the responder until Ctrl-C or SIGTERM.
pub async fn run(args: ResponderArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let handle = start(args.config()).await?;
    for l in handle.listeners() {
        println!("listening {l}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticker = args.stats_every.map(|secs| {
        let period = Duration::from_secs(secs);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            _ = term.recv() => break,
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let snap = handle.stats();
                println!("stats {}", serde_json::to_string(&snap)?);
                if let Some(path) = &args.stats_file {
                    write_stats(path, &snap)?;
                }
            }
        }
    }
    let snap = handle.shutdown().await;
    if let Some(path) = &args.stats_file {
        write_stats(path, &snap)?;
    }
    let t = snap.total();
    println!(
        "stopped: {} requests, {} responses, {} invalid, {} connections",
        t.requests, t.responses, t.invalid, t.connections
    );
    Ok(())
}

/// Writes the counters as pretty JSON, atomically (temp file + rename).
pub fn write_stats(path: &Path, snap: &StatsSnapshot) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let json = serde_json::to_vec_pretty(snap).map_err(io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ResponderArgs,
    }

    #[test]
    fn listen_specs() {
        let s: ListenSpec = "udp:[::1]:5060".parse().unwrap();
        assert_eq!(s.transports, ListenTransports::Udp);
        assert_eq!(s.addr, "[::1]:5060".parse().unwrap());
        assert!(!s.silent);
        let s: ListenSpec = "BOTH:0.0.0.0:5062,silent".parse().unwrap();
        assert_eq!(s.transports, ListenTransports::Both);
        assert!(s.silent);
        assert_eq!(s.to_string(), "both:0.0.0.0:5062,silent");
        let ls = s.listeners();
        assert_eq!(ls.len(), 2);
        assert_eq!(
            (ls[0].transport, ls[1].transport),
            (Transport::Udp, Transport::Tcp)
        );
        for bad in [
            "",
            "udp",
            "tls:[::1]:5061",
            "udp:::1:5060",
            "tcp:127.0.0.1",
            "udp:[::1]:5060,loud",
            "[::1]:5060",
        ] {
            assert!(bad.parse::<ListenSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_args() {
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "udp:[::1]:5060",
            "--listen",
            "both:127.0.0.1:0,silent",
            "--stats-every",
            "5",
        ])
        .unwrap();
        let cfg = cli.args.config();
        assert_eq!(cfg.listeners.len(), 3);
        assert_eq!(
            cfg.listeners.iter().map(|l| l.silent).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(cli.args.stats_every, Some(5));
        assert_eq!(cfg.max_tcp_connections, DEFAULT_MAX_TCP_CONNECTIONS);
        let cli = Cli::try_parse_from(["x", "--listen", "udp:[::1]:5060", "--silent"]).unwrap();
        assert!(cli.args.config().listeners[0].silent);
        assert!(Cli::try_parse_from(["x"]).is_err(), "--listen is required");
        assert!(Cli::try_parse_from(["x", "--listen", "nope"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "--listen", "udp:[::1]:1", "--stats-every", "0"]).is_err()
        );
    }

    fn request(method: &str) -> Request {
        let raw = format!(
            "{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKm;rport\r\n\
             From: <sip:a@x>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: m@x\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:a@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
        );
        parse_request(raw.as_bytes()).unwrap()
    }

    #[test]
    fn every_method_gets_a_sensible_answer() {
        let peer: SocketAddr = "127.0.0.1:5999".parse().unwrap();
        let status = |m: &str| {
            respond(&request(m), peer).map(|b| crate::sip::parse_response(&b).unwrap().status)
        };
        assert_eq!(status("OPTIONS"), Some(200));
        assert_eq!(status("REGISTER"), Some(200));
        assert_eq!(status("INVITE"), Some(486));
        assert_eq!(status("BYE"), Some(481));
        assert_eq!(status("CANCEL"), Some(481));
        assert_eq!(status("MESSAGE"), Some(405));
        assert_eq!(status("FROB"), Some(501));
        assert_eq!(status("ACK"), None);
        let reg =
            crate::sip::parse_response(&respond(&request("REGISTER"), peer).unwrap()).unwrap();
        assert_eq!(reg.headers.get("contact"), Some("<sip:a@127.0.0.1:5999>"));
    }

    #[test]
    fn stats_serialise_per_transport_and_family() {
        let mut snap = StatsSnapshot::default();
        snap.tcp.ipv6.requests = 3;
        snap.udp.ipv4.requests = 2;
        let json: serde_json::Value = serde_json::to_value(snap).unwrap();
        assert_eq!(json["tcp"]["ipv6"]["requests"], 3);
        assert_eq!(json["udp"]["ipv4"]["requests"], 2);
        assert_eq!(snap.get(Transport::Tcp, Family::V6).requests, 3);
        assert_eq!(snap.total().requests, 5);
    }

    #[test]
    fn stats_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("siprace-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.json");
        let mut snap = StatsSnapshot::default();
        snap.udp.ipv6.options = 7;
        write_stats(&path, &snap).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["udp"]["ipv6"]["options"], 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
