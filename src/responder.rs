//! `siprace responder`: a minimal SIP UAS for tests and the lab.
//!
//! It answers OPTIONS with 200 OK over UDP, TCP, TLS (with a given or a
//! throwaway certificate, optionally requiring a client certificate) and SCTP
//! (where the kernel has it), gives every other request a
//! sensible final response (see [`respond`]) and malformed requests a 400
//! (never crashing on garbage), counts what it sees per transport and
//! address family, and can be told to stay silent (receive but never answer)
//! to play a black-holed server.
//!
//! A stream connection costs bounded resources whatever the peer does: idle,
//! request (slowloris) and write (non-reader) deadlines, a capped send
//! buffer, and a connection cap that hands the stalest slot to a newcomer
//! rather than refusing it (see [`ResponderConfig`]).
//!
//! Library use: [`start`] a [`ResponderConfig`], read the bound addresses and
//! [`stats`](ResponderHandle::stats) from the [`ResponderHandle`], then
//! [`shutdown`](ResponderHandle::shutdown). The CLI is [`ResponderArgs`] + [`run`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use socket2::{Protocol, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::connect::sctp::{SctpListener, SctpStream};
use crate::connect::tls::PemSource;
use crate::endpoint::{Family, Transport};
use crate::sip::{
    address_uri, is_sip_uri, parse_request, reject_invalid_request, split_comma_list, Frame,
    Request, SipParseError, StreamFramer, ALLOWED_METHODS, MAX_MESSAGE_SIZE,
};
use crate::socket::{new_socket, Bind};

/// Default cap on concurrent TCP connections (all listeners together).
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 1024;
/// Default time after which a TCP connection that sent nothing is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a request (head and body) may take to arrive, from its first byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time writing one answer may take.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default kernel send buffer per connection (SO_SNDBUF): unread output a
/// peer can leave queued. About 150 answers to OPTIONS.
pub const DEFAULT_MAX_PENDING_OUTPUT: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Configuration

/// One socket to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Any transport; TLS needs [`ResponderConfig::tls`], SCTP a kernel with SCTP.
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
    /// Most stream connections served at once (all listeners together). When
    /// all are taken, a newcomer waits for one (at most `request_timeout`),
    /// and the connection that went longest without progress is closed to
    /// make room once that is `request_timeout` or more; see [`Counters`].
    pub max_tcp_connections: usize,
    /// Larger messages are dropped (UDP) or close the connection (TCP).
    pub max_message_size: usize,
    /// A TCP connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// A request on a stream must be complete (head and body) this long after
    /// its first byte, or the connection is closed: the bound on a peer that
    /// trickles a request (slowloris). It also bounds a TLS handshake.
    pub request_timeout: Duration,
    /// Writing one answer may take this long; a peer that does not read its
    /// answers is cut off.
    pub write_timeout: Duration,
    /// The kernel send buffer (SO_SNDBUF) of each TCP and TLS connection: the
    /// unread output a peer can leave queued before writes block (and
    /// `write_timeout` starts to matter). The kernel may round it.
    pub max_pending_output: usize,
    /// Certificate and key for the TLS listeners (required if there is one).
    pub tls: Option<ResponderTls>,
}

/// The TLS identity of the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderTls {
    /// Certificate chain (PEM), leaf first.
    pub cert: PemSource,
    /// Its private key (PEM).
    pub key: PemSource,
    /// Require a client certificate issued by this CA (mutual TLS).
    pub client_ca: Option<PemSource>,
}

impl ResponderTls {
    /// A throwaway identity for `domain`: a fresh CA (returned as PEM so that
    /// clients can trust it) and a leaf it signs, holding the URI SAN
    /// `sip:<domain>` and the dNSName `<domain>` (RFC 5922).
    pub fn generate(domain: &str) -> Result<(ResponderTls, String), String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let e = |e: rcgen::Error| format!("cannot generate a certificate: {e}");
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("siprace throwaway CA for {domain}"),
        );
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(e)?;
        let mut leaf = CertificateParams::new(vec![domain.to_string()]).map_err(e)?;
        leaf.subject_alt_names.push(SanType::URI(
            format!("sip:{domain}")
                .try_into()
                .map_err(|_| format!("{domain:?} cannot go in a sip: URI"))?,
        ));
        leaf.distinguished_name.push(DnType::CommonName, domain);
        let leaf = leaf.signed_by(&key, &issuer).map_err(e)?;
        let tls = ResponderTls {
            cert: PemSource::Pem(leaf.pem()),
            key: PemSource::Pem(key.serialize_pem()),
            client_ca: None,
        };
        Ok((tls, ca_cert.pem()))
    }

    /// The rustls server configuration.
    pub fn server_config(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        let bad = |what: &str, e: String| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("tls {what}: {e}"))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = self
            .cert
            .certificates()
            .map_err(|e| bad("certificate", e))?;
        let key = self.key.private_key().map_err(|e| bad("key", e))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("versions", e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in ca.certificates().map_err(|e| bad("client CA", e))? {
                    roots.add(c).map_err(|e| bad("client CA", e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad("client CA", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate", e.to_string()))?;
        Ok(Arc::new(cfg))
    }
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            listeners: Vec::new(),
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            max_message_size: MAX_MESSAGE_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_pending_output: DEFAULT_MAX_PENDING_OUTPUT,
            tls: None,
        }
    }
}

/// Which transports a `--listen` spec opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransports {
    Udp,
    Tcp,
    Both,
    Tls,
    Sctp,
}

/// A `--listen` value: `udp:ADDR`, `tcp:ADDR`, `both:ADDR` (UDP and TCP),
/// `tls:ADDR` or `sctp:ADDR`, where ADDR is
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
            ListenTransports::Tls => &[Transport::Tls],
            ListenTransports::Sctp => &[Transport::Sctp],
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
#[error("invalid listen spec {input:?}: {reason} (expected udp|tcp|both|tls|sctp:ADDR:PORT[,silent], e.g. udp:[::1]:5060)")]
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
            "tls" => ListenTransports::Tls,
            "sctp" => ListenTransports::Sctp,
            _ => return Err(fail("the transport must be udp, tcp, both, tls or sctp")),
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
            ListenTransports::Tls => "tls",
            ListenTransports::Sctp => "sctp",
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
    /// Connections closed unserved: every slot was taken by a connection
    /// that kept making progress while this one waited.
    pub connections_rejected: u64,
    /// Connections closed to make room for a newcomer, having gone longest
    /// without progress (no complete request or keep-alive).
    pub connections_evicted: u64,
    /// TCP connections closed for being idle.
    pub connections_idle_closed: u64,
    /// Connections closed because a request did not arrive complete within
    /// the request timeout (or a TLS handshake did not finish in it).
    pub connections_request_timeout: u64,
    /// Connections closed because an answer could not be written within the
    /// write timeout (a peer that does not read).
    pub connections_write_timeout: u64,
    /// TLS connections whose handshake failed (or timed out); they are
    /// also counted in `connections`.
    pub handshake_failures: u64,
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
        self.connections_evicted += o.connections_evicted;
        self.connections_idle_closed += o.connections_idle_closed;
        self.connections_request_timeout += o.connections_request_timeout;
        self.connections_write_timeout += o.connections_write_timeout;
        self.handshake_failures += o.handshake_failures;
    }
}

/// Counters of one transport, per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FamilyCounters {
    pub ipv6: Counters,
    pub ipv4: Counters,
}

/// A snapshot of every counter; serialises as
/// `{"udp":{"ipv6":{...},"ipv4":{...}},"tcp":{...},"tls":{...},"sctp":{...}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub udp: FamilyCounters,
    pub tcp: FamilyCounters,
    pub tls: FamilyCounters,
    pub sctp: FamilyCounters,
}

impl StatsSnapshot {
    /// The counters of one transport and family.
    pub fn get(&self, transport: Transport, family: Family) -> Counters {
        let fc = match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
            Transport::Sctp => &self.sctp,
        };
        match family {
            Family::V6 => fc.ipv6,
            Family::V4 => fc.ipv4,
        }
    }

    /// Everything added up.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for fc in [&self.udp, &self.tcp, &self.tls, &self.sctp] {
            t.add(&fc.ipv6);
            t.add(&fc.ipv4);
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
    connections_evicted: AtomicU64,
    connections_idle_closed: AtomicU64,
    connections_request_timeout: AtomicU64,
    connections_write_timeout: AtomicU64,
    handshake_failures: AtomicU64,
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
            connections_evicted: l(&self.connections_evicted),
            connections_idle_closed: l(&self.connections_idle_closed),
            connections_request_timeout: l(&self.connections_request_timeout),
            connections_write_timeout: l(&self.connections_write_timeout),
            handshake_failures: l(&self.handshake_failures),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Shared counters, plus a notification whenever one changes.
#[derive(Default)]
struct Stats {
    /// udp/v6, udp/v4, tcp/v6, tcp/v4, tls/v6, tls/v4, sctp/v6, sctp/v4.
    cells: [Cell; 8],
    changed: Notify,
}

impl Stats {
    fn cell(&self, transport: Transport, peer: &SocketAddr) -> &Cell {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Sctp => 3,
        };
        let f = usize::from(Family::of(&peer.ip()) == Family::V4);
        &self.cells[t * 2 + f]
    }

    fn touched(&self) {
        self.changed.notify_waiters();
    }

    fn snapshot(&self) -> StatsSnapshot {
        let fc = |t: usize| FamilyCounters {
            ipv6: self.cells[t * 2].snapshot(),
            ipv4: self.cells[t * 2 + 1].snapshot(),
        };
        StatsSnapshot {
            udp: fc(0),
            tcp: fc(1),
            tls: fc(2),
            sctp: fc(3),
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
    let slots = Arc::new(Slots::new(cfg.max_tcp_connections, cfg.request_timeout));
    let limits = StreamLimits::of(&cfg);
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
                let socket = new_socket(l.addr, Type::DGRAM, Protocol::UDP, Bind::Listen)?;
                let socket = UdpSocket::from_std(socket.into())?;
                let addr = socket.local_addr()?;
                tasks.spawn(serve_udp(socket, ctx, stop));
                addr
            }
            Transport::Tcp | Transport::Tls => {
                let acceptor = match l.transport {
                    Transport::Tls => {
                        let tls = cfg.tls.as_ref().ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!("tls:{} needs a certificate and key", l.addr),
                            )
                        })?;
                        Some(tokio_rustls::TlsAcceptor::from(tls.server_config()?))
                    }
                    _ => None,
                };
                let socket = new_socket(l.addr, Type::STREAM, Protocol::TCP, Bind::Listen)?;
                socket.listen(1024)?;
                let listener = TcpListener::from_std(socket.into())?;
                let addr = listener.local_addr()?;
                let listener = match acceptor {
                    Some(acceptor) => StreamListener::Tls(listener, acceptor),
                    None => StreamListener::Tcp(listener),
                };
                tasks.spawn(serve_stream_listener(
                    listener,
                    ctx,
                    stop,
                    slots.clone(),
                    limits,
                ));
                addr
            }
            Transport::Sctp => {
                let listener = SctpListener::bind(l.addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot serve sctp:{}: {e}", l.addr))
                })?;
                let addr = listener.local_addr()?;
                tasks.spawn(serve_stream_listener(
                    StreamListener::Sctp(listener),
                    ctx,
                    stop,
                    slots.clone(),
                    limits,
                ));
                addr
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
                bump(&cell.invalid);
                if self.silent {
                    return None;
                }
                // A 400 (or 505) when the message looks enough like a
                // request to be answered; garbage and responses get nothing.
                let reply = reject_invalid_request(bytes, Some(peer));
                tracing::debug!(%peer, %err, answered = reply.is_some(), "an invalid message");
                return reply;
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

/// The methods the responder recognises but does not implement (405, with Allow).
const EXTENSION_METHODS: [&str; 8] = [
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
    "PUBLISH",
];

/// The response the responder gives to `req`, if any (never to ACK).
///
/// The checks run in RFC 3261 §8.2 order, so the answer names the first
/// thing wrong: method (§8.2.1: 405 or 501), Request-URI scheme (§8.2.2.1:
/// 416), Require (§8.2.2.3: 420, as no extension is supported), body type
/// (§8.2.3: 415, SDP only). Then OPTIONS gets 200, REGISTER 200 (echoing
/// its Contacts) if its To is a SIP address-of-record (else 400, RFC 4475
/// §3.3.4), INVITE 486, BYE and CANCEL 481.
pub fn respond(req: &Request, peer: SocketAddr) -> Option<Vec<u8>> {
    let src = Some(peer);
    let method = req.method.as_str();
    if method == "ACK" {
        return None;
    }
    if !matches!(method, "OPTIONS" | "REGISTER" | "INVITE" | "BYE" | "CANCEL") {
        let status = if EXTENSION_METHODS.contains(&method) {
            405
        } else {
            501
        };
        return Some(
            req.response(status)
                .received(src)
                .header("Allow", ALLOWED_METHODS)
                .build(),
        );
    }
    if !is_sip_uri(&req.uri) {
        return Some(req.response(416).received(src).build());
    }
    // ACK and CANCEL never carry Require (RFC 3261 §8.2.2.3); ACK left above.
    let required: Vec<&str> = req
        .headers
        .get_all("require")
        .flat_map(split_comma_list)
        .collect();
    if !required.is_empty() && method != "CANCEL" {
        return Some(
            req.response(420)
                .received(src)
                .header("Unsupported", required.join(", "))
                .build(),
        );
    }
    let sdp = req.headers.get("content-type").is_none_or(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/sdp")
    });
    if !req.body.is_empty() && !sdp {
        return Some(
            req.response(415)
                .received(src)
                .header("Accept", "application/sdp")
                .build(),
        );
    }
    let resp = match method {
        "OPTIONS" => return Some(req.options_ok(src)),
        "REGISTER" => {
            if !address_uri(&req.to).is_some_and(is_sip_uri) {
                req.response(400)
                    .reason("Bad Request (To is not a SIP address-of-record)")
                    .received(src)
            } else {
                let mut b = req.response(200).received(src);
                for contact in req.headers.get_all("contact") {
                    b = b.header("Contact", contact);
                }
                b
            }
        }
        "INVITE" => req.response(486).received(src),
        _ => req.response(481).received(src), // BYE, CANCEL: no dialog, no transaction
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

/// A listening stream socket: TCP, TLS over TCP, or SCTP.
enum StreamListener {
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
struct StreamLimits {
    idle: Duration,
    request: Duration,
    write: Duration,
    send_buffer: usize,
}

impl StreamLimits {
    fn of(cfg: &ResponderConfig) -> StreamLimits {
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

/// The connection slots every stream listener shares (the cap), and what
/// happens when they are all taken.
///
/// Refusing newcomers when full, as a plain cap does, lets whoever opens N
/// connections first keep the service to themselves until the idle timeout.
/// Instead, a newcomer that finds every slot taken is held (the listener
/// accepts nothing else meanwhile; later arrivals queue in the kernel
/// backlog), and a slot is freed by closing the connection that has gone
/// longest without progress (a complete request or keep-alive), as soon as
/// that is at least `grace` (the request timeout: time enough for any
/// client to send a request). A connection that keeps sending requests it
/// reads the answers to keeps its slot. If none has been without progress
/// for `grace` while the newcomer waited `grace`, the newcomer is closed.
/// So a client waits at most `grace` for a slot however the others behave,
/// and every connection, once admitted, has at least `grace` to be served.
struct Slots {
    max: usize,
    grace: Duration,
    epoch: Instant,
    table: Mutex<SlotTable>,
    /// Signalled whenever a connection ends and gives its slot back.
    freed: Notify,
}

#[derive(Default)]
struct SlotTable {
    next_id: u64,
    live: HashMap<u64, Slot>,
}

struct Slot {
    /// When the connection last made progress, in ms since `Slots::epoch`.
    progress: Arc<AtomicU64>,
    /// Ends the connection's task; `None` until the task is spawned.
    abort: Option<AbortHandle>,
    transport: Transport,
    peer: SocketAddr,
}

/// What holds a slot: dropped when the connection's task ends (or is
/// aborted), which gives the slot back.
struct SlotGuard {
    id: u64,
    slots: Arc<Slots>,
    progress: Arc<AtomicU64>,
}

impl SlotGuard {
    /// Records progress (a complete request or keep-alive): the connection
    /// moves to the back of the eviction order.
    fn touch(&self) {
        self.progress.store(self.slots.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().live.remove(&self.id);
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    fn new(max: usize, grace: Duration) -> Slots {
        Slots {
            max,
            grace: grace.max(Duration::from_millis(1)),
            epoch: Instant::now(),
            table: Mutex::new(SlotTable::default()),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        // A panic while holding the lock leaves the table consistent (every
        // critical section is a single map operation): keep using it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a connection from `peer`, freeing one as described on
    /// [`Slots`] if they are all taken; `None` if none could be had within
    /// `grace`.
    async fn admit(
        self: &Arc<Self>,
        transport: Transport,
        peer: SocketAddr,
        stats: &Stats,
    ) -> Option<SlotGuard> {
        if self.max == 0 {
            return None;
        }
        let give_up = Instant::now() + self.grace;
        loop {
            // Registered before looking, so a slot freed meanwhile wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let next_chance = {
                let mut table = self.lock();
                if table.live.len() < self.max {
                    return Some(self.insert(&mut table, transport, peer));
                }
                let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
                let stalest = table
                    .live
                    .iter()
                    .filter(|(_, slot)| slot.abort.is_some())
                    .map(|(id, slot)| (*id, slot.progress.load(Ordering::Relaxed)))
                    // Ties (same millisecond) go to the earlier admitted.
                    .min_by_key(|(id, progress)| (*progress, *id));
                match stalest {
                    Some((id, progress)) if self.now_ms().saturating_sub(progress) >= grace_ms => {
                        if let Some(evicted) = table.live.remove(&id) {
                            if let Some(abort) = evicted.abort {
                                abort.abort();
                            }
                            tracing::debug!(peer = %evicted.peer, "evicting the stalest connection");
                            bump(
                                &stats
                                    .cell(evicted.transport, &evicted.peer)
                                    .connections_evicted,
                            );
                        }
                        return Some(self.insert(&mut table, transport, peer));
                    }
                    Some((_, progress)) => {
                        self.epoch + Duration::from_millis(progress.saturating_add(grace_ms))
                    }
                    None => give_up, // only slots still being set up: wait for a change
                }
            };
            if Instant::now() >= give_up {
                return None;
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(next_chance.min(give_up)) => {}
            }
        }
    }

    fn insert(
        self: &Arc<Self>,
        table: &mut SlotTable,
        transport: Transport,
        peer: SocketAddr,
    ) -> SlotGuard {
        let id = table.next_id;
        table.next_id += 1;
        let progress = Arc::new(AtomicU64::new(self.now_ms()));
        table.live.insert(
            id,
            Slot {
                progress: progress.clone(),
                abort: None,
                transport,
                peer,
            },
        );
        SlotGuard {
            id,
            slots: self.clone(),
            progress,
        }
    }

    /// Makes the connection in slot `id` evictable by handing over its task.
    fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(slot) = self.lock().live.get_mut(&id) {
            slot.abort = Some(abort);
        }
    }
}

async fn serve_stream_listener(
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

// ---------------------------------------------------------------------------
// CLI

/// `siprace responder`: answer SIP requests for tests and the lab.
#[derive(Debug, Clone, clap::Args)]
pub struct ResponderArgs {
    /// Where to listen: udp|tcp|both|tls|sctp:ADDR:PORT[,silent], e.g. udp:[::1]:5060,
    /// tcp:127.0.0.1:5060, both:[::]:5060, tls:[::1]:5061, sctp:[::1]:5060. Repeatable.
    #[arg(long = "listen", value_name = "SPEC", required = true)]
    pub listen: Vec<ListenSpec>,
    /// Never answer on any listener (receive and count only): a black-holed server.
    #[arg(long)]
    pub silent: bool,
    /// Print the counters as one JSON line every SECS seconds (and write --stats-file).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stats_every: Option<u64>,
    /// Write the counters as JSON to this file on shutdown (and every --stats-every).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Most TCP/TLS/SCTP connections served at once; more are closed on accept.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TCP_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub max_connections: usize,
    /// Close TCP connections idle for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// TLS certificate chain (PEM) for tls: listeners. Without it, a throwaway
    /// certificate for --domain is generated.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The SIP domain of the throwaway certificate (URI SAN sip:DOMAIN and dNSName DOMAIN).
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "example.test",
        conflicts_with = "cert"
    )]
    pub domain: String,
    /// Write the throwaway certificate's CA (PEM) here, for clients' --ca.
    #[arg(long, value_name = "FILE", conflicts_with = "cert")]
    pub write_ca: Option<PathBuf>,
    /// Require TLS clients to present a certificate issued by this CA (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Close a TCP/TLS/SCTP connection whose request (head and body) is not
    /// complete this many seconds after its first byte; also bounds TLS handshakes.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Close a connection when writing one answer takes this many seconds
    /// (a peer that does not read).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WRITE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,
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
            request_timeout: Duration::from_secs(self.request_timeout),
            write_timeout: Duration::from_secs(self.write_timeout),
            max_pending_output: DEFAULT_MAX_PENDING_OUTPUT,
            tls: match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => Some(ResponderTls {
                    cert: PemSource::File(cert.clone()),
                    key: PemSource::File(key.clone()),
                    client_ca: self.client_ca.clone().map(PemSource::File),
                }),
                _ => None,
            },
        }
    }

    /// [`config`](Self::config), plus a throwaway certificate for --domain
    /// when a TLS listener has none (its CA written to --write-ca).
    pub fn config_with_tls(&self) -> Result<ResponderConfig, String> {
        let mut cfg = self.config();
        let serves_tls = cfg.listeners.iter().any(|l| l.transport == Transport::Tls);
        if serves_tls && cfg.tls.is_none() {
            let (mut tls, ca_pem) = ResponderTls::generate(&self.domain)?;
            tls.client_ca = self.client_ca.clone().map(PemSource::File);
            if let Some(path) = &self.write_ca {
                std::fs::write(path, &ca_pem)
                    .map_err(|e| format!("cannot write the CA to {}: {e}", path.display()))?;
            }
            cfg.tls = Some(tls);
        } else if self.write_ca.is_some() && !serves_tls {
            return Err("--write-ca needs a tls: listener".into());
        }
        Ok(cfg)
    }
}

/// Runs the responder until Ctrl-C or SIGTERM.
pub async fn run(args: ResponderArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cfg = args.config_with_tls()?;
    let handle = start(cfg.clone()).await?;
    for l in handle.listeners() {
        println!("listening {l}");
    }
    if handle
        .listeners()
        .iter()
        .any(|l| l.transport == Transport::Tls)
    {
        match (&args.cert, &args.write_ca) {
            (Some(cert), _) => println!("tls certificate {}", cert.display()),
            (None, Some(ca)) => println!(
                "tls throwaway certificate for sip:{} (CA written to {})",
                args.domain,
                ca.display()
            ),
            (None, None) => println!(
                "tls throwaway certificate for sip:{} (its CA is not saved: use --write-ca FILE)",
                args.domain
            ),
        }
        if let Some(ca) = &args.client_ca {
            println!(
                "tls requires a client certificate issued by {}",
                ca.display()
            );
        }
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
        let s: ListenSpec = "tls:[::1]:5061".parse().unwrap();
        assert_eq!(s.listeners()[0].transport, Transport::Tls);
        assert_eq!(s.to_string(), "tls:[::1]:5061");
        let s: ListenSpec = "SCTP:127.0.0.1:5060".parse().unwrap();
        assert_eq!(s.listeners()[0].transport, Transport::Sctp);
        for bad in [
            "",
            "udp",
            "tls",
            "sctp:[::1]",
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
        let cfg = Cli::try_parse_from(["x", "--listen", "tcp:[::1]:0"])
            .unwrap()
            .args
            .config();
        assert_eq!(
            (cfg.request_timeout, cfg.write_timeout),
            (DEFAULT_REQUEST_TIMEOUT, DEFAULT_WRITE_TIMEOUT)
        );
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "tcp:[::1]:0",
            "--request-timeout",
            "3",
            "--write-timeout",
            "4",
        ])
        .unwrap();
        let cfg = cli.args.config();
        assert_eq!(
            (cfg.request_timeout, cfg.write_timeout),
            (Duration::from_secs(3), Duration::from_secs(4))
        );
        for flag in ["--request-timeout", "--write-timeout"] {
            assert!(Cli::try_parse_from(["x", "--listen", "tcp:[::1]:0", flag, "0"]).is_err());
        }
    }

    #[test]
    fn tls_cli_and_throwaway_certificate() {
        let dir = std::env::temp_dir().join(format!("siprace-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "tls:[::1]:0",
            "--domain",
            "sip.example.test",
            "--write-ca",
            ca.to_str().unwrap(),
        ])
        .unwrap();
        let cfg = cli.args.config_with_tls().unwrap();
        let tls = cfg.tls.expect("a throwaway identity");
        let leaf = &tls.cert.certificates().unwrap()[0];
        let ids = crate::connect::tls::CertIdentities::from_der(leaf.as_ref()).unwrap();
        assert_eq!(ids.sip_uris, ["sip.example.test"]);
        assert_eq!(ids.dns, ["sip.example.test"]);
        assert!(tls.server_config().is_ok());
        // The written CA is the one that issued the leaf.
        let ca_pem = PemSource::File(ca.clone());
        assert_eq!(ca_pem.certificates().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
        // --cert needs --key; --write-ca without a TLS listener is refused.
        assert!(Cli::try_parse_from(["x", "--listen", "tls:[::1]:0", "--cert", "c.pem"]).is_err());
        let cli =
            Cli::try_parse_from(["x", "--listen", "udp:[::1]:0", "--write-ca", "/tmp/x"]).unwrap();
        assert!(cli.args.config_with_tls().is_err());
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

    /// `request(method)` with one line replaced.
    fn altered(method: &str, from: &str, to: &str) -> Request {
        let raw = format!(
            "{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKm\r\n\
             From: <sip:a@x>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: m@x\r\nCSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        assert!(raw.contains(from), "{from}");
        parse_request(raw.replacen(from, to, 1).as_bytes()).unwrap()
    }

    #[test]
    fn checks_run_in_rfc3261_order() {
        let peer: SocketAddr = "127.0.0.1:5999".parse().unwrap();
        /// A header the answer must carry.
        type Carries = Option<(&'static str, &'static str)>;
        // (method, line replaced, by, status, a header the answer carries)
        let cases: [(&str, &str, &str, u16, Carries); 8] = [
            // §8.2.2.1: a scheme other than sip/sips.
            (
                "OPTIONS",
                "OPTIONS sip:x@127.0.0.1",
                "OPTIONS mailto:x@example.test",
                416,
                None,
            ),
            // §8.2.2.3: every Require option-tag is unsupported, and listed...
            (
                "OPTIONS",
                "Content-Length: 0",
                "Require: foo, bar\r\nRequire: baz\r\nProxy-Require: p\r\nContent-Length: 0",
                420,
                Some(("unsupported", "foo, bar, baz")),
            ),
            // ...except on CANCEL; Proxy-Require is for proxies.
            (
                "CANCEL",
                "Content-Length: 0",
                "Require: foo\r\nContent-Length: 0",
                481,
                None,
            ),
            (
                "OPTIONS",
                "Content-Length: 0",
                "Proxy-Require: foo\r\nContent-Length: 0",
                200,
                None,
            ),
            // §8.2.3: a body that is not SDP; SDP (with parameters) is fine.
            (
                "INVITE",
                "Content-Length: 0",
                "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
                415,
                Some(("accept", "application/sdp")),
            ),
            (
                "INVITE",
                "Content-Length: 0",
                "Content-Type: Application/SDP; charset=x\r\nContent-Length: 3\r\n\r\nv=0",
                486,
                None,
            ),
            // The method comes first: an unknown method with Require is a 501.
            (
                "FROB",
                "Content-Length: 0",
                "Require: foo\r\nContent-Length: 0",
                501,
                None,
            ),
            // REGISTER needs a SIP address-of-record in To.
            (
                "REGISTER",
                "To: <sip:x@127.0.0.1>",
                "To: <mailto:x@example.test>",
                400,
                None,
            ),
        ];
        for (method, from, to, status, header) in cases {
            let answer = respond(&altered(method, from, to), peer).unwrap();
            let r = crate::sip::parse_response(&answer).unwrap();
            assert_eq!(r.status, status, "{method} with {to:?}");
            if let Some((name, value)) = header {
                assert_eq!(r.headers.get(name), Some(value), "{method} with {to:?}");
            }
        }
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
