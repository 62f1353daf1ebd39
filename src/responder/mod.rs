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
//! Over TLS it honours the RFC 5923 `alias` of a client whose certificate
//! covers its Via sent-by host, records the connection under that name, and
//! with `call_back` sends the client an OPTIONS over it (the `alias` module).
//!
//! A stream connection costs bounded resources whatever the peer does: idle,
//! request (slowloris) and write (non-reader) deadlines, a capped send
//! buffer, and a connection cap that hands the stalest slot to a newcomer
//! rather than refusing it (see [`ResponderConfig`]).
//!
//! With [`ResponderConfig::registrar`] it is a minimal SIP Outbound
//! registrar (RFC 5626, see the `registrar` module and [`bindings`]):
//! REGISTER binds contacts with the flow they came over, and
//! [`ResponderHandle::send_to_aor`] sends a request down a chosen flow or
//! the first that works. STUN Binding requests on UDP (Outbound
//! keep-alives) are answered with the address they came from.
//!
//! Library use: [`start`] a [`ResponderConfig`], read the bound addresses and
//! [`stats`](ResponderHandle::stats) from the [`ResponderHandle`], then
//! [`shutdown`](ResponderHandle::shutdown). The command line
//! (`siprace responder`) lives in the binary and fills a [`ResponderConfig`].

mod alias;
pub mod bindings;
mod config;
mod counters;
mod registrar;
mod respond;
mod slots;
mod stream;
mod tls;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use socket2::{Protocol, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use bindings::{Binding, BindingKey, FlowRef};
pub use config::{
    ListenSpec, ListenSpecError, ListenTransports, ListenerConfig, ResponderConfig,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PENDING_OUTPUT, DEFAULT_MAX_TCP_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
pub use counters::{write_stats, Counters, FamilyCounters, StatsSnapshot};
pub use registrar::{FlowChoice, FlowDelivery, FlowRequest, FlowSendError, RegistrarConfig};
pub use respond::respond;
use respond::Received;
pub use tls::{ResponderTls, ThrowawayCa};

use crate::connect::sctp::SctpListener;
use crate::endpoint::{Family, Transport};
use crate::socket::{new_socket, Bind};
use alias::AliasTable;
use counters::{bump, Stats};
use registrar::Registrar;
use slots::Slots;
use stream::{serve_stream_listener, StreamLimits, StreamListener};
use udp::serve_udp;

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
    registrar: Option<Arc<Registrar>>,
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

    fn registrar(&self) -> Result<&Arc<Registrar>, FlowSendError> {
        self.registrar.as_ref().ok_or(FlowSendError::NotARegistrar)
    }

    /// The live bindings of `aor` (a SIP URI) at the registrar; empty when
    /// the responder is no registrar.
    pub fn bindings(&self, aor: &str) -> Vec<Binding> {
        self.registrar
            .as_ref()
            .map(|r| r.bindings_of(aor))
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for the bindings of `aor` (re-checked after
    /// every REGISTER). Meant for tests: bound it with a timeout.
    pub async fn wait_for_bindings(
        &self,
        aor: &str,
        pred: impl Fn(&[Binding]) -> bool,
    ) -> Result<Vec<Binding>, FlowSendError> {
        let registrar = self.registrar()?;
        loop {
            let changed = registrar.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = registrar.bindings_of(aor);
            if pred(&now) {
                return Ok(now);
            }
            changed.await;
        }
    }

    /// Sends `request` to `aor` down the flow `choice` names (a reg-id, or
    /// the first that works, RFC 5626 §5.3) and returns the final status;
    /// each flow tried may take `timeout` (then it counts as a 408).
    pub async fn send_to_aor(
        &self,
        aor: &str,
        choice: FlowChoice,
        request: &FlowRequest,
        timeout: std::time::Duration,
    ) -> Result<FlowDelivery, FlowSendError> {
        self.registrar()?.send(aor, choice, request, timeout).await
    }

    /// Resets (TCP RST) the connection of `aor`'s flow `reg_id`: the flow
    /// breaks as if the network had. The binding stays until the UA
    /// replaces it; requests down it fail meanwhile.
    pub async fn reset_flow(&self, aor: &str, reg_id: u32) -> Result<FlowRef, FlowSendError> {
        self.registrar()?.reset_flow(aor, reg_id).await
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
    let aliases = Arc::new(AliasTable::default());
    let (shutdown, _) = watch::channel(false);
    let slots = Arc::new(Slots::new(cfg.max_tcp_connections, cfg.request_timeout));
    let limits = StreamLimits::of(&cfg);
    let max_message = cfg.max_message_size.max(1);
    let registrar = cfg.registrar.clone().map(|r| Arc::new(Registrar::new(r)));
    let mut tasks = JoinSet::new();
    let mut listeners = Vec::new();
    for l in &cfg.listeners {
        let ctx = Ctx {
            stats: stats.clone(),
            silent: l.silent,
            max_message,
            aliases: aliases.clone(),
            call_back: cfg.call_back,
            registrar: registrar.clone(),
        };
        let stop = shutdown.subscribe();
        let addr = match l.transport {
            Transport::Udp => {
                let socket = new_socket(l.addr, Type::DGRAM, Protocol::UDP, Bind::Listen)?;
                let socket = Arc::new(UdpSocket::from_std(socket.into())?);
                let addr = socket.local_addr()?;
                if let Some(registrar) = &registrar {
                    registrar.attach_udp(socket.clone());
                }
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
                        Some(tokio_rustls::TlsAcceptor::from(
                            tls.server_config_with(cfg.client_certificate_optional)?,
                        ))
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
        registrar,
        shutdown,
        tasks,
    })
}

/// What every listener's task shares: the counters, whether to answer,
/// the size bound, and the RFC 5923 alias table.
#[derive(Clone)]
struct Ctx {
    stats: Arc<Stats>,
    silent: bool,
    max_message: usize,
    aliases: Arc<AliasTable>,
    /// Send an OPTIONS to each client whose alias is honoured.
    call_back: bool,
    /// The Outbound registrar, when the responder is one.
    registrar: Option<Arc<Registrar>>,
}

impl Ctx {
    /// Handles one datagram / framed message that came over `flow`: counts
    /// it and returns the bytes to send back.
    fn handle(&self, flow: FlowRef, bytes: &[u8]) -> Option<Vec<u8>> {
        self.handle_request(flow, bytes).0
    }

    /// [`handle`](Self::handle), also returning the request's top Via.
    fn handle_request(
        &self,
        flow: FlowRef,
        bytes: &[u8],
    ) -> (Option<Vec<u8>>, Option<crate::sip::Via>) {
        let (transport, peer) = (flow.transport, flow.peer);
        let cell = self.stats.cell(transport, &peer);
        bump(&cell.messages);
        let registrar = self.registrar.as_deref().map(|r| (r, flow));
        let answer = respond::answer(bytes, peer, self.silent, self.max_message, registrar);
        match answer.received {
            Received::Invalid => bump(&cell.invalid),
            Received::Request { options } => {
                bump(&cell.requests);
                if options {
                    bump(&cell.options);
                }
                if self.silent {
                    bump(&cell.dropped_silent);
                }
            }
        }
        if answer.reply.is_some() {
            bump(&cell.responses);
        }
        self.stats.touched();
        (answer.reply, answer.top_via)
    }
}
