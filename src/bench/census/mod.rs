//! `siprace bench --census`: how SIP clients behave on a dual-stack
//! network, measured the way "Lazy Eye Inspection" (Sattler et al., IMC
//! 2025) measured browsers. Per client and transport:
//!
//! - **IPv6 delay sweep** (timing lab): the extra IPv6 delay (client →
//!   server, so it adds to the RTT) from 0 to 400 ms in 10 ms steps, one
//!   cold dial per value; which family answered and when. The first value
//!   at which IPv4 won is the client's effective Connection Attempt Delay.
//! - **Resolution Delay** (timing lab): one dial with the AAAA answers
//!   300 ms late, one with the A answers 300 ms late.
//! - **Broken family** (worker labs, run side by side, bounded at 130 s):
//!   one dial with IPv6 blackholed, one with IPv4 blackholed, one with
//!   IPv6 rejected (ICMP port unreachable, TCP RST).
//!
//! Every figure comes from a `tshark` capture in the client namespace
//! ([`crate::bench::clients`]): from the client's first packet (its first
//! DNS query) to the first SIP response (for curl and Python: the TCP
//! SYN-ACK). siprace's strategies are run as `siprace dial` processes and
//! timed the same way. Writes `<out>/<UTC>/census.md`, `census.json` and one
//! sweep plot per client and transport.

pub mod analysis;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::clients::{self, Client, Observed};
use super::output;
use super::records::{DialRecord, SweepPoint, SweepRow};
use super::runner::{Bench, NsService, Tick};
use super::scenario::{Scenario, DOMAIN};
use super::LabGuard;
use crate::endpoint::{Family, Transport};
use crate::lab::dns::{DnsServer, DnsServerConfig};
use crate::lab::impair::{self, Direction, Fault};
use crate::lab::lock::LabLock;
use crate::lab::topology::{self, Lab, LabConfig, Role};
use crate::race::strategy::Strategy;
use analysis::Dial;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound of a dial on a healthy or delayed path.
const SHORT_BOUND: Duration = Duration::from_secs(5);
/// The bound of a dial with a broken family: long enough for a kernel's
/// TCP connect timeout (about 127 s) to show.
const BROKEN_BOUND: Duration = Duration::from_secs(130);
/// How late the delayed DNS answers come in the Resolution Delay dials.
const DNS_LATE_MS: u64 = 300;
/// Worker labs for the broken-family dials (besides the timing lab).
const WORKERS: usize = 4;

/// What `siprace bench --census` runs and where it writes.
#[derive(Debug, Clone)]
pub struct CensusConfig {
    /// Two sweep points (0 and 400 ms), two clients (siprace, SIPp), UDP,
    /// no broken-family dials, with checks that can fail.
    pub quick: bool,
    pub out: PathBuf,
    /// The timing lab's name; worker labs are NAME2.. NAME5.
    pub lab: String,
    /// Only these clients (by label, e.g. `sipp-uac,siprace:rfc8305`).
    pub only: Option<Vec<String>>,
}

/// One broken-family case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Broken {
    V6Blackholed,
    V4Blackholed,
    V6Rejected,
}

impl Broken {
    const ALL: [Broken; 3] = [
        Broken::V6Blackholed,
        Broken::V4Blackholed,
        Broken::V6Rejected,
    ];

    fn family(self) -> Family {
        match self {
            Broken::V4Blackholed => Family::V4,
            _ => Family::V6,
        }
    }

    fn fault(self) -> Fault {
        match self {
            Broken::V6Rejected => Fault::Reject,
            _ => Fault::Blackhole,
        }
    }
}

/// Everything measured of one client over one transport.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub client: String,
    pub version: String,
    pub transport: Transport,
    pub resolution: String,
    /// (extra IPv6 delay ms, the dial).
    pub sweep: Vec<(u32, Dial)>,
    pub aaaa_late: Option<Dial>,
    pub a_late: Option<Dial>,
    pub broken: Vec<(Broken, Dial)>,
    pub summary: Summary,
}

/// The table's cells of a row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub dns_queries: String,
    pub resolution_delay: String,
    pub effective_cad: String,
    pub addresses_tried: String,
    pub interleaving: String,
    pub on_reject: String,
    pub cost_broken_v6: String,
    pub cost_broken_v4: String,
}

impl Row {
    fn broken(&self, b: Broken) -> Option<&Dial> {
        self.broken.iter().find(|(k, _)| *k == b).map(|(_, d)| d)
    }

    fn summarize(&mut self) {
        let healthy = self.sweep.first().map(|(_, d)| d);
        let (tried, interleaving) = analysis::address_order(self.broken(Broken::V6Blackholed));
        self.summary = Summary {
            dns_queries: healthy
                .map(|d| analysis::dns_pattern(&d.queries))
                .unwrap_or_else(|| "not run".into()),
            resolution_delay: analysis::resolution_delay(
                self.aaaa_late.as_ref(),
                self.a_late.as_ref(),
            ),
            effective_cad: analysis::effective_cad(&self.sweep),
            addresses_tried: tried,
            interleaving,
            on_reject: analysis::on_reject(self.broken(Broken::V6Rejected)),
            cost_broken_v6: analysis::cost(self.broken(Broken::V6Blackholed)),
            cost_broken_v4: analysis::cost(self.broken(Broken::V4Blackholed)),
        };
    }
}

/// `census.json`.
#[derive(Debug, Serialize)]
struct CensusFile<'a> {
    schema: u32,
    started_utc: &'a str,
    quick: bool,
    method: &'a str,
    sweep_ms: Vec<u32>,
    bounds_s: (u64, u64),
    dns_late_ms: u64,
    not_run: &'a [(String, String)],
    rows: &'a [Row],
    checks: &'a [output::Check],
    wall_s: f64,
}

/// The method, as the table's caption states it.
pub const METHOD: &str = "Each client runs as its own process in the client namespace of a network-namespace lab (siprace lab) and dials the dual-stack domain example.test (NAPTR → SRV → 3 targets, each with AAAA and A; TTL 0). Timing from a tshark capture on the client namespace's link: from the client's first packet (its first DNS query) to the first SIP response to a port it sent SIP from (curl and Python: the TCP SYN-ACK), kernel timestamps. IPv6 delay sweep: extra delay on client→server IPv6 packets (adds to the RTT) by the lab's shaper, 0–400 ms in 10 ms steps, one cold dial per step (a fresh process; Kamailio restarted per dial); the effective Connection Attempt Delay is the first step at which IPv4 answered. Resolution Delay: the lab DNS answers AAAA (or A) 300 ms late. Broken family: the router drops (blackhole) or rejects (ICMP port unreachable, TCP RST) every packet to the servers of one family; one dial each, bounded at 130 s, run side by side in separate labs. TLS is not covered: the capture cannot see a SIP response inside TLS.";

/// The sweep's values, ms.
fn sweep_points(quick: bool) -> Vec<u32> {
    if quick {
        vec![0, 400]
    } else {
        (0..=400).step_by(10).collect()
    }
}

fn clients_of(quick: bool, only: Option<&[String]>) -> Result<Vec<Client>, String> {
    if let Some(only) = only {
        return only
            .iter()
            .map(|name| {
                Client::CENSUS
                    .into_iter()
                    .find(|c| c.label() == name)
                    .ok_or_else(|| {
                        let all: Vec<&str> = Client::CENSUS.iter().map(|c| c.label()).collect();
                        format!("no census client {name:?} (clients: {})", all.join(", "))
                    })
            })
            .collect();
    }
    Ok(if quick {
        vec![Client::Siprace(Strategy::Siprace), Client::SippUac]
    } else {
        Client::CENSUS.to_vec()
    })
}

/// Quick: the client's first transport only (UDP where it has it).
fn transports_of(client: Client, quick: bool) -> Vec<Transport> {
    let all = client.transports();
    if quick {
        all[..1].to_vec()
    } else {
        all.to_vec()
    }
}

/// The installed version of a client (its Debian or PyPI package's, or siprace's).
fn version(client: Client) -> String {
    let mut cmd = match client {
        Client::Siprace(_) => return env!("CARGO_PKG_VERSION").to_string(),
        Client::Pjsua => {
            let mut c = std::process::Command::new(client.program());
            c.args([
                "-c",
                "import importlib.metadata as m; print(m.version('pjsua2-python'))",
            ]);
            c
        }
        c => {
            let pkg = match c {
                Client::KamailioProxy => "kamailio",
                c => c.package(),
            };
            let mut d = std::process::Command::new("dpkg-query");
            d.args(["-W", "-f=${Version}", pkg]);
            d
        }
    };
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The census zone: NAPTR (UDP, TCP), SRV with three targets, each target
/// with AAAA and A, TTL 0.
fn zone(lab: &Lab) -> Result<String, String> {
    let s = Scenario::parse(
        "name = \"census\"\ndescription = \"census\"\ntransports = [\"udp\", \"tcp\"]\n\
         oracle = { family = \"ipv6\" }\n[dns]\nsrv_targets = 3\nttl = 0\n",
        "census",
    )?;
    Ok(s.zone_for_all(&lab.addrs))
}

/// One lab with its responder and DNS server; torn down when dropped
/// (field order: the services stop before the lab goes).
struct CensusLab {
    dns: Option<NsService<DnsServer>>,
    bench: Option<Bench>,
    lab: Lab,
    _guard: LabGuard,
    _lock: LabLock,
}

impl CensusLab {
    fn up(name: &str) -> Result<CensusLab, String> {
        let lock = LabLock::acquire(name, "siprace bench --census").map_err(|e| e.to_string())?;
        topology::down(name).map_err(|e| e.to_string())?;
        let lab = topology::up(&LabConfig::new(name.to_string())).map_err(|e| e.to_string())?;
        let guard = LabGuard(name.to_string());
        let tick: Tick = Arc::new(|_: &str| {});
        let bench = Bench::start(&lab, false, tick)?;
        let mut l = CensusLab {
            dns: None,
            bench: Some(bench),
            lab,
            _guard: guard,
            _lock: lock,
        };
        l.serve_dns("")?;
        Ok(l)
    }

    /// (Re)starts the lab DNS with the census zone and `faults` (e.g.
    /// `AAAA=delay:300ms`).
    fn serve_dns(&mut self, faults: &str) -> Result<(), String> {
        self.dns = None;
        let cfg =
            DnsServerConfig::parse(&zone(&self.lab)?, faults).map_err(|e| format!("zone: {e}"))?;
        let binds = vec![
            std::net::SocketAddr::new(self.lab.addrs.dns_v6.into(), 53),
            std::net::SocketAddr::new(self.lab.addrs.dns_v4.into(), 53),
        ];
        self.dns = Some(NsService::start(
            &self.lab,
            Role::Dns,
            move || async move {
                DnsServer::start(cfg, &binds)
                    .await
                    .map_err(|e| format!("lab dns: {e}"))
            },
        )?);
        Ok(())
    }

    fn impair(&self, family: Option<Family>, fault: Fault) -> Result<(), String> {
        impair::impair(&self.lab.name, family, None, fault)
            .map(|_| ())
            .map_err(|e| format!("impair: {e}"))
    }
}

impl Drop for CensusLab {
    fn drop(&mut self) {
        self.dns = None;
        self.bench = None;
    }
}

fn to_dial((r, o): (DialRecord, Observed), bound: Duration) -> Dial {
    Dial {
        ok: r.ok,
        family: r.family,
        latency_ms: r.latency_us as f64 / 1000.0,
        error: r.error,
        queries: o.queries,
        answers: r.dns_ms.into_iter().collect(),
        destinations: o
            .destinations
            .into_iter()
            .map(|(a, ms)| (a.to_string(), ms))
            .collect(),
        gave_up_ms: o.gave_up_ms,
        bound_s: bound.as_secs(),
    }
}

/// Runs the census; returns whether every check passed (the quick run's).
pub async fn run(cfg: CensusConfig) -> Result<bool, BoxError> {
    if !clients::capture_available() {
        return Err("tshark not installed (package tshark): it times every census dial".into());
    }
    if let Err(e) = super::priority::measure_at_realtime_priority() {
        eprintln!("siprace bench --census: at ordinary priority ({e})");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let worker_stop = stop.clone();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(run_blocking(&cfg, &worker_stop));
    });
    let outcome = tokio::select! {
        r = rx => r.map_err(|_| BoxError::from("the census thread ended without a result"))?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("siprace bench --census: interrupted: finishing the dials in flight (each is bounded), then tearing the labs down");
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
            return Err("interrupted (Ctrl-C)".into());
        }
    };
    let _ = thread.join();
    outcome.map_err(BoxError::from)
}

fn run_blocking(cfg: &CensusConfig, stop: &AtomicBool) -> Result<bool, String> {
    let started = Instant::now();
    let started_utc = output::utc_stamp(SystemTime::now());
    let mut not_run: Vec<(String, String)> = Vec::new();
    let mut wanted: Vec<(Client, Transport)> = Vec::new();
    let requested = clients_of(cfg.quick, cfg.only.as_deref())?;
    for &client in &requested {
        match clients::unavailable(client) {
            Some(why) => not_run.push((client.label().to_string(), why)),
            None => {
                for t in transports_of(client, cfg.quick) {
                    wanted.push((client, t));
                }
            }
        }
    }
    for (c, why) in &not_run {
        eprintln!("census: {c} not run: {why}");
    }
    let rows: Arc<Mutex<Vec<Row>>> = Arc::new(Mutex::new(
        wanted
            .iter()
            .map(|&(c, t)| Row {
                client: c.label().to_string(),
                version: version(c),
                transport: t,
                resolution: c.resolution().to_string(),
                sweep: Vec::new(),
                aaaa_late: None,
                a_late: None,
                broken: Vec::new(),
                summary: Summary::default(),
            })
            .collect(),
    ));

    // The broken-family dials, side by side in worker labs, while the
    // timing lab runs the sweeps.
    let broken_jobs: Vec<(usize, Client, Transport, Broken)> = if cfg.quick {
        Vec::new()
    } else {
        Broken::ALL
            .iter()
            .flat_map(|&b| {
                wanted
                    .iter()
                    .enumerate()
                    .map(move |(i, &(c, t))| (i, c, t, b))
            })
            .collect()
    };
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        let queue = Arc::new(Mutex::new(broken_jobs));
        for w in 0..WORKERS {
            if queue.lock().map(|q| q.is_empty()).unwrap_or(true) {
                break;
            }
            let (queue, rows, errors) = (queue.clone(), rows.clone(), errors.clone());
            let name = format!("{}{}", cfg.lab, w + 2);
            scope.spawn(move || {
                if let Err(e) = broken_worker(&name, &queue, &rows, stop) {
                    eprintln!("census: worker lab {name}: {e}");
                    if let Ok(mut v) = errors.lock() {
                        v.push(format!("worker lab {name}: {e}"));
                    }
                }
            });
        }
        if let Err(e) = timing_lab(cfg, &wanted, &rows, stop) {
            eprintln!("census: timing lab: {e}");
            if let Ok(mut v) = errors.lock() {
                v.push(format!("timing lab: {e}"));
            }
        }
    });

    let mut rows = Arc::try_unwrap(rows)
        .map_err(|_| "rows still shared".to_string())?
        .into_inner()
        .map_err(|_| "rows lock poisoned".to_string())?;
    for r in rows.iter_mut() {
        r.summarize();
    }
    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    let checks = if cfg.quick {
        quick_checks(&rows, &requested)
    } else {
        Vec::new()
    };
    let dir = cfg.out.join(&started_utc);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let wall_s = started.elapsed().as_secs_f64();
    let md = markdown(
        &started_utc,
        cfg.quick,
        &rows,
        &not_run,
        &errors,
        &checks,
        wall_s,
    );
    println!("{md}");
    std::fs::write(dir.join("census.md"), &md).map_err(|e| e.to_string())?;
    let file = CensusFile {
        schema: 1,
        started_utc: &started_utc,
        quick: cfg.quick,
        method: METHOD,
        sweep_ms: sweep_points(cfg.quick),
        bounds_s: (SHORT_BOUND.as_secs(), BROKEN_BOUND.as_secs()),
        dns_late_ms: DNS_LATE_MS,
        not_run: &not_run,
        rows: &rows,
        checks: &checks,
        wall_s,
    };
    let json = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("census.json"), json).map_err(|e| e.to_string())?;
    plots(&dir, &rows);
    println!("census written to {}", dir.display());
    if !errors.is_empty() {
        return Err(format!("the census is incomplete: {}", errors.join("; ")));
    }
    Ok(checks.iter().all(|c| c.passed))
}

/// The timing lab: every sweep, then the Resolution Delay dials.
fn timing_lab(
    cfg: &CensusConfig,
    wanted: &[(Client, Transport)],
    rows: &Mutex<Vec<Row>>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut lab = CensusLab::up(&cfg.lab)?;
    let points = sweep_points(cfg.quick);
    for (i, &(client, transport)) in wanted.iter().enumerate() {
        eprintln!(
            "census: sweep {client}/{transport} ({} points)",
            points.len()
        );
        let dials = clients::run_series(
            &lab.lab,
            client,
            transport,
            DOMAIN,
            points.len(),
            SHORT_BOUND,
            |k| {
                if stop.load(Ordering::SeqCst) {
                    return Err("interrupted".into());
                }
                let fault = match points[k] {
                    0 => Fault::Clear,
                    ms => Fault::Delay {
                        ms,
                        jitter_ms: 0,
                        direction: Direction::ToServer,
                    },
                };
                lab.impair(Some(Family::V6), fault)
            },
        );
        lab.impair(None, Fault::Clear)?;
        let dials = dials.map_err(|e| format!("{client}/{transport}: {e}"))?;
        let sweep: Vec<(u32, Dial)> = points
            .iter()
            .copied()
            .zip(dials.into_iter().map(|d| to_dial(d, SHORT_BOUND)))
            .collect();
        if let Ok(mut r) = rows.lock() {
            r[i].sweep = sweep;
        }
    }
    if cfg.quick {
        return Ok(());
    }
    for late in ["AAAA", "A"] {
        lab.serve_dns(&format!("{late}=delay:{DNS_LATE_MS}ms"))?;
        for (i, &(client, transport)) in wanted.iter().enumerate() {
            if stop.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            eprintln!("census: {late} late {client}/{transport}");
            let mut dials =
                clients::run_series(&lab.lab, client, transport, DOMAIN, 1, SHORT_BOUND, |_| {
                    Ok(())
                })
                .map_err(|e| format!("{client}/{transport}: {e}"))?;
            let d = to_dial(dials.remove(0), SHORT_BOUND);
            if let Ok(mut r) = rows.lock() {
                if late == "AAAA" {
                    r[i].aaaa_late = Some(d);
                } else {
                    r[i].a_late = Some(d);
                }
            }
        }
    }
    Ok(())
}

/// A worker lab: takes broken-family jobs off the queue until it is empty.
#[allow(clippy::type_complexity)]
fn broken_worker(
    name: &str,
    queue: &Mutex<Vec<(usize, Client, Transport, Broken)>>,
    rows: &Mutex<Vec<Row>>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let lab = CensusLab::up(name)?;
    // Bounded: each round takes one job off a finite queue.
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        let job = queue.lock().map_err(|_| "queue lock poisoned")?.pop();
        let Some((i, client, transport, broken)) = job else {
            return Ok(());
        };
        eprintln!("census: {broken:?} {client}/{transport} in lab {name}");
        lab.impair(Some(broken.family()), broken.fault())?;
        let result =
            clients::run_series(&lab.lab, client, transport, DOMAIN, 1, BROKEN_BOUND, |_| {
                Ok(())
            });
        lab.impair(None, Fault::Clear)?;
        let d = match result {
            Ok(mut dials) => to_dial(dials.remove(0), BROKEN_BOUND),
            Err(e) => Dial {
                error: Some(e),
                latency_ms: BROKEN_BOUND.as_secs_f64() * 1e3,
                bound_s: BROKEN_BOUND.as_secs(),
                ..Dial::default()
            },
        };
        if let Ok(mut r) = rows.lock() {
            r[i].broken.push((broken, d));
        }
    }
}

/// The quick run's checks: siprace switches family between 0 and 400 ms,
/// and SIPp (first getaddrinfo result only) never does.
/// A verdict on a sweep: (extra IPv6 delay ms, dial) pairs in.
type SweepVerdict = fn(&[(u32, Dial)]) -> bool;

fn quick_checks(rows: &[Row], requested: &[Client]) -> Vec<output::Check> {
    let cases: [(Client, &str, SweepVerdict); 2] = [
        (
            Client::Siprace(Strategy::Siprace),
            "census: siprace switches from IPv6 (+0 ms) to IPv4 (+400 ms)",
            analysis::switches,
        ),
        (
            Client::SippUac,
            "census: SIPp (no Happy Eyeballs) never switches: IPv6 at +0 and +400 ms",
            analysis::never_switches,
        ),
    ];
    // A client left out with --only has no check; one that was asked for
    // and did not run (not installed) fails its check.
    cases
        .iter()
        .filter(|(c, _, _)| requested.contains(c))
        .map(|&(c, what, verdict)| {
            let row = rows.iter().find(|r| r.client == c.label());
            output::Check {
                what: what.into(),
                passed: row.is_some_and(|r| verdict(&r.sweep)),
                detail: row
                    .map(|r| sweep_detail(&r.sweep))
                    .unwrap_or_else(|| "not run".into()),
            }
        })
        .collect()
}

fn sweep_detail(sweep: &[(u32, Dial)]) -> String {
    let v: Vec<String> = sweep
        .iter()
        .map(|(ms, d)| {
            format!(
                "+{ms} ms: {} {:.0} ms",
                d.family.map(|f| f.as_str()).unwrap_or("failed"),
                d.latency_ms
            )
        })
        .collect();
    v.join(", ")
}

/// Markdown cells: no pipes or line breaks from peers' text.
fn cell(s: &str) -> String {
    s.replace('|', "/").replace(['\n', '\r'], " ")
}

fn markdown(
    started_utc: &str,
    quick: bool,
    rows: &[Row],
    not_run: &[(String, String)],
    errors: &[String],
    checks: &[output::Check],
    wall_s: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# SIP client census {started_utc}\n\n{} run, {} rows, {:.0} s.\n\n**Method.** {METHOD}\n",
        if quick { "Quick" } else { "Full" },
        rows.len(),
        wall_s
    );
    let _ = writeln!(
        s,
        "Columns: *DNS queries* of a healthy dial, each type at its first query (`+` sent within {} ms of the previous, `→N→` N ms later, `×n` sent n times); *Resolution Delay*: what it did with AAAA {DNS_LATE_MS} ms late and with A {DNS_LATE_MS} ms late; *effective CAD*: the first extra IPv6 delay (10 ms steps) at which IPv4 answered; *tried (v6 broken)*: addresses it sent to with IPv6 blackholed, up to its answer (families in order); *interleaving*: whether the families alternate (\"other family second\": only two addresses were tried, the second of the other family); *v6 rejected*: with ICMP port unreachable / TCP RST for IPv6; *cost*: setup time with one family blackholed (bound 130 s).\n",
        analysis::TOGETHER_MS
    );
    let _ = writeln!(
        s,
        "| client | version | transport | DNS queries | Resolution Delay | effective CAD | tried (v6 broken) | interleaving | v6 rejected | cost, broken v6 | cost, broken v4 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let m = &r.summary;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.client),
            cell(&r.version),
            r.transport,
            cell(&m.dns_queries),
            cell(&m.resolution_delay),
            cell(&m.effective_cad),
            cell(&m.addresses_tried),
            cell(&m.interleaving),
            cell(&m.on_reject),
            cell(&m.cost_broken_v6),
            cell(&m.cost_broken_v4)
        );
    }
    if !not_run.is_empty() {
        let _ = writeln!(s, "\nNot run:\n");
        for (c, why) in not_run {
            let _ = writeln!(s, "- {c}: {}", cell(why));
        }
    }
    let _ = writeln!(s, "\nHow each client resolves:\n");
    let mut seen: Vec<&str> = Vec::new();
    for r in rows {
        if !seen.contains(&r.client.as_str()) {
            seen.push(&r.client);
            let _ = writeln!(s, "- {}: {}", r.client, cell(&r.resolution));
        }
    }
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            let case = |what: String, d: &Dial| {
                d.error
                    .as_ref()
                    .filter(|_| !d.ok)
                    .map(|e| format!("- {}/{} {what}: {}", r.client, r.transport, cell(e)))
            };
            let mut v: Vec<String> = Vec::new();
            v.extend(
                r.sweep
                    .iter()
                    .filter_map(|(ms, d)| case(format!("+{ms} ms"), d)),
            );
            v.extend(
                r.aaaa_late
                    .iter()
                    .filter_map(|d| case("AAAA late".into(), d)),
            );
            v.extend(r.a_late.iter().filter_map(|d| case("A late".into(), d)));
            v.extend(
                r.broken
                    .iter()
                    .filter_map(|(b, d)| case(format!("{b:?}"), d)),
            );
            v
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed dials (client output's tail):\n");
        for f in failures.iter().take(200) {
            let _ = writeln!(s, "{f}");
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(s, "\n**Incomplete:**\n");
        for e in errors {
            let _ = writeln!(s, "- {}", cell(e));
        }
    }
    if !checks.is_empty() {
        let _ = writeln!(s, "\n## Checks\n");
        for c in checks {
            let _ = writeln!(
                s,
                "- {} {} ({})",
                if c.passed { "PASS" } else { "FAIL" },
                c.what,
                c.detail
            );
        }
    }
    s
}

/// One plot per client and transport: its family and latency against the
/// IPv6 delay, siprace's default strategy and RFC 8305 overlaid.
fn plots(dir: &std::path::Path, rows: &[Row]) {
    let overlay = [
        Client::Siprace(Strategy::Siprace).label(),
        Client::Siprace(Strategy::Rfc8305).label(),
    ];
    for r in rows {
        let mut lines: Vec<&Row> = vec![r];
        for o in overlay {
            if let Some(x) = rows
                .iter()
                .find(|x| x.client == o && x.transport == r.transport && x.client != r.client)
            {
                lines.push(x);
            }
        }
        let points: Vec<SweepPoint> = r
            .sweep
            .iter()
            .enumerate()
            .map(|(k, (ms, _))| SweepPoint {
                delay_ms: *ms,
                rows: lines
                    .iter()
                    .filter_map(|l| l.sweep.get(k))
                    .zip(lines.iter())
                    .map(|((_, d), l)| SweepRow::of(l.client.clone(), &[dial_record(d)]))
                    .collect(),
            })
            .collect();
        let file = dir.join(format!(
            "census-{}-{}.svg",
            r.client.replace(':', "-"),
            r.transport
        ));
        let key = format!("census {} {}", r.client, r.transport);
        if let Err(e) = super::sweep::plot(&file, &key, &points) {
            eprintln!("census: plot {}: {e}", file.display());
        }
    }
}

/// The bench's record of a census dial (for the sweep plot).
fn dial_record(d: &Dial) -> DialRecord {
    DialRecord {
        ok: d.ok,
        latency_us: (d.latency_ms * 1000.0) as u64,
        family: d.family,
        transport: None,
        attempts: d.destinations.len(),
        abandoned: d.destinations.len().saturating_sub(1),
        dns_ms: Default::default(),
        error: d.error.clone(),
        // Every census dial is a fresh process: nothing to reuse.
        reused: false,
    }
}
