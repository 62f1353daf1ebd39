//! Runs a registration's flows over real connections: the I/O around the
//! pure [`Flows`] machine. Each flow is raced by a dialer of its own (so
//! two flows never share a connection), kept as a [`SipConnection`], kept
//! alive with CRLF pings, and re-raced when it fails. The flows' dialers
//! share one race history: a flow that fails on its path is recorded there
//! as that path's failure, so the race that replaces it tries the other
//! family first.
//!
//! A stream flow (TCP, TLS, SCTP) is a [`SipConnection`] pinged with CRLF;
//! a UDP flow is a [`UdpFlow`] pinged with STUN Binding requests.
//!
//! A flow going back to its home family briefly owns two connections: its
//! working one and the candidate raced in the home family. Every connection
//! has a generation of its own, so a task's late report is routed to the
//! connection it was about (working or candidate) or dropped when that
//! connection is gone: the retired connection's death after the flow moved
//! home fails nothing. The candidate's REGISTER continues the flow's
//! Call-ID and CSeq series.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::digest::{Challenge, Credentials};
use super::flows::{
    Action, EventKind, FamilyChoice, FlowConfig, FlowEvent, FlowId, Flows, Input, RaceNote,
};
use super::register::{self, RegisterOutcome, RegisterRequest, Registration as Binding};
use super::stun::{self, BindingResponse, TransactionId};
use super::udp_flow::UdpFlow;
use crate::connect::Connection;
use crate::dialer::{DialError, Dialer, DialerConfig};
use crate::endpoint::{Endpoint, Family, Transport};
use crate::keep::{KeepConfig, SipConnection};
use crate::report::{HistoryEntry, Report};
use crate::sip::{self, uri_host};
use crate::target::{Target, TargetError};

/// How long the registrar may take to answer a REGISTER (Timer F).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(32);
/// How long stopping may take: the unregistrations, then everything closes.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What to register, and how.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// The address-of-record, `sip:user@domain`.
    pub aor: String,
    /// The registrar (or outbound proxy) to race; `None`: the AOR's domain.
    pub registrar: Option<String>,
    /// The instance ID (`urn:uuid:…`), stable across runs of the same UA.
    pub instance: String,
    /// The expiry to ask for.
    pub expires: Duration,
    /// For the registrar's digest challenge, if it sends one.
    pub credentials: Option<Credentials>,
    /// The flows and their timing rules.
    pub flows: FlowConfig,
}

/// Why a registration could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The AOR or the registrar is not a usable SIP URI.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The AOR has no user part.
    #[error("the address-of-record {0} has no user part (sip:user@domain)")]
    NoUser(String),
    /// The dialer configuration is invalid.
    #[error("{0}")]
    Config(String),
}

/// What the registration tells its owner, with the time since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A flow's event (registered, keepalive_ok, failed, …).
    Flow(FlowEvent),
    /// A request arrived over a flow (and was answered).
    Inbound {
        /// The flow it came over.
        flow: FlowId,
        /// Its method.
        method: String,
        /// The status it was answered with.
        status: u16,
        /// The request itself (peer text: escape before printing).
        request: Box<sip::Request>,
    },
}

/// Notices held for an owner that does not read them; later ones are
/// dropped (a peer's requests cannot grow memory without bound).
pub const NOTICE_CAPACITY: usize = 1024;

/// A running registration: its notices, and a way to stop it.
#[derive(Debug)]
pub struct Registration {
    notices: mpsc::Receiver<(Duration, Notice)>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    /// Starts registering: flow 1 is raced at once. Must be called inside a
    /// tokio runtime.
    pub fn start(dialer: DialerConfig, cfg: RegisterConfig) -> Result<Registration, RegisterError> {
        let aor = Target::parse(&cfg.aor)?;
        if aor.user.is_none() {
            return Err(RegisterError::NoUser(cfg.aor.clone()));
        }
        let registrar = match &cfg.registrar {
            Some(r) => Target::parse(r)?,
            None => Target::parse(&aor.request_uri())?,
        };
        let mut dialer = dialer;
        // Stream winners are kept (each flow's own table); UDP ones are
        // handed over as sockets.
        dialer.keep = Some(KeepConfig::default());
        let dialer = dialer
            .validated()
            .map_err(|e| RegisterError::Config(e.to_string()))?;
        let binding = Binding {
            aor: cfg.aor.clone(),
            registrar: aor.request_uri(),
            instance: cfg.instance.clone(),
            from_tag: sip::random_token(12),
            expires: cfg.expires,
        };
        let (notices_tx, notices) = mpsc::channel(NOTICE_CAPACITY);
        let (stop, stop_rx) = oneshot::channel();
        let driver = Driver {
            machine: Flows::new(cfg.flows.clone(), rand::random()),
            pong_timeout: cfg.flows.pong_timeout,
            shared: Arc::new(Shared {
                binding,
                credentials: cfg.credentials.clone(),
                registrar: registrar.to_string(),
                local_name: dialer.connect.local_name.clone(),
            }),
            dialer,
            dialers: HashMap::new(),
            flows: HashMap::new(),
            candidates: HashMap::new(),
            home_races: HashMap::new(),
            generations: 0,
            started: Instant::now(),
            notices: notices_tx,
        };
        let task = tokio::spawn(driver.run(stop_rx));
        Ok(Registration {
            notices,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The next notice, `None` once the registration has ended.
    pub async fn next(&mut self) -> Option<(Duration, Notice)> {
        self.notices.recv().await
    }

    /// Asks the registration to unregister every flow and end; the notices
    /// that follow say how it went, then [`next`](Self::next) gives `None`.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the registration has ended (after [`stop`](Self::stop)).
    pub async fn finished(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropped without `finished`: the flows and their sockets go now.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What every flow's tasks need.
struct Shared {
    binding: Binding,
    credentials: Option<Credentials>,
    registrar: String,
    /// Via sent-by and Contact host (`--local-name`), else the local IP.
    local_name: Option<String>,
}

/// A flow's connection: a kept stream, or a UDP socket.
#[derive(Clone)]
enum FlowConn {
    Stream(SipConnection),
    Datagram(UdpFlow),
}

impl FlowConn {
    fn transport(&self) -> Transport {
        match self {
            FlowConn::Stream(c) => c.transport(),
            FlowConn::Datagram(_) => Transport::Udp,
        }
    }

    fn peer(&self) -> std::net::SocketAddr {
        match self {
            FlowConn::Stream(c) => c.peer(),
            FlowConn::Datagram(u) => u.peer(),
        }
    }

    fn local(&self) -> std::net::SocketAddr {
        match self {
            FlowConn::Stream(c) => c.local(),
            FlowConn::Datagram(u) => u.local(),
        }
    }

    /// Sends a request and waits for its final response (bounded by
    /// [`ANSWER_TIMEOUT`]).
    async fn request(&self, bytes: &[u8], branch: &str) -> Result<sip::Response, String> {
        match self {
            FlowConn::Stream(c) => c
                .request_final(bytes, branch, ANSWER_TIMEOUT)
                .await
                .map_err(|e| e.to_string()),
            FlowConn::Datagram(u) => u.request(bytes, branch, ANSWER_TIMEOUT).await,
        }
    }

    async fn send(&self, bytes: &[u8]) -> Result<(), String> {
        match self {
            FlowConn::Stream(c) => c.send(bytes).await.map_err(|e| e.to_string()),
            FlowConn::Datagram(u) => u.send(bytes).await,
        }
    }

    fn take_inbound(&self) -> Option<mpsc::Receiver<sip::Request>> {
        match self {
            FlowConn::Stream(c) => c.take_inbound(),
            FlowConn::Datagram(u) => u.take_inbound(),
        }
    }

    /// The peer ended it in order (a FIN): the path worked. A UDP flow
    /// ends only on ICMP unreachable or on errors: never in order.
    fn ended_by_peer(&self) -> bool {
        match self {
            FlowConn::Stream(c) => c.ended_by_peer(),
            FlowConn::Datagram(_) => false,
        }
    }

    /// Dead at once (see [`SipConnection::abandon`]); `close` finishes.
    fn abandon(&self) {
        match self {
            FlowConn::Stream(c) => c.abandon(),
            FlowConn::Datagram(u) => u.close(),
        }
    }

    async fn close(self) {
        match self {
            FlowConn::Stream(c) => c.close().await,
            FlowConn::Datagram(u) => u.close(),
        }
    }
}

/// One flow's connection, its REGISTER numbering and its keep-alive.
struct FlowIo {
    conn: FlowConn,
    /// Which connection of the flow this is (a stale one's death is ignored).
    generation: u64,
    call_id: String,
    next_cseq: u32,
    /// The STUN transaction of the current keep-alive (UDP).
    stun_id: TransactionId,
    /// The endpoint that won the flow's race, and the dialer that raced it
    /// (whose history learns when the flow fails on this path).
    endpoint: Endpoint,
    dialer: Dialer,
    /// How that race went, for the flow's registered/recovered event.
    race: RaceNote,
}

/// A flow's race that connected.
struct Won {
    conn: FlowConn,
    endpoint: Endpoint,
    dialer: Dialer,
    race: RaceNote,
}

/// What a task of the driver reports back (the `u64`s: the generation of
/// the connection it was about).
enum Done {
    Connected(FlowId, Box<Won>),
    ConnectFailed(FlowId, String, bool),
    /// The home race's winner: the flow's candidate.
    /// The `u32`s: the home race's number.
    HomeConnected(FlowId, u32, Box<Won>),
    HomeConnectFailed(FlowId, u32, String),
    /// A 2xx: its Flow-Timer, expiry and `Require: outbound`.
    Registered(FlowId, u64, Option<Duration>, Duration, bool),
    RegisterFailed(FlowId, u64, ExchangeFailure),
    Pong(FlowId, u64, Option<std::net::SocketAddr>),
    /// An unregistration ended (answered or not); over the candidate
    /// ([`Which::Candidate`]) or the working connection.
    Unregistered(FlowId, u64, Which),
    /// The connection died; true if the peer closed it in order.
    Lost(FlowId, u64, bool),
    Inbound(FlowId, u16, Box<sip::Request>),
}

struct Driver {
    machine: Flows,
    pong_timeout: Duration,
    shared: Arc<Shared>,
    dialer: DialerConfig,
    /// A dialer per flow and family choice: each flow keeps its own
    /// connection table, so no flow is ever handed another's connection.
    dialers: HashMap<(FlowId, FamilyChoice), Dialer>,
    flows: HashMap<FlowId, FlowIo>,
    /// The home candidates of flows going back to their home family.
    candidates: HashMap<FlowId, FlowIo>,
    /// Each flow's latest home race task.
    home_races: HashMap<FlowId, tokio::task::AbortHandle>,
    /// Numbers the flows' connections.
    generations: u64,
    started: Instant,
    notices: mpsc::Sender<(Duration, Notice)>,
}

impl Driver {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let mut wake: Option<Instant> = None;
        let mut stopping_since: Option<Instant> = None;
        let actions = self.machine.start();
        self.perform(actions, &done_tx, &mut tasks, &mut wake);
        loop {
            if stopping_since.is_some() && self.machine.finished() {
                break;
            }
            let deadline = match (wake, stopping_since) {
                (w, Some(since)) => {
                    Some(w.map_or(since + STOP_TIMEOUT, |w| w.min(since + STOP_TIMEOUT)))
                }
                (w, None) => w,
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                biased;
                _ = &mut stop, if stopping_since.is_none() => {
                    stopping_since = Some(Instant::now());
                    Some(Input::Stop)
                }
                Some(done) = done_rx.recv() => self.absorb(done),
                _ = sleep => {
                    if stopping_since.is_some_and(|s| s.elapsed() >= STOP_TIMEOUT) {
                        break;
                    }
                    Some(Input::Timer)
                }
            };
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            if let Some(input) = input {
                let actions = self.machine.step(Instant::now(), input);
                // Each step's actions end with the one `WakeAt` of every
                // deadline the machine has, or none when it has none (all
                // flows connecting or registering): the last one, maybe
                // past, must not stay, or the sleep above would return at
                // once, over and over, spinning a core.
                wake = None;
                self.perform(actions, &done_tx, &mut tasks, &mut wake);
            }
        }
        tasks.shutdown().await;
        for (_, flow) in self.flows.drain().chain(self.candidates.drain()) {
            flow.conn.close().await;
        }
    }

    /// Turns a task's report into the machine's input (or a notice).
    fn absorb(&mut self, done: Done) -> Option<Input> {
        Some(match done {
            Done::Connected(flow, won) if !self.machine.is_connecting(flow) => {
                // Not wanted any more (stopped, or the registrar turned out
                // to lack Outbound meanwhile): closed, not leaked.
                tokio::spawn(async move { won.conn.close().await });
                return None;
            }
            Done::HomeConnected(flow, attempt, won)
                if !self.machine.is_racing_home(flow, attempt) =>
            {
                tokio::spawn(async move { won.conn.close().await });
                return None;
            }
            Done::Connected(flow, won) => {
                let (transport, remote) = (won.conn.transport(), won.conn.peer());
                let io = self.flow_io(*won, None);
                self.flows.insert(flow, io);
                Input::Connected {
                    flow,
                    transport,
                    remote,
                }
            }
            Done::HomeConnected(flow, attempt, won) => {
                let (transport, remote) = (won.conn.transport(), won.conn.peer());
                // The candidate continues the flow's REGISTER series.
                let call_id = self.flows.get(&flow).map(|io| io.call_id.clone());
                let io = self.flow_io(*won, call_id);
                self.candidates.insert(flow, io);
                Input::HomeConnected {
                    flow,
                    attempt,
                    transport,
                    remote,
                }
            }
            Done::ConnectFailed(flow, reason, no_candidates) => Input::ConnectFailed {
                flow,
                reason,
                no_candidates,
            },
            Done::HomeConnectFailed(flow, attempt, reason) => Input::HomeConnectFailed {
                flow,
                attempt,
                reason,
            },
            // The results of a connection the flow no longer has (it failed
            // and was replaced, or it moved home, meanwhile) are stale:
            // dropped. The others go to the connection they were about.
            Done::Registered(flow, generation, flow_timer, expires, outbound) => {
                match self.which(flow, generation)? {
                    Which::Working => Input::Registered {
                        flow,
                        flow_timer,
                        expires,
                        outbound,
                    },
                    Which::Candidate => Input::HomeRegistered {
                        flow,
                        flow_timer,
                        expires,
                        outbound,
                    },
                }
            }
            Done::RegisterFailed(flow, generation, failure) => {
                let (reason, path_broken) = (failure.reason, failure.path_broken);
                match self.which(flow, generation)? {
                    Which::Working => Input::RegisterFailed {
                        flow,
                        reason,
                        path_broken,
                    },
                    Which::Candidate => Input::HomeRegisterFailed {
                        flow,
                        reason,
                        path_broken,
                    },
                }
            }
            Done::Pong(flow, generation, mapped) => match self.which(flow, generation)? {
                Which::Working => Input::KeepaliveAnswered { flow, mapped },
                Which::Candidate => return None,
            },
            // An unregistration ends (answered or not) the unregistering of
            // the connection it went over -- and only of that one: the
            // result over a candidate already closed (it died meanwhile)
            // must not pass for the working connection's, which would then
            // close with its own unregistration still out.
            Done::Unregistered(flow, generation, over) => {
                unregistered_input(flow, over, self.which(flow, generation))?
            }
            Done::Lost(flow, generation, closed_in_order) => {
                let reason = if closed_in_order {
                    "the registrar closed the connection".to_string()
                } else {
                    "the connection was reset or broke".to_string()
                };
                let path_broken = !closed_in_order;
                match self.which(flow, generation)? {
                    Which::Working => Input::FlowLost {
                        flow,
                        reason,
                        path_broken,
                    },
                    Which::Candidate => Input::HomeLost {
                        flow,
                        reason,
                        path_broken,
                    },
                }
            }
            Done::Inbound(flow, status, request) => {
                self.notify(Notice::Inbound {
                    flow,
                    method: request.method.clone(),
                    status,
                    request,
                });
                return None;
            }
        })
    }

    /// A new connection of a flow, with a generation of its own; a new
    /// Call-ID unless it continues the flow's (`call_id`).
    fn flow_io(&mut self, won: Won, call_id: Option<String>) -> FlowIo {
        self.generations += 1;
        FlowIo {
            conn: won.conn,
            generation: self.generations,
            call_id: call_id.unwrap_or_else(|| format!("{}@siprace", sip::random_token(20))),
            next_cseq: 1,
            stun_id: stun::new_transaction_id(),
            endpoint: won.endpoint,
            dialer: won.dialer,
            race: won.race,
        }
    }

    /// Which of the flow's connections `generation` is, if it still has it.
    fn which(&self, flow: FlowId, generation: u64) -> Option<Which> {
        let has = |table: &HashMap<FlowId, FlowIo>| {
            table.get(&flow).is_some_and(|f| f.generation == generation)
        };
        if has(&self.flows) {
            Some(Which::Working)
        } else if has(&self.candidates) {
            Some(Which::Candidate)
        } else {
            None
        }
    }

    /// The connection, generation, Call-ID and CSeq of `flow`'s next
    /// REGISTER: over its working connection, or over its candidate
    /// (`home`), which takes the next number of the flow's series, so the
    /// registrar sees the next REGISTER of the same registration (RFC 3261
    /// §10.3 step 7) and the working connection's later ones stay above it.
    fn next_register(&mut self, flow: FlowId, home: bool) -> Option<(FlowConn, u64, String, u32)> {
        let working_next = self.flows.get(&flow).map(|io| io.next_cseq);
        let io = if home {
            self.candidates.get_mut(&flow)?
        } else {
            self.flows.get_mut(&flow)?
        };
        let cseq = match working_next {
            Some(next) if home => next.max(io.next_cseq),
            _ => io.next_cseq,
        };
        // Two numbers: the REGISTER and its answer to a challenge.
        io.next_cseq = cseq + 2;
        let taken = (io.conn.clone(), io.generation, io.call_id.clone(), cseq);
        if home {
            if let Some(working) = self.flows.get_mut(&flow) {
                working.next_cseq = cseq + 2;
            }
        }
        Some(taken)
    }

    fn notify(&self, notice: Notice) {
        if self
            .notices
            .try_send((self.started.elapsed(), notice))
            .is_err()
        {
            tracing::debug!("registration notice dropped: the owner does not read them");
        }
    }

    fn perform(
        &mut self,
        actions: Vec<Action>,
        done: &mpsc::UnboundedSender<Done>,
        tasks: &mut JoinSet<()>,
        wake: &mut Option<Instant>,
    ) {
        for action in actions {
            match action {
                Action::Connect { flow, family } => {
                    let dialer = self.dialer_for(flow, family);
                    let registrar = self.shared.registrar.clone();
                    let done = done.clone();
                    tasks.spawn(async move {
                        let report = match race(dialer, registrar).await {
                            Ok(won) => Done::Connected(flow, Box::new(won)),
                            Err((reason, none)) => Done::ConnectFailed(flow, reason, none),
                        };
                        let _ = done.send(report);
                    });
                }
                Action::RaceHome {
                    flow,
                    family,
                    attempt,
                } => {
                    let dialer = self.dialer_for(flow, FamilyChoice::Only(family));
                    let registrar = self.shared.registrar.clone();
                    let done = done.clone();
                    let racing = tasks.spawn(async move {
                        let report = match race(dialer, registrar).await {
                            Ok(won) => Done::HomeConnected(flow, attempt, Box::new(won)),
                            Err((reason, _)) => Done::HomeConnectFailed(flow, attempt, reason),
                        };
                        let _ = done.send(report);
                    });
                    // An earlier home race of the flow still running is
                    // not wanted any more (its result would be dropped for
                    // its number anyway): its attempts stop now.
                    if let Some(earlier) = self.home_races.insert(flow, racing) {
                        earlier.abort();
                    }
                }
                Action::Register { flow }
                | Action::Unregister { flow }
                | Action::RegisterHome { flow }
                | Action::UnregisterHome { flow } => {
                    let unregister = matches!(
                        action,
                        Action::Unregister { .. } | Action::UnregisterHome { .. }
                    );
                    let home = matches!(
                        action,
                        Action::RegisterHome { .. } | Action::UnregisterHome { .. }
                    );
                    let Some((conn, generation, call_id, cseq)) = self.next_register(flow, home)
                    else {
                        continue;
                    };
                    let exchange = Exchange {
                        conn,
                        call_id,
                        cseq,
                        reg_id: flow,
                        unregister,
                    };
                    let shared = self.shared.clone();
                    let done = done.clone();
                    tasks.spawn(async move {
                        let result = exchange.run(&shared).await;
                        let over = if home {
                            Which::Candidate
                        } else {
                            Which::Working
                        };
                        let report = match (unregister, result) {
                            (true, _) => Done::Unregistered(flow, generation, over),
                            (false, Ok((flow_timer, expires, outbound))) => {
                                Done::Registered(flow, generation, flow_timer, expires, outbound)
                            }
                            (false, Err(reason)) => Done::RegisterFailed(flow, generation, reason),
                        };
                        let _ = done.send(report);
                    });
                }
                Action::SendKeepalive {
                    flow,
                    retransmission,
                } => {
                    let Some(io) = self.flows.get_mut(&flow) else {
                        continue;
                    };
                    if !retransmission {
                        io.stun_id = stun::new_transaction_id();
                    }
                    let (conn, stun_id, generation) = (io.conn.clone(), io.stun_id, io.generation);
                    let bound = self.pong_timeout + Duration::from_secs(1);
                    let done = done.clone();
                    tasks.spawn(async move {
                        if let Some(mapped) = keepalive(conn, stun_id, bound).await {
                            let _ = done.send(Done::Pong(flow, generation, mapped));
                        }
                    });
                }
                Action::RecordPathFailure { flow } => {
                    if let Some(io) = self.flows.get(&flow) {
                        io.dialer.record_path_failure(&io.endpoint);
                    }
                }
                Action::RecordHomePathFailure { flow } => {
                    if let Some(io) = self.candidates.get(&flow) {
                        io.dialer.record_path_failure(&io.endpoint);
                    }
                }
                Action::Close { flow } => {
                    if let Some(io) = self.flows.remove(&flow) {
                        retire(io, tasks);
                    }
                }
                Action::CloseHome { flow } => {
                    if let Some(io) = self.candidates.remove(&flow) {
                        retire(io, tasks);
                    }
                }
                Action::AdoptHome { flow } => {
                    let Some(mut home) = self.candidates.remove(&flow) else {
                        continue;
                    };
                    if let Some(old) = self.flows.remove(&flow) {
                        home.next_cseq = home.next_cseq.max(old.next_cseq);
                        retire(old, tasks);
                    }
                    self.flows.insert(flow, home);
                }
                Action::Event(mut event) => {
                    if matches!(
                        event.kind,
                        EventKind::Registered | EventKind::Recovered | EventKind::Rehomed
                    ) {
                        // Over the winner of the flow's latest race.
                        event.race = self.flows.get(&event.flow).map(|io| io.race.clone());
                    }
                    self.notify(Notice::Flow(event))
                }
                Action::WakeAt(at) => *wake = Some(at),
            }
        }
        // Every connection is watched (death, inbound requests) once.
        for (&flow, io) in self.flows.iter().chain(&self.candidates) {
            if let Some(inbound) = io.conn.take_inbound() {
                let watched =
                    watch_flow(flow, io.generation, io.conn.clone(), inbound, done.clone());
                tasks.spawn(watched);
            }
        }
    }

    /// The dialer of `flow` racing the families `choice` allows, in its
    /// order: each has a connection table of its own, and all share the
    /// first one's history.
    fn dialer_for(&mut self, flow: FlowId, choice: FamilyChoice) -> Dialer {
        if let Some(dialer) = self.dialers.get(&(flow, choice)) {
            return dialer.clone();
        }
        let mut cfg = self.dialer.clone();
        match choice {
            FamilyChoice::Any => {}
            FamilyChoice::Only(family) => cfg.locate.families = vec![family],
            FamilyChoice::Prefer(family) => {
                // First in the order (RFC 6724 would put IPv6 first), and
                // the family the Resolution Delay waits for.
                cfg.race.family_first = Some(family);
                cfg.race.preferred_family = family;
            }
        }
        let made = match self.dialers.values().next() {
            Some(sibling) => sibling.sharing_history(cfg),
            None => Dialer::new(cfg),
        };
        let dialer = made.expect("validated at start; a family subset stays valid");
        self.dialers.insert((flow, choice), dialer.clone());
        dialer
    }
}

/// Which of a flow's connections a task's report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Working,
    Candidate,
}

/// The input for an unregistration of `flow` that ended over the
/// connection `over`, the flow still having that connection as `now`
/// (`None`: gone). A result for a connection gone is dropped: it was the
/// candidate's (closed when it died), or a working connection already
/// closed, and taking it for the other connection's would end an
/// unregistration still in flight.
fn unregistered_input(flow: FlowId, over: Which, now: Option<Which>) -> Option<Input> {
    match (over, now) {
        (Which::Working, Some(Which::Working)) => Some(Input::Unregistered { flow }),
        (Which::Candidate, Some(Which::Candidate)) => Some(Input::HomeUnregistered { flow }),
        _ => None,
    }
}

/// A connection retired (its flow failed, stopped, or moved home, or a
/// candidate was given up): dead at once, before any race the same batch
/// starts could take it from its dialer's table again, then closed.
fn retire(io: FlowIo, tasks: &mut JoinSet<()>) {
    io.conn.abandon();
    tasks.spawn(async move { io.conn.close().await });
}

/// Races the registrar; on failure, why and whether no candidate existed.
async fn race(dialer: Dialer, registrar: String) -> Result<Won, (String, bool)> {
    match dialer.dial(&registrar).await {
        Ok(dial) => {
            let race = race_note(&dial.report);
            let conn = match (dial.kept, dial.connection) {
                (Some(conn), _) => FlowConn::Stream(conn),
                (None, Some(Connection::Udp(socket))) => match UdpFlow::start(socket) {
                    Ok(udp) => FlowConn::Datagram(udp),
                    Err(e) => return Err((format!("the UDP socket: {e}"), false)),
                },
                _ => return Err(("the winner gave no usable connection".into(), false)),
            };
            Ok(Won {
                conn,
                endpoint: dial.endpoint,
                dialer,
                race,
            })
        }
        Err(DialError::Resolution(report)) => Err((
            format!(
                "no address: {}",
                report.reason.as_deref().unwrap_or("resolution failed")
            ),
            true,
        )),
        Err(e) => Err((e.to_string(), false)),
    }
}

/// What a flow's race shows of history: the first attempt's family, and
/// history's note on the order (a path that failed recently tried last).
fn race_note(report: &Report) -> RaceNote {
    let first_family = report.attempts.first().map_or(Family::V6, |a| a.family);
    let ago = |ms: Option<f64>| match ms {
        None => "recently".to_string(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms before"),
        Some(ms) => format!("{:.1} s before", ms / 1000.0),
    };
    let history = report.attempts.iter().find_map(|a| {
        Some(match a.history.as_ref()? {
            HistoryEntry::FailedRecently { failed_ago_ms } => format!(
                "{}/{} to {} failed {}: tried last",
                a.family,
                a.transport,
                a.host,
                ago(*failed_ago_ms)
            ),
            HistoryEntry::PreferredFailed {
                failed_family,
                failed_ago_ms,
            } => format!(
                "{failed_family}/{} to {} failed {}: {} first",
                a.transport,
                a.host,
                ago(*failed_ago_ms),
                a.family
            ),
            HistoryEntry::FasterFamily { .. } => return None,
        })
    });
    RaceNote {
        first_family,
        history,
    }
}

/// One keep-alive: a CRLF ping answered by a pong (streams), or the STUN
/// Binding request `stun_id` answered with the mapped address (UDP; a
/// retransmission sends the same request and waits for nothing new).
/// `None` if no answer came within `bound`.
async fn keepalive(
    conn: FlowConn,
    stun_id: TransactionId,
    bound: Duration,
) -> Option<Option<std::net::SocketAddr>> {
    match conn {
        FlowConn::Stream(c) => {
            let mut pongs = c.pongs();
            pongs.borrow_and_update();
            // Bounded: a peer that stops reading must not hold the task.
            let answered = async {
                c.ping().await.ok()?;
                pongs.changed().await.ok()
            };
            tokio::time::timeout(bound, answered).await.ok()??;
            Some(None)
        }
        FlowConn::Datagram(u) => {
            let answer = u.binding(stun_id).await.ok()??;
            match tokio::time::timeout(bound, answer).await.ok()?.ok()? {
                BindingResponse::Mapped(addr) => Some(Some(addr)),
                BindingResponse::NoAddress => Some(None),
                // An error answer still proves the path works.
                BindingResponse::Error(_) => Some(None),
            }
        }
    }
}

/// Watches a flow's connection: answers the requests arriving over it
/// (OPTIONS and MESSAGE with 200, others with 501; never an ACK) and says
/// when it dies (its reader ends, and with it the channel of requests).
async fn watch_flow(
    flow: FlowId,
    generation: u64,
    conn: FlowConn,
    mut inbound: mpsc::Receiver<sip::Request>,
    done: mpsc::UnboundedSender<Done>,
) {
    while let Some(request) = inbound.recv().await {
        if request.method == "ACK" {
            continue;
        }
        let status = if matches!(request.method.as_str(), "OPTIONS" | "MESSAGE") {
            200
        } else {
            501
        };
        let _ = conn.send(&request.response(status).build()).await;
        let _ = done.send(Done::Inbound(flow, status, Box::new(request)));
    }
    let _ = done.send(Done::Lost(flow, generation, conn.ended_by_peer()));
}

/// Why a REGISTER exchange failed.
struct ExchangeFailure {
    reason: String,
    /// No answer in time or the connection died (the path's fault), as
    /// opposed to an answer that refused.
    path_broken: bool,
}

/// A refusal (the registrar answered): the path works.
impl From<String> for ExchangeFailure {
    fn from(reason: String) -> Self {
        ExchangeFailure {
            reason,
            path_broken: false,
        }
    }
}

/// One REGISTER (or unregistration) on a flow, with its answer to one
/// digest challenge.
struct Exchange {
    conn: FlowConn,
    call_id: String,
    cseq: u32,
    reg_id: FlowId,
    unregister: bool,
}

impl Exchange {
    /// The 2xx's Flow-Timer, granted expiry and `Require: outbound`.
    async fn run(
        self,
        shared: &Shared,
    ) -> Result<(Option<Duration>, Duration, bool), ExchangeFailure> {
        let local = self.conn.local();
        let mut authorization = None;
        for cseq in [self.cseq, self.cseq + 1] {
            let req = RegisterRequest {
                registration: &shared.binding,
                reg_id: self.reg_id,
                transport: self.conn.transport(),
                local_host: shared
                    .local_name
                    .clone()
                    .unwrap_or_else(|| uri_host(local.ip())),
                local_port: local.port(),
                call_id: self.call_id.clone(),
                cseq,
                branch: RegisterRequest::new_branch(),
                unregister: self.unregister,
                authorization: authorization.take(),
            };
            let response = self
                .conn
                .request(&req.to_bytes(), &req.branch)
                .await
                .map_err(|reason| ExchangeFailure {
                    reason,
                    path_broken: true,
                })?;
            match register::outcome(&response, &req) {
                Some(RegisterOutcome::Registered {
                    expires,
                    flow_timer,
                    outbound,
                }) => return Ok((flow_timer, expires, outbound)),
                Some(RegisterOutcome::Challenged {
                    answer_header,
                    challenges,
                }) if authorization.is_none() && cseq == self.cseq => {
                    let creds = shared.credentials.as_ref().ok_or_else(|| {
                        "the registrar asks for credentials (--user, --password)".to_string()
                    })?;
                    let challenge = Challenge::choose(challenges.iter().map(String::as_str))
                        .map_err(|e| e.to_string())?;
                    let answer = challenge.answer(
                        creds,
                        "REGISTER",
                        &shared.binding.registrar,
                        &sip::random_token(16),
                        1,
                    );
                    authorization = Some((answer_header, answer));
                }
                Some(RegisterOutcome::Challenged { .. }) => {
                    return Err(String::from("the registrar rejected the credentials").into())
                }
                Some(RegisterOutcome::Rejected { status, reason }) => {
                    return Err(
                        format!("{status} {}", crate::report::terminal_safe(&reason)).into(),
                    )
                }
                None => unreachable!("only final responses reach here"),
            }
        }
        Err(String::from("the registrar rejected the credentials").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unregistration_ends_only_the_connection_it_went_over() {
        use Which::{Candidate, Working};
        assert_eq!(
            unregistered_input(1, Working, Some(Working)),
            Some(Input::Unregistered { flow: 1 })
        );
        assert_eq!(
            unregistered_input(1, Candidate, Some(Candidate)),
            Some(Input::HomeUnregistered { flow: 1 })
        );
        // The candidate was closed (it died under its unregistration): its
        // result is not the working connection's, whose own is still out.
        assert_eq!(unregistered_input(1, Candidate, None), None);
        assert_eq!(unregistered_input(1, Working, None), None);
    }
}
