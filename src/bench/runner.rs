//! Runs the scenario matrix in the lab: for each scenario it applies the
//! faults, serves the scenario's zone from the DNS namespace, and runs every
//! strategy's dials from the client namespace against the responder in the
//! server namespace, recording one [`DialRecord`] per dial.
//!
//! Everything runs in this process: each namespace gets a thread that
//! entered it (`setns` is per thread) with its own current-thread runtime,
//! so every socket a task opens there belongs to that namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::bench::clients::{self, Client};
// The records moved to their own module; re-exported at their old path.
pub use crate::bench::records::{CaseResult, DialRecord, RowResult, ServerSeen};
use crate::bench::records::{SweepPoint, SweepRow};
use crate::bench::scenario::TimelineKind;
use crate::bench::scenario::{Scenario, DOMAIN, VHOST};
use crate::bench::sweep::SweepSpec;
use crate::bench::timeline;
use crate::connect::tls::PemSource;
use crate::dialer::{DialError, Dialer, DialerConfig};
use crate::endpoint::Transport;
use crate::keep::KeepConfig;
use crate::lab::dns::{DnsServer, DnsServerConfig};
use crate::lab::impair::{self, Fault};
use crate::lab::topology::{Lab, Role};
use crate::race::strategy::Strategy;
use crate::report::Report;
use crate::responder::{
    self, ListenerConfig, ResponderConfig, ResponderHandle, ResponderTls, StatsSnapshot,
};

/// Start spacing of concurrent dials in a row that switched to them.
const SEQUENTIAL_SPACING: Duration = Duration::from_millis(50);

/// One row of a comparison: a way of dialing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Row {
    /// A direct dial to the address known to work: the physical limit.
    Oracle,
    /// A strategy with a fresh dialer (no history) for every dial.
    Cold(Strategy),
    /// siprace with one dialer for all dials, so history from earlier dials of the run applies.
    SipraceWarm,
}

impl Row {
    pub const ALL: [Row; 7] = [
        Row::Oracle,
        Row::Cold(Strategy::Sequential),
        Row::Cold(Strategy::SequentialV4),
        Row::Cold(Strategy::Rfc6555),
        Row::Cold(Strategy::Rfc8305),
        Row::Cold(Strategy::Siprace),
        Row::SipraceWarm,
    ];

    pub fn label(self) -> String {
        match self {
            Row::Oracle => "oracle".into(),
            Row::Cold(Strategy::Siprace) => "siprace-cold".into(),
            Row::Cold(s) => s.to_string(),
            Row::SipraceWarm => "siprace-warm".into(),
        }
    }
}

/// Called after every finished dial (progress bars).
pub type Tick = Arc<dyn Fn(&str) + Send + Sync>;

/// A service running in a namespace thread until stopped.
pub(crate) struct NsService<T> {
    handle: Option<T>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T> NsService<T> {
    /// Starts `start()` on a thread inside `role`'s namespace and keeps that
    /// thread's runtime running until [`NsService::stop`].
    pub(crate) fn start<F, Fut>(lab: &Lab, role: Role, start: F) -> Result<NsService<T>, String>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>>,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let lab = lab.clone();
        let thread = std::thread::spawn(move || {
            let result = lab.in_ns(role, move || {
                let rt = match ns_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match start().await {
                        Ok(handle) => {
                            let _ = ready_tx.send(Ok(handle));
                            let _ = stop_rx.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            });
            if let Err(e) = result {
                tracing::error!("namespace thread: {e}");
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(handle)) => Ok(NsService {
                handle: Some(handle),
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("the {role:?} service did not start within 10 s")),
        }
    }

    fn get(&self) -> &T {
        self.handle.as_ref().expect("a running service")
    }

    /// Takes the handle out (for an async shutdown), then stops the thread.
    pub(crate) fn take(&mut self) -> Option<T> {
        self.handle.take()
    }

    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for NsService<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The responder on every server address of the lab, UDP, TCP and TLS
/// (with a throwaway certificate for the benchmark's SIP domain), and SCTP
/// where the kernel has it (`siprace bench --sctp`).
/// Returns the configuration and the CA that signed the certificate.
fn responder_config(lab: &Lab) -> Result<(ResponderConfig, String), String> {
    let (tls, ca_pem) = ResponderTls::generate(DOMAIN)?;
    let mut transports = vec![Transport::Udp, Transport::Tcp, Transport::Tls];
    if crate::connect::sctp::kernel_supported() {
        transports.push(Transport::Sctp);
    }
    let listeners = lab
        .addrs
        .servers()
        .into_iter()
        .flat_map(|ip| {
            transports.iter().map(move |&transport| ListenerConfig {
                transport,
                addr: std::net::SocketAddr::new(ip, transport.default_port()),
                silent: false,
            })
        })
        .collect();
    let cfg = ResponderConfig {
        listeners,
        tls: Some(tls),
        ..ResponderConfig::default()
    };
    Ok((cfg, ca_pem))
}

/// The lab's servers for a benchmark run.
pub struct Bench {
    lab: Lab,
    responder: NsService<ResponderHandle>,
    /// The CA of the responder's certificate, trusted by every TLS dial.
    ca_pem: String,
    quick: bool,
    tick: Tick,
}

impl Bench {
    pub fn start(lab: &Lab, quick: bool, tick: Tick) -> Result<Bench, String> {
        let (cfg, ca_pem) = responder_config(lab)?;
        let responder = NsService::start(lab, Role::Server, move || async move {
            responder::start(cfg)
                .await
                .map_err(|e| format!("responder: {e}"))
        })?;
        Ok(Bench {
            lab: lab.clone(),
            responder,
            ca_pem,
            quick,
            tick,
        })
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.responder.take() {
            h.shutdown().await;
        }
        self.responder.stop();
    }

    /// Runs one scenario over each of its transports.
    pub async fn run_scenario(&self, scenario: &Scenario) -> Result<Vec<CaseResult>, String> {
        let name = self.lab.name.clone();
        for imp in &scenario.impair {
            let server = imp.server_addr(&self.lab.addrs);
            impair::impair(&name, Some(imp.family), server, imp.fault()?)
                .map_err(|e| format!("impair: {e}"))?;
        }
        let result = self.run_cases(scenario).await;
        impair::impair(&name, None, None, Fault::Clear)
            .map_err(|e| format!("clearing faults: {e}"))?;
        result
    }

    async fn run_cases(&self, scenario: &Scenario) -> Result<Vec<CaseResult>, String> {
        let zone = scenario.zone_for_all(&self.lab.addrs);
        let dns_cfg = DnsServerConfig::parse(&zone, &scenario.dns.faults)
            .map_err(|e| format!("zone: {e}"))?
            .with_srv_additionals(scenario.dns.srv_additionals);
        let binds = vec![
            std::net::SocketAddr::new(self.lab.addrs.dns_v6.into(), 53),
            std::net::SocketAddr::new(self.lab.addrs.dns_v4.into(), 53),
        ];
        let mut dns = NsService::start(&self.lab, Role::Dns, move || async move {
            DnsServer::start(dns_cfg, &binds)
                .await
                .map_err(|e| format!("lab dns: {e}"))
        })?;
        let result = self.run_rows(scenario).await;
        if let Some(d) = dns.take() {
            d.shutdown().await;
        }
        dns.stop();
        result
    }

    async fn run_rows(&self, scenario: &Scenario) -> Result<Vec<CaseResult>, String> {
        let n = scenario.dials(self.quick);
        let bound = Duration::from_secs(scenario.time_bound_s);
        let mut cases: Vec<CaseResult> = scenario
            .transports
            .iter()
            .map(|&transport| CaseResult {
                scenario: scenario.name.clone(),
                transport,
                description: scenario.description.clone(),
                rows: Vec::new(),
                timeline: None,
                sweep: None,
            })
            .collect();
        if let Some(sweep) = &scenario.sweep {
            for case in cases.iter_mut() {
                case.sweep = Some(self.run_sweep(scenario, sweep, case.transport).await?);
            }
            return Ok(cases);
        }
        if let Some(kind) = scenario.timeline {
            for case in cases.iter_mut() {
                self.run_timeline(scenario, kind, case).await?;
            }
            return Ok(cases);
        }
        if scenario.reuse {
            for case in cases.iter_mut() {
                self.run_reuse(scenario, case).await?;
            }
            return Ok(cases);
        }

        // The sequential rows wait out 32 s timeouts: their dials run all at
        // once, and both variants and every transport side by side, so the
        // run stays bounded. Their server counts are therefore shared.
        let sequential_rows = [
            Row::Cold(Strategy::Sequential),
            Row::Cold(Strategy::SequentialV4),
        ];
        let before = self.responder.get().stats();
        let mut jobs: Vec<RowJob> = Vec::new();
        for row in sequential_rows {
            for &t in &scenario.transports {
                jobs.push(self.job(scenario, row, t, n, scenario.concurrency, bound));
            }
        }
        let mut sequential = self.in_client(jobs).await?.into_iter();
        let after = self.settled_stats(scenario).await;
        for row in sequential_rows {
            for case in cases.iter_mut() {
                let run = sequential.next().expect("one result per job");
                let note = format!(
                    "ran beside the other sequential rows of the scenario (a dial may wait out Timer B, 32 s), so the server counts are those of all of them{}",
                    run.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default()
                );
                case.rows.push(RowResult {
                    row: row.label(),
                    dials: run.records,
                    server: ServerSeen::delta(&before, &after, case.transport),
                    note: Some(note),
                    wall_ms: run.wall.as_secs_f64() * 1000.0,
                });
            }
        }

        for case in cases.iter_mut() {
            for row in Row::ALL {
                if sequential_rows.contains(&row) {
                    continue;
                }
                let mut job = self.job(
                    scenario,
                    row,
                    case.transport,
                    n,
                    scenario.concurrency,
                    bound,
                );
                if row == Row::SipraceWarm && scenario.hosts == 1 {
                    // One unmeasured dial fills the history (and the DNS
                    // cache) the measured ones start from.
                    job.warm = Some(self.warm_up(&job).await?);
                } else if row == Row::SipraceWarm {
                    // Distinct hosts: one dialer from an empty history, so
                    // each dial meets a host it has never dialled.
                    job.warm = Some(Dialer::new(job.cfg.clone()).map_err(|e| e.to_string())?);
                }
                let before = self.responder.get().stats();
                let run = self.in_client(vec![job]).await?.remove(0);
                let after = self.settled_stats(scenario).await;
                let note = (scenario.concurrency > 1)
                    .then(|| format!("{} dials in flight at once", scenario.concurrency))
                    .or(run.note);
                let note = join_notes(note, dns_cache_note(run.dns, scenario.dns.ttl));
                case.rows.push(RowResult {
                    row: row.label(),
                    dials: run.records,
                    server: ServerSeen::delta(&before, &after, case.transport),
                    note,
                    wall_ms: run.wall.as_secs_f64() * 1000.0,
                });
            }
            if scenario.clients && !self.quick {
                self.client_rows(scenario, case).await;
            }
            // Keep the DNS-free oracle first and the rest in their fixed
            // order, third-party clients last (the sort is stable).
            case.rows.sort_by_key(|r| {
                Row::ALL
                    .iter()
                    .position(|row| row.label() == r.row)
                    .unwrap_or(usize::MAX)
            });
        }
        Ok(cases)
    }

    /// A sweep over one transport: at each value of the scenario's delay,
    /// the sweep's rows of cold dials.
    async fn run_sweep(
        &self,
        scenario: &Scenario,
        sweep: &SweepSpec,
        transport: Transport,
    ) -> Result<Vec<SweepPoint>, String> {
        let n = scenario.dials(self.quick);
        let bound = Duration::from_secs(scenario.time_bound_s);
        let swept = scenario.impair.first().ok_or("a sweep needs a delay")?;
        let server = swept.server_addr(&self.lab.addrs);
        let mut points = Vec::new();
        for delay in sweep.delays() {
            let fault = match delay {
                0 => Fault::Clear,
                ms => Fault::Delay {
                    ms,
                    jitter_ms: swept.jitter_ms,
                    direction: swept.direction,
                },
            };
            impair::impair(&self.lab.name, Some(swept.family), server, fault)
                .map_err(|e| format!("impair: {e}"))?;
            let mut rows = Vec::new();
            for (label, strategy, attempt_delay) in sweep.rows() {
                let mut job = self.job(scenario, Row::Cold(strategy), transport, n, 1, bound);
                if let Some(d) = attempt_delay {
                    job.cfg.race.attempt_delay = d;
                }
                let run = self.in_client(vec![job]).await?.remove(0);
                rows.push(SweepRow::of(label, &run.records));
            }
            points.push(SweepPoint {
                delay_ms: delay,
                rows,
            });
        }
        Ok(points)
    }

    /// A timeline scenario over one transport: the oracle's dials (faults
    /// in force), then the timeline with one siprace dialer.
    async fn run_timeline(
        &self,
        scenario: &Scenario,
        kind: TimelineKind,
        case: &mut CaseResult,
    ) -> Result<(), String> {
        let n = scenario.dials(self.quick);
        let bound = Duration::from_secs(scenario.time_bound_s);
        let oracle = self.job(scenario, Row::Oracle, case.transport, n, 1, bound);
        let run = self.in_client(vec![oracle]).await?.remove(0);
        case.rows.push(RowResult {
            row: Row::Oracle.label(),
            dials: run.records,
            server: ServerSeen::default(),
            note: run.note,
            wall_ms: run.wall.as_secs_f64() * 1000.0,
        });
        let job = self.job(scenario, Row::SipraceWarm, case.transport, n, 1, bound);
        let target = job.targets[0].clone();
        let (lab, scenario, tick) = (self.lab.clone(), scenario.clone(), self.tick.clone());
        let (mut row, outcome) = run_in(&self.lab, Role::Client, move || async move {
            timeline::run(&lab, &scenario, kind, job.cfg, &target, &*tick).await
        })
        .await?;
        row.row = Row::SipraceWarm.label();
        case.rows.push(row);
        case.timeline = Some(outcome);
        Ok(())
    }

    /// A connection reuse scenario over one transport (issue #10), each
    /// row one dialer in one runtime (a kept connection's reader lives in
    /// the runtime that kept it): one unmeasured dial, then `n` measured
    /// ones, all with the OPTIONS probe (a reused dial costs one SIP round
    /// trip). `no-reuse` races every dial; `reuse` keeps the first dial's
    /// connection for the rest; over TLS, `virtual-host` keeps a connection
    /// to example.test and then dials vhost.example.test on the same
    /// address, which its certificate does not cover: it must never reuse.
    /// The server counts include the unmeasured dial.
    async fn run_reuse(&self, scenario: &Scenario, case: &mut CaseResult) -> Result<(), String> {
        let n = scenario.dials(self.quick);
        let bound = Duration::from_secs(scenario.time_bound_s);
        let transport = case.transport;
        let mut rows = vec![("no-reuse", false, None), ("reuse", true, None)];
        if transport == Transport::Tls {
            let port = transport.default_port();
            rows.push((
                "virtual-host",
                true,
                Some(format!("sips:{VHOST}.{DOMAIN}:{port}")),
            ));
        }
        for (label, keep, measured_target) in rows {
            // The virtual host's dials all fail (its certificate check);
            // a few show it as well as many.
            let n = if measured_target.is_some() {
                n.min(MAX_VIRTUAL_HOST_DIALS)
            } else {
                n
            };
            let mut job = self.job(scenario, Row::SipraceWarm, transport, n, 1, bound);
            job.label = format!("{}/{transport} {label}", scenario.name);
            job.cfg.connect.probe_streams = true;
            job.cfg.keep = keep.then(KeepConfig::default);
            let first_target = job.targets[0].clone();
            if let Some(t) = measured_target {
                job.targets = vec![t];
            }
            let before = self.responder.get().stats();
            let run = run_in(&self.lab, Role::Client, move || async move {
                let dialer = Dialer::new(job.cfg.clone()).map_err(|e| e.to_string())?;
                let _ = dialer.dial(&first_target).await;
                job.warm = Some(dialer);
                Ok(job.run().await)
            })
            .await?;
            let after = self.settled_stats(scenario).await;
            let server = ServerSeen::delta(&before, &after, transport);
            let opened = server.connections_v6 + server.connections_v4;
            let reused = run.records.iter().filter(|r| r.reused).count();
            let note = format!(
                "{n} measured dials after one unmeasured dial to {DOMAIN}; {reused} reused a kept connection; the server accepted {opened} connection(s) for all {} dials ({:.0} per 1,000 dials)",
                n + 1,
                opened as f64 * 1000.0 / (n + 1) as f64
            );
            case.rows.push(RowResult {
                row: label.to_string(),
                dials: run.records,
                server,
                note: Some(note),
                wall_ms: run.wall.as_secs_f64() * 1000.0,
            });
        }
        Ok(())
    }

    /// The responder's counters once packets still in the delay lines
    /// (e.g. of a cancelled attempt over a delayed path) have arrived, so
    /// that they count for the row that sent them.
    async fn settled_stats(&self, scenario: &Scenario) -> StatsSnapshot {
        tokio::time::sleep(scenario.max_path_delay() + Duration::from_millis(20)).await;
        self.responder.get().stats()
    }

    /// Third-party clients as extra rows (where installed), one dial at a
    /// time: their timing comes from a capture, so nothing else may send.
    async fn client_rows(&self, scenario: &Scenario, case: &mut CaseResult) {
        for client in Client::ALL {
            if !client.transports().contains(&case.transport) {
                continue;
            }
            let (lab, transport) = (self.lab.clone(), case.transport);
            let (n, bound) = (
                scenario.client_dials,
                Duration::from_secs(scenario.client_bound_s),
            );
            let before = self.responder.get().stats();
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                clients::run(&lab, client, transport, DOMAIN, n, bound)
            })
            .await
            .unwrap_or_else(|e| Err(format!("client thread: {e}")));
            let after = self.settled_stats(scenario).await;
            match result {
                Ok(dials) => {
                    for _ in 0..dials.len() {
                        (self.tick)(client.label());
                    }
                    case.rows.push(RowResult {
                        row: client.label().to_string(),
                        dials,
                        server: ServerSeen::delta(&before, &after, case.transport),
                        note: Some(format!(
                            "third-party client ({}), timed by {}; no answer within {} s counts as failed at the bound",
                            client.resolution(),
                            clients::TIMING_SOURCE,
                            scenario.client_bound_s
                        )),
                        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
                    });
                }
                Err(why) => tracing::warn!("{}: {} not run: {why}", case.key(), client.label()),
            }
        }
    }

    fn job(
        &self,
        scenario: &Scenario,
        row: Row,
        transport: Transport,
        n: usize,
        concurrency: usize,
        bound: Duration,
    ) -> RowJob {
        let strategy = match row {
            Row::Oracle | Row::SipraceWarm => Strategy::Siprace,
            Row::Cold(s) => s,
        };
        let mut cfg = DialerConfig::for_strategy(strategy);
        cfg.locate.dns_server = Some(std::net::SocketAddr::new(self.lab.addrs.dns_v6.into(), 53));
        cfg.transports = Some(vec![transport]);
        cfg.connect.tls.ca = vec![PemSource::Pem(self.ca_pem.clone())];
        cfg.connect.tls.system_roots = false;
        // Every TLS dial measures a full handshake: no session resumption.
        cfg.connect.tls.resumption = false;
        let targets = match row {
            Row::Oracle => {
                // The oracle dials the address but verifies the same certificate.
                cfg.sip_domain = Some(DOMAIN.to_string());
                vec![scenario.oracle_target(transport, &self.lab.addrs)]
            }
            _ => scenario.targets(transport),
        };
        RowJob {
            label: format!("{}/{} {}", scenario.name, transport, row.label()),
            cfg,
            targets,
            warm: None,
            n,
            concurrency,
            spacing: Duration::ZERO,
            bound,
            tick: self.tick.clone(),
        }
    }

    /// Dials once from the client namespace and returns the dialer, with
    /// the history and the DNS answers that dial left.
    async fn warm_up(&self, job: &RowJob) -> Result<Dialer, String> {
        let (cfg, target) = (job.cfg.clone(), job.targets[0].clone());
        run_in(&self.lab, Role::Client, move || async move {
            let dialer = Dialer::new(cfg).map_err(|e| e.to_string())?;
            let _ = dialer.dial(&target).await;
            Ok(dialer)
        })
        .await
    }

    /// Runs jobs side by side on one thread in the client namespace.
    async fn in_client(&self, jobs: Vec<RowJob>) -> Result<Vec<RowRun>, String> {
        run_in(&self.lab, Role::Client, move || async move {
            let mut set = JoinSet::new();
            for (i, job) in jobs.into_iter().enumerate() {
                set.spawn(async move { (i, job.run().await) });
            }
            let mut out = Vec::new();
            while let Some(joined) = set.join_next().await {
                out.push(joined.map_err(|e| format!("a dial task failed: {e}"))?);
            }
            out.sort_by_key(|(i, _)| *i);
            Ok(out.into_iter().map(|(_, r)| r).collect())
        })
        .await
    }
}

/// Joins two optional notes of a row.
fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// What the dialers' DNS caches answered in a row, when they answered
/// anything (the zone's TTL allows it).
fn dns_cache_note(dns: DnsCount, ttl: u32) -> Option<String> {
    let DnsCount { queries, cached } = dns;
    (cached > 0).then(|| {
        format!("DNS: {cached} of {queries} answers from the dialer's cache (zone TTL {ttl} s)")
    })
}

/// A current-thread runtime, for a thread that entered a namespace.
fn ns_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

/// Runs the future `make()` returns to completion on a thread inside
/// `role`'s namespace (so every socket it opens is there), without
/// blocking the caller's runtime.
pub(crate) async fn run_in<T, F, Fut>(lab: &Lab, role: Role, make: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
{
    let lab = lab.clone();
    tokio::task::spawn_blocking(move || {
        lab.in_ns(role, move || ns_runtime()?.block_on(make()))
            .map_err(|e| format!("{role:?} namespace: {e}"))?
    })
    .await
    .map_err(|e| format!("{role:?} namespace thread: {e}"))?
}

/// The most measured dials of a reuse scenario's virtual-host row.
const MAX_VIRTUAL_HOST_DIALS: usize = 20;

/// The dials of one row.
struct RowJob {
    label: String,
    cfg: DialerConfig,
    /// Dial `i` goes to `targets[i % len]`.
    targets: Vec<String>,
    /// For the warm row: the dialer all its dials share.
    warm: Option<Dialer>,
    n: usize,
    concurrency: usize,
    /// Pause between dial starts when several run at once, so that their
    /// CPU-bound parts (resolver set-up, DNS) do not queue behind each other.
    spacing: Duration,
    bound: Duration,
    tick: Tick,
}

/// A row's DNS queries, and how many of them the dialers' caches answered
/// (no query sent).
#[derive(Debug, Clone, Copy, Default)]
struct DnsCount {
    queries: usize,
    cached: usize,
}

impl DnsCount {
    fn of(report: &Report) -> DnsCount {
        DnsCount {
            queries: report.dns.len(),
            cached: report.dns.iter().filter(|q| q.cached).count(),
        }
    }

    fn add(&mut self, other: DnsCount) {
        self.queries += other.queries;
        self.cached += other.cached;
    }
}

/// What a row job gives back.
struct RowRun {
    records: Vec<DialRecord>,
    dns: DnsCount,
    wall: Duration,
    /// Set when the job switched to concurrent dials (see [`SLOW_DIAL`]).
    note: Option<String>,
}

/// Rows dial one at a time; once a dial has run this long, the row's other
/// dials start concurrently, [`SEQUENTIAL_SPACING`] apart, so that timeouts
/// of many seconds do not add up. Each dial's latency stays its own.
const SLOW_DIAL: Duration = Duration::from_secs(1);

impl RowJob {
    async fn run(mut self) -> RowRun {
        let started = Instant::now();
        let mut note = None;
        let warm = self.warm.is_some();
        let shared = match self
            .warm
            .clone()
            .map_or_else(|| Dialer::new(self.cfg.clone()), Ok)
        {
            Ok(d) => d,
            Err(e) => {
                let rec = DialRecord::failed(self.bound, e.to_string());
                return RowRun {
                    records: vec![rec; self.n],
                    dns: DnsCount::default(),
                    wall: started.elapsed(),
                    note,
                };
            }
        };
        let deadline = tokio::time::Instant::now() + self.bound;
        let mut records = Vec::with_capacity(self.n);
        let mut dns = DnsCount::default();
        let mut set: JoinSet<(DialRecord, DnsCount)> = JoinSet::new();
        let mut launched = 0;
        while records.len() < self.n {
            while launched < self.n && set.len() < self.concurrency {
                // Cold rows get a fresh dialer (no history) for every dial.
                let dialer = if warm {
                    shared.clone()
                } else {
                    Dialer::new(self.cfg.clone()).expect("checked above")
                };
                let target = self.targets[launched % self.targets.len()].clone();
                let bound = self.bound;
                set.spawn(async move {
                    match dialer.dial(&target).await {
                        Ok(dial) => (
                            DialRecord::from_report(&dial.report, bound),
                            DnsCount::of(&dial.report),
                        ),
                        Err(DialError::Failed(r)) | Err(DialError::Resolution(r)) => {
                            (DialRecord::from_report(&r, bound), DnsCount::of(&r))
                        }
                        Err(e) => (
                            DialRecord::failed(bound, e.to_string()),
                            DnsCount::default(),
                        ),
                    }
                });
                launched += 1;
                if launched < self.n && !self.spacing.is_zero() {
                    tokio::time::sleep(self.spacing).await;
                }
            }
            // One dial at a time until one is slow: then all the others go at once.
            let one_at_a_time = self.concurrency == 1 && self.n > 1;
            let wait_until = if one_at_a_time {
                deadline.min(tokio::time::Instant::now() + SLOW_DIAL)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait_until, set.join_next()).await {
                Ok(Some(Ok((rec, dial_dns)))) => {
                    dns.add(dial_dns);
                    (self.tick)(&self.label);
                    records.push(rec);
                }
                Ok(Some(Err(e))) => records.push(DialRecord::failed(self.bound, e.to_string())),
                Ok(None) => break,
                Err(_) if wait_until < deadline => {
                    self.concurrency = self.n;
                    self.spacing = SEQUENTIAL_SPACING;
                    note = Some(format!(
                        "a dial took over {} s, so from then on its dials ran concurrently, {} ms apart",
                        SLOW_DIAL.as_secs(),
                        SEQUENTIAL_SPACING.as_millis()
                    ));
                }
                Err(_) => {
                    // The time bound: whatever still runs counts as failed at the bound.
                    set.abort_all();
                    while records.len() < self.n {
                        (self.tick)(&self.label);
                        records.push(DialRecord::failed(
                            self.bound,
                            format!("no result within the {} s bound", self.bound.as_secs()),
                        ));
                    }
                }
            }
        }
        RowRun {
            records,
            dns,
            wall: started.elapsed(),
            note,
        }
    }
}
