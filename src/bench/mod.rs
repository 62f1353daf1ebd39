//! `siprace bench`: builds the lab, runs the scenario matrix with every
//! strategy side by side, prints a comparison and writes the results.
//!
//! - [`scenario`]: the TOML scenario format (`bench-scenarios/*.toml`).
//! - [`runner`]: runs a scenario in the lab and records every dial.
//! - [`timeline`]: scenarios that change the network while one dialer dials.
//! - [`sweep`]: the cold attempt delay sweep (the IPv6 delay from 0 to 400 ms).
//! - [`output`]: percentiles, tables, checks, `.hgrm` files and SVG plots.
//! - [`census`]: `--census`, the table of SIP clients' dual-stack behaviour.

pub mod census;
pub mod clients;
pub mod outbound;
pub mod output;
pub mod priority;
pub mod records;
pub mod runner;
pub mod scenario;
pub mod sweep;
pub mod timeline;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::lab::lock::LabLock;
use crate::lab::topology::{self, LabConfig};
use output::{CaseStats, Check};
use records::CaseResult;
use runner::{Bench, Row};
use scenario::Scenario;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What `siprace bench` runs and where it writes (the command line fills it;
/// its defaults are the CLI's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// The reduced set (scenarios marked `quick`, few dials).
    pub quick: bool,
    /// The directory of the scenario files.
    pub scenarios: PathBuf,
    /// Only these scenarios (by name); `None` runs the set (`quick` or all).
    pub only: Option<Vec<String>>,
    /// Where to write `<UTC timestamp>/`.
    pub out: PathBuf,
    /// The lab's name (its namespaces are sr-NAME-*); a stale lab of this
    /// name is removed first.
    pub lab: String,
    /// Also copy the summary to `<out>/README.md`.
    pub publish: bool,
    /// Also run every selected scenario over SCTP (needs a kernel with SCTP).
    pub sctp: bool,
    /// Run the census of SIP clients ([`census`]) instead of the scenarios.
    pub census: bool,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            quick: false,
            scenarios: PathBuf::from("bench-scenarios"),
            only: None,
            out: PathBuf::from("results"),
            lab: "bench".to_string(),
            publish: false,
            sctp: false,
            census: false,
        }
    }
}

/// Everything `results.json` holds.
#[derive(Debug, Serialize)]
struct Results<'a> {
    schema: u32,
    started_utc: String,
    quick: bool,
    machine: Machine,
    parameters: Parameters,
    cases: &'a [CaseStats],
    /// The "registered, then a family breaks" cases, with their event and
    /// request logs.
    outbound: &'a [outbound::OutboundCase],
    checks: &'a [Check],
    wall_s: f64,
}

#[derive(Debug, Serialize)]
struct Machine {
    kernel: String,
    cpus: usize,
    cpu_model: String,
    siprace_version: &'static str,
}

#[derive(Debug, Serialize)]
struct Parameters {
    rows: Vec<String>,
    resolution_delay_ms: u64,
    attempt_delay_ms: u64,
    min_attempt_delay_ms: u64,
    max_attempt_delay_ms: u64,
    max_concurrent: usize,
    deadline_ms: u64,
    sequential_attempt_timeout_ms: u64,
    scenarios: Vec<Scenario>,
}

fn machine() -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    Machine {
        kernel,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        siprace_version: env!("CARGO_PKG_VERSION"),
    }
}

fn parameters(scenarios: &[Scenario]) -> Parameters {
    use crate::race::strategy::Strategy;
    let race = Strategy::Siprace.race_config();
    let seq = Strategy::Sequential.race_config();
    let ms = |d: Duration| d.as_millis() as u64;
    Parameters {
        rows: Row::ALL.iter().map(|r| r.label()).collect(),
        resolution_delay_ms: race.resolution_delay.map(ms).unwrap_or(0),
        attempt_delay_ms: ms(race.attempt_delay),
        min_attempt_delay_ms: ms(race.min_attempt_delay),
        max_attempt_delay_ms: ms(race.max_attempt_delay),
        max_concurrent: race.max_concurrent,
        deadline_ms: ms(race.deadline),
        sequential_attempt_timeout_ms: seq.attempt_timeout.map(ms).unwrap_or(0),
        scenarios: scenarios.to_vec(),
    }
}

/// Tears the lab down when dropped: on success, error, panic or Ctrl-C.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = topology::down(&self.0) {
            eprintln!("siprace bench: tearing down lab {:?}: {e}", self.0);
        }
    }
}

/// Resolves when the process receives SIGTERM (never, if that cannot be watched).
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Runs the benchmark; returns whether every acceptance check passed.
pub async fn run(args: BenchConfig) -> Result<bool, BoxError> {
    if args.census {
        return census::run(census::CensusConfig {
            quick: args.quick,
            out: args.out.clone(),
            lab: args.lab.clone(),
            only: args.only.clone(),
        })
        .await;
    }
    let started = Instant::now();
    let started_utc = output::utc_stamp(SystemTime::now());
    let mut scenarios = scenario::load_dir(&args.scenarios)?;
    if let Some(only) = &args.only {
        if let Some(missing) = only
            .iter()
            .find(|n| !scenarios.iter().any(|s| &s.name == *n))
        {
            return Err(format!(
                "no scenario named {missing:?} in {}",
                args.scenarios.display()
            )
            .into());
        }
        scenarios.retain(|s| only.contains(&s.name));
    } else if args.quick {
        scenarios.retain(|s| s.quick);
    }
    let mut scenarios: Vec<Scenario> = scenarios.iter().map(|s| s.for_run(args.quick)).collect();
    // "Registered, then a family breaks" runs on its own (outbound::run_scenario).
    let (outbound_scenarios, mut scenarios): (Vec<Scenario>, Vec<Scenario>) =
        scenarios.drain(..).partition(|s| s.outbound.is_some());
    if args.sctp {
        if !crate::connect::sctp::kernel_supported() {
            return Err(format!(
                "--sctp: {} (netns-scripts/sctp-vm.sh runs the benchmark in a VM that has it)",
                crate::connect::sctp::UNSUPPORTED
            )
            .into());
        }
        for s in &mut scenarios {
            if !s.transports.contains(&crate::endpoint::Transport::Sctp) {
                s.transports.push(crate::endpoint::Transport::Sctp);
            }
        }
    }

    // Before the lab's shaper is started, so that it inherits the priority.
    if let Err(e) = priority::measure_at_realtime_priority() {
        eprintln!("siprace bench: at ordinary priority ({e}): on a loaded machine the latencies include waits for a CPU");
    }
    // The lab is ours while this lock is held (until after the guard below
    // has torn it down): a second bench with the same lab name is refused,
    // naming this process, instead of tearing the lab down under us.
    let lock = LabLock::acquire(&args.lab, "siprace bench")?;
    if let Some(pid) = lock.took_over_from {
        eprintln!(
            "siprace bench: lab {:?} was last used by PID {pid}, which has ended: taking it over",
            args.lab
        );
    }
    // A stale lab of our own name (e.g. after a SIGKILL) is ours to remove.
    topology::down(&args.lab)?;
    let lab = topology::up(&LabConfig::new(args.lab.clone()))?;
    let _guard = LabGuard(args.lab.clone());

    let total: u64 = scenarios
        .iter()
        .map(|s| {
            let rows = s.dials(args.quick) * s.transports.len() * Row::ALL.len();
            let clients = if s.clients && !args.quick {
                let per_transport = clients::Client::ALL.len() * s.client_dials;
                s.transports.iter().filter(|t| t.as_str() != "tls").count() * per_transport
            } else {
                0
            };
            (rows + clients) as u64
        })
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} dials, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let tick_bar = bar.clone();
    let tick: runner::Tick = Arc::new(move |label: &str| {
        tick_bar.set_message(label.to_string());
        tick_bar.inc(1);
    });

    let bench = Bench::start(&lab, args.quick, tick)?;
    let mut cases: Vec<CaseResult> = Vec::new();
    let mut outbound_cases: Vec<outbound::OutboundCase> = Vec::new();
    let work = async {
        for s in &scenarios {
            // Printed around the bar, and also when stderr is no terminal (CI).
            bar.suspend(|| eprintln!("scenario {}: {}", s.name, s.description));
            let mut done = bench.run_scenario(s).await?;
            cases.append(&mut done);
        }
        for s in &outbound_scenarios {
            let Some(spec) = &s.outbound else { continue };
            bar.suspend(|| eprintln!("scenario {}: {}", s.name, s.description));
            let mut done = outbound::run_scenario(&lab, s, spec, args.quick).await?;
            outbound_cases.append(&mut done);
        }
        Ok::<(), String>(())
    };
    let outcome = tokio::select! {
        r = work => r.map_err(BoxError::from),
        _ = tokio::signal::ctrl_c() => Err("interrupted (Ctrl-C): the lab is being torn down".into()),
        _ = terminated() => Err("terminated (SIGTERM): the lab is being torn down".into()),
    };
    bench.stop().await;
    bar.finish_and_clear();
    outcome?;

    let stats: Vec<CaseStats> = cases.iter().map(output::case_stats).collect();
    let mut checks = output::checks(&stats);
    checks.extend(outbound::report::checks(&outbound_cases));
    let dir = args.out.join(&started_utc);
    std::fs::create_dir_all(&dir)?;

    let mut summary = format!(
        "# siprace bench {}\n\n{} run, {} case(s), {:.0} s.",
        started_utc,
        if args.quick { "Quick" } else { "Full" },
        stats.len() + outbound_cases.len(),
        started.elapsed().as_secs_f64()
    );
    if !stats.is_empty() {
        summary += " Latency = from the start of a dial to a usable connection (UDP: the OPTIONS answer). \
         `+p50`/`+p95`: over the oracle's (a direct dial to the working address, no DNS); `×p50`: ratio to it.";
    }
    summary += "\n\n";
    for c in &stats {
        summary += &output::case_table(c);
        summary += "\n";
    }
    if !outbound_cases.is_empty() {
        summary += "## Registered, then a family breaks (SIP Outbound failover)\n\n";
        summary += &outbound::report::definitions();
        summary += "\n";
        for c in &outbound_cases {
            summary += &outbound::report::case_table(c);
            summary += "\n";
        }
    }
    if !checks.is_empty() {
        summary += "## Acceptance checks (figures of this run compared with each other)\n\n";
        for c in &checks {
            summary += &format!(
                "- {} {} ({})\n",
                if c.passed { "PASS" } else { "FAIL" },
                c.what,
                c.detail
            );
        }
    }
    println!("{summary}");

    for c in &stats {
        for r in &c.rows {
            let file = dir.join(format!("{}-{}-{}.hgrm", c.scenario, c.transport, r.row));
            std::fs::write(file, output::hgrm(&r.histogram))?;
        }
        if let Some(points) = &c.sweep {
            let svg = dir.join(format!("sweep-{}-{}.svg", c.scenario, c.transport));
            if let Err(e) = sweep::plot(&svg, &c.key(), points) {
                eprintln!("siprace bench: plot {}: {e}", svg.display());
            }
        }
        let svg = dir.join(format!("cdf-{}-{}.svg", c.scenario, c.transport));
        if let Err(e) = output::plot_cdf(&svg, c) {
            eprintln!("siprace bench: plot {}: {e}", svg.display());
        }
    }
    for c in &outbound_cases {
        let svg = dir.join(format!("outbound-{}-{}.svg", c.scenario, c.transport));
        if let Err(e) = outbound::report::plot_timeline(&svg, c) {
            eprintln!("siprace bench: plot {}: {e}", svg.display());
        }
    }
    if !stats.is_empty() {
        if let Err(e) = output::plot_overview(&dir.join("overview.svg"), &stats) {
            eprintln!("siprace bench: overview plot: {e}");
        }
    }
    let results = Results {
        schema: 1,
        started_utc: started_utc.clone(),
        quick: args.quick,
        machine: machine(),
        parameters: parameters(&[scenarios.clone(), outbound_scenarios.clone()].concat()),
        cases: &stats,
        outbound: &outbound_cases,
        checks: &checks,
        wall_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(dir.join("summary.md"), &summary)?;
    if args.publish {
        let readme = format!(
            "# Latest full benchmark run\n\nWritten by `siprace bench --publish`; the files of this run are in `{started_utc}/`.\n\n{summary}"
        );
        std::fs::write(args.out.join("README.md"), readme)?;
    }
    println!("results written to {}", dir.display());
    Ok(checks.iter().all(|c| c.passed))
}
