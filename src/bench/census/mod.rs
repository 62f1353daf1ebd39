//! `siprace bench --census`: how SIP clients behave on a dual-stack
//! network, measured the way "Lazy Eye Inspection" (Sattler et al., IMC
//! 2025) measured browsers. Per client and transport:
//!
//! - **IPv6 delay sweep** (timing lab): the extra IPv6 delay (client →
//!   server, so it adds to the RTT) from 0 to 400 ms in 10 ms steps, one
//!   cold dial per value; which family answered and when. The first value
//!   at which IPv4 won is the client's effective Connection Attempt Delay.
//! - **Resolution Delay** (timing lab): one dial with the AAAA answers
//!   0, 25, 50, 100, 200 and 300 ms late each (the effective Resolution
//!   Delay), one with the A answers 300 ms late.
//! - **NAPTR fall-over** (worker labs): NAPTR prefers TCP, whose targets
//!   reject every connection; one dial with no transport given.
//! - **Broken family** (worker labs, run side by side, bounded at 130 s):
//!   one dial with IPv6 blackholed, one with IPv4 blackholed, one with
//!   IPv6 rejected (ICMP port unreachable, TCP RST).
//!
//! Every figure comes from a `tshark` capture in the client namespace
//! ([`crate::bench::clients`]): from the client's first packet (its first
//! DNS query) to the first SIP response (for curl and Python: the TCP
//! SYN-ACK; over TLS: the server's ServerHello). siprace's strategies are run as `siprace dial` processes and
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
use crate::lab::topology::{self, Lab, LabAddrs, LabConfig, Role};
use crate::race::strategy::Strategy;
use analysis::Dial;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound of a dial on a healthy or delayed path.
const SHORT_BOUND: Duration = Duration::from_secs(5);
/// The bound of a dial with a broken family: long enough for a kernel's
/// TCP connect timeout (about 127 s) to show.
const BROKEN_BOUND: Duration = Duration::from_secs(130);
/// How late the A answers come in the "A late" dial.
const DNS_LATE_MS: u64 = 300;
/// The Resolution Delay sweep: how late the AAAA answers come, ms.
const RD_SWEEP_MS: [u32; 6] = [0, 25, 50, 100, 200, 300];
/// The NAPTR fall-over case: the port of the `_sip._tcp` SRV records,
/// where nothing listens, so every TCP connection is rejected (RST) on
/// both families while UDP works.
const DEAD_TCP_PORT: u16 = 5062;
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
    /// Whether it is run toward the domain with no transport given (the
    /// NAPTR fall-over dial).
    pub picks_transport: bool,
    /// (extra IPv6 delay ms, the dial).
    pub sweep: Vec<(u32, Dial)>,
    /// The Resolution Delay sweep: (AAAA answers' delay ms, the dial).
    pub aaaa_sweep: Vec<(u32, Dial)>,
    pub a_late: Option<Dial>,
    pub broken: Vec<(Broken, Dial)>,
    /// The NAPTR fall-over dial (no transport given; the same for every
    /// transport row of the client).
    pub fallover: Option<Dial>,
    pub summary: Summary,
}

/// The table's cells of a row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub dns_queries: String,
    pub resolution_delay: String,
    pub effective_rd: String,
    pub effective_cad: String,
    pub naptr_fallover: String,
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
                self.aaaa_sweep.last().map(|(_, d)| d),
                self.a_late.as_ref(),
            ),
            effective_rd: analysis::effective_rd(&self.aaaa_sweep),
            effective_cad: analysis::effective_cad(&self.sweep),
            naptr_fallover: match (&self.fallover, healthy) {
                (Some(d), _) => analysis::naptr_fallover(Some(d)),
                // Its fall-over dial was due but did not run (a worker lab failed).
                (None, _) if self.picks_transport => "not run".into(),
                // Given its transport: whether it asks for NAPTR at all.
                (None, Some(h)) if h.queries.iter().any(|(t, _)| t == "NAPTR") => {
                    "not run (always given its transport)".into()
                }
                (None, Some(_)) => "no NAPTR".into(),
                (None, None) => "not run".into(),
            },
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
    rd_sweep_ms: &'a [u32],
    not_run: &'a [(String, String)],
    rows: &'a [Row],
    checks: &'a [output::Check],
    wall_s: f64,
}

/// The method, as the table's caption states it.
pub const METHOD: &str = "Each client runs as its own process in the client namespace of a network-namespace lab (siprace lab) and dials the dual-stack domain example.test (NAPTR → SRV → 3 targets, each with AAAA and A; TTL 0). Timing from a tshark capture on the client namespace's link: from the client's first packet (its first DNS query) to the first SIP response to a port it sent SIP from (curl and Python: the TCP SYN-ACK; over TLS: the ServerHello, see below), kernel timestamps. IPv6 delay sweep: extra delay on client→server IPv6 packets (adds to the RTT) by the lab's shaper, 0–400 ms in 10 ms steps, one cold dial per step (a fresh process; Kamailio restarted per dial); the effective Connection Attempt Delay is the first step at which IPv4 answered. Resolution Delay: the lab DNS answers AAAA 0, 25, 50, 100, 200 and 300 ms late (one dial each; the restarted DNS server holds the AAAA answers back, the A answers come at once), and A 300 ms late (one dial); the effective Resolution Delay is read off the capture as the time from the A answer to the first IPv4 attempt. NAPTR fall-over: NAPTR prefers TCP, whose SRV records name a port where nothing listens (the kernel answers every SYN with RST, both families), UDP works; one dial with no transport given (clients that can be told so: siprace, sofia-sip, pjsua2, baresip), bounded at 130 s. Broken family: the router drops (blackhole) or rejects (ICMP port unreachable, TCP RST) every packet to the servers of one family; one dial each, bounded at 130 s, run side by side in separate labs. TLS (the `_sips._tcp` SRV targets, port 5061, where the bench's responder serves TLS with a throwaway certificate for example.test): the capture cannot see a SIP response inside TLS, so a TLS dial is timed from the client's first packet to the first TLS ServerHello (the server's first handshake record, dissected by tshark from the record headers without keys) on a connection the client opened. No TLS client verifies the certificate (siprace --insecure, curl -k, baresip with sip_verify_server no, pjsua2 at its default); verification comes after the ServerHello, so it does not change the figure. Not run over TLS: SIPp (Debian's build says \"To use a TLS transport you must compile SIPp with OpenSSL\"), sofia-sip's sip-options (\"transport tls is not supported\"), sipsak, Kamailio as a proxy (its TLS client would need a TLS configuration of its own), linphonec (UDP only: its stdin commands open no TCP or TLS listening point), the Python references.";

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
    let all = client.census_transports();
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

/// Which census zone the lab DNS serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// NAPTR (UDP, TCP, TLS), SRV with three targets, each target with
    /// AAAA and A, TTL 0 (the responder serves TLS on every target).
    Healthy,
    /// The same with NAPTR preferring TCP, whose SRV records name
    /// [`DEAD_TCP_PORT`] (the NAPTR fall-over case).
    TcpPreferredDead,
}

fn zone(addrs: &LabAddrs, which: Zone) -> Result<String, String> {
    let transports = match which {
        Zone::Healthy => "[\"udp\", \"tcp\", \"tls\"]",
        Zone::TcpPreferredDead => "[\"tcp\", \"udp\"]",
    };
    let s = Scenario::parse(
        &format!(
            "name = \"census\"\ndescription = \"census\"\ntransports = {transports}\n\
             oracle = {{ family = \"ipv6\" }}\n[dns]\nsrv_targets = 3\nttl = 0\n"
        ),
        "census",
    )?;
    let zone = s.zone_for_all(addrs);
    match which {
        Zone::Healthy => Ok(zone),
        Zone::TcpPreferredDead => dead_tcp_port(&zone),
    }
}

/// The zone with every `_sip._tcp` SRV record's port set to [`DEAD_TCP_PORT`].
/// An error if there is none: the fall-over would be measured against a
/// working TCP (the zone's format changed under the rewrite).
fn dead_tcp_port(zone: &str) -> Result<String, String> {
    let mut rewritten = 0;
    let lines: Vec<String> = zone
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "_sip._tcp IN SRV priority weight port target"
            if f.len() == 7 && f[0] == "_sip._tcp" && f[2] == "SRV" {
                rewritten += 1;
                format!("{} IN SRV {} {} {DEAD_TCP_PORT} {}", f[0], f[3], f[4], f[6])
            } else {
                line.to_string()
            }
        })
        .collect();
    if rewritten == 0 {
        return Err(
            "NAPTR fall-over zone: no `_sip._tcp IN SRV` record to point at the dead port".into(),
        );
    }
    Ok(lines.join("\n") + "\n")
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
        l.serve_dns(Zone::Healthy, "")?;
        Ok(l)
    }

    /// (Re)starts the lab DNS with a census zone and `faults` (e.g.
    /// `AAAA=delay:300ms`).
    fn serve_dns(&mut self, which: Zone, faults: &str) -> Result<(), String> {
        restart_dns(&mut self.dns, &self.lab, which, faults)
    }

    fn impair(&self, family: Option<Family>, fault: Fault) -> Result<(), String> {
        impair::impair(&self.lab.name, family, None, fault)
            .map(|_| ())
            .map_err(|e| format!("impair: {e}"))
    }
}

/// Stops the lab DNS in `dns`, if any, and starts it again with a census
/// zone and `faults` (a free function, so that it can run while the lab is
/// borrowed by a dial series).
fn restart_dns(
    dns: &mut Option<NsService<DnsServer>>,
    lab: &Lab,
    which: Zone,
    faults: &str,
) -> Result<(), String> {
    *dns = None;
    let zone = zone(&lab.addrs, which)?;
    let binds = vec![
        std::net::SocketAddr::new(lab.addrs.dns_v6.into(), 53),
        std::net::SocketAddr::new(lab.addrs.dns_v4.into(), 53),
    ];
    // The stopped server's sockets may not be closed yet when its thread
    // has ended: a bind that finds the port in use is tried again, a
    // bounded number of times.
    let mut last = String::new();
    for _ in 0..DNS_RESTART_TRIES {
        let cfg = DnsServerConfig::parse(&zone, faults).map_err(|e| format!("zone: {e}"))?;
        let binds = binds.clone();
        match NsService::start(lab, Role::Dns, move || async move {
            DnsServer::start(cfg, &binds)
                .await
                .map_err(|e| format!("lab dns: {e}"))
        }) {
            Ok(service) => {
                *dns = Some(service);
                return Ok(());
            }
            Err(e) if e.contains("in use") => {
                last = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// How often [`restart_dns`] tries to bind the lab DNS's port (100 ms apart).
const DNS_RESTART_TRIES: usize = 30;

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
        transport: r.transport,
        first_tcp_ms: o.first_tcp_ms,
        first_udp_ms: o.first_udp_ms,
    }
}

/// A sweep's dials (bounded at [`SHORT_BOUND`]), each with its point (ms).
fn at_points(points: &[u32], dials: Vec<(DialRecord, Observed)>) -> Vec<(u32, Dial)> {
    points
        .iter()
        .copied()
        .zip(dials.into_iter().map(|d| to_dial(d, SHORT_BOUND)))
        .collect()
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
                picks_transport: c.picks_transport(),
                sweep: Vec::new(),
                aaaa_sweep: Vec::new(),
                a_late: None,
                broken: Vec::new(),
                fallover: None,
                summary: Summary::default(),
            })
            .collect(),
    ));

    // The broken-family dials, side by side in worker labs, while the
    // timing lab runs the sweeps.
    let broken_jobs: Vec<Job> = if cfg.quick {
        Vec::new()
    } else {
        let mut jobs: Vec<Job> = Broken::ALL
            .iter()
            .flat_map(|&b| {
                wanted
                    .iter()
                    .enumerate()
                    .map(move |(i, &(c, t))| (i, c, t, Case::Broken(b)))
            })
            .collect();
        // One NAPTR fall-over dial per client that can pick its transport,
        // at its first row (copied to its other rows afterwards).
        let mut seen: Vec<Client> = Vec::new();
        for (i, &(c, t)) in wanted.iter().enumerate() {
            if c.picks_transport() && !seen.contains(&c) {
                seen.push(c);
                jobs.push((i, c, t, Case::Fallover));
            }
        }
        jobs
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
    // A client's fall-over dial holds for all its transport rows.
    for i in 0..rows.len() {
        if rows[i].fallover.is_none() {
            let client = rows[i].client.clone();
            rows[i].fallover = rows
                .iter()
                .find(|r| r.client == client && r.fallover.is_some())
                .and_then(|r| r.fallover.clone());
        }
    }
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
        rd_sweep_ms: &RD_SWEEP_MS,
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
        let sweep = at_points(&points, dials);
        if let Ok(mut r) = rows.lock() {
            r[i].sweep = sweep;
        }
    }
    if cfg.quick {
        return Ok(());
    }
    // The Resolution Delay sweep: one series per client and transport, the
    // lab DNS restarted with the next AAAA delay before each dial.
    for (i, &(client, transport)) in wanted.iter().enumerate() {
        eprintln!(
            "census: AAAA late {client}/{transport} ({} points)",
            RD_SWEEP_MS.len()
        );
        let CensusLab { dns, lab: l, .. } = &mut lab;
        let dials = clients::run_series(
            l,
            client,
            transport,
            DOMAIN,
            RD_SWEEP_MS.len(),
            SHORT_BOUND,
            |k| {
                if stop.load(Ordering::SeqCst) {
                    return Err("interrupted".into());
                }
                let faults = match RD_SWEEP_MS[k] {
                    0 => String::new(),
                    ms => format!("AAAA=delay:{ms}ms"),
                };
                restart_dns(dns, l, Zone::Healthy, &faults)
            },
        );
        // Kept before the DNS is restored, so that a failed restore does
        // not hide the dials or their error.
        let stored = dials
            .map(|dials| {
                let sweep = at_points(&RD_SWEEP_MS, dials);
                if let Ok(mut r) = rows.lock() {
                    r[i].aaaa_sweep = sweep;
                }
            })
            .map_err(|e| format!("{client}/{transport}: {e}"));
        let restored = lab.serve_dns(Zone::Healthy, "");
        stored?;
        restored?;
    }
    lab.serve_dns(Zone::Healthy, &format!("A=delay:{DNS_LATE_MS}ms"))?;
    for (i, &(client, transport)) in wanted.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        eprintln!("census: A late {client}/{transport}");
        let mut dials =
            clients::run_series(&lab.lab, client, transport, DOMAIN, 1, SHORT_BOUND, |_| {
                Ok(())
            })
            .map_err(|e| format!("{client}/{transport}: {e}"))?;
        let d = to_dial(dials.remove(0), SHORT_BOUND);
        if let Ok(mut r) = rows.lock() {
            r[i].a_late = Some(d);
        }
    }
    Ok(())
}

/// A worker lab's job: (row, client, transport, case).
type Job = (usize, Client, Transport, Case);

/// What a worker lab dial tests.
#[derive(Debug, Clone, Copy)]
enum Case {
    Broken(Broken),
    /// NAPTR prefers TCP, whose targets reject every connection.
    Fallover,
}

/// A worker lab: takes broken-family jobs off the queue until it is empty.
fn broken_worker(
    name: &str,
    queue: &Mutex<Vec<Job>>,
    rows: &Mutex<Vec<Row>>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut lab = CensusLab::up(name)?;
    // Bounded: each round takes one job off a finite queue.
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        let job = queue.lock().map_err(|_| "queue lock poisoned")?.pop();
        let Some((i, client, transport, case)) = job else {
            return Ok(());
        };
        let broken = match case {
            Case::Broken(b) => b,
            Case::Fallover => {
                eprintln!("census: NAPTR fall-over {client} in lab {name}");
                lab.serve_dns(Zone::TcpPreferredDead, "")?;
                let result = clients::run_transport_choice(&lab.lab, client, DOMAIN, BROKEN_BOUND);
                let d = match result {
                    Ok(d) => to_dial(d, BROKEN_BOUND),
                    Err(e) => failed_dial(e),
                };
                // Kept before the DNS is restored: a failed restore must
                // not hide the dial.
                if let Ok(mut r) = rows.lock() {
                    r[i].fallover = Some(d);
                }
                lab.serve_dns(Zone::Healthy, "")?;
                continue;
            }
        };
        eprintln!("census: {broken:?} {client}/{transport} in lab {name}");
        lab.impair(Some(broken.family()), broken.fault())?;
        let result =
            clients::run_series(&lab.lab, client, transport, DOMAIN, 1, BROKEN_BOUND, |_| {
                Ok(())
            });
        let d = match result {
            Ok(mut dials) => to_dial(dials.remove(0), BROKEN_BOUND),
            Err(e) => failed_dial(e),
        };
        // Kept before the impairment is cleared: a failed clear must not
        // hide the dial.
        if let Ok(mut r) = rows.lock() {
            r[i].broken.push((broken, d));
        }
        lab.impair(None, Fault::Clear)?;
    }
}

/// A worker dial that could not be run.
fn failed_dial(error: String) -> Dial {
    Dial {
        error: Some(error),
        latency_ms: BROKEN_BOUND.as_secs_f64() * 1e3,
        bound_s: BROKEN_BOUND.as_secs(),
        ..Dial::default()
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

/// Markdown cells from peers' and clients' text: every control character
/// escaped (the crate's terminal-safe form: line breaks, ESC sequences and
/// the like show as `\n`, `\x1b`, …), and no pipes to break the table.
fn cell(s: &str) -> String {
    crate::report::terminal_safe(s).replace('|', "/")
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
        "Columns: *DNS queries* of a healthy dial, each type at its first query (`+` sent within {} ms of the previous, `→N→` N ms later, `×n` sent n times); *Resolution Delay*: what it did with AAAA {aaaa_late} ms late (the sweep's last dial) and with A {DNS_LATE_MS} ms late; *effective RD*: from the AAAA delay sweep ({rd_steps} ms, one dial each): how long it waits for a late AAAA answer once the A answer is in (the median of first IPv4 attempt − A answer at the delays where it tried IPv4 first), \"waits for AAAA\" if it tried IPv6 first at every delay (\"waits for AAAA …, then IPv4\": it tried IPv4 first at every delay, but only once the late AAAA answer was in; \"IPv4 always, no wait\": at once after the A answer); *effective CAD*: the first extra IPv6 delay (10 ms steps) at which IPv4 answered; *tried (v6 broken)*: addresses it sent to with IPv6 blackholed, up to its answer (families in order); *interleaving*: whether the families alternate (\"other family second\": only two addresses were tried, the second of the other family); *v6 rejected*: with ICMP port unreachable / TCP RST for IPv6; *cost*: setup time with one family blackholed (bound 130 s); *NAPTR fall-over*: one dial toward sip:example.test with no transport given, NAPTR preferring TCP whose SRV targets name port {DEAD_TCP_PORT}, where nothing listens (every TCP connection rejected by RST, both families) while UDP works: whether it falls over to UDP and the setup time (bound 130 s); \"no NAPTR\": it sent no NAPTR query (given its transport, or no NAPTR support).\n",
        analysis::TOGETHER_MS,
        rd_steps = RD_SWEEP_MS.map(|m| m.to_string()).join(", "),
        aaaa_late = RD_SWEEP_MS[RD_SWEEP_MS.len() - 1]
    );
    let _ = writeln!(
        s,
        "| client | version | transport | DNS queries | Resolution Delay | effective RD | effective CAD | tried (v6 broken) | interleaving | v6 rejected | cost, broken v6 | cost, broken v4 | NAPTR fall-over |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let m = &r.summary;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.client),
            cell(&r.version),
            r.transport,
            cell(&m.dns_queries),
            cell(&m.resolution_delay),
            cell(&m.effective_rd),
            cell(&m.effective_cad),
            cell(&m.addresses_tried),
            cell(&m.interleaving),
            cell(&m.on_reject),
            cell(&m.cost_broken_v6),
            cell(&m.cost_broken_v4),
            cell(&m.naptr_fallover)
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
    // The fall-over dial is one per client, copied to each of its rows:
    // listed once.
    let mut fallover_listed: Vec<&str> = Vec::new();
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
                r.aaaa_sweep
                    .iter()
                    .filter_map(|(ms, d)| case(format!("AAAA +{ms} ms"), d)),
            );
            if !fallover_listed.contains(&r.client.as_str()) {
                fallover_listed.push(&r.client);
                v.extend(
                    r.fallover
                        .iter()
                        .filter_map(|d| case("NAPTR fall-over".into(), d)),
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallover_zone_moves_only_the_tcp_srv_records() {
        let zone = "_sip._tcp IN SRV 10 10 5060 sip1.example.test.\n\
                    _sip._udp IN SRV 10 10 5060 sip1.example.test.\n\
                    @ IN NAPTR 10 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.example.test.\n";
        let dead = dead_tcp_port(zone).expect("a _sip._tcp record");
        let lines: Vec<&str> = dead.lines().collect();
        assert_eq!(
            lines[0],
            format!("_sip._tcp IN SRV 10 10 {DEAD_TCP_PORT} sip1.example.test.")
        );
        assert_eq!(lines[1], "_sip._udp IN SRV 10 10 5060 sip1.example.test.");
        assert_eq!(lines[2], zone.lines().nth(2).unwrap());
        assert!(dead_tcp_port("_sip._udp IN SRV 10 10 5060 sip1.example.test.\n").is_err());
    }

    #[test]
    fn cells_escape_every_control_character_of_client_output() {
        assert_eq!(
            cell("a|b\nc\x1b[31mred\x07\u{9b}"),
            "a/b\\nc\\x1b[31mred\\x07\\u{9b}"
        );
        assert_eq!(cell("plain → text"), "plain → text");
    }

    #[test]
    fn a_failed_fallover_dial_is_listed_once_per_client() {
        let mut fallover = failed_dial("no response within 130 s".into());
        fallover.queries = vec![("NAPTR".into(), 0.0)];
        let rows: Vec<Row> = [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .map(|transport| Row {
                client: "pjsua2".into(),
                version: "2".into(),
                transport,
                resolution: String::new(),
                picks_transport: true,
                sweep: Vec::new(),
                aaaa_sweep: Vec::new(),
                a_late: None,
                broken: Vec::new(),
                fallover: Some(fallover.clone()),
                summary: Summary::default(),
            })
            .collect();
        let md = markdown("t", false, &rows, &[], &[], &[], 1.0);
        assert_eq!(
            md.matches("NAPTR fall-over: no response").count(),
            1,
            "{md}"
        );
    }

    #[test]
    fn the_real_fallover_zone_points_every_tcp_srv_record_at_the_dead_port() {
        let addrs = LabAddrs::standard();
        let healthy = zone(&addrs, Zone::Healthy).expect("healthy zone");
        let dead = zone(&addrs, Zone::TcpPreferredDead).expect("the zone has _sip._tcp records");
        let tcp_srv = |z: &str| -> Vec<String> {
            z.lines()
                .filter(|l| l.split_whitespace().next() == Some("_sip._tcp"))
                .map(str::to_string)
                .collect()
        };
        let records = tcp_srv(&dead);
        assert!(!records.is_empty());
        for r in &records {
            assert_eq!(
                r.split_whitespace().nth(5),
                Some(DEAD_TCP_PORT.to_string().as_str()),
                "{r}"
            );
        }
        assert!(!tcp_srv(&healthy)
            .iter()
            .any(|r| r.contains(&format!(" {DEAD_TCP_PORT} "))));
    }
}
