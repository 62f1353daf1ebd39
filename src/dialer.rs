//! The dialer: runs one dial through the pipeline. Location streams DNS
//! answers in, the race engine decides, attempts run as tasks, and the
//! report records it all. This is the only place where the engine meets
//! tokio: it turns engine actions into tasks and timers and task results
//! back into engine inputs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::connect::{self, ConnectConfig, Connected, Connection, ProbeResponse, Progress};
use crate::endpoint::{AttemptError, ConfigError, Endpoint, ErrorClass, Transport};
use crate::locate::{self, DnsOutcome, LocateConfig, LocateEvent};
use crate::race::history::{self, History};
use crate::race::strategy::Strategy;
use crate::race::{Action, AttemptId, Input, Outcome, Race, RaceConfig, RaceFailure};
use crate::report::{millis, AddressEntry, DialResult, DnsEntry, Report};
use crate::target::{Host, Target, TargetError};

/// Everything a dial can be told.
#[derive(Debug, Clone)]
pub struct DialerConfig {
    /// Which behaviour to use; [`DialerConfig::for_strategy`] fills `race`
    /// and `locate.pipelined` to match.
    pub strategy: Strategy,
    pub race: RaceConfig,
    pub locate: LocateConfig,
    pub connect: ConnectConfig,
    /// Restrict the transports (intersected with what the target allows).
    pub transports: Option<Vec<Transport>>,
    /// The SIP domain TLS certificates must match, when it is not the
    /// target's host: e.g. dialing a known address of `example.test`'s
    /// server (`sips:[2001:db8::1]`) that must still prove it serves
    /// `example.test` (RFC 5922 §4). `None`: the target's host.
    pub sip_domain: Option<String>,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig::for_strategy(Strategy::Siprace)
    }
}

impl DialerConfig {
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
    pub endpoint: Endpoint,
    pub connection: Connection,
    /// The probe's SIP response, where one was sent.
    pub response: Option<ProbeResponse>,
    pub report: Report,
}

/// Why a dial gave no connection. Failures carry the report, so the caller
/// can show every attempt's reason.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration value out of its range (see [`DialerConfig::validated`]).
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("resolution failed: {}", .0.reason.as_deref().unwrap_or("no addresses"))]
    Resolution(Box<Report>),
    #[error("no candidate answered: {}", .0.reason.as_deref().unwrap_or("every attempt failed"))]
    Failed(Box<Report>),
}

impl DialError {
    pub fn report(&self) -> Option<&Report> {
        match self {
            DialError::Resolution(r) | DialError::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// A reusable dialer. It keeps the history of its dials (shared by clones).
#[derive(Debug, Clone)]
pub struct Dialer {
    cfg: DialerConfig,
    history: Arc<Mutex<History>>,
}

/// What an attempt's task returns: its id, when its transport came up (if
/// it reported that), and its result.
type AttemptResult = (
    AttemptId,
    Option<std::time::Instant>,
    Result<Connected, AttemptError>,
);

/// The progress callback an attempt is given.
type ProgressFn = Box<dyn Fn(Progress) + Send + Sync>;

impl Dialer {
    pub fn new(cfg: DialerConfig) -> Result<Dialer, DialError> {
        Dialer::with_history(cfg, History::default())
    }

    /// A dialer that starts from a saved history (`--history-file`).
    /// The configuration is checked first ([`DialerConfig::validated`]).
    pub fn with_history(cfg: DialerConfig, history: History) -> Result<Dialer, DialError> {
        let cfg = cfg.validated()?;
        Ok(Dialer {
            cfg,
            history: Arc::new(Mutex::new(history)),
        })
    }

    pub fn config(&self) -> &DialerConfig {
        &self.cfg
    }

    /// A copy of the history, e.g. to save it.
    pub fn history(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }

    /// Parses `target` and dials it.
    pub async fn dial(&self, target: &str) -> Result<Dial, DialError> {
        let target = Target::parse(target)?;
        self.dial_target(&target).await
    }

    /// Dials a parsed target.
    pub async fn dial_target(&self, target: &Target) -> Result<Dial, DialError> {
        self.dial_with(target, |endpoint, cfg, progress| async move {
            connect::attempt(&endpoint, &cfg, &*progress).await
        })
        .await
    }

    /// [`Dialer::dial_target`] with the attempts made by `run_attempt`
    /// (given the endpoint, the attempt configuration and the progress
    /// callback): [`connect::attempt`] outside tests.
    async fn dial_with<F, Fut>(&self, target: &Target, run_attempt: F) -> Result<Dial, DialError>
    where
        F: Fn(Endpoint, Arc<ConnectConfig>, ProgressFn) -> Fut,
        Fut: Future<Output = Result<Connected, AttemptError>> + Send + 'static,
    {
        // A target built by hand skipped the parser's check of literals.
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
            return Err(DialError::Config(format!(
                "{target} allows none of the transports asked for (a sips: target only uses TLS)"
            )));
        }
        let mut connect_cfg = self.cfg.connect.clone();
        connect_cfg.request_uri = target.request_uri();
        connect_cfg.sip_domain = self
            .cfg
            .sip_domain
            .clone()
            .unwrap_or_else(|| target.domain());
        let connect_cfg = Arc::new(connect_cfg);

        let t0 = Instant::now();
        let history_view = self
            .history
            .lock()
            .expect("history lock")
            .view(SystemTime::now());
        let mut race = Race::new(
            self.cfg.race.clone(),
            history_view,
            &self.cfg.locate.families,
            t0.into_std(),
        );
        let mut report = Report::new(target.to_string(), self.cfg.strategy.to_string());

        // Location runs as its own task and streams events.
        let (dns_tx, mut dns_rx) = mpsc::unbounded_channel();
        let locate_task = {
            let target = target.clone();
            let cfg = self.cfg.locate.clone();
            let transports = transports.clone();
            tokio::spawn(async move { locate::locate(&target, &transports, &cfg, dns_tx).await })
        };
        let _abort_locate = AbortOnDrop(locate_task.abort_handle());

        // Milestones are timestamped where they happen: the attempt task may
        // run on another worker, ahead of this loop.
        let (progress_tx, mut progress_rx) =
            mpsc::unbounded_channel::<(AttemptId, std::time::Instant)>();
        let mut attempts: JoinSet<AttemptResult> = JoinSet::new();
        // Each attempt's task, both ways: to cancel it, and to know which
        // attempt a task that panicked belonged to.
        let mut aborts: HashMap<AttemptId, AbortHandle> = HashMap::new();
        let mut task_attempt: HashMap<tokio::task::Id, AttemptId> = HashMap::new();
        let mut winner: Option<Connected> = None;
        let mut dns_open = true;
        let mut wake = t0 + self.cfg.race.deadline;

        let outcome = loop {
            // A connection that has just succeeded; it is kept only if the
            // engine makes it the winner, and closed at once otherwise.
            let mut connected: Option<(AttemptId, Connected)> = None;
            // A finished attempt's own record of its transport-up time.
            let mut finished_up: Option<Input> = None;
            // `biased`: the branches are polled in this order, so events that
            // are ready together always reach the engine in this order:
            // 1. Transport-ups: each was sent before its attempt could end,
            //    and the engine ignores one that arrives after the end (it
            //    once lost one in four TLS winners' TCP time this way); one
            //    also postpones the next attempt (HEv3), so it must be seen
            //    before a timer that would start that attempt.
            // 2. Attempt results: a success ends the race before a DNS
            //    answer or a timer of the same instant can start an attempt
            //    that would only be cancelled.
            // 3. DNS answers: before the timer, so that an answer that came
            //    as the Resolution Delay ended is used (IPv6 first), not
            //    overtaken by the delay's expiry.
            // 4. The timer: it stands for "nothing else happened".
            // Every branch's events are finite (one transport-up per attempt,
            // one result per attempt, a bounded number of DNS answers), so
            // the timer, and with it the deadline, is never starved.
            let input = tokio::select! {
                biased;
                Some((id, at)) = progress_rx.recv() => Input::TransportUp(id, at),
                Some(joined) = attempts.join_next_with_id(), if !attempts.is_empty() => match joined {
                    Ok((task, (id, transport_up, result))) => {
                        task_attempt.remove(&task);
                        aborts.remove(&id);
                        finished_up = transport_up.map(|at| Input::TransportUp(id, at));
                        match result {
                            Ok(c) => {
                                connected = Some((id, c));
                                Input::Succeeded(id)
                            }
                            Err(err) => Input::Failed(id, err),
                        }
                    }
                    Err(err) => match task_attempt.remove(&err.id()) {
                        // A bug in an attempt must fail that attempt, not
                        // hold its slot until the deadline.
                        Some(id) if err.is_panic() => {
                            aborts.remove(&id);
                            Input::Failed(id, AttemptError::new(ErrorClass::Local, format!("the attempt panicked: {err}")))
                        }
                        // Aborted: an attempt the engine already cancelled.
                        _ => continue,
                    },
                },
                event = dns_rx.recv(), if dns_open => match event {
                    Some(event) => match self.on_locate_event(event, t0, &mut report) {
                        Some(input) => input,
                        None => continue,
                    },
                    None => {
                        dns_open = false;
                        Input::ResolutionDone
                    }
                },
                _ = tokio::time::sleep_until(wake) => Input::Timer,
            };
            // What the engine sees this turn, in order: transport-ups
            // already sent (one may have come in after the select looked),
            // the finished attempt's own (its message may not be in yet),
            // then the input itself. A repeated transport-up changes nothing.
            let mut inputs = Vec::new();
            if !matches!(input, Input::TransportUp(..)) {
                while let Ok((id, at)) = progress_rx.try_recv() {
                    inputs.push(Input::TransportUp(id, at));
                }
            }
            inputs.extend(finished_up);
            inputs.push(input);
            let now = Instant::now();
            let mut done = None;
            for input in inputs {
                for action in race.step(now.into_std(), input) {
                    match action {
                        Action::Start { id, endpoint } => {
                            tracing::debug!(attempt = id.0, %endpoint, "starting attempt");
                            let transport_up = Arc::new(OnceLock::new());
                            let progress: ProgressFn = {
                                let (transport_up, progress_tx) =
                                    (transport_up.clone(), progress_tx.clone());
                                Box::new(move |p: Progress| match p {
                                    Progress::TransportUp { .. } => {
                                        let at = std::time::Instant::now();
                                        if transport_up.set(at).is_ok() {
                                            let _ = progress_tx.send((id, at));
                                        }
                                    }
                                })
                            };
                            let attempt = run_attempt(endpoint, connect_cfg.clone(), progress);
                            let handle = attempts.spawn(async move {
                                let result = attempt.await;
                                (id, transport_up.get().copied(), result)
                            });
                            task_attempt.insert(handle.id(), id);
                            aborts.insert(id, handle);
                        }
                        Action::Cancel { id, reason } => {
                            tracing::debug!(attempt = id.0, ?reason, "cancelling attempt");
                            // Aborting drops the attempt's future, which closes its socket.
                            if let Some(h) = aborts.remove(&id) {
                                h.abort();
                            }
                        }
                        Action::WakeAt(at) => wake = Instant::from_std(at),
                        Action::Done(outcome) => done = Some(outcome),
                    }
                }
            }
            if let (Some(Outcome::Won { id, .. }), Some((cid, c))) = (&done, connected.take()) {
                if *id == cid {
                    winner = Some(c);
                }
            }
            if let Some(outcome) = done {
                break outcome;
            }
        };
        // Every loser is closed: abort whatever still runs and wait until
        // each task has really ended, so no socket outlives the dial; the
        // same for location and its DNS sockets.
        attempts.abort_all();
        while attempts.join_next().await.is_some() {}
        locate_task.abort();
        let _ = locate_task.await;

        let total = t0.elapsed();
        report.total = total;
        report.total_ms = millis(total);
        report.set_attempts(race.attempts(), t0.into_std());
        self.learn(&race);

        match outcome {
            Outcome::Won { id, endpoint } => {
                report.result = DialResult::Connected;
                report.winner = Some(id.0);
                let connected =
                    winner.expect("the engine only declares a winner that just reported success");
                if let (Some(r), Some(entry)) = (
                    &connected.response,
                    report.attempts.iter_mut().find(|a| a.id == id.0),
                ) {
                    entry.response = Some(format!(
                        "{} {} in {:.1} ms",
                        r.status,
                        r.reason,
                        millis(r.rtt)
                    ));
                }
                Ok(Dial {
                    endpoint,
                    connection: connected.connection,
                    response: connected.response,
                    report,
                })
            }
            Outcome::Failed(failure) => {
                let (result, reason) = match &failure {
                    RaceFailure::Resolution(r) => (DialResult::ResolutionFailed, r.clone()),
                    RaceFailure::NoAddresses => {
                        (DialResult::ResolutionFailed, no_address_reason(&report))
                    }
                    RaceFailure::AllFailed => (
                        DialResult::Failed,
                        format!("all {} attempt(s) failed", report.attempts.len()),
                    ),
                    RaceFailure::Deadline => (
                        DialResult::Failed,
                        format!(
                            "deadline of {} ms passed",
                            self.cfg.race.deadline.as_millis()
                        ),
                    ),
                };
                report.result = result;
                report.reason = Some(reason);
                if result == DialResult::ResolutionFailed {
                    Err(DialError::Resolution(Box::new(report)))
                } else {
                    Err(DialError::Failed(Box::new(report)))
                }
            }
        }
    }

    /// Records the finished race in the history.
    fn learn(&self, race: &Race) {
        if !self.cfg.race.use_history {
            return;
        }
        let outcomes = history::outcomes_of(race.attempts());
        self.history
            .lock()
            .expect("history lock")
            .record(SystemTime::now(), &outcomes);
    }

    /// Turns a location event into the report and, where it matters to the race, an input.
    fn on_locate_event(
        &self,
        event: LocateEvent,
        t0: Instant,
        report: &mut Report,
    ) -> Option<Input> {
        let ms = |at: Instant| millis(at.saturating_duration_since(t0));
        match event {
            LocateEvent::Query { name, rtype, at } => {
                report.dns.push(DnsEntry {
                    name,
                    rtype,
                    sent_ms: ms(at),
                    answered_ms: None,
                    outcome: None,
                    records: Vec::new(),
                    records_total: 0,
                });
                None
            }
            LocateEvent::Answer {
                name,
                rtype,
                at,
                outcome,
            } => {
                let (label, records, records_total) = describe_outcome(outcome);
                if let Some(q) = report
                    .dns
                    .iter_mut()
                    .find(|q| q.name == name && q.rtype == rtype && q.answered_ms.is_none())
                {
                    q.answered_ms = Some(ms(at));
                    q.outcome = Some(label);
                    q.records = records;
                    q.records_total = records_total;
                }
                None
            }
            LocateEvent::Targets(specs) => {
                report.targets = specs.clone();
                Some(Input::Targets(specs))
            }
            LocateEvent::Addresses {
                host,
                family,
                addrs,
                at,
            } => {
                report.addresses.push(AddressEntry {
                    host: host.to_string(),
                    family,
                    at_ms: ms(at),
                    addrs: addrs.clone(),
                });
                Some(Input::Addresses {
                    host,
                    family,
                    addrs,
                })
            }
            LocateEvent::Done => Some(Input::ResolutionDone),
            LocateEvent::Failed(err) => Some(Input::ResolutionFailed(err.to_string())),
        }
    }
}

/// Why location found no address: said plainly, with the last query error
/// (a refused query, no socket...) when one explains it.
fn no_address_reason(report: &Report) -> String {
    let error = report
        .dns
        .iter()
        .rev()
        .filter(|q| q.outcome.as_deref() == Some("error"))
        .find_map(|q| q.records.first());
    match error {
        Some(detail) => format!("DNS gave no usable address: {detail}"),
        None => "DNS gave no usable address".to_string(),
    }
}

/// A DNS outcome as the report shows it: its label ("ok" for records),
/// the records shown or the error detail, and how many records arrived.
fn describe_outcome(outcome: DnsOutcome) -> (String, Vec<String>, usize) {
    let label = outcome.label().to_string();
    match outcome {
        DnsOutcome::Records { shown, total } => ("ok".into(), shown, total),
        DnsOutcome::Error(detail) => (label, vec![detail], 0),
        _ => (label, Vec::new(), 0),
    }
}

/// Aborts a task when dropped, so a dial that returns early (or is itself
/// dropped) leaves no location task behind.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Connection;
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
                .dial_with(&target, |_, _, progress| up_then_success(progress))
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
                .dial_with(&target, |_, _, progress| async move {
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
}
