//! One dial as one pure (sans-IO) state machine: the location machine
//! ([`crate::locate::Location`]) feeding the race engine ([`crate::race::Race`]).
//!
//! Its actions are everything a dial does to the world: send a DNS query,
//! abandon one, start an attempt, cancel one, wake me at, done. A driver
//! ([`crate::dialer`]) performs them and feeds back what happened
//! ([`Input`]): DNS answers, attempt milestones and results, timer
//! expiries, each with the current time. Location's results (service
//! locations, address answers, done) go straight to the race inside the
//! machine, so tests assert whole DNS-plus-connect sequences at chosen
//! instants, and the driver has no event protocol to translate.
//!
//! When the dial is decided, every query still in flight is abandoned
//! before [`Action::Done`]. The machine keeps the records a report is
//! built from: the DNS timeline and address answers ([`DialMachine::location`])
//! and the attempts ([`DialMachine::race`]).
//!
//! Connection reuse (RFC 3261 §18.1.1, RFC 5923) is a decision of the
//! machine too: the driver tells it, before the start, which destinations
//! (transport, address, port) have a kept connection that may carry this
//! dial ([`DialMachine::reuse_any_of`]; the driver's table decides that from
//! the certificates). The first located address that is one of them ends
//! the dial as [`Outcome::Reused`] before the race is given it: no attempt,
//! no handshake, and any attempt already running is cancelled.

use std::net::SocketAddr;
use std::time::Instant;

use crate::endpoint::{AttemptError, Endpoint, Transport};
use crate::locate::{self, Answer, LocateConfig, LocateError, Location, Query, QueryId};
use crate::race::history::HistoryView;
use crate::race::{self, AttemptId, CancelReason, Race, RaceConfig, RaceFailure};
use crate::target::Target;

/// What happens to a dial.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The answer to a query the machine asked for.
    DnsAnswer(Answer),
    /// An attempt's transport is up but the attempt is not done (see
    /// [`race::Input::TransportUp`]), at the given time.
    TransportUp(AttemptId, Instant),
    /// An attempt is ready to use (for UDP: a matching response came back).
    Succeeded(AttemptId),
    /// An attempt failed, and why.
    Failed(AttemptId, AttemptError),
    /// The time of the last [`Action::WakeAt`] has come (a spurious one
    /// changes nothing).
    Timer,
    /// The driver cannot send DNS queries (no resolver could be set up):
    /// location, and with it the dial, fails at once.
    DnsUnavailable(LocateError),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this DNS query and feed its answer back.
    Query(Query),
    /// Stop this query: its answer is not needed any more.
    AbandonQuery(QueryId),
    /// Start an attempt to this endpoint and report its end with `id`.
    Start {
        /// Names the attempt in later inputs and actions.
        id: AttemptId,
        /// Where to connect, and over which transport.
        endpoint: Endpoint,
    },
    /// Stop this attempt and close its socket.
    Cancel {
        /// The attempt to stop.
        id: AttemptId,
        /// Why it is stopped (for the report).
        reason: CancelReason,
    },
    /// Feed [`Input::Timer`] at this time (replaces any earlier wake-up).
    WakeAt(Instant),
    /// The dial is decided; always the last action. Every attempt still running
    /// has been cancelled by an earlier action.
    Done(Outcome),
}

/// How a dial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An attempt succeeded: the dial's connection.
    Won {
        /// The winning attempt.
        id: AttemptId,
        /// Where it connected.
        endpoint: Endpoint,
    },
    /// Location found no service location at all.
    LocationFailed(LocateError),
    /// The race found no winner.
    Failed(RaceFailure),
    /// A located destination has a kept connection that may carry the
    /// dial (see [`DialMachine::reuse_any_of`]): the driver uses it.
    Reused {
        /// The destination, as the race would have dialed it.
        endpoint: Endpoint,
    },
}

/// The machine of one dial. See the module docs.
#[derive(Debug)]
pub struct DialMachine {
    location: Location,
    race: Race,
    /// The race's last wake-up time.
    race_wake: Instant,
    /// Set once the dial is decided; [`Action::Done`] has then been given.
    outcome: Option<Outcome>,
    /// Destinations with a kept connection the dial may reuse.
    reusable: Vec<(Transport, SocketAddr)>,
}

impl DialMachine {
    /// A dial of `target` over the allowed `transports` starting at `now`.
    /// `seed` seeds location's RFC 2782 weighted choices.
    pub fn new(
        target: &Target,
        transports: &[Transport],
        locate: &LocateConfig,
        race: RaceConfig,
        history: HistoryView,
        seed: u64,
        now: Instant,
    ) -> DialMachine {
        let race = Race::new(race, history, &locate.families, now);
        DialMachine {
            location: Location::new(target, transports, locate, seed),
            race_wake: race.deadline_at(),
            race,
            outcome: None,
            reusable: Vec::new(),
        }
    }

    /// Destinations (transport, address with port) that have a kept
    /// connection able to carry this dial; give them before
    /// [`start`](Self::start). The first one location yields is used
    /// instead of racing.
    pub fn reuse_any_of(&mut self, reusable: Vec<(Transport, SocketAddr)>) {
        self.reusable = reusable;
    }

    /// The endpoint of `host`'s address in `addrs` that is reusable, if any.
    fn reusable_endpoint(
        &self,
        host: &std::sync::Arc<str>,
        addrs: &[std::net::IpAddr],
    ) -> Option<Endpoint> {
        if self.reusable.is_empty() {
            return None;
        }
        let specs = self.location.targets().iter().filter(|s| s.host == *host);
        for spec in specs {
            for ip in addrs {
                let addr = SocketAddr::new(*ip, spec.port);
                if self.reusable.contains(&(spec.transport, addr)) {
                    return Some(Endpoint {
                        transport: spec.transport,
                        addr,
                        host: spec.host.clone(),
                        rank: spec.rank,
                    });
                }
            }
        }
        None
    }

    /// The first actions (the first queries, or for an IP literal the
    /// first attempt); nothing after the first call.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let located = self.location.start(now);
        self.follow_location(now, located, &mut out);
        self.close(&mut out);
        out
    }

    /// Feeds one input at `now` and returns what to do, in order. The last
    /// action is a [`Action::WakeAt`] or, once, [`Action::Done`]; after it
    /// every input is ignored.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if self.outcome.is_some() {
            return out;
        }
        match input {
            Input::DnsAnswer(answer) => {
                let located = self.location.step(now, locate::Input::Answer(answer));
                self.follow_location(now, located, &mut out);
            }
            Input::Timer => {
                // Query timeouts first: a DNS event of the same instant
                // reaches the race before its own timer does.
                let located = self.location.step(now, locate::Input::Timer);
                self.follow_location(now, located, &mut out);
                if now >= self.race_wake {
                    self.step_race(now, race::Input::Timer, &mut out);
                }
            }
            Input::TransportUp(id, at) => {
                self.step_race(now, race::Input::TransportUp(id, at), &mut out)
            }
            Input::Succeeded(id) => self.step_race(now, race::Input::Succeeded(id), &mut out),
            Input::Failed(id, err) => self.step_race(now, race::Input::Failed(id, err), &mut out),
            Input::DnsUnavailable(e) => self.outcome = Some(Outcome::LocationFailed(e)),
        }
        self.close(&mut out);
        out
    }

    /// The dial's outcome, once decided.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Location, with the DNS timeline, the targets and the address answers.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The race, with its attempts.
    pub fn race(&self) -> &Race {
        &self.race
    }

    /// Queries go out; location's results go to the race.
    fn follow_location(
        &mut self,
        now: Instant,
        located: Vec<locate::Action>,
        out: &mut Vec<Action>,
    ) {
        for action in located {
            match action {
                locate::Action::Query(query) => out.push(Action::Query(query)),
                locate::Action::Abandon(id) => out.push(Action::AbandonQuery(id)),
                locate::Action::Targets(specs) => {
                    self.step_race(now, race::Input::Targets(specs), out)
                }
                locate::Action::Addresses { host, addrs, .. }
                    if self.outcome.is_none()
                        && self.reusable_endpoint(&host, &addrs).is_some() =>
                {
                    let endpoint = self.reusable_endpoint(&host, &addrs).expect("just found");
                    for action in self.race.stop_for_reuse(now) {
                        if let race::Action::Cancel { id, reason } = action {
                            out.push(Action::Cancel { id, reason });
                        }
                    }
                    self.outcome = Some(Outcome::Reused { endpoint });
                }
                locate::Action::Addresses {
                    host,
                    family,
                    addrs,
                } => self.step_race(
                    now,
                    race::Input::Addresses {
                        host,
                        family,
                        addrs,
                    },
                    out,
                ),
                locate::Action::Done => self.step_race(now, race::Input::ResolutionDone, out),
                // Location only fails before it gives any target, so no
                // attempt can be running.
                locate::Action::Failed(e) => {
                    self.outcome.get_or_insert(Outcome::LocationFailed(e));
                }
            }
        }
    }

    fn step_race(&mut self, now: Instant, input: race::Input, out: &mut Vec<Action>) {
        if self.outcome.is_some() {
            return;
        }
        for action in self.race.step(now, input) {
            match action {
                race::Action::Start { id, endpoint } => out.push(Action::Start { id, endpoint }),
                race::Action::Cancel { id, reason } => out.push(Action::Cancel { id, reason }),
                race::Action::WakeAt(at) => self.race_wake = at,
                race::Action::Done(race::Outcome::Won { id, endpoint }) => {
                    self.outcome = Some(Outcome::Won { id, endpoint })
                }
                race::Action::Done(race::Outcome::Failed(failure)) => {
                    self.outcome = Some(Outcome::Failed(failure))
                }
            }
        }
    }

    /// Ends a step: once the dial is decided, every query still in flight
    /// is abandoned and Done given; otherwise the next wake-up.
    fn close(&mut self, out: &mut Vec<Action>) {
        match &self.outcome {
            Some(outcome) => {
                out.extend(self.location.stop().into_iter().map(Action::AbandonQuery));
                out.push(Action::Done(outcome.clone()));
            }
            None => {
                let wake = match self.location.next_wake() {
                    Some(dns) => dns.min(self.race_wake),
                    None => self.race_wake,
                };
                out.push(Action::WakeAt(wake));
            }
        }
    }
}

#[cfg(test)]
mod tests;
