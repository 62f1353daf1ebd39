//! The race engine: a pure (sans-IO) Happy Eyeballs state machine for SIP,
//! after RFC 8305 and draft-ietf-happy-happyeyeballs-v3.
//!
//! It owns every decision of a dial about attempts and none of the I/O. It
//! is fed [`Input`]s — service locations and address answers (from the
//! location machine, inside [`crate::dial_machine`]), attempt outcomes,
//! timer expiries — each with the current time, and returns the
//! [`Action`]s to carry out: start an attempt, cancel one, wake me at, done.
//! There is no clock, socket or runtime in here, so tests drive it with a
//! fake clock and assert exact action sequences.
//!
//! The rules, in the order [`Race::step`] applies them:
//! 1. A success wins at once: every other attempt is cancelled (exactly one
//!    winner, even if two successes arrive at the same instant).
//! 2. The overall deadline (Timer B, 32 s by default) cancels everything.
//! 3. An attempt past its own timeout (only the `sequential` strategy sets
//!    one) is cancelled and counts as failed.
//! 4. New attempts start in sorted order (see [`sort`]) when all hold:
//!    fewer than `max_concurrent` in flight; DNS is "ready" (the preferred
//!    family answered for the best-ranked hosts, or the Resolution Delay
//!    since the first answer elapsed); and either nothing is in flight (an
//!    attempt just failed: start the next at once) or the Connection Attempt
//!    Delay since the last start elapsed. In-flight attempts are never
//!    aborted because a newer one started. With history ([`history`], the
//!    `siprace` strategy), the order follows what was learnt on this
//!    network (a recently failed path last, the RTT rule between the
//!    families) and the delay after an attempt depends on its path: its
//!    RTT-based delay when its RTT is known, the minimum delay when the
//!    path is doubtful or its family suspect on the network, the
//!    configured delay otherwise.
//! 5. With nothing in flight, nothing left to try and DNS complete, the
//!    dial fails, listing every attempt's reason.

pub mod history;
pub mod sort;
pub mod strategy;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::endpoint::{AttemptError, ConfigError, Endpoint, ErrorClass, Family, TargetSpec};
use history::{HistoryView, PathVerdict, RttEstimate};
use sort::SortPolicy;

/// Identifies one connection attempt within a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AttemptId(pub u32);

/// The race parameters. [`strategy::Strategy::race_config`] gives the named presets.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceConfig {
    /// How long to wait for the preferred family (AAAA) after the first
    /// answer (RFC 8305 §3: 50 ms). `None` waits for every address answer,
    /// as a `getaddrinfo`-based stack does.
    pub resolution_delay: Option<Duration>,
    /// Connection Attempt Delay when history knows nothing (RFC 8305:
    /// 250 ms; siprace's cold default is [`strategy::SIPRACE_ATTEMPT_DELAY`]).
    pub attempt_delay: Duration,
    /// Bounds for the attempt delay, also when history shortens it
    /// (HEv3: never below 10 ms; 2 s at most).
    pub min_attempt_delay: Duration,
    /// The upper bound of the attempt delay (see `min_attempt_delay`), also
    /// for the RTT-based delays history gives.
    pub max_attempt_delay: Duration,
    /// Start a new attempt after the attempt delay while others are in
    /// flight. False: one at a time, the next only after a failure.
    pub staggered: bool,
    /// Order by RFC 6724 and history; false keeps DNS order, IPv6 first.
    pub rfc6724: bool,
    /// RFC 8305 "Preferred Address Family Count"; 0 turns interleaving off.
    pub preferred_family_count: usize,
    /// The family whose DNS answer the Resolution Delay waits for, and the
    /// one tried first when `rfc6724` is off.
    pub preferred_family: Family,
    /// With `rfc6724`: this family first instead of the one RFC 6724 ranks
    /// first (history still puts a family whose path just failed last).
    /// For a connection going back to the family it ran on: an Outbound
    /// flow the registrar closed in order. `None`: RFC 6724 decides.
    pub family_first: Option<Family>,
    /// At most this many attempts in flight.
    pub max_concurrent: usize,
    /// Overall bound of the dial, from its start (Timer B = 64 × T1 = 32 s).
    pub deadline: Duration,
    /// Per-attempt bound; `None` lets attempts run until the deadline.
    pub attempt_timeout: Option<Duration>,
    /// Use history to order and to pace (see [`history`]).
    pub use_history: bool,
}

impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig {
            resolution_delay: Some(Duration::from_millis(50)),
            attempt_delay: Duration::from_millis(250),
            min_attempt_delay: Duration::from_millis(10),
            max_attempt_delay: Duration::from_secs(2),
            staggered: true,
            rfc6724: true,
            preferred_family_count: 1,
            preferred_family: Family::V6,
            family_first: None,
            max_concurrent: 6,
            deadline: Duration::from_secs(32),
            attempt_timeout: None,
            use_history: true,
        }
    }
}

/// Bounds of the race parameters ([`RaceConfig::validated`]).
pub mod limits {
    use std::time::Duration;

    /// The longest overall deadline: an hour is far beyond any SIP timer
    /// (Timer B is 32 s) and keeps every clock sum far from overflowing.
    pub const MAX_DEADLINE: Duration = Duration::from_secs(3600);
    /// HEv3: the attempt delay never goes below 10 ms.
    pub const MIN_ATTEMPT_DELAY: Duration = Duration::from_millis(10);
    /// The longest attempt delay: RFC 8305 suggests 2 s at most; a minute
    /// leaves room for experiments.
    pub const MAX_ATTEMPT_DELAY: Duration = Duration::from_secs(60);
    /// The longest Resolution Delay (RFC 8305 recommends 50 ms).
    pub const MAX_RESOLUTION_DELAY: Duration = Duration::from_secs(10);
    /// RFC 8305 recommends a Preferred Address Family Count of 1 or 2.
    pub const MAX_PREFERRED_FAMILY_COUNT: usize = 16;
    /// The most attempts in flight at once (each holds a socket).
    pub const MAX_CONCURRENT: usize = 64;
}

impl RaceConfig {
    /// Checks every parameter against [`limits`] and clamps the attempt
    /// delay into its own bounds. The error names the field
    /// (`race.<name>`) and the allowed range.
    pub fn validated(mut self) -> Result<RaceConfig, ConfigError> {
        use limits::*;
        let ms = Duration::from_millis;
        ConfigError::check_duration("race.deadline", self.deadline, ms(1), MAX_DEADLINE)?;
        if let Some(rd) = self.resolution_delay {
            ConfigError::check_duration(
                "race.resolution_delay",
                rd,
                Duration::ZERO,
                MAX_RESOLUTION_DELAY,
            )?;
        }
        ConfigError::check_duration(
            "race.min_attempt_delay",
            self.min_attempt_delay,
            MIN_ATTEMPT_DELAY,
            MAX_ATTEMPT_DELAY,
        )?;
        ConfigError::check_duration(
            "race.max_attempt_delay",
            self.max_attempt_delay,
            self.min_attempt_delay,
            MAX_ATTEMPT_DELAY,
        )?;
        ConfigError::check_duration(
            "race.attempt_delay",
            self.attempt_delay,
            Duration::ZERO,
            MAX_ATTEMPT_DELAY,
        )?;
        if let Some(t) = self.attempt_timeout {
            ConfigError::check_duration("race.attempt_timeout", t, ms(1), MAX_DEADLINE)?;
        }
        ConfigError::check_count(
            "race.preferred_family_count",
            self.preferred_family_count,
            0,
            MAX_PREFERRED_FAMILY_COUNT,
        )?;
        ConfigError::check_count(
            "race.max_concurrent",
            self.max_concurrent,
            1,
            MAX_CONCURRENT,
        )?;
        self.attempt_delay = self
            .attempt_delay
            .clamp(self.min_attempt_delay, self.max_attempt_delay);
        Ok(self)
    }

    /// The configuration forced into [`limits`], for an engine given one
    /// that was never validated: no value can then size a loop or overflow
    /// the clock arithmetic.
    fn bounded(mut self) -> RaceConfig {
        use limits::*;
        self.deadline = self.deadline.min(MAX_DEADLINE);
        self.resolution_delay = self.resolution_delay.map(|d| d.min(MAX_RESOLUTION_DELAY));
        self.max_attempt_delay = self.max_attempt_delay.min(MAX_ATTEMPT_DELAY);
        self.min_attempt_delay = self.min_attempt_delay.clamp(
            MIN_ATTEMPT_DELAY,
            self.max_attempt_delay.max(MIN_ATTEMPT_DELAY),
        );
        self.max_attempt_delay = self.max_attempt_delay.max(self.min_attempt_delay);
        self.attempt_delay = self
            .attempt_delay
            .clamp(self.min_attempt_delay, self.max_attempt_delay);
        self.attempt_timeout = self.attempt_timeout.map(|t| t.min(MAX_DEADLINE));
        self.preferred_family_count = self.preferred_family_count.min(MAX_PREFERRED_FAMILY_COUNT);
        self.max_concurrent = self.max_concurrent.clamp(1, MAX_CONCURRENT);
        self
    }
}

/// What happens to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The service locations, in RFC 3263 order (sent once, before addresses).
    Targets(Vec<TargetSpec>),
    /// One address answer for a host (empty: no records, error or timeout).
    Addresses {
        /// The host name that was queried (an SRV target or the URI host).
        host: Arc<str>,
        /// The family of the answer: IPv6 for AAAA, IPv4 for A.
        family: Family,
        /// The addresses of the answer, in DNS order.
        addrs: Vec<IpAddr>,
    },
    /// Location finished: no more answers will come. (A location that
    /// fails ends the dial before the race; see [`crate::dial_machine`].)
    ResolutionDone,
    /// An attempt's transport is up but it is not done yet (TCP connected,
    /// TLS or the probe still running), at the given time (which may be a
    /// little before the input is processed). HEv3 extends the attempt delay.
    TransportUp(AttemptId, Instant),
    /// An attempt is ready to use.
    Succeeded(AttemptId),
    /// An attempt failed.
    Failed(AttemptId, AttemptError),
    /// A wake-up asked for with [`Action::WakeAt`] (or any spurious one).
    Timer,
}

/// Why the engine cancels an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CancelReason {
    /// Another attempt won.
    LostRace,
    /// The overall deadline passed.
    Deadline,
    /// The attempt's own timeout passed (`sequential`: Timer B/F).
    AttemptTimeout,
}

impl CancelReason {
    /// The name used in reports (the same as its serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::LostRace => "lost-race",
            CancelReason::Deadline => "deadline",
            CancelReason::AttemptTimeout => "attempt-timeout",
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start attempt `id` to `endpoint` now.
    Start {
        /// The attempt's id; later inputs about it carry this id.
        id: AttemptId,
        /// Where to connect, with which transport.
        endpoint: Endpoint,
    },
    /// Abandon attempt `id` and close its socket (the engine has already
    /// recorded it as cancelled).
    Cancel {
        /// The attempt to close.
        id: AttemptId,
        /// Why it is abandoned (it goes into the report).
        reason: CancelReason,
    },
    /// Call [`Race::step`] with [`Input::Timer`] at this time (replaces any earlier wake-up).
    WakeAt(Instant),
    /// The race is decided; it was the last action (any cancels of losers
    /// come before it).
    Done(Outcome),
}

/// How a race ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An attempt succeeded; every other attempt still in flight was cancelled.
    Won {
        /// The winning attempt (the driver keeps its connection).
        id: AttemptId,
        /// Where the winner connected to.
        endpoint: Endpoint,
    },
    /// No attempt succeeded.
    Failed(RaceFailure),
}

/// Why a race found no winner.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
#[non_exhaustive]
pub enum RaceFailure {
    /// Location finished without any usable address.
    NoAddresses,
    /// Every candidate was tried and failed.
    AllFailed,
    /// The overall deadline passed.
    Deadline,
}

/// How an attempt ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "detail")]
pub enum AttemptEnd {
    /// Still running: neither succeeded, failed nor cancelled.
    InFlight,
    /// It won the race.
    Won,
    /// It failed, with this error.
    Failed(AttemptError),
    /// The engine cancelled it, for this reason.
    Cancelled(CancelReason),
}

/// Where an attempt's Connection Attempt Delay came from: why the next
/// attempt waited as long as it did (for the report; the rules are
/// [`Race`]'s, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelaySource {
    /// The configured delay: history knows nothing useful of the path (or
    /// the strategy does not use history).
    Configured,
    /// History's RTT of the path: `srtt + max(4·rttvar, 25 ms)` (RFC 6298).
    HistoryRtt(RttEstimate),
    /// The minimum: the path failed before the failure memory and has not
    /// worked since (doubtful), so the next one gets only a short head start.
    DoubtfulPath,
    /// The minimum: the path's family failed to several hosts on this
    /// network with no success since.
    SuspectFamily,
}

impl DelaySource {
    /// Its name in the JSON report: "configured", "history-rtt",
    /// "doubtful-path" or "suspect-family".
    pub fn as_str(self) -> &'static str {
        match self {
            DelaySource::Configured => "configured",
            DelaySource::HistoryRtt(_) => "history-rtt",
            DelaySource::DoubtfulPath => "doubtful-path",
            DelaySource::SuspectFamily => "suspect-family",
        }
    }
}

/// Which configured bound an attempt delay was clamped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DelayBound {
    /// Raised to `min_attempt_delay`.
    Min,
    /// Lowered to `max_attempt_delay`.
    Max,
}

/// What history changed about an attempt's place in the order, if
/// anything (for the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryNote {
    /// Its path failed within the failure memory (`ago` before the dial,
    /// when known): it was tried after the paths that did not.
    FailedRecently {
        /// How long before the dial it last failed.
        ago: Option<Duration>,
    },
    /// Its family went first on its host although it is not the preferred
    /// one: the preferred family's path there failed within the failure
    /// memory (`ago` before the dial, when known).
    PreferredFailed {
        /// How long before the dial the preferred family's path failed.
        ago: Option<Duration>,
    },
    /// Its family went first on its host although it is not the preferred
    /// one: its RTT is lower than the other family's by more than the
    /// leeway ([`history::RTT_LEEWAY`]).
    FasterFamily {
        /// This path's smoothed RTT.
        ours: Duration,
        /// The other family's smoothed RTT on the same host and transport.
        theirs: Duration,
    },
}

/// One attempt's record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The attempt's id (in start order from 1).
    pub id: AttemptId,
    /// Where it connected to, with which transport.
    pub endpoint: Endpoint,
    /// When the engine started it.
    pub started: Instant,
    /// The Connection Attempt Delay this attempt got (from history, or the
    /// configured one): the next attempt may start this long after it
    /// (or after its transport came up), unless it fails first.
    pub delay: Duration,
    /// Where `delay` came from.
    pub delay_source: DelaySource,
    /// The bound `delay` was clamped to, when the source gave a delay
    /// outside the configured bounds.
    pub delay_clamped: Option<DelayBound>,
    /// What history changed about this attempt's place, if anything.
    pub history_note: Option<HistoryNote>,
    /// When its transport came up ([`Input::TransportUp`]), if it did
    /// before it ended.
    pub transport_up: Option<Instant>,
    /// When it ended; `None` while it is in flight.
    pub ended: Option<Instant>,
    /// How it ended (or [`AttemptEnd::InFlight`]).
    pub end: AttemptEnd,
}

#[derive(Debug, Default, Clone)]
struct HostState {
    /// Best (lowest) rank of any target using this host.
    rank: u32,
    answered: [bool; 2],
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V6 => 0,
        Family::V4 => 1,
    }
}

/// The engine. See the module docs for its rules.
#[derive(Debug)]
pub struct Race {
    cfg: RaceConfig,
    history: HistoryView,
    /// Families the driver queries; a family not listed is never waited for.
    families: Vec<Family>,
    started_at: Instant,
    specs: Vec<TargetSpec>,
    hosts: HashMap<Arc<str>, HostState>,
    resolution_done: bool,
    first_answer_at: Option<Instant>,
    /// Every candidate known, in the order to try them (re-sorted on each
    /// new address answer, including those already tried).
    order: Vec<Endpoint>,
    /// Candidates already attempted.
    tried: HashSet<Endpoint>,
    attempts: Vec<AttemptRecord>,
    finished: bool,
}

/// The most candidates a race holds: a hostile DNS answer cannot make the
/// race (whose sorting is O(n log n) per answer) arbitrarily slow. Shared
/// fairly and kept for the best-ranked (see `Race::add_candidates`).
pub const MAX_CANDIDATES: usize = 256;

impl Race {
    /// A new race starting at `now`. `families` are the address families
    /// the driver will query (the Resolution Delay only waits for those).
    /// A configuration outside [`limits`] is forced into them (see
    /// [`RaceConfig::validated`] to refuse it instead).
    pub fn new(cfg: RaceConfig, history: HistoryView, families: &[Family], now: Instant) -> Race {
        let cfg = cfg.bounded();
        Race {
            history: if cfg.use_history {
                history
            } else {
                HistoryView::default()
            },
            cfg,
            families: families.to_vec(),
            started_at: now,
            specs: Vec::new(),
            hosts: HashMap::new(),
            resolution_done: false,
            first_answer_at: None,
            order: Vec::new(),
            tried: HashSet::new(),
            attempts: Vec::new(),
            finished: false,
        }
    }

    /// Every attempt so far, in start order.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// True once the race is decided ([`Action::Done`] was returned): every
    /// further input is ignored.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The configuration in force (forced into [`limits`]).
    pub fn config(&self) -> &RaceConfig {
        &self.cfg
    }

    /// When the overall deadline passes.
    pub fn deadline_at(&self) -> Instant {
        self.started_at + self.cfg.deadline
    }

    /// Feeds one input at `now` and returns what to do, in order. The last
    /// action is either a [`Action::WakeAt`] or a [`Action::Done`]; after
    /// `Done` every further input is ignored (and returns nothing).
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if let Some(winner) = self.apply(now, input) {
            self.finish_with_winner(now, winner, &mut actions);
            return actions;
        }
        if now >= self.started_at + self.cfg.deadline {
            self.cancel_in_flight(now, CancelReason::Deadline, &mut actions);
            self.finish(Outcome::Failed(RaceFailure::Deadline), &mut actions);
            return actions;
        }
        self.expire_attempts(now, &mut actions);
        self.start_attempts(now, &mut actions);
        if self.in_flight() == 0 && self.next_candidate().is_none() && self.dns_complete() {
            let failure = if self.attempts.is_empty() {
                RaceFailure::NoAddresses
            } else {
                RaceFailure::AllFailed
            };
            self.finish(Outcome::Failed(failure), &mut actions);
            return actions;
        }
        actions.push(Action::WakeAt(self.next_wake(now)));
        actions
    }

    /// Applies an input to the state; returns the winner if it was a success.
    fn apply(&mut self, now: Instant, input: Input) -> Option<AttemptId> {
        match input {
            Input::Targets(specs) => {
                for spec in specs {
                    let state = self.hosts.entry(spec.host.clone()).or_insert(HostState {
                        rank: spec.rank,
                        answered: [false; 2],
                    });
                    state.rank = state.rank.min(spec.rank);
                    for f in [Family::V6, Family::V4] {
                        if !self.families.contains(&f) {
                            state.answered[family_index(f)] = true;
                        }
                    }
                    if !self.specs.contains(&spec) {
                        self.specs.push(spec);
                    }
                }
            }
            Input::Addresses {
                host,
                family,
                addrs,
            } => {
                self.first_answer_at.get_or_insert(now);
                if let Some(state) = self.hosts.get_mut(&host) {
                    state.answered[family_index(family)] = true;
                }
                if self.add_candidates(&host, family, &addrs) {
                    self.resort();
                }
            }
            Input::ResolutionDone => self.resolution_done = true,
            Input::TransportUp(id, at) => {
                // The first report counts: the driver may pass one twice.
                if let Some(a) = self.in_flight_mut(id) {
                    a.transport_up.get_or_insert(at.clamp(a.started, now));
                }
            }
            Input::Succeeded(id) => {
                if let Some(a) = self.in_flight_mut(id) {
                    a.end = AttemptEnd::Won;
                    a.ended = Some(now);
                    return Some(id);
                }
            }
            Input::Failed(id, err) => {
                if let Some(a) = self.in_flight_mut(id) {
                    a.end = AttemptEnd::Failed(err);
                    a.ended = Some(now);
                }
            }
            Input::Timer => {}
        }
        None
    }

    /// Adds the endpoints of an address answer: each of `host`'s service
    /// locations with each address of `family`, within the bounds of
    /// [`MAX_CANDIDATES`]. Returns whether any was added.
    ///
    /// Candidates are bounded so that a hostile answer cannot crowd out a
    /// reachable server, whichever answers first: each (service location,
    /// family) keeps at most an equal share of the bound, and past the
    /// bound the worst-ranked untried candidates give way to better-ranked
    /// ones.
    fn add_candidates(&mut self, host: &Arc<str>, family: Family, addrs: &[IpAddr]) -> bool {
        let slots = (self.specs.len() * self.families.len()).max(1);
        let share = (MAX_CANDIDATES / slots).max(1);
        let mut known: HashSet<Endpoint> = self.order.iter().cloned().collect();
        let before = self.order.len();
        for spec in self.specs.iter().filter(|s| s.host == *host) {
            let same_slot = |e: &Endpoint| {
                e.host == spec.host
                    && e.rank == spec.rank
                    && e.transport == spec.transport
                    && e.addr.port() == spec.port
                    && e.family() == family
            };
            let mut held = self.order.iter().filter(|e| same_slot(e)).count();
            for ip in addrs.iter().filter(|ip| Family::of(ip) == family) {
                if held >= share {
                    break;
                }
                let endpoint = Endpoint {
                    transport: spec.transport,
                    addr: SocketAddr::new(*ip, spec.port),
                    host: spec.host.clone(),
                    rank: spec.rank,
                };
                if known.insert(endpoint.clone()) {
                    self.order.push(endpoint);
                    held += 1;
                }
            }
        }
        let added = self.order.len() > before;
        while self.order.len() > MAX_CANDIDATES {
            // The worst-ranked untried candidate, the latest of its rank.
            let worst = self
                .order
                .iter()
                .enumerate()
                .filter(|(_, e)| !self.tried.contains(*e))
                .max_by_key(|(i, e)| (e.rank, *i))
                .map(|(i, _)| i);
            match worst {
                Some(i) => {
                    self.order.remove(i);
                }
                // Only attempts already made are left: they stay.
                None => break,
            }
        }
        added
    }

    fn in_flight_mut(&mut self, id: AttemptId) -> Option<&mut AttemptRecord> {
        self.attempts
            .iter_mut()
            .find(|a| a.id == id && a.end == AttemptEnd::InFlight)
    }

    fn in_flight(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.end == AttemptEnd::InFlight)
            .count()
    }

    fn finish_with_winner(&mut self, now: Instant, id: AttemptId, actions: &mut Vec<Action>) {
        self.cancel_in_flight(now, CancelReason::LostRace, actions);
        let endpoint = self
            .attempts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.endpoint.clone())
            .expect("the winner is a started attempt");
        self.finish(Outcome::Won { id, endpoint }, actions);
    }

    /// Ends the race without a winner of its own, because the dial took a
    /// kept connection instead (see [`crate::dial_machine`]): every attempt
    /// in flight is cancelled as having lost. No [`Action::Done`] follows.
    pub fn stop_for_reuse(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.finished {
            self.cancel_in_flight(now, CancelReason::LostRace, &mut actions);
            self.finished = true;
        }
        actions
    }

    fn finish(&mut self, outcome: Outcome, actions: &mut Vec<Action>) {
        self.finished = true;
        actions.push(Action::Done(outcome));
    }

    fn cancel_in_flight(&mut self, now: Instant, reason: CancelReason, actions: &mut Vec<Action>) {
        for a in self
            .attempts
            .iter_mut()
            .filter(|a| a.end == AttemptEnd::InFlight)
        {
            a.end = AttemptEnd::Cancelled(reason);
            a.ended = Some(now);
            actions.push(Action::Cancel { id: a.id, reason });
        }
    }

    fn expire_attempts(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(timeout) = self.cfg.attempt_timeout else {
            return;
        };
        for a in self
            .attempts
            .iter_mut()
            .filter(|a| a.end == AttemptEnd::InFlight && now >= a.started + timeout)
        {
            a.end = AttemptEnd::Failed(AttemptError::new(
                ErrorClass::Timeout,
                format!("no answer within {} ms", timeout.as_millis()),
            ));
            a.ended = Some(now);
            actions.push(Action::Cancel {
                id: a.id,
                reason: CancelReason::AttemptTimeout,
            });
        }
    }

    /// The candidates in the order they should be tried, including started ones.
    /// Re-sorts every known candidate (RFC 8305 §4: late answers are merged
    /// by sorting the whole list again, so interleaving stays consistent).
    fn resort(&mut self) {
        let policy = SortPolicy {
            rfc6724: self.cfg.rfc6724,
            first_family: self.cfg.preferred_family,
            family_first: self.cfg.family_first,
            preferred_family_count: self.cfg.preferred_family_count,
        };
        self.order = sort::order(&self.order, &self.history, policy);
    }

    fn next_candidate(&self) -> Option<&Endpoint> {
        self.order.iter().find(|e| !self.tried.contains(*e))
    }

    fn dns_complete(&self) -> bool {
        self.resolution_done
            || (!self.hosts.is_empty() && self.hosts.values().all(|h| h.answered == [true; 2]))
    }

    /// Where a host's candidates stand in the order, as DNS waiting sees it:
    /// its rank, after every live one if history says all its paths failed
    /// (the same demotion the sort applies, see [`sort::order`]).
    fn host_key(&self, host: &Arc<str>) -> (bool, u32) {
        let rank = self.hosts.get(host).map(|h| h.rank).unwrap_or(u32::MAX);
        let mut paths = self
            .specs
            .iter()
            .filter(|s| &s.host == host)
            .flat_map(|s| self.families.iter().map(move |f| (*f, s.transport)))
            .peekable();
        let dead = self.cfg.rfc6724
            && paths.peek().is_some()
            && paths.all(|(f, t)| self.history.verdict_of_path(host, f, t) == PathVerdict::Failed);
        (dead, rank)
    }

    /// When may the next candidate (from `host`) start, as far as DNS is
    /// concerned? `None`: now. `Some(Some(t))`: when the Resolution Delay
    /// ends; `Some(None)`: only once more answers arrive.
    fn dns_hold(&self, host: &Arc<str>) -> Option<Option<Instant>> {
        if self.dns_complete() {
            return None;
        }
        let Some(rd) = self.cfg.resolution_delay else {
            // getaddrinfo-style: nothing starts before every answer is in.
            return Some(None);
        };
        // Wait for hosts that would be tried before this one, and for this
        // host's preferred family.
        let key = self.host_key(host);
        let waiting = self.hosts.iter().any(|(other, h)| {
            let preferred = family_index(self.preferred_family_for(other));
            let other_key = self.host_key(other);
            (other_key < key && h.answered != [true; 2])
                || (other == host && !h.answered[preferred])
        });
        if !waiting {
            return None;
        }
        // The clock starts at the first answer of any kind (HEv3).
        Some(self.first_answer_at.map(|t| t + rd))
    }

    /// The family the Resolution Delay waits for on `host`: the one
    /// history puts first there ([`sort::history_first_family`]).
    fn preferred_family_for(&self, host: &Arc<str>) -> Family {
        let verdict = |family: Family| {
            self.specs
                .iter()
                .filter(|s| &s.host == host)
                .map(|s| self.history.verdict_of_path(host, family, s.transport))
                .find(|v| *v != PathVerdict::Unknown)
                .unwrap_or(PathVerdict::Unknown)
        };
        sort::history_first_family(self.cfg.preferred_family, verdict)
    }

    /// The attempt delay after an attempt on `endpoint`, from history (see
    /// [`history`]'s rules): a path with a measured RTT waits its RTT-based
    /// delay; a doubtful path, or a path of a family suspect on this
    /// network that has no verdict of its own, gets the shortest head
    /// start (the minimum delay); anything else the configured delay.
    /// Always within the configured bounds; returned with its source and
    /// the bound it was clamped to, if any.
    fn attempt_delay_after(
        &self,
        endpoint: &Endpoint,
    ) -> (Duration, DelaySource, Option<DelayBound>) {
        let (base, source) = match self.history.verdict(endpoint) {
            PathVerdict::Worked { rtt } => (rtt.attempt_delay(), DelaySource::HistoryRtt(rtt)),
            PathVerdict::Doubtful => (self.cfg.min_attempt_delay, DelaySource::DoubtfulPath),
            PathVerdict::Unknown if self.history.family_suspect(endpoint.family()) => {
                (self.cfg.min_attempt_delay, DelaySource::SuspectFamily)
            }
            PathVerdict::Unknown | PathVerdict::Failed => {
                (self.cfg.attempt_delay, DelaySource::Configured)
            }
        };
        let delay = base.clamp(self.cfg.min_attempt_delay, self.cfg.max_attempt_delay);
        let clamped = match base.cmp(&delay) {
            std::cmp::Ordering::Less => Some(DelayBound::Min),
            std::cmp::Ordering::Greater => Some(DelayBound::Max),
            std::cmp::Ordering::Equal => None,
        };
        (delay, source, clamped)
    }

    /// What history changed about `endpoint`'s place in the order: a
    /// recent failure put it last, or its family's lower RTT put it before
    /// the preferred family (the rule of [`sort::history_first_family`]).
    fn history_note(&self, endpoint: &Endpoint) -> Option<HistoryNote> {
        if !self.cfg.rfc6724 {
            // Without RFC 6724 ordering, history does not reorder.
            return None;
        }
        let family = endpoint.family();
        let other = family.other();
        let theirs = self
            .history
            .verdict_of_path(&endpoint.host, other, endpoint.transport);
        match self.history.verdict(endpoint) {
            PathVerdict::Failed => Some(HistoryNote::FailedRecently {
                ago: self.history.failed_ago(endpoint),
            }),
            _ if family != self.cfg.preferred_family && theirs == PathVerdict::Failed => {
                Some(HistoryNote::PreferredFailed {
                    ago: self
                        .history
                        .failed_ago_of_path(&endpoint.host, other, endpoint.transport),
                })
            }
            PathVerdict::Worked { rtt: ours } if family != self.cfg.preferred_family => {
                match theirs {
                    PathVerdict::Worked { rtt: theirs }
                        if ours.srtt.saturating_add(history::RTT_LEEWAY) < theirs.srtt =>
                    {
                        Some(HistoryNote::FasterFamily {
                            ours: ours.srtt,
                            theirs: theirs.srtt,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The earliest time the next attempt may start because of pacing, if
    /// anything is in flight.
    fn pacing_until(&self) -> Option<Instant> {
        let last = self
            .attempts
            .iter()
            .filter(|a| a.end == AttemptEnd::InFlight)
            .max_by_key(|a| a.started)?;
        let delay = last.delay;
        // Measured from the newest attempt still in flight: when an attempt
        // fails, the next one starts at once (RFC 8305 §5).
        let mut until = last.started + delay;
        if let Some(up) = last.transport_up {
            // HEv3: the transport is up, so the attempt is progressing; give
            // its upper layer (TLS, probe) another delay before racing it.
            until = until.max(up + delay);
        }
        Some(until)
    }

    fn start_attempts(&mut self, now: Instant, actions: &mut Vec<Action>) {
        while self.in_flight() < self.cfg.max_concurrent {
            let Some(next) = self.next_candidate().cloned() else {
                return;
            };
            match self.dns_hold(&next.host) {
                None => {}
                Some(Some(until)) if now >= until => {}
                Some(_) => return,
            }
            if self.in_flight() > 0 {
                if !self.cfg.staggered {
                    return;
                }
                match self.pacing_until() {
                    Some(until) if now < until => return,
                    _ => {}
                }
            }
            let id = AttemptId(self.attempts.len() as u32 + 1);
            self.tried.insert(next.clone());
            let (delay, delay_source, delay_clamped) = self.attempt_delay_after(&next);
            self.attempts.push(AttemptRecord {
                id,
                delay,
                delay_source,
                delay_clamped,
                history_note: self.history_note(&next),
                endpoint: next.clone(),
                started: now,
                transport_up: None,
                ended: None,
                end: AttemptEnd::InFlight,
            });
            actions.push(Action::Start { id, endpoint: next });
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.started_at + self.cfg.deadline;
        if let Some(timeout) = self.cfg.attempt_timeout {
            for a in self
                .attempts
                .iter()
                .filter(|a| a.end == AttemptEnd::InFlight)
            {
                wake = wake.min(a.started + timeout);
            }
        }
        if let Some(start) = self.next_start(now) {
            wake = wake.min(start);
        }
        wake
    }

    /// When the next candidate may start if no input arrives first, given
    /// that [`Race::start_attempts`] could not start it now: the later of
    /// the Resolution Delay's end and the attempt delay's end. `None` when
    /// only an input can unblock it (concurrency cap, one-at-a-time mode,
    /// waiting for every DNS answer) or there is no candidate.
    fn next_start(&self, now: Instant) -> Option<Instant> {
        let next = self.next_candidate()?;
        let in_flight = self.in_flight();
        if in_flight >= self.cfg.max_concurrent || (in_flight > 0 && !self.cfg.staggered) {
            return None;
        }
        let mut at = now;
        match self.dns_hold(&next.host) {
            None => {}
            Some(None) => return None,
            Some(Some(until)) => at = at.max(until),
        }
        if in_flight > 0 {
            at = at.max(self.pacing_until()?);
        }
        // A time already reached would have started the candidate in this
        // step; never ask to be woken "now" (that would spin).
        (at > now).then_some(at)
    }
}

#[cfg(test)]
mod tests;
