//! The dialer: the driver of one dial. The dial itself is a pure machine
//! ([`DialMachine`]: location feeding the race); this module only performs
//! its actions (DNS lookups, attempts, timers) and feeds back what
//! happened. It is the only place where the machine meets tokio.
//!
//! [`Dialer::dial_target`] is configuration, one loop and the return; the
//! task bookkeeping is in the attempts helper and [`crate::dns`]'s lookups,
//! the report is built by [`Report::of_dial`] from the machine's records.

mod attempts;
mod surroundings;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::connect::{self, ConnectConfig, Connected, Connection, ProbeResponse};
use crate::dial_machine::{Action, DialMachine, Input, Outcome};
use crate::dns::Lookups;
use crate::endpoint::{AttemptError, ConfigError, Endpoint, Transport};
use crate::keep::{KeepConfig, Keeper, Key, SipConnection};
use crate::locate::LocateConfig;
use crate::race::history::{self, History, NetworkId};
use crate::race::strategy::Strategy;
use crate::race::{AttemptId, RaceConfig};
use crate::report::{millis, ConfigEntry, DialResult, Report, ReuseEntry};
use crate::target::{Host, Scheme, Target, TargetError};
use attempts::{AttemptEnded, Attempts, ProgressFn, TransportUps};
use surroundings::Surroundings;
pub use surroundings::NETWORK_RECHECK;

/// Everything a dial can be told.
#[derive(Debug, Clone)]
pub struct DialerConfig {
    /// Which behaviour to use; [`DialerConfig::for_strategy`] fills `race`
    /// and `locate.pipelined` to match.
    pub strategy: Strategy,
    /// The race parameters (RFC 8305 / HEv3 delays, order, bounds).
    pub race: RaceConfig,
    /// How location runs (RFC 3263): the DNS server, query timeout,
    /// pipelining, families.
    pub locate: LocateConfig,
    /// How each attempt connects: the SIP OPTIONS probe (T1, T2,
    /// Request-URI), local addresses, TLS settings.
    pub connect: ConnectConfig,
    /// Restrict the transports (intersected with what the target allows).
    pub transports: Option<Vec<Transport>>,
    /// The SIP domain TLS certificates must match, when it is not the
    /// target's host: e.g. dialing a known address of `example.test`'s
    /// server (`sips:[2001:db8::1]`) that must still prove it serves
    /// `example.test` (RFC 5922 §4). `None`: the target's host.
    pub sip_domain: Option<String>,
    /// The network dials are on, for an application that knows it (e.g.
    /// from its OS's network handle). `None`: identified from the routes,
    /// prefixes and DNS servers ([`crate::network`]), again at most every
    /// [`NETWORK_RECHECK`]. History is kept per network.
    pub network: Option<NetworkId>,
    /// How many DNS answers the dialer keeps for their TTL
    /// ([`crate::dns::cache`]); 0 keeps none.
    pub dns_cache_entries: usize,
    /// The connection table ([`crate::keep`]): `Some` keeps every stream
    /// connection that wins (TCP, TLS, SCTP) and reuses it for later dials
    /// it may carry (RFC 3261 §18.1.1, RFC 5923); the caller then gets a
    /// [`SipConnection`] ([`Dial::kept`]) instead of the raw stream. `None`
    /// (the library's default): every dial races and hands over its socket.
    pub keep: Option<KeepConfig>,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig::for_strategy(Strategy::Siprace)
    }
}

impl DialerConfig {
    /// The configuration of `strategy`: its race parameters and DNS
    /// pipelining, every other field at its default.
    pub fn for_strategy(strategy: Strategy) -> DialerConfig {
        let locate = LocateConfig {
            pipelined: strategy.pipelined_dns(),
            ..LocateConfig::default()
        };
        DialerConfig {
            strategy,
            race: strategy.race_config(),
            locate,
            connect: ConnectConfig::default(),
            transports: None,
            sip_domain: None,
            network: None,
            dns_cache_entries: 1024,
            keep: None,
        }
    }
}

impl DialerConfig {
    /// Checks every part ([`RaceConfig::validated`],
    /// [`LocateConfig::validated`], [`ConnectConfig::validated`]) and that
    /// some transport is left. The error names the field and its range.
    pub fn validated(mut self) -> Result<DialerConfig, ConfigError> {
        self.race = self.race.validated()?;
        self.locate = self.locate.validated()?;
        self.connect = self.connect.validated()?;
        self.keep = self.keep.map(KeepConfig::validated).transpose()?;
        if self.transports.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(ConfigError::new(
                "transports",
                "at least one transport (or None for all)",
                "none",
            ));
        }
        Ok(self)
    }
}

/// A successful dial: the winning connection and how it was found.
#[derive(Debug)]
pub struct Dial {
    /// The endpoint that won the race (or whose kept connection was reused).
    pub endpoint: Endpoint,
    /// Its open socket, for the caller to use, when the dialer does not
    /// keep it: always for UDP, and for every transport without the
    /// connection table ([`DialerConfig::keep`]).
    pub connection: Option<Connection>,
    /// The kept connection (TCP, TLS, SCTP with the table on): new, or
    /// reused without a race ([`Report::reuse`] says which). It sends
    /// requests, matches their responses and hands over the peer's requests.
    pub kept: Option<SipConnection>,
    /// The probe's SIP response, where one was sent.
    pub response: Option<ProbeResponse>,
    /// The report of the dial (result "connected").
    pub report: Report,
}

/// Why a dial gave no connection. Failures carry the report, so the caller
/// can show every attempt's reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The target could not be parsed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// [`DialerConfig::transports`] leaves none of those the target allows.
    #[error("invalid configuration: {target} allows none of the transports asked for (a sips: target only uses TLS)")]
    NoTransport {
        /// The target (as parsed).
        target: String,
    },
    /// A configuration value out of its range (see [`DialerConfig::validated`]).
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// Location found no address to try; the report says why.
    #[error("resolution failed: {}", .0.reason.as_deref().unwrap_or("no addresses"))]
    Resolution(Box<Report>),
    /// Every attempt failed, or the deadline passed first; the report holds
    /// each attempt's reason.
    #[error("no candidate answered: {}", .0.reason.as_deref().unwrap_or("every attempt failed"))]
    Failed(Box<Report>),
}

impl DialError {
    /// The report of the dial, for the errors that come after location
    /// started (`Resolution` and `Failed`); `None` for the others.
    pub fn report(&self) -> Option<&Report> {
        match self {
            DialError::Resolution(r) | DialError::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// Watches a dial as it happens ([`Dialer::dial_observed`]): a live
/// timeline, a progress bar. It sees the dial's pure machine, whose records
/// (the DNS timeline, the address answers, the attempts) are the report so
/// far: [`Report::of_dial`] turns them into one at any point.
pub trait DialObserver {
    /// Called once the dial has started and again after the machine took
    /// each batch of inputs (DNS answers, attempt milestones and results,
    /// timers), the last time when the dial is decided (before its losers
    /// are closed). `started` is the dial's start, the zero of its times.
    /// It runs inside the dial: keep it short (printing a few lines is fine).
    fn observe(&mut self, machine: &DialMachine, started: std::time::Instant);
}

/// The observer of a dial nobody watches.
struct Unobserved;

impl DialObserver for Unobserved {
    fn observe(&mut self, _: &DialMachine, _: std::time::Instant) {}
}

/// A reusable dialer. It keeps the history of its dials, per network, and
/// the DNS answers they got, for their TTL (both shared by clones).
#[derive(Debug, Clone)]
pub struct Dialer {
    cfg: DialerConfig,
    history: Arc<Mutex<History>>,
    surroundings: Arc<Mutex<Surroundings>>,
    /// The connection table, when [`DialerConfig::keep`] asks for one.
    keeper: Option<Keeper>,
}

/// How many kept connections one dial may find dead before it races
/// without the table (each found dead is removed, so this only bounds a
/// table whose peers all died at once).
const MAX_FOUND_DEAD: usize = 4;

/// How one round of a dial ended.
enum Round {
    /// Decided without the table: the dial's result, and the winner's
    /// local address.
    Done(Result<Dial, DialError>, Option<std::net::SocketAddr>),
    /// The machine chose a kept connection to this endpoint.
    Reuse { endpoint: Endpoint, report: Report },
}

impl Dialer {
    /// A dialer with an empty history; fails only on an invalid `cfg`
    /// ([`DialerConfig::validated`]).
    pub fn new(cfg: DialerConfig) -> Result<Dialer, DialError> {
        Dialer::with_history(cfg, History::default())
    }

    /// A dialer that starts from a saved history (`--history-file`).
    /// The configuration is checked first ([`DialerConfig::validated`]).
    pub fn with_history(cfg: DialerConfig, history: History) -> Result<Dialer, DialError> {
        let cfg = cfg.validated()?;
        let surroundings = Surroundings::new(cfg.network.clone(), cfg.dns_cache_entries);
        Ok(Dialer {
            keeper: cfg.keep.as_ref().map(Keeper::new),
            cfg,
            history: Arc::new(Mutex::new(history)),
            surroundings: Arc::new(Mutex::new(surroundings)),
        })
    }

    /// A dialer with `cfg` and a connection table of its own (when
    /// `cfg.keep` asks for one) that shares this one's history and
    /// surroundings (network identification, DNS cache): what one learns
    /// orders the other's races. SIP Outbound's flows use one each, so that
    /// no flow is handed another's connection, while a family that failed
    /// one flow is tried last by the next race of any. The network and DNS
    /// cache settings stay this dialer's (`cfg.network` and
    /// `cfg.dns_cache_entries` are not used).
    pub fn sharing_history(&self, cfg: DialerConfig) -> Result<Dialer, DialError> {
        let cfg = cfg.validated()?;
        Ok(Dialer {
            keeper: cfg.keep.as_ref().map(Keeper::new),
            cfg,
            history: self.history.clone(),
            surroundings: self.surroundings.clone(),
        })
    }

    /// Records in the history that the path `endpoint` is on failed now,
    /// on the network the last dial ran on: for a connection that won a race
    /// and later broke (an Outbound flow whose keep-alive went unanswered,
    /// or that the peer reset). The path is then demoted like one that
    /// failed in a race (`race::history`, rule 2): the next race tries its
    /// family last on that host. Nothing is recorded before any dial (no
    /// network is known yet) or with history off.
    pub fn record_path_failure(&self, endpoint: &Endpoint) {
        if !self.cfg.race.use_history {
            return;
        }
        let Some(network) = self
            .surroundings
            .lock()
            .expect("surroundings lock")
            .network_id()
        else {
            return;
        };
        self.history.lock().expect("history lock").record(
            SystemTime::now(),
            &network,
            &[(endpoint.clone(), history::PathOutcome::Failed)],
        );
    }

    /// The configuration in force (as validated).
    pub fn config(&self) -> &DialerConfig {
        &self.cfg
    }

    /// How many connections the table keeps now (0 without one).
    pub fn kept_connections(&self) -> usize {
        self.keeper.as_ref().map_or(0, Keeper::len)
    }

    /// A copy of the history, e.g. to save it.
    pub fn history(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }

    /// Makes the next dial identify the network afresh, however recently it
    /// was identified (for an application its OS told of a change).
    pub fn network_changed(&self) {
        self.surroundings
            .lock()
            .expect("surroundings lock")
            .recheck();
    }

    /// Parses `target` and dials it.
    pub async fn dial(&self, target: &str) -> Result<Dial, DialError> {
        let target = Target::parse(target)?;
        self.dial_target(&target).await
    }

    /// Dials a parsed target.
    pub async fn dial_target(&self, target: &Target) -> Result<Dial, DialError> {
        self.dial_observed(target, &mut Unobserved).await
    }

    /// [`Dialer::dial_target`], telling `observer` of each step as it
    /// happens (see [`DialObserver`]). Dropping the returned future stops
    /// the dial (`siprace dial` does on Ctrl-C): its attempt and lookup
    /// tasks are aborted, and the runtime closes their sockets as it drops
    /// them; nothing is learnt from a dial stopped this way.
    pub async fn dial_observed(
        &self,
        target: &Target,
        observer: &mut (dyn DialObserver + Send),
    ) -> Result<Dial, DialError> {
        self.dial_with(target, observer, |endpoint, cfg, progress| async move {
            connect::attempt(&endpoint, &cfg, &*progress).await
        })
        .await
    }

    /// [`Dialer::dial_target`] with the attempts made by `run_attempt`
    /// (given the endpoint, the attempt configuration and the progress
    /// callback): [`connect::attempt`] outside tests.
    async fn dial_with<F, Fut>(
        &self,
        target: &Target,
        observer: &mut (dyn DialObserver + Send),
        run_attempt: F,
    ) -> Result<Dial, DialError>
    where
        F: Fn(Endpoint, Arc<ConnectConfig>, ProgressFn) -> Fut + Clone,
        Fut: Future<Output = Result<Connected, AttemptError>> + Send + 'static,
    {
        let transports = self.transports_for(target)?;
        let Some(keeper) = &self.keeper else {
            return match self
                .round(target, &transports, Vec::new(), observer, run_attempt, None)
                .await
            {
                Round::Done(result, _) => result,
                Round::Reuse { .. } => unreachable!("nothing is reusable without a table"),
            };
        };
        let domain = self.connect_config(target).sip_domain;
        let sips = target.scheme == Scheme::Sips;
        let mut found_dead: Vec<u64> = Vec::new();
        // One deadline for the whole dial, however many kept connections
        // are found dead on the way (each round and probe gets what is left).
        let deadline = Instant::now() + self.cfg.race.deadline;
        loop {
            let reusable: Vec<(Transport, std::net::SocketAddr)> =
                if found_dead.len() < MAX_FOUND_DEAD {
                    keeper
                        .reusable(std::time::Instant::now(), &domain, sips, &transports)
                        .into_iter()
                        .map(|k| (k.transport, k.remote))
                        .collect()
                } else {
                    Vec::new()
                };
            match self
                .round(
                    target,
                    &transports,
                    reusable,
                    &mut *observer,
                    run_attempt.clone(),
                    Some(deadline),
                )
                .await
            {
                Round::Done(Ok(mut dial), local) => {
                    self.keep_winner(keeper, &mut dial, local, &domain, sips);
                    if let Some(reuse) = &mut dial.report.reuse {
                        reuse.found_dead = found_dead;
                    }
                    return Ok(dial);
                }
                Round::Done(Err(e), _) => return Err(e),
                Round::Reuse { endpoint, report } => {
                    match self
                        .use_kept(keeper, target, endpoint, report, deadline)
                        .await
                    {
                        Ok(mut dial) => {
                            if let Some(reuse) = &mut dial.report.reuse {
                                reuse.found_dead = found_dead;
                            }
                            return Ok(dial);
                        }
                        Err(Some(dead)) => found_dead.push(dead),
                        // Gone between the choice and the take (evicted,
                        // expired): choose again.
                        Err(None) => found_dead.push(0),
                    }
                }
            }
        }
    }

    /// Takes the kept connection the machine chose and checks it with the
    /// OPTIONS probe when probing is on (one SIP round trip, no handshake).
    /// `Err(Some(id))`: connection `id` was dead; `Err(None)`: it was gone.
    async fn use_kept(
        &self,
        keeper: &Keeper,
        target: &Target,
        endpoint: Endpoint,
        mut report: Report,
        deadline: Instant,
    ) -> Result<Dial, Option<u64>> {
        let t0 = Instant::now();
        let cfg = self.connect_config(target);
        let sips = target.scheme == Scheme::Sips;
        let key = Key {
            transport: endpoint.transport,
            remote: endpoint.addr,
        };
        let taken = keeper
            .take(std::time::Instant::now(), key, &cfg.sip_domain, sips)
            .map_err(|dead| dead.map(|d| d.id))?;
        let conn = taken.connection;
        let response = if cfg.probe_streams {
            let probe = cfg.probe_for(&endpoint, conn.local());
            let wait = cfg.timer_f().min(deadline.saturating_duration_since(t0));
            match conn.options(&probe, wait).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::debug!(id = conn.id(), error = %e, "kept connection found dead at first use");
                    keeper.discard(conn.id()).await;
                    return Err(Some(conn.id()));
                }
            }
        } else {
            None
        };
        report.total += t0.elapsed();
        report.total_ms = millis(report.total);
        let opened_ago = std::time::Instant::now().saturating_duration_since(taken.opened_at);
        report.reuse = Some(ReuseEntry::reused(
            conn.id(),
            &endpoint,
            opened_ago,
            response.as_ref(),
        ));
        Ok(Dial {
            endpoint,
            connection: None,
            kept: Some(conn),
            response,
            report,
        })
    }

    /// Keeps a stream connection that won a race, and says in the report
    /// why no kept one carried the dial.
    fn keep_winner(
        &self,
        keeper: &Keeper,
        dial: &mut Dial,
        local: Option<std::net::SocketAddr>,
        domain: &str,
        sips: bool,
    ) {
        let (Some(connection), Some(local)) = (dial.connection.take(), local) else {
            return;
        };
        let located: Vec<Key> = dial
            .report
            .attempts
            .iter()
            .map(|a| Key {
                transport: a.transport,
                remote: a.addr,
            })
            .collect();
        let why_not = keeper.explain_miss(&located, domain, sips).describe();
        let client_certificate = self.cfg.connect.wants_alias(Transport::Tls)
            && dial.endpoint.transport == Transport::Tls;
        match keeper.adopt(
            std::time::Instant::now(),
            connection,
            local,
            dial.endpoint.addr,
            client_certificate,
        ) {
            Ok(kept) => {
                dial.report.reuse = Some(ReuseEntry::kept_new(kept.id(), &dial.endpoint, why_not));
                dial.kept = Some(kept);
            }
            Err(connection) => {
                dial.report.reuse = Some(ReuseEntry::not_kept(&dial.endpoint, why_not));
                dial.connection = Some(connection);
            }
        }
    }

    /// One round of a dial: location and race, or the choice of a kept
    /// connection to one of `reusable`; bounded by `deadline` when a dial
    /// takes several rounds (else by the configured deadline from now).
    async fn round<F, Fut>(
        &self,
        target: &Target,
        transports: &[Transport],
        reusable: Vec<(Transport, std::net::SocketAddr)>,
        observer: &mut (dyn DialObserver + Send),
        run_attempt: F,
        deadline: Option<Instant>,
    ) -> Round
    where
        F: Fn(Endpoint, Arc<ConnectConfig>, ProgressFn) -> Fut,
        Fut: Future<Output = Result<Connected, AttemptError>> + Send + 'static,
    {
        let transports = transports.to_vec();
        let t0 = Instant::now();
        let mut race = self.cfg.race.clone();
        if let Some(deadline) = deadline {
            race.deadline = deadline
                .saturating_duration_since(t0)
                .max(Duration::from_millis(1));
        }
        // The wall-clock start, for the report's `started_at`.
        let started_at = SystemTime::now();
        let needs_dns = matches!(target.host, Host::Name(_));
        let setting = self
            .surroundings
            .lock()
            .expect("surroundings lock")
            .for_dial(&self.cfg.locate, needs_dns);
        let history = self
            .history
            .lock()
            .expect("history lock")
            .view(SystemTime::now(), &setting.network.id);
        let mut machine = DialMachine::new(
            target,
            &transports,
            &self.cfg.locate,
            race.clone(),
            history,
            rand::random(),
            t0.into_std(),
        );
        machine.reuse_any_of(reusable);
        let now = Instant::now().into_std();
        let (resolver, mut actions) = match setting.resolver {
            _ if !needs_dns => (None, machine.start(now)),
            Ok(resolver) => (Some(resolver), machine.start(now)),
            Err(e) => (None, machine.step(now, Input::DnsUnavailable(e))),
        };
        let connect = Arc::new(self.connect_config(target));
        let cache = (self.cfg.dns_cache_entries > 0).then_some(setting.cache);
        let mut io = DialIo::new(
            run_attempt,
            connect,
            Lookups::new(resolver, cache),
            t0 + race.deadline,
        );
        let mut winner = None;
        observer.observe(&machine, t0.into_std());
        while !io.perform(actions) {
            let (inputs, connected) = io.next().await;
            let now = Instant::now().into_std();
            actions = inputs
                .into_iter()
                .flat_map(|input| machine.step(now, input))
                .collect();
            observer.observe(&machine, t0.into_std());
            // A success the machine does not make the winner (a late one,
            // from an attempt already cancelled) is closed here.
            if let Some((id, c)) = connected {
                if matches!(machine.outcome(), Some(Outcome::Won { id: w, .. }) if *w == id) {
                    winner = Some(c);
                }
            }
        }
        io.close().await;

        self.learn(&machine, &setting.network.id);
        let mut report = Report::of_dial(
            target.to_string(),
            self.cfg.strategy.to_string(),
            &machine,
            t0.into_std(),
            t0.elapsed(),
        );
        report.started_at = crate::report::rfc3339_utc(started_at);
        report.config = Some(self.config_entry(&transports));
        report.network = Some(format!(
            "{} ({})",
            setting.network.id, setting.network.description
        ));
        for (entry, query) in report.dns.iter_mut().zip(machine.location().queries()) {
            entry.cached = io.lookups.was_cached(query.id);
        }
        let local = winner.as_ref().map(|c: &Connected| c.local);
        let result = match machine.outcome() {
            Some(Outcome::Won { id, endpoint }) => {
                let connected =
                    winner.expect("the machine only declares a winner that just reported success");
                if let Some(response) = &connected.response {
                    report.show_response(*id, response);
                }
                Ok(Dial {
                    endpoint: endpoint.clone(),
                    connection: Some(connected.connection),
                    kept: None,
                    response: connected.response,
                    report,
                })
            }
            Some(Outcome::Reused { endpoint }) => {
                return Round::Reuse {
                    endpoint: endpoint.clone(),
                    report,
                }
            }
            _ if report.result == DialResult::ResolutionFailed => {
                Err(DialError::Resolution(Box::new(report)))
            }
            _ => Err(DialError::Failed(Box::new(report))),
        };
        Round::Done(result, local)
    }

    /// The transports to try: those the target allows, narrowed by the
    /// configuration. A hand-built target's literal is checked here too
    /// (the parser checks the others).
    fn transports_for(&self, target: &Target) -> Result<Vec<Transport>, DialError> {
        if let Host::Ip(ip) = target.host {
            if let Some(reason) = crate::target::undialable(ip) {
                return Err(DialError::Target(TargetError {
                    input: target.to_string(),
                    reason,
                }));
            }
        }
        let transports: Vec<Transport> = target
            .allowed_transports()
            .into_iter()
            .filter(|t| {
                self.cfg
                    .transports
                    .as_ref()
                    .is_none_or(|only| only.contains(t))
            })
            .collect();
        if transports.is_empty() {
            return Err(DialError::NoTransport {
                target: target.to_string(),
            });
        }
        Ok(transports)
    }

    /// The attempts' settings for `target`: its Request-URI, and the SIP
    /// domain certificates must match.
    fn connect_config(&self, target: &Target) -> ConnectConfig {
        let mut cfg = self.cfg.connect.clone();
        cfg.request_uri = target.request_uri();
        cfg.sip_domain = self
            .cfg
            .sip_domain
            .clone()
            .unwrap_or_else(|| target.domain());
        cfg
    }

    /// The configuration a dial with `transports` runs with, for its report.
    fn config_entry(&self, transports: &[Transport]) -> ConfigEntry {
        let race = &self.cfg.race;
        let locate = &self.cfg.locate;
        ConfigEntry {
            strategy: self.cfg.strategy.to_string(),
            resolution_delay_ms: race.resolution_delay.map(millis),
            attempt_delay_ms: millis(race.attempt_delay),
            min_attempt_delay_ms: millis(race.min_attempt_delay),
            max_attempt_delay_ms: millis(race.max_attempt_delay),
            family_count: race.preferred_family_count,
            max_concurrent: race.max_concurrent,
            deadline_ms: millis(race.deadline),
            staggered: race.staggered,
            use_history: race.use_history,
            transports: transports.to_vec(),
            families: locate.families.clone(),
            resolver: locate
                .dns_server
                .map_or_else(|| "system".to_string(), |addr| addr.to_string()),
            dns_timeout_ms: millis(locate.query_timeout),
            probe: self.cfg.connect.probe_streams,
            t1_ms: millis(self.cfg.connect.t1),
        }
    }

    /// Records the finished dial's attempts in the history of its network.
    fn learn(&self, machine: &DialMachine, network: &NetworkId) {
        if !self.cfg.race.use_history {
            return;
        }
        let outcomes = history::outcomes_of(machine.race().attempts());
        self.history
            .lock()
            .expect("history lock")
            .record(SystemTime::now(), network, &outcomes);
    }
}

/// What a dial drives for its machine: the attempts, the DNS lookups and
/// the timer.
struct DialIo<F> {
    attempts: Attempts<F>,
    transport_ups: TransportUps,
    lookups: Lookups,
    wake: Instant,
}

impl<F, Fut> DialIo<F>
where
    F: Fn(Endpoint, Arc<ConnectConfig>, ProgressFn) -> Fut,
    Fut: Future<Output = Result<Connected, AttemptError>> + Send + 'static,
{
    fn new(run_attempt: F, connect: Arc<ConnectConfig>, lookups: Lookups, wake: Instant) -> Self {
        let (attempts, transport_ups) = Attempts::new(run_attempt, connect);
        DialIo {
            attempts,
            transport_ups,
            lookups,
            wake,
        }
    }

    /// Performs the machine's actions; true once the dial is decided.
    fn perform(&mut self, actions: Vec<Action>) -> bool {
        let mut done = false;
        for action in actions {
            match action {
                Action::Query(query) => self.lookups.spawn(query),
                Action::AbandonQuery(id) => self.lookups.abandon(id),
                Action::Start { id, endpoint } => self.attempts.start(id, endpoint),
                Action::Cancel { id, .. } => self.attempts.cancel(id),
                Action::WakeAt(at) => self.wake = Instant::from_std(at),
                Action::Done(_) => done = true,
            }
        }
        done
    }

    /// Waits for what happens next: the machine's inputs, and the
    /// connection of an attempt that has just succeeded.
    ///
    /// `biased`: the branches are polled in this order, so events that are
    /// ready together always reach the machine in this order:
    /// 1. Transport-ups: each was sent before its attempt could end, and
    ///    the engine ignores one that arrives after the end (it once lost
    ///    one in four TLS winners' TCP time this way); one also postpones
    ///    the next attempt (HEv3), so it must be seen before a timer that
    ///    would start that attempt.
    /// 2. Attempt results: a success ends the race before a DNS answer or
    ///    a timer of the same instant can start an attempt that would only
    ///    be cancelled.
    /// 3. DNS answers: before the timer, so that an answer that came as the
    ///    Resolution Delay ended is used (IPv6 first), not overtaken by the
    ///    delay's expiry (nor by its own query's timeout).
    /// 4. The timer: it stands for "nothing else happened".
    ///
    /// Every branch's events are finite (one transport-up per attempt, one
    /// result per attempt, a bounded number of DNS answers), so the timer,
    /// and with it the deadline, is never starved. Transport-ups already
    /// sent go first in every other branch (one may have come in after the
    /// select looked); a repeated one changes nothing.
    async fn next(&mut self) -> (Vec<Input>, Option<(AttemptId, Connected)>) {
        let ups = &mut self.transport_ups;
        tokio::select! {
            biased;
            up = ups.next() => (vec![up], None),
            AttemptEnded { inputs, connected } = self.attempts.ended() => {
                ([ups.sent(), inputs].concat(), connected)
            }
            answer = self.lookups.next() => {
                ([ups.sent(), vec![Input::DnsAnswer(answer)]].concat(), None)
            }
            _ = tokio::time::sleep_until(self.wake) => {
                ([ups.sent(), vec![Input::Timer]].concat(), None)
            }
        }
    }

    /// Aborts whatever still runs and waits until each task has ended, so
    /// no socket (attempt or DNS) outlives the dial: every loser is closed.
    async fn close(&mut self) {
        self.attempts.close().await;
        self.lookups.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::{Connection, Progress};
    use crate::endpoint::ErrorClass;
    use std::time::Duration;

    /// An attempt that reports its transport up and succeeds in the same
    /// poll: on a single-threaded runtime the dialer then finds the
    /// transport-up message and the result ready together, every time.
    async fn up_then_success(progress: ProgressFn) -> Result<Connected, AttemptError> {
        progress(Progress::TransportUp {
            after: Duration::ZERO,
        });
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        Ok(Connected {
            connection: Connection::Udp(socket),
            local,
            transport_ready: Duration::ZERO,
            response: None,
            requests_sent: 0,
        })
    }

    #[tokio::test]
    async fn a_transport_up_ready_with_the_success_is_never_lost() {
        let dialer = Dialer::new(DialerConfig::default()).unwrap();
        // Never contacted: the attempts are the ones above.
        let target = Target::parse("sip:192.0.2.1:5060;transport=tcp").unwrap();
        for n in 0..60 {
            let dial = dialer
                .dial_with(&target, &mut Unobserved, |_, _, progress| {
                    up_then_success(progress)
                })
                .await
                .unwrap();
            let w = dial.report.winner_entry().unwrap();
            assert!(w.transport_up_ms.is_some(), "dial {n}: {w:?}");
        }
    }

    #[tokio::test]
    async fn a_transport_up_is_taken_before_a_failure_ready_with_it() {
        // Attempt 1's transport comes up, then it fails; the record keeps both.
        let dialer = Dialer::new(DialerConfig::default()).unwrap();
        let target = Target::parse("sip:192.0.2.1:5060;transport=tcp").unwrap();
        for n in 0..30 {
            let err = dialer
                .dial_with(&target, &mut Unobserved, |_, _, progress| async move {
                    progress(Progress::TransportUp {
                        after: Duration::ZERO,
                    });
                    Err(AttemptError::new(ErrorClass::Reset, "closed after connect"))
                })
                .await
                .unwrap_err();
            let report = err.report().unwrap();
            let first = &report.attempts[0];
            assert!(first.transport_up_ms.is_some(), "dial {n}: {first:?}");
        }
    }

    /// A connection that broke after its race (an Outbound flow's) recorded
    /// through one dialer reorders the next race of another dialer sharing
    /// its history: the failed family goes last, and the report says why.
    #[cfg(feature = "tools")]
    #[tokio::test]
    async fn a_failure_recorded_after_the_race_reorders_a_sibling_dialers_next_race() {
        use crate::endpoint::Family;
        use crate::lab::dns::{DnsServer, DnsServerConfig};
        use crate::report::HistoryEntry;

        let zone = "$ORIGIN example.test.\n$TTL 0\n\
            @ IN SOA ns.example.test. admin.example.test. 1 60 60 60 0\n\
            registrar IN AAAA 2001:db8::10\nregistrar IN A 192.0.2.10\n";
        let dns = DnsServer::start(
            DnsServerConfig::parse(zone, "").unwrap(),
            &["127.0.0.1:0".parse().unwrap()],
        )
        .await
        .unwrap();
        let mut cfg = DialerConfig::default();
        cfg.locate.dns_server = Some(dns.addrs()[0]);
        let first = Dialer::new(cfg.clone()).unwrap();
        let second = first.sharing_history(cfg).unwrap();
        // Never contacted: every attempt is the instant success above.
        let target = Target::parse("sip:registrar.example.test:5060;transport=udp").unwrap();
        let dial = |dialer: Dialer| {
            let target = target.clone();
            async move {
                dialer
                    .dial_with(&target, &mut Unobserved, |_, _, progress| {
                        up_then_success(progress)
                    })
                    .await
                    .unwrap()
            }
        };
        let won = dial(first.clone()).await;
        assert_eq!(won.endpoint.family(), Family::V6, "IPv6 first by default");
        // The sibling's race succeeded too: history says IPv6 works.
        assert_eq!(
            dial(second.clone()).await.report.attempts[0].family,
            Family::V6
        );

        // The flow over the winner breaks: recorded through the first dialer.
        first.record_path_failure(&won.endpoint);
        let next = dial(second).await;
        let order = &next.report.attempts[0];
        assert_eq!(order.family, Family::V4, "{:?}", next.report.attempts);
        assert!(
            matches!(
                order.history,
                Some(HistoryEntry::PreferredFailed {
                    failed_family: Family::V6,
                    ..
                })
            ),
            "{order:?}"
        );
        assert_eq!(next.endpoint.family(), Family::V4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_attempt_fails_at_once_instead_of_holding_its_slot() {
        let dialer = Dialer::new(DialerConfig::default()).unwrap();
        let target = Target::parse("sip:192.0.2.1:5060;transport=tcp").unwrap();
        let started = Instant::now();
        let err = dialer
            .dial_with(&target, &mut Unobserved, |_, _, _| async move {
                if true {
                    panic!("a bug in the attempt");
                }
                Err(AttemptError::new(ErrorClass::Local, "unreachable"))
            })
            .await
            .unwrap_err();
        // Paused time: only a timer could have moved the clock.
        assert_eq!(started.elapsed(), Duration::ZERO);
        let report = err.report().unwrap();
        let first = &report.attempts[0];
        assert_eq!(first.outcome, "failed");
        assert!(
            first.detail.as_deref().unwrap().contains("panicked"),
            "{first:?}"
        );
        assert_eq!(report.reason.as_deref(), Some("all 1 attempt(s) failed"));
    }
}
