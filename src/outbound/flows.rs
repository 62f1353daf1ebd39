//! The flows of one SIP Outbound registration (RFC 5626), as a sans-IO
//! state machine: inputs (a flow connected or failed to, a REGISTER's
//! outcome, a keep-alive answered, a flow lost, a timer) in, actions
//! (race a connection, send a REGISTER or a keep-alive, close, arm the
//! timer) and events out. No sockets, no tokio, no clock: the caller
//! passes `now`, so tests drive it with a fake clock, like the race engine.
//!
//! siprace's twist on RFC 5626 §4.2: with two flows, flow 1 is the race's
//! winner and flow 2 is raced within the *other* address family, so one
//! broken family leaves a registered flow on the other.
//!
//! The rules, each from RFC 5626:
//! - keep-alive interval (§4.4.1): 80–100 % of the registrar's `Flow-Timer`
//!   when it sent one; else the configured interval, or a random 95–120 s on
//!   streams (CRLF ping) and 24–29 s on UDP (STUN);
//! - a keep-alive not answered within 10 s (§4.4.1) fails the flow; on UDP
//!   the STUN request is retransmitted meanwhile (RFC 5389 §7.2.1: RTO
//!   500 ms, doubling), and a changed mapped address also fails it (§4.4.2);
//! - a flow that was working and fails is re-established at once (§4.5);
//!   each further failed attempt waits a random 50–100 % of
//!   `min(max-time, base-time · 2^consecutive-failures)`, with base-time
//!   30 s when no flow works and 90 s otherwise, max-time 1800 s;
//! - a registration is refreshed at 80 % of the expiry the registrar granted;
//! - a flow that fails on its path (keep-alive or REGISTER unanswered,
//!   connection reset) is first recorded as a failure of that path in the
//!   race history the flows share ([`Action::RecordPathFailure`]), so that
//!   the race that re-establishes it tries the other family first; a
//!   connection the registrar closes in order (a FIN: say, it restarted) is
//!   re-established too, but its path is not blamed;
//! - a registrar whose 2xx lacks `Require: outbound` does not support
//!   Outbound (§4.2.1, §5): the UA then holds one ordinary registration.
//!   The flow registered first is kept (refreshed, and re-raced if it is
//!   reset); any other flow is unregistered or dropped and not raced again,
//!   since the registrar would treat a second contact as another device and
//!   no proxy would fail over between them; and no keep-alive is sent, since
//!   such a registrar owes no CRLF pong nor STUN answer (§4.4), so a missing
//!   answer would prove nothing.
//!
//! Going back home (siprace's, not RFC 5626's): each of two flows has a
//! *home* family, fixed when the first flow registers: that flow's family
//! is its home, the other family the other flow's (the families they would
//! have with nothing broken). A flow that recovered onto the other flow's
//! family is *displaced*: both flows then hang on one family, and its
//! failure would take both. When the registrar supports Outbound, a
//! displaced flow races its home family alone ([`Action::RaceHome`]) after
//! [`FlowConfig::rehome_after`], doubling after each failed attempt up to
//! `max_time`, each wait a random 50–100 % of that (as §4.5's back-off).
//! Make before break: the displaced flow keeps its connection, keep-alives
//! and refreshes meanwhile; only once the home connection is up and a
//! REGISTER over it (same reg-id and instance: the registrar replaces that
//! reg-id's flow, §6) succeeded does the flow move onto it and its old
//! connection close ([`Action::AdoptHome`]). A home attempt that fails
//! closes only the new connection and is tried again later; the race
//! history learns of it only when the new connection failed on its path
//! (its REGISTER unanswered, a reset), never from the working flow. The
//! working connection's refresh and the home REGISTER never cross at the
//! registrar (either could land last and point the reg-id at the wrong
//! connection): the home REGISTER waits for a refresh in flight, and a
//! refresh falling due while the home REGISTER is out waits for its answer
//! -- but only until halfway to the working registration's expiry: then
//! the candidate is given up (a failed attempt) and the refresh goes. A
//! home REGISTER that got no answer (or whose connection died) may have
//! moved the reg-id onto the candidate all the same: the working flow then
//! refreshes at once, to bind it back. A flow whose working connection
//! fails while its candidate is connected adopts the candidate at once
//! (its REGISTER, out or sent then, completes the recovery); one whose home
//! race is still running drops it and recovers as above.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::endpoint::{Family, Transport};

/// The longest registration expiry and `Flow-Timer` the machine takes from
/// a registrar; longer ones are cut to these (a hostile or broken registrar
/// must not overflow the clock: `Expires: 18446744073709551615`).
pub const MAX_EXPIRES: Duration = Duration::from_secs(7 * 86_400);
/// See [`MAX_EXPIRES`].
pub const MAX_FLOW_TIMER: Duration = Duration::from_secs(3_600);

/// A time that never comes (a year), for a deadline not in force.
const NEVER: Duration = Duration::from_secs(3600 * 24 * 365);

/// A flow's number: its `reg-id` (RFC 5626 §4.2), from 1.
pub type FlowId = u32;

/// Which family a flow's race may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyChoice {
    /// Race every family (flow 1, and a flow recovering from a failure of
    /// its path: history then puts the failed family last).
    Any,
    /// Race this family only (flow 2, the other family than flow 1's).
    Only(Family),
    /// Race every family, this one first: a flow whose connection ended
    /// without its path failing (the registrar closed it in order) goes back
    /// to the family it ran on, so each family keeps its flow.
    Prefer(Family),
}

/// The timing rules (defaults from RFC 5626; all configurable for labs).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    /// How many flows to keep: 1 or 2.
    pub flows: u32,
    /// Keep-alive interval when the registrar sends no `Flow-Timer`
    /// (`--keepalive`); `None`: RFC 5626's random defaults.
    pub keepalive: Option<Duration>,
    /// How long a keep-alive may go unanswered (10 s).
    pub pong_timeout: Duration,
    /// The first STUN retransmission timeout (RFC 5389 RTO, 500 ms).
    pub stun_rto: Duration,
    /// Back-off base when no flow works (30 s).
    pub base_time_all_failed: Duration,
    /// Back-off base when another flow works (90 s).
    pub base_time_some_ok: Duration,
    /// Back-off ceiling (1800 s).
    pub max_time: Duration,
    /// The first wait before a displaced flow races its home family again
    /// ([`DEFAULT_REHOME_AFTER`]; see the module docs), doubled after each
    /// failed attempt up to `max_time`, each wait a random 50–100 % of that.
    pub rehome_after: Duration,
}

/// The default [`FlowConfig::rehome_after`]. A minute: a family that broke
/// seldom heals within seconds, so trying sooner mostly costs a doomed
/// connection; while a displaced flow waits, the UA is as exposed as it was
/// while it noticed the break (a keep-alive interval plus 10 s, about two
/// minutes on streams), so a wait of that order keeps the exposure of the
/// same order; and doubling up to 1800 s holds a long outage to a handful
/// of attempts an hour. The jitter keeps a fleet of UAs displaced by the
/// same outage from all coming back at the same moment.
pub const DEFAULT_REHOME_AFTER: Duration = Duration::from_secs(60);

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            flows: 2,
            keepalive: None,
            pong_timeout: Duration::from_secs(10),
            stun_rto: Duration::from_millis(500),
            base_time_all_failed: Duration::from_secs(30),
            base_time_some_ok: Duration::from_secs(90),
            max_time: Duration::from_secs(1800),
            rehome_after: DEFAULT_REHOME_AFTER,
        }
    }
}

/// What happened to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The race for `flow` won: a connection to `remote`.
    Connected {
        /// The flow.
        flow: FlowId,
        /// The winner's transport.
        transport: Transport,
        /// The winner's address.
        remote: SocketAddr,
    },
    /// The race for `flow` found nothing; `no_candidates` when there was
    /// no address in the family asked for (one family only: one flow).
    ConnectFailed {
        /// The flow.
        flow: FlowId,
        /// Why, for the event.
        reason: String,
        /// No candidate existed (as opposed to: every candidate failed).
        no_candidates: bool,
    },
    /// The registrar accepted the REGISTER on `flow`.
    Registered {
        /// The flow.
        flow: FlowId,
        /// The `Flow-Timer` of the 200, if any.
        flow_timer: Option<Duration>,
        /// The expiry the registrar granted this contact.
        expires: Duration,
        /// The 2xx carried `Require: outbound` (the registrar supports
        /// Outbound, RFC 5626 §4.2.1).
        outbound: bool,
    },
    /// The REGISTER on `flow` failed (final error, timeout, 439, …).
    RegisterFailed {
        /// The flow.
        flow: FlowId,
        /// Why, for the event.
        reason: String,
        /// The path failed (no answer in time, the connection died), as
        /// opposed to the registrar refusing: recorded in the race history.
        path_broken: bool,
    },
    /// A keep-alive on `flow` was answered (a CRLF pong, or a STUN
    /// success with the mapped address).
    KeepaliveAnswered {
        /// The flow.
        flow: FlowId,
        /// STUN's mapped address (UDP only).
        mapped: Option<SocketAddr>,
    },
    /// The connection of `flow` was closed or reset by the peer.
    FlowLost {
        /// The flow.
        flow: FlowId,
        /// Why, for the event.
        reason: String,
        /// It was reset or broke (or ICMP said unreachable), as opposed to
        /// closed in order (a FIN: the path works, e.g. the registrar
        /// restarted): recorded in the race history.
        path_broken: bool,
    },
    /// The time given by the last [`Action::WakeAt`] has come.
    Timer,
    /// Unregister every flow and stop.
    Stop,
    /// The unregistration of `flow` is done (answered or not).
    Unregistered {
        /// The flow.
        flow: FlowId,
    },
    /// The home race of `flow` ([`Action::RaceHome`]) won: a connection to
    /// `remote`, the flow's candidate.
    HomeConnected {
        /// The flow.
        flow: FlowId,
        /// The race's number ([`Action::RaceHome`]'s `attempt`).
        attempt: u32,
        /// The winner's transport.
        transport: Transport,
        /// The winner's address.
        remote: SocketAddr,
    },
    /// The home race of `flow` found nothing.
    HomeConnectFailed {
        /// The flow.
        flow: FlowId,
        /// The race's number ([`Action::RaceHome`]'s `attempt`).
        attempt: u32,
        /// Why, for the event.
        reason: String,
    },
    /// The REGISTER over `flow`'s candidate was accepted.
    HomeRegistered {
        /// The flow.
        flow: FlowId,
        /// The `Flow-Timer` of the 200, if any.
        flow_timer: Option<Duration>,
        /// The expiry the registrar granted.
        expires: Duration,
        /// The 2xx carried `Require: outbound`.
        outbound: bool,
    },
    /// The REGISTER over `flow`'s candidate failed.
    HomeRegisterFailed {
        /// The flow.
        flow: FlowId,
        /// Why, for the event.
        reason: String,
        /// No answer in time or the connection died (the home path's
        /// fault), as opposed to the registrar refusing.
        path_broken: bool,
    },
    /// `flow`'s candidate connection was closed or reset by the peer.
    HomeLost {
        /// The flow.
        flow: FlowId,
        /// Why, for the event.
        reason: String,
        /// Reset or broken, as opposed to closed in order.
        path_broken: bool,
    },
    /// The unregistration over `flow`'s candidate (on stop) is done.
    HomeUnregistered {
        /// The flow.
        flow: FlowId,
    },
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Race a connection to the registrar for `flow`.
    Connect {
        /// The flow.
        flow: FlowId,
        /// The families it may use.
        family: FamilyChoice,
    },
    /// Send a REGISTER on `flow`'s connection (first or refresh).
    Register {
        /// The flow.
        flow: FlowId,
    },
    /// Send a keep-alive on `flow`: a CRLF ping on streams, a STUN Binding
    /// request on UDP (a retransmission reuses the transaction ID).
    SendKeepalive {
        /// The flow.
        flow: FlowId,
        /// True for a STUN retransmission of the same request.
        retransmission: bool,
    },
    /// Record in the race history that the path of `flow`'s connection
    /// (its host, family and transport) just failed, before the connection
    /// is closed and the flow raced again (so that race tries the other
    /// family first).
    RecordPathFailure {
        /// The flow.
        flow: FlowId,
    },
    /// Close `flow`'s connection (if any).
    Close {
        /// The flow.
        flow: FlowId,
    },
    /// Send a REGISTER with Expires: 0 for `flow`.
    Unregister {
        /// The flow.
        flow: FlowId,
    },
    /// Report this event.
    Event(FlowEvent),
    /// Call back with [`Input::Timer`] at this time (replaces earlier ones).
    WakeAt(Instant),
    /// Race a second connection for `flow` within its home `family` only
    /// (the candidate), keeping its working one.
    RaceHome {
        /// The flow.
        flow: FlowId,
        /// Its home family.
        family: Family,
        /// This race's number, given back with its result: a late result
        /// of an earlier race (its flow failed, then was displaced again
        /// meanwhile) is not taken for this one's. The caller may abort
        /// the flow's earlier race.
        attempt: u32,
    },
    /// Send a REGISTER for `flow` (same reg-id, Call-ID and CSeq series)
    /// over its candidate connection.
    RegisterHome {
        /// The flow.
        flow: FlowId,
    },
    /// Send a REGISTER with Expires: 0 for `flow` over its candidate
    /// connection (stopping while the candidate's REGISTER was out).
    UnregisterHome {
        /// The flow.
        flow: FlowId,
    },
    /// Record in the race history that the path of `flow`'s candidate
    /// failed (not the working connection's).
    RecordHomePathFailure {
        /// The flow.
        flow: FlowId,
    },
    /// Close `flow`'s candidate connection (if any); the working one stays.
    CloseHome {
        /// The flow.
        flow: FlowId,
    },
    /// The candidate becomes `flow`'s connection; close the old one.
    AdoptHome {
        /// The flow.
        flow: FlowId,
    },
}

/// An event of a flow's life, for the report and `--json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    /// The flow.
    pub flow: FlowId,
    /// What happened.
    pub kind: EventKind,
    /// The flow's transport and remote address, once connected.
    pub path: Option<(Transport, SocketAddr)>,
    /// On `Registered` and `Recovered`: whether the registrar confirmed
    /// Outbound (`Require: outbound`); `None` on other events.
    pub outbound: Option<bool>,
    /// On `Registered` and `Recovered`: how the race that made the flow's
    /// connection went (filled in by the driver; the machine sees no race).
    pub race: Option<RaceNote>,
}

/// What the race of a flow's connection shows of history: the family it
/// tried first, and why when history changed the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaceNote {
    /// The family of the race's first attempt.
    pub first_family: Family,
    /// History's note on the order, e.g. "ipv6/udp to registrar.example.test
    /// failed 0.4 s before: ipv4 first" (DNS text: escape before printing).
    pub history: Option<String>,
}

/// Why a flow is not kept when the registrar lacks Outbound (the reason of
/// its [`EventKind::Unavailable`]).
pub const NO_OUTBOUND: &str = "the registrar does not support Outbound (its 2xx to REGISTER \
     lacks `Require: outbound`): one registration kept, no second flow, no keep-alives";

/// The kinds of [`FlowEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Registered for the first time.
    Registered,
    /// A keep-alive was answered.
    KeepaliveOk,
    /// The flow failed (the reason says how).
    Failed(String),
    /// A new flow is being raced after this wait.
    Recovering(Duration),
    /// Registered again after a failure.
    Recovered,
    /// Not kept: the registrar has no address in the other family.
    Unavailable(String),
    /// Unregistered on stop.
    Unregistered,
    /// Moved back to its home family (the event's path is the new one).
    Rehomed,
    /// An attempt to move back home failed (the reason says how); the flow
    /// stays where it is and tries again after `retry_in`.
    RehomeFailed {
        /// Why.
        reason: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Waiting for another flow's result before racing (flow 2 at start).
    Idle,
    Connecting,
    Registering,
    Up {
        keepalive_at: Instant,
        refresh_at: Instant,
        /// A keep-alive is out: its deadline, and the next STUN
        /// retransmission with its timeout.
        pending: Option<Pending>,
    },
    Waiting {
        until: Instant,
    },
    Unavailable,
    Unregistering,
    Done,
}

/// Where a flow is in going back to its home family.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rehome {
    /// Nothing due: at home, alone on its family, or not registered.
    Idle,
    /// Displaced: its home race starts at this time.
    Due(Instant),
    /// The home race with this number runs.
    Racing(u32),
    /// The candidate is connected; its REGISTER waits for the working
    /// connection's refresh in flight.
    Connected,
    /// The candidate's REGISTER is out.
    Registering,
    /// Stopping: the candidate's unregistration is out.
    Unregistering,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Pending {
    deadline: Instant,
    retransmit: Option<(Instant, Duration)>,
}

#[derive(Debug, Clone)]
struct Flow {
    id: FlowId,
    state: State,
    path: Option<(Transport, SocketAddr)>,
    flow_timer: Option<Duration>,
    mapped: Option<SocketAddr>,
    consecutive_failures: u32,
    /// Has this flow ever been registered (a later one is a recovery)?
    was_up: bool,
    /// Is this flow recovering from a failure?
    recovering: bool,
    /// The family its recovery prefers: the one it ran on, when its working
    /// connection ended without the path failing.
    prefer: Option<Family>,
    /// A refresh REGISTER is out on its working connection.
    refreshing: bool,
    /// The family it belongs on (see the module docs), once a flow registered.
    home: Option<Family>,
    /// Its move back home.
    rehome: Rehome,
    /// The number of its latest home race.
    home_races: u32,
    /// The candidate's path, once its home race won.
    candidate: Option<(Transport, SocketAddr)>,
    /// Home attempts failed in a row (the exponent of their back-off).
    rehome_failures: u32,
    /// When its working registration expires (from its last 2xx).
    expires_at: Option<Instant>,
    /// It adopted its candidate and that connection's REGISTER is not yet
    /// answered: a failure now is the first since a working flow broke, so
    /// it races again at once (§4.5), as a flow without a candidate would.
    adopted: bool,
}

/// The flows of one registration.
#[derive(Debug)]
pub struct Flows {
    cfg: FlowConfig,
    flows: Vec<Flow>,
    rng: StdRng,
    stopping: bool,
    /// `Some(false)` once a registrar's 2xx lacked `Require: outbound`.
    registrar_outbound: Option<bool>,
}

impl Flows {
    /// A registration with `cfg.flows` flows (clamped to 1..=2); `seed`
    /// drives the random intervals (fixed in tests).
    pub fn new(cfg: FlowConfig, seed: u64) -> Flows {
        let count = cfg.flows.clamp(1, 2);
        let flows = (1..=count)
            .map(|id| Flow {
                id,
                state: State::Idle,
                path: None,
                flow_timer: None,
                mapped: None,
                consecutive_failures: 0,
                was_up: false,
                recovering: false,
                prefer: None,
                refreshing: false,
                home: None,
                rehome: Rehome::Idle,
                home_races: 0,
                candidate: None,
                expires_at: None,
                rehome_failures: 0,
                adopted: false,
            })
            .collect();
        Flows {
            cfg,
            flows,
            rng: StdRng::seed_from_u64(seed),
            stopping: false,
            registrar_outbound: None,
        }
    }

    /// The first actions: race flow 1 (flow 2 waits for its family).
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = vec![];
        self.connect(0, FamilyChoice::Any, &mut out);
        self.finish(out)
    }

    /// True once every flow is unregistered, unavailable or given up, and
    /// no candidate's unregistration is out.
    pub fn finished(&self) -> bool {
        self.flows.iter().all(|f| {
            matches!(f.state, State::Done | State::Unavailable) && f.rehome == Rehome::Idle
        })
    }

    /// Whether the registrar supports Outbound: `None` until a flow is
    /// registered, then what its 2xx said (a `false` is kept).
    pub fn registrar_outbound(&self) -> Option<bool> {
        self.registrar_outbound
    }

    /// Whether `flow` is being raced (a connection for it is wanted now;
    /// the caller closes one that arrives otherwise).
    pub fn is_connecting(&self, flow: FlowId) -> bool {
        self.index_in(flow, |s| matches!(s, State::Connecting))
            .is_some()
    }

    /// Whether `flow`'s home race numbered `attempt` runs (its candidate
    /// is wanted now; the caller closes one that arrives otherwise).
    pub fn is_racing_home(&self, flow: FlowId, attempt: u32) -> bool {
        self.flows
            .iter()
            .any(|f| f.id == flow && f.rehome == Rehome::Racing(attempt))
    }

    /// The flows that are registered now, with their paths.
    pub fn registered(&self) -> Vec<(FlowId, Transport, SocketAddr)> {
        self.flows
            .iter()
            .filter(|f| matches!(f.state, State::Up { .. }))
            .filter_map(|f| f.path.map(|(t, a)| (f.id, t, a)))
            .collect()
    }

    /// Feeds one input; returns the actions, ending with at most one
    /// `WakeAt` (the earliest deadline of any flow).
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = vec![];
        match input {
            Input::Connected {
                flow,
                transport,
                remote,
            } => {
                if let Some(i) = self.index_in(flow, |s| matches!(s, State::Connecting)) {
                    let f = &mut self.flows[i];
                    f.path = Some((transport, remote));
                    f.mapped = None;
                    f.state = State::Registering;
                    out.push(Action::Register { flow });
                    // Flow 2 is raced once flow 1's family is known.
                    if let Some(j) = self.index_in(2, |s| matches!(s, State::Idle)) {
                        let family = Family::of(&remote.ip()).other();
                        self.connect(j, FamilyChoice::Only(family), &mut out);
                    }
                }
            }
            Input::ConnectFailed {
                flow,
                reason,
                no_candidates,
            } => {
                if let Some(i) = self.index_in(flow, |s| matches!(s, State::Connecting)) {
                    if no_candidates && i > 0 && !self.flows[i].was_up {
                        self.flows[i].state = State::Unavailable;
                        out.push(self.event(i, EventKind::Unavailable(reason)));
                    } else {
                        self.fail(now, i, reason, &mut out);
                    }
                    // Flow 1 found nothing: flow 2 has no family to avoid.
                    if let Some(j) = self.index_in(2, |s| matches!(s, State::Idle)) {
                        self.connect(j, FamilyChoice::Any, &mut out);
                    }
                }
            }
            Input::Registered {
                flow,
                flow_timer,
                expires,
                outbound,
            } => {
                if let Some(i) =
                    self.index_in(flow, |s| matches!(s, State::Registering | State::Up { .. }))
                {
                    let first = matches!(self.flows[i].state, State::Registering);
                    self.set_up(now, i, flow_timer, expires, outbound);
                    let f = &mut self.flows[i];
                    // The refresh the candidate's REGISTER waited for is
                    // answered: that REGISTER goes now -- unless this 2xx
                    // shows no Outbound, when the candidate is dropped
                    // below (a REGISTER sent first would still go out and
                    // could leave a stray binding).
                    if f.rehome == Rehome::Connected && outbound {
                        f.rehome = Rehome::Registering;
                        out.push(Action::RegisterHome { flow });
                    }
                    if first {
                        self.assign_homes(i);
                    }
                    let f = &mut self.flows[i];
                    if first {
                        let kind = if f.recovering {
                            EventKind::Recovered
                        } else {
                            EventKind::Registered
                        };
                        f.was_up = true;
                        f.recovering = false;
                        let mut event = self.event(i, kind);
                        if let Action::Event(e) = &mut event {
                            e.outbound = Some(outbound);
                        }
                        out.push(event);
                    }
                    if !outbound {
                        self.without_outbound(i, &mut out);
                    }
                }
            }
            Input::RegisterFailed {
                flow,
                reason,
                path_broken,
            } => {
                if let Some(i) =
                    self.index_in(flow, |s| matches!(s, State::Registering | State::Up { .. }))
                {
                    if path_broken {
                        self.fail_path(now, i, reason, &mut out);
                    } else {
                        self.fail(now, i, reason, &mut out);
                    }
                }
            }
            Input::KeepaliveAnswered { flow, mapped } => {
                if let Some(i) = self.index_in(flow, |s| {
                    matches!(
                        s,
                        State::Up {
                            pending: Some(_),
                            ..
                        }
                    )
                }) {
                    let f = &self.flows[i];
                    match (f.mapped, mapped) {
                        (Some(before), Some(now_seen)) if before != now_seen => {
                            let reason =
                                format!("STUN mapped address changed: {before} -> {now_seen}");
                            self.fail(now, i, reason, &mut out);
                        }
                        _ => {
                            let interval = self.keepalive_interval(i);
                            let f = &mut self.flows[i];
                            f.mapped = f.mapped.or(mapped);
                            if let State::Up {
                                keepalive_at,
                                pending,
                                ..
                            } = &mut f.state
                            {
                                *keepalive_at = now + interval;
                                *pending = None;
                            }
                            out.push(self.event(i, EventKind::KeepaliveOk));
                        }
                    }
                }
            }
            Input::FlowLost {
                flow,
                reason,
                path_broken,
            } => {
                if let Some(i) =
                    self.index_in(flow, |s| matches!(s, State::Registering | State::Up { .. }))
                {
                    if path_broken {
                        self.fail_path(now, i, reason, &mut out);
                    } else {
                        self.fail(now, i, reason, &mut out);
                    }
                }
            }
            Input::Timer => self.on_timer(now, &mut out),
            Input::Stop => {
                self.stopping = true;
                for i in 0..self.flows.len() {
                    let id = self.flows[i].id;
                    match self.flows[i].rehome {
                        // Its REGISTER may yet bind the reg-id to the
                        // candidate: taken back over the candidate itself,
                        // behind that REGISTER on the same connection.
                        Rehome::Registering => {
                            self.flows[i].rehome = Rehome::Unregistering;
                            out.push(Action::UnregisterHome { flow: id });
                        }
                        Rehome::Connected => {
                            self.flows[i].rehome = Rehome::Idle;
                            out.push(Action::CloseHome { flow: id });
                        }
                        // A late winner of the race is closed by the caller
                        // ([`Flows::is_racing_home`]).
                        Rehome::Racing(_) | Rehome::Due(_) => self.flows[i].rehome = Rehome::Idle,
                        Rehome::Idle | Rehome::Unregistering => {}
                    }
                    match self.flows[i].state {
                        // A REGISTER in flight may yet bind the contact:
                        // unregistered too (with a higher CSeq, so a late
                        // REGISTER cannot undo it, RFC 3261 §10.3 step 7).
                        State::Up { .. } | State::Registering => {
                            self.flows[i].state = State::Unregistering;
                            out.push(Action::Unregister {
                                flow: self.flows[i].id,
                            });
                        }
                        State::Unavailable | State::Done | State::Unregistering => {}
                        _ => {
                            self.flows[i].state = State::Done;
                            out.push(Action::Close {
                                flow: self.flows[i].id,
                            });
                        }
                    }
                }
            }
            Input::Unregistered { flow } => {
                if let Some(i) = self.index_in(flow, |s| matches!(s, State::Unregistering)) {
                    self.flows[i].state = State::Done;
                    out.push(self.event(i, EventKind::Unregistered));
                    out.push(Action::Close { flow });
                }
            }
            Input::HomeConnected {
                flow,
                attempt,
                transport,
                remote,
            } => {
                if let Some(i) = self.rehoming(flow, Rehome::Racing(attempt)) {
                    let f = &mut self.flows[i];
                    f.candidate = Some((transport, remote));
                    if f.refreshing {
                        f.rehome = Rehome::Connected;
                    } else {
                        f.rehome = Rehome::Registering;
                        out.push(Action::RegisterHome { flow });
                    }
                }
            }
            Input::HomeConnectFailed {
                flow,
                attempt,
                reason,
            } => {
                if let Some(i) = self.rehoming(flow, Rehome::Racing(attempt)) {
                    // The race's own attempts taught the history already.
                    self.home_failed(now, i, reason, false, &mut out);
                }
            }
            Input::HomeRegistered {
                flow,
                flow_timer,
                expires,
                outbound,
            } => {
                if let Some(i) = self.rehoming(flow, Rehome::Registering) {
                    self.adopt_home(now, i, flow_timer, expires, outbound, &mut out);
                }
            }
            Input::HomeRegisterFailed {
                flow,
                reason,
                path_broken,
            } => self.on_home_failure(now, flow, reason, path_broken, path_broken, &mut out),
            // A dead connection answers nothing, whether reset or closed.
            Input::HomeLost {
                flow,
                reason,
                path_broken,
            } => self.on_home_failure(now, flow, reason, path_broken, true, &mut out),
            Input::HomeUnregistered { flow } => {
                if let Some(i) = self.rehoming(flow, Rehome::Unregistering) {
                    self.flows[i].rehome = Rehome::Idle;
                    out.push(Action::CloseHome { flow });
                }
            }
        }
        self.review_rehoming(now);
        self.finish(out)
    }

    /// `flow`'s candidate failed: its REGISTER was refused, or went
    /// unanswered or its connection died (`no_answer`); `path_broken` when
    /// the home path is to blame.
    fn on_home_failure(
        &mut self,
        now: Instant,
        flow: FlowId,
        reason: String,
        path_broken: bool,
        no_answer: bool,
        out: &mut Vec<Action>,
    ) {
        if let Some(i) = self
            .rehoming(flow, Rehome::Connected)
            .or_else(|| self.rehoming(flow, Rehome::Registering))
        {
            let register_was_out = self.flows[i].rehome == Rehome::Registering;
            // What history learns: the home path failed only when the new
            // connection did (no answer, a reset) -- then the next race of
            // any flow rightly tries the working family first. A refusal
            // proves the home path carries packets, and the working
            // connection failed in nothing: neither is recorded, or history
            // would steer flows off families that work.
            if path_broken {
                out.push(Action::RecordHomePathFailure { flow });
            }
            out.push(Action::CloseHome { flow });
            self.home_failed(now, i, reason, path_broken, out);
            // A REGISTER that got no answer may still have reached the
            // registrar, which then moved the reg-id onto the candidate
            // (RFC 5626 §6) -- now closed. The working flow's refresh goes
            // at once: with a higher CSeq it binds the reg-id back to the
            // connection that lives. A refusal bound nothing: no refresh.
            if register_was_out && no_answer {
                self.refresh(now, i, out);
            }
        } else if let Some(i) = self.rehoming(flow, Rehome::Unregistering) {
            // Stopping: the candidate's unregistration is queued behind its
            // REGISTER on that connection. A refusal of the REGISTER leaves
            // the connection up and the unregistration to come: closing now
            // would cut it off, so its own result is awaited
            // ([`Input::HomeUnregistered`]). Only a dead candidate is given
            // up at once.
            if no_answer {
                self.flows[i].rehome = Rehome::Idle;
                out.push(Action::CloseHome { flow });
            }
        }
    }

    /// Sends flow `i`'s refresh REGISTER over its working connection now
    /// (unless one is out already).
    fn refresh(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        if self.flows[i].refreshing {
            return;
        }
        if let State::Up { refresh_at, .. } = &mut self.flows[i].state {
            // Re-armed by the next Registered; until then, not again.
            *refresh_at = now + NEVER;
        } else {
            return;
        }
        self.flows[i].refreshing = true;
        out.push(Action::Register {
            flow: self.flows[i].id,
        });
    }

    /// The first flow registered (flow `i`): its family is its home, the
    /// other family the other flow's (see the module docs).
    fn assign_homes(&mut self, i: usize) {
        if self.flows.iter().any(|f| f.home.is_some()) {
            return;
        }
        let Some((_, remote)) = self.flows[i].path else {
            return;
        };
        let family = Family::of(&remote.ip());
        for (j, f) in self.flows.iter_mut().enumerate() {
            f.home = Some(if j == i { family } else { family.other() });
        }
    }

    /// The index of `flow` if it is registered and at `stage` of going home.
    fn rehoming(&self, flow: FlowId, stage: Rehome) -> Option<usize> {
        self.flows.iter().position(|f| {
            f.id == flow
                && f.rehome == stage
                && (matches!(f.state, State::Up { .. }) || stage == Rehome::Unregistering)
        })
    }

    /// Is flow `i` displaced: registered off its home family, on the family
    /// another registered flow uses, with two flows and Outbound?
    fn is_displaced(&self, i: usize) -> bool {
        if self.stopping || self.flows.len() != 2 || self.registrar_outbound != Some(true) {
            return false;
        }
        let family_up = |f: &Flow| match (&f.state, f.path) {
            (State::Up { .. }, Some((_, remote))) => Some(Family::of(&remote.ip())),
            _ => None,
        };
        let Some(family) = family_up(&self.flows[i]) else {
            return false;
        };
        self.flows[i].home.is_some_and(|home| home != family)
            && self
                .flows
                .iter()
                .enumerate()
                .any(|(j, f)| j != i && family_up(f) == Some(family))
    }

    /// After every input: a flow just displaced gets its home race due; a
    /// flow no longer displaced loses a home race not started yet (one
    /// under way goes on: landing at home is right either way); a flow at
    /// home starts its next displacement with the first wait again.
    fn review_rehoming(&mut self, now: Instant) {
        for i in 0..self.flows.len() {
            let displaced = self.is_displaced(i);
            match self.flows[i].rehome {
                Rehome::Idle if displaced => {
                    let wait = self.rehome_backoff(i);
                    self.flows[i].rehome = Rehome::Due(now + wait);
                }
                Rehome::Due(_) if !displaced => self.flows[i].rehome = Rehome::Idle,
                _ => {}
            }
            let f = &mut self.flows[i];
            let at_home = matches!(f.state, State::Up { .. })
                && f.path.map(|(_, a)| Family::of(&a.ip())) == f.home;
            if at_home {
                f.rehome_failures = 0;
            }
        }
    }

    /// A random 50–100 % of `min(max-time, rehome-after · 2^failures)`:
    /// §4.5's back-off shape, for the same reasons (a family that stays
    /// broken is tried ever less often; UAs displaced together spread out).
    fn rehome_backoff(&mut self, i: usize) -> Duration {
        let exp = self.flows[i].rehome_failures.min(16);
        let ceiling = self
            .cfg
            .rehome_after
            .saturating_mul(1 << exp)
            .min(self.cfg.max_time);
        ceiling.mul_f64(self.rng.random_range(0.5..=1.0))
    }

    /// A home attempt of flow `i` failed: the flow stays where it is (its
    /// connection untouched), and tries again after a longer wait.
    fn home_failed(
        &mut self,
        now: Instant,
        i: usize,
        reason: String,
        path_broken: bool,
        out: &mut Vec<Action>,
    ) {
        let home = self.flows[i].home.map_or("home", |f| f.as_str());
        let reason = if path_broken {
            format!("{home}: {reason} (recorded as the path's failure)")
        } else {
            format!("{home}: {reason}")
        };
        self.flows[i].candidate = None;
        self.flows[i].rehome_failures = self.flows[i].rehome_failures.saturating_add(1);
        let retry_in = self.rehome_backoff(i);
        self.flows[i].rehome = Rehome::Due(now + retry_in);
        out.push(self.event(i, EventKind::RehomeFailed { reason, retry_in }));
    }

    /// The REGISTER over flow `i`'s candidate succeeded: the candidate is
    /// the flow's connection from now on, with that REGISTER's timers, and
    /// the old connection closes.
    fn adopt_home(
        &mut self,
        now: Instant,
        i: usize,
        flow_timer: Option<Duration>,
        expires: Duration,
        outbound: bool,
        out: &mut Vec<Action>,
    ) {
        let id = self.flows[i].id;
        out.push(Action::AdoptHome { flow: id });
        let f = &mut self.flows[i];
        f.path = f.candidate.take();
        f.mapped = None;
        f.rehome = Rehome::Idle;
        f.rehome_failures = 0;
        self.set_up(now, i, flow_timer, expires, outbound);
        let mut event = self.event(i, EventKind::Rehomed);
        if let Action::Event(e) = &mut event {
            e.outbound = Some(outbound);
        }
        out.push(event);
        if !outbound {
            self.without_outbound(i, out);
        }
    }

    /// Flow `i` is registered (first, refreshed, or moved home): its
    /// keep-alive and refresh are armed from this 2xx.
    fn set_up(
        &mut self,
        now: Instant,
        i: usize,
        flow_timer: Option<Duration>,
        expires: Duration,
        outbound: bool,
    ) {
        let expires = expires.min(MAX_EXPIRES);
        let refresh = expires.mul_f64(0.8).max(Duration::from_secs(1));
        self.flows[i].flow_timer =
            flow_timer.map(|t| t.clamp(Duration::from_secs(1), MAX_FLOW_TIMER));
        // Without Outbound no keep-alive is owed an answer: none is sent
        // (see the module docs).
        let interval = if outbound {
            self.keepalive_interval(i)
        } else {
            NEVER
        };
        if outbound {
            // A `false` seen before is kept (see `without_outbound`).
            self.registrar_outbound.get_or_insert(true);
        }
        let f = &mut self.flows[i];
        f.expires_at = Some(now + expires);
        f.consecutive_failures = 0;
        f.refreshing = false;
        f.adopted = false;
        f.state = State::Up {
            keepalive_at: now + interval,
            refresh_at: now + refresh,
            pending: None,
        };
    }

    /// Flow `i` leaves its working connection (it failed, or is stopping):
    /// a candidate it had is dropped with it.
    fn drop_candidate(&mut self, i: usize, out: &mut Vec<Action>) {
        let f = &mut self.flows[i];
        if matches!(f.rehome, Rehome::Connected | Rehome::Registering) {
            out.push(Action::CloseHome { flow: f.id });
        }
        if f.rehome != Rehome::Unregistering {
            f.rehome = Rehome::Idle;
            f.candidate = None;
        }
    }

    /// The registrar lacks Outbound (flow `kept` was just registered
    /// without `Require: outbound`): keep that one registration and no
    /// other flow (see the module docs).
    fn without_outbound(&mut self, kept: usize, out: &mut Vec<Action>) {
        self.registrar_outbound = Some(false);
        for j in 0..self.flows.len() {
            // No flow goes home without Outbound (see `is_displaced`).
            self.drop_candidate(j, out);
            if j == kept {
                continue;
            }
            let id = self.flows[j].id;
            let next = match self.flows[j].state {
                State::Unavailable | State::Done | State::Unregistering => continue,
                // Registered with its own reg-id (or its REGISTER is in
                // flight and may yet bind it): that contact is taken back,
                // then the flow closes ([`Input::Unregistered`]).
                State::Up { .. } | State::Registering => {
                    out.push(Action::Unregister { flow: id });
                    State::Unregistering
                }
                _ => {
                    out.push(Action::Close { flow: id });
                    State::Unavailable
                }
            };
            out.push(self.event(j, EventKind::Unavailable(NO_OUTBOUND.into())));
            self.flows[j].state = next;
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        for i in 0..self.flows.len() {
            let id = self.flows[i].id;
            let stun = self.is_udp(i);
            match self.flows[i].state.clone() {
                State::Waiting { until } if until <= now => {
                    let family = self.recovery_family(i);
                    self.connect(i, family, out);
                }
                State::Up {
                    keepalive_at,
                    refresh_at,
                    pending,
                } => {
                    if let Some(p) = pending {
                        if p.deadline <= now {
                            let reason = format!(
                                "keep-alive unanswered for {} s",
                                self.cfg.pong_timeout.as_secs_f64()
                            );
                            self.fail_path(now, i, reason, out);
                            continue;
                        }
                        if let Some((at, rto)) = p.retransmit {
                            if at <= now {
                                let next = rto * 2;
                                let retransmit =
                                    (now + next < p.deadline).then_some((now + next, next));
                                self.set_pending(i, Some(Pending { retransmit, ..p }));
                                out.push(Action::SendKeepalive {
                                    flow: id,
                                    retransmission: true,
                                });
                            }
                        }
                    } else if keepalive_at <= now {
                        let rto = self.cfg.stun_rto;
                        let retransmit = stun.then_some((now + rto, rto));
                        self.set_pending(
                            i,
                            Some(Pending {
                                deadline: now + self.cfg.pong_timeout,
                                retransmit,
                            }),
                        );
                        out.push(Action::SendKeepalive {
                            flow: id,
                            retransmission: false,
                        });
                    }
                    // Held while the candidate's REGISTER is out (see the
                    // module docs): a success makes it moot, a failure lets
                    // it go at once. But the working registration must not
                    // expire meanwhile (that REGISTER may be held 32 s, or
                    // twice that with a challenge): held too long, the
                    // candidate is given up and the refresh goes.
                    if refresh_at <= now {
                        if self.flows[i].rehome != Rehome::Registering {
                            self.refresh(now, i, out);
                        } else if self.held_refresh_deadline(i).is_some_and(|at| at <= now) {
                            out.push(Action::CloseHome { flow: id });
                            let reason = "its REGISTER unanswered as the working registration \
                                          neared its expiry"
                                .to_string();
                            self.home_failed(now, i, reason, false, out);
                            self.refresh(now, i, out);
                        }
                    }
                    if let (Rehome::Due(at), Some(family)) =
                        (self.flows[i].rehome, self.flows[i].home)
                    {
                        if at <= now {
                            let f = &mut self.flows[i];
                            f.home_races = f.home_races.wrapping_add(1);
                            let attempt = f.home_races;
                            f.rehome = Rehome::Racing(attempt);
                            out.push(Action::RaceHome {
                                flow: id,
                                family,
                                attempt,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Until when flow `i`'s refresh, due while its candidate's REGISTER
    /// is out, may be held: halfway from the time it was due to the
    /// working registration's expiry (90 % of the expiry), leaving the
    /// refresh the rest to be answered.
    fn held_refresh_deadline(&self, i: usize) -> Option<Instant> {
        let f = &self.flows[i];
        let State::Up { refresh_at, .. } = f.state else {
            return None;
        };
        let expires_at = f.expires_at?;
        (f.rehome == Rehome::Registering && refresh_at < expires_at)
            .then(|| refresh_at + (expires_at - refresh_at) / 2)
    }

    fn set_pending(&mut self, i: usize, p: Option<Pending>) {
        if let State::Up { pending, .. } = &mut self.flows[i].state {
            *pending = p;
        }
    }

    /// A flow failed on its path (its keep-alive or REGISTER went
    /// unanswered, or the connection was reset): the race history learns it
    /// first, so the re-race tries the other family first. Not for a
    /// REGISTER refused or a connection closed in order (the path works),
    /// nor a changed STUN mapping (a NAT rebinding: the path carries
    /// packets; demoting its family would move the flow off a working
    /// family for the failure memory).
    fn fail_path(&mut self, now: Instant, i: usize, reason: String, out: &mut Vec<Action>) {
        if !self.stopping {
            out.push(Action::RecordPathFailure {
                flow: self.flows[i].id,
            });
        }
        self.fail_as(now, i, reason, true, out);
    }

    /// A flow failed, not on its path (see [`Flows::fail_as`]).
    fn fail(&mut self, now: Instant, i: usize, reason: String, out: &mut Vec<Action>) {
        self.fail_as(now, i, reason, false, out);
    }

    /// A flow failed: close it and race again, at once if it was working,
    /// else after the back-off. A working flow whose path did not fail
    /// prefers its family when raced again.
    fn fail_as(
        &mut self,
        now: Instant,
        i: usize,
        reason: String,
        path_broken: bool,
        out: &mut Vec<Action>,
    ) {
        let id = self.flows[i].id;
        let was_working = matches!(self.flows[i].state, State::Up { .. });
        let candidate_up = matches!(
            self.flows[i].rehome,
            Rehome::Connected | Rehome::Registering
        );
        // Only when the working path failed: a registrar that closed or
        // refused the working connection would likely do the same to the
        // candidate, and its failure would then cost the flow a back-off
        // where a race from nothing goes at once.
        if was_working && candidate_up && path_broken && !self.stopping {
            self.adopt_candidate(i, reason, out);
            return;
        }
        out.push(Action::Close { flow: id });
        self.drop_candidate(i, out);
        self.flows[i].refreshing = false;
        out.push(self.event(i, EventKind::Failed(reason)));
        let f = &mut self.flows[i];
        f.recovering = f.was_up;
        if path_broken {
            f.prefer = None;
        } else if was_working {
            f.prefer = f.path.map(|(_, remote)| Family::of(&remote.ip()));
        }
        if self.stopping {
            self.flows[i].state = State::Done;
            return;
        }
        // An adopted candidate stands in for the working flow that broke:
        // its failure is still that flow's first.
        let adopted = std::mem::take(&mut self.flows[i].adopted);
        let wait = if was_working || adopted {
            Duration::ZERO
        } else {
            self.flows[i].consecutive_failures += 1;
            self.backoff(i)
        };
        out.push(self.event(i, EventKind::Recovering(wait)));
        if wait.is_zero() {
            let family = self.recovery_family(i);
            self.connect(i, family, out);
        } else {
            self.flows[i].state = State::Waiting { until: now + wait };
        }
    }

    /// Flow `i`'s working path failed while its candidate is connected on
    /// its home family: the candidate, already up on a family
    /// that works (the one that failed is the one the flow was displaced
    /// onto), becomes the flow's connection at once instead of a race from
    /// nothing. Its REGISTER, out or sent now, is the flow's: its answer
    /// ends the recovery (`recovered`) as a new connection's would.
    fn adopt_candidate(&mut self, i: usize, reason: String, out: &mut Vec<Action>) {
        let id = self.flows[i].id;
        let register_out = self.flows[i].rehome == Rehome::Registering;
        // Closes the failed connection; the candidate takes its place.
        out.push(Action::AdoptHome { flow: id });
        out.push(self.event(i, EventKind::Failed(reason)));
        out.push(self.event(i, EventKind::Recovering(Duration::ZERO)));
        let f = &mut self.flows[i];
        f.refreshing = false;
        f.recovering = f.was_up;
        f.prefer = None;
        f.path = f.candidate.take();
        f.mapped = None;
        f.rehome = Rehome::Idle;
        f.state = State::Registering;
        f.adopted = true;
        if !register_out {
            // It waited for the refresh that died with the old connection.
            out.push(Action::Register { flow: id });
        }
    }

    /// RFC 5626 §4.5: a random 50–100 % of
    /// `min(max-time, base-time · 2^consecutive-failures)`.
    fn backoff(&mut self, i: usize) -> Duration {
        let some_ok = self
            .flows
            .iter()
            .enumerate()
            .any(|(j, f)| j != i && matches!(f.state, State::Up { .. }));
        let base = if some_ok {
            self.cfg.base_time_some_ok
        } else {
            self.cfg.base_time_all_failed
        };
        let exp = self.flows[i].consecutive_failures.min(16);
        let ceiling = base.saturating_mul(1 << exp).min(self.cfg.max_time);
        ceiling.mul_f64(self.rng.random_range(0.5..=1.0))
    }

    /// §4.4.1's keep-alive interval for flow `i`.
    fn keepalive_interval(&mut self, i: usize) -> Duration {
        if let Some(ft) = self.flows[i].flow_timer {
            return ft.mul_f64(self.rng.random_range(0.8..=1.0));
        }
        if let Some(k) = self.cfg.keepalive {
            return k;
        }
        let secs = if self.is_udp(i) {
            24.0..=29.0
        } else {
            95.0..=120.0
        };
        Duration::from_secs_f64(self.rng.random_range(secs))
    }

    fn is_udp(&self, i: usize) -> bool {
        matches!(self.flows[i].path, Some((Transport::Udp, _)))
    }

    /// Flow 2's first race is held to the other family than flow 1's
    /// (one flow per family). A recovering flow races every family: the
    /// history, which has just seen its family fail, orders the race so
    /// that the new flow comes up on the family that works.
    fn recovery_family(&self, i: usize) -> FamilyChoice {
        let live_family = self
            .flows
            .iter()
            .enumerate()
            .filter(|(j, f)| *j != i && matches!(f.state, State::Up { .. } | State::Registering))
            .find_map(|(_, f)| f.path.map(|(_, a)| Family::of(&a.ip())));
        match (live_family, self.flows[i].prefer) {
            (Some(family), _) if i > 0 && !self.flows[i].was_up => {
                FamilyChoice::Only(family.other())
            }
            (_, Some(family)) => FamilyChoice::Prefer(family),
            _ => FamilyChoice::Any,
        }
    }

    fn connect(&mut self, i: usize, family: FamilyChoice, out: &mut Vec<Action>) {
        self.flows[i].state = State::Connecting;
        out.push(Action::Connect {
            flow: self.flows[i].id,
            family,
        });
    }

    fn event(&self, i: usize, kind: EventKind) -> Action {
        Action::Event(FlowEvent {
            flow: self.flows[i].id,
            kind,
            path: self.flows[i].path,
            outbound: None,
            race: None,
        })
    }

    fn index_in(&self, flow: FlowId, state: impl Fn(&State) -> bool) -> Option<usize> {
        self.flows
            .iter()
            .position(|f| f.id == flow && state(&f.state))
    }

    /// Appends the earliest deadline as the one `WakeAt`.
    fn finish(&self, mut out: Vec<Action>) -> Vec<Action> {
        let next = self
            .flows
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match &f.state {
                State::Waiting { until } => Some(*until),
                State::Up {
                    keepalive_at,
                    refresh_at,
                    pending,
                } => {
                    let keepalive = match pending {
                        Some(p) => p
                            .retransmit
                            .map_or(p.deadline, |(at, _)| at.min(p.deadline)),
                        None => *keepalive_at,
                    };
                    // A refresh held back (see `on_timer`) is due only
                    // when holding it longer would risk the registration:
                    // waking for it before would spin.
                    let refresh = match f.rehome {
                        Rehome::Registering => self.held_refresh_deadline(i),
                        _ => Some(*refresh_at),
                    };
                    let home_race = match f.rehome {
                        Rehome::Due(at) => Some(at),
                        _ => None,
                    };
                    [Some(keepalive), refresh, home_race]
                        .into_iter()
                        .flatten()
                        .min()
                }
                _ => None,
            })
            .min();
        out.extend(next.map(Action::WakeAt));
        out
    }
}

#[cfg(test)]
mod tests;
