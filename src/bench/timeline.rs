//! Scenarios that change the network while one dialer keeps dialling
//! (`timeline = "..."` in a scenario file), for what a row of independent
//! dials cannot show: how history follows a network that changes.
//!
//! - `v6-repaired`: the scenario's faults (IPv6 broken) are in force, the
//!   dialer dials every `interval_ms`; after `repair_after_s` the faults are
//!   cleared. Figure: the time from the repair to the first dial won over
//!   IPv6 (history's convergence; the goal is 60 s at most).
//! - `network-change`: the dialer learns on network A (the faults in
//!   force), then the client moves to another uplink (another default
//!   gateway on its link, so the routes the dialer identifies its network
//!   by change) where nothing is impaired. History learnt on A must not be
//!   applied there: every dial on B goes to IPv6 first and wins over it.
//!   Then the client moves back to A (faults again): A's history applies
//!   again, so its first dial is as fast as A's warm dials were.
//!
//! Every step runs on one thread in the client namespace (the lab's
//! commands are processes of their own, so they can be started from it).

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::bench::records::{DialRecord, RowResult, ServerSeen, TimelineOutcome};
use crate::bench::scenario::{Scenario, TimelineKind};
use crate::dialer::{DialError, Dialer, DialerConfig, NETWORK_RECHECK};
use crate::endpoint::Family;
use crate::lab::impair::{self, Fault};
use crate::lab::sys;
use crate::lab::topology::{Lab, Role, HOST_IF, RTR_CLIENT_IF};

/// The goal of `v6-repaired`: back on IPv6 within this long of the repair.
pub const REPAIR_GOAL: Duration = Duration::from_secs(60);

/// How long `v6-repaired` keeps dialling after the repair at most.
const AFTER_REPAIR_BOUND: Duration = Duration::from_secs(90);

/// Dials per phase of `network-change`.
const PHASE_DIALS: usize = 3;

/// The second gateway `network-change` moves the client to: another
/// address of the router on the client's link (`::fe` in its prefix).
fn second_gateway(lab: &Lab) -> Ipv6Addr {
    let mut segments = lab.addrs.router_client_v6.segments();
    segments[7] = 0xfe;
    Ipv6Addr::from(segments)
}

/// One dial of a timeline.
struct Step {
    at: Instant,
    record: DialRecord,
    network: Option<String>,
}

async fn dial(dialer: &Dialer, target: &str, bound: Duration, tick: &Tick, label: &str) -> Step {
    let at = Instant::now();
    let (record, network) = match dialer.dial(target).await {
        Ok(d) => (
            DialRecord::from_report(&d.report, bound),
            d.report.network.clone(),
        ),
        Err(DialError::Failed(r)) | Err(DialError::Resolution(r)) => {
            (DialRecord::from_report(&r, bound), r.network.clone())
        }
        Err(e) => (DialRecord::failed(bound, e.to_string()), None),
    };
    tick(label);
    Step {
        at,
        record,
        network,
    }
}

/// The row of a timeline's dials.
fn row(label: &str, steps: &[Step], started: Instant, note: String) -> RowResult {
    RowResult {
        row: label.to_string(),
        dials: steps.iter().map(|s| s.record.clone()).collect(),
        server: ServerSeen::default(),
        note: Some(note),
        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Called after every dial (the progress bar).
pub type Tick = dyn Fn(&str) + Send + Sync;

/// Runs `kind` with a dialer of `cfg` dialling `target`; call it on a
/// thread in the client namespace, with the scenario's faults in force.
pub(crate) async fn run(
    lab: &Lab,
    scenario: &Scenario,
    kind: TimelineKind,
    cfg: DialerConfig,
    target: &str,
    tick: &Tick,
) -> Result<(RowResult, TimelineOutcome), String> {
    let timeline = Timeline {
        lab,
        scenario,
        dialer: Dialer::new(cfg).map_err(|e| e.to_string())?,
        target,
        tick,
        label: format!("{} siprace-warm", scenario.name),
        bound: Duration::from_secs(scenario.time_bound_s),
    };
    match kind {
        TimelineKind::V6Repaired => v6_repaired(&timeline).await,
        TimelineKind::NetworkChange => network_change(&timeline).await,
    }
}

/// What every step of a timeline needs: the lab, the scenario, and the
/// one dialer with its target.
struct Timeline<'a> {
    lab: &'a Lab,
    scenario: &'a Scenario,
    dialer: Dialer,
    target: &'a str,
    tick: &'a Tick,
    label: String,
    /// A dial that fails counts at this bound.
    bound: Duration,
}

impl Timeline<'_> {
    /// One dial of the timeline, now.
    async fn dial(&self) -> Step {
        dial(
            &self.dialer,
            self.target,
            self.bound,
            self.tick,
            &self.label,
        )
        .await
    }
}

async fn v6_repaired(t: &Timeline<'_>) -> Result<(RowResult, TimelineOutcome), String> {
    let (lab, scenario, label) = (t.lab, t.scenario, t.label.as_str());
    let interval = Duration::from_millis(scenario.interval_ms);
    let started = Instant::now();
    let repair_at = started + Duration::from_secs(scenario.repair_after_s);
    let mut repaired: Option<Instant> = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut back = None;
    while started.elapsed() < Duration::from_secs(scenario.repair_after_s) + AFTER_REPAIR_BOUND {
        if repaired.is_none() && Instant::now() >= repair_at {
            impair::impair(&lab.name, None, None, Fault::Clear)
                .map_err(|e| format!("repairing: {e}"))?;
            repaired = Some(Instant::now());
        }
        let step = t.dial().await;
        let on_v6 = step.record.family == Some(Family::V6);
        let after_repair = repaired.is_some_and(|r| step.at >= r);
        let at = step.at;
        steps.push(step);
        if on_v6 && after_repair {
            back = repaired.map(|r| at.duration_since(r));
            break;
        }
        let next = at + interval;
        let next = if repaired.is_none() {
            next.min(repair_at)
        } else {
            next
        };
        tokio::time::sleep_until(next.into()).await;
    }
    let failed = steps.iter().filter(|s| !s.record.ok).count();
    let detail = match back {
        Some(t) => format!(
            "back on IPv6 {:.1} s after the repair ({} dials every {} ms, {} failed)",
            t.as_secs_f64(),
            steps.len(),
            scenario.interval_ms,
            failed
        ),
        None => format!(
            "not back on IPv6 within {} s of the repair ({} failed dials)",
            AFTER_REPAIR_BOUND.as_secs(),
            failed
        ),
    };
    let outcome = TimelineOutcome {
        what: format!(
            "siprace back on IPv6 within {} s of the repair, no failed dial",
            REPAIR_GOAL.as_secs()
        ),
        passed: back.is_some_and(|t| t <= REPAIR_GOAL) && failed == 0,
        detail: detail.clone(),
    };
    let note = format!(
        "one dialer, a dial every {} ms; IPv6 repaired after {} s; {detail}",
        scenario.interval_ms, scenario.repair_after_s
    );
    Ok((row(label, &steps, started, note), outcome))
}

/// Moves the client's IPv6 default route to [`second_gateway`] (`to_b`) or
/// back to the lab's router address. The second gateway is the same
/// router (another address on its client-side interface), with a static
/// neighbour entry as the lab has for the first, so only the route the
/// client sees changes.
fn move_client(lab: &Lab, to_b: bool) -> Result<(), String> {
    let (cli, rtr) = (lab.ns(Role::Client), lab.ns(Role::Router));
    let first = lab.addrs.router_client_v6;
    let second = second_gateway(lab);
    let ipn =
        |ns: &str, args: &str| sys::ipn(ns, args).map_err(|e| format!("ip -n {ns} {args}: {e}"));
    if to_b {
        ipn(
            &rtr,
            &format!("-6 addr replace {second}/64 dev {RTR_CLIENT_IF} nodad"),
        )?;
        let neigh = ipn(&cli, &format!("-6 neigh show {first} dev {HOST_IF}"))?;
        let lladdr = neigh
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .ok_or_else(|| format!("no neighbour entry for {first}: {neigh:?}"))?
            .to_string();
        ipn(
            &cli,
            &format!("-6 neigh replace {second} lladdr {lladdr} dev {HOST_IF} nud permanent"),
        )?;
        ipn(
            &cli,
            &format!("-6 route replace default via {second} dev {HOST_IF}"),
        )?;
    } else {
        ipn(
            &cli,
            &format!("-6 route replace default via {first} dev {HOST_IF}"),
        )?;
        let _ = ipn(&cli, &format!("-6 neigh del {second} dev {HOST_IF}"));
        let _ = ipn(
            &rtr,
            &format!("-6 addr del {second}/64 dev {RTR_CLIENT_IF}"),
        );
    }
    Ok(())
}

/// Applies the scenario's faults again (network A).
fn impair_as_scenario(lab: &Lab, scenario: &Scenario) -> Result<(), String> {
    for imp in &scenario.impair {
        let server = imp.server_addr(&lab.addrs);
        impair::impair(&lab.name, Some(imp.family), server, imp.fault()?)
            .map_err(|e| format!("impair: {e}"))?;
    }
    Ok(())
}

async fn network_change(t: &Timeline<'_>) -> Result<(RowResult, TimelineOutcome), String> {
    let (lab, scenario, label) = (t.lab, t.scenario, t.label.as_str());
    let started = Instant::now();
    let mut phases: Vec<Vec<Step>> = Vec::new();
    // The dialer notices a new network at its next dial at most
    // NETWORK_RECHECK after the change (it is not told).
    let settle = NETWORK_RECHECK + Duration::from_millis(100);
    let result = async {
        // A: learn (faults in force).
        let mut a = Vec::new();
        for _ in 0..PHASE_DIALS {
            a.push(t.dial().await);
        }
        phases.push(a);
        // B: another uplink, nothing impaired.
        move_client(lab, true)?;
        impair::impair(&lab.name, None, None, Fault::Clear).map_err(|e| format!("clear: {e}"))?;
        tokio::time::sleep(settle).await;
        let mut b = Vec::new();
        for _ in 0..PHASE_DIALS {
            b.push(t.dial().await);
        }
        phases.push(b);
        // Back on A, faults again.
        move_client(lab, false)?;
        impair_as_scenario(lab, scenario)?;
        tokio::time::sleep(settle).await;
        let mut back = Vec::new();
        for _ in 0..PHASE_DIALS {
            back.push(t.dial().await);
        }
        phases.push(back);
        Ok::<(), String>(())
    }
    .await;
    // Whatever happened, the client goes back to its first uplink.
    let restored = move_client(lab, false);
    result?;
    restored?;

    let [a, b, back] = &phases[..] else {
        return Err("network-change: a phase is missing".into());
    };
    let net = |steps: &[Step]| {
        steps
            .iter()
            .map(|s| s.network.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let id = |n: &str| n.split(' ').next().unwrap_or_default().to_string();
    let (net_a, net_b, net_back) = (net(a), net(b), net(back));
    let one_network = |nets: &[String]| nets.windows(2).all(|w| id(&w[0]) == id(&w[1]));
    let distinct = one_network(&net_a)
        && one_network(&net_b)
        && one_network(&net_back)
        && id(&net_a[0]) != id(&net_b[0])
        && id(&net_a[0]) == id(&net_back[0]);
    let b_on_v6 = b
        .iter()
        .all(|s| s.record.ok && s.record.family == Some(Family::V6) && s.record.attempts == 1);
    let ms = |s: &Step| s.record.latency_us as f64 / 1000.0;
    let a_warm = a.iter().skip(1).map(ms).fold(0.0, f64::max);
    let back_first = ms(&back[0]);
    // Back on A, A's history applies at once: no head start for IPv6 again.
    let reused = back[0].record.ok
        && back[0].record.family == Some(Family::V4)
        && back_first <= a_warm + 30.0;
    let detail = format!(
        "A {} then B {} then A again {}; dials on B over IPv6 with one attempt: {}; \
         first dial back on A {:.1} ms (A's warm dials at most {:.1} ms)",
        id(&net_a[0]),
        id(&net_b[0]),
        id(&net_back[0]),
        b_on_v6,
        back_first,
        a_warm
    );
    let outcome = TimelineOutcome {
        what: "history learnt on network A is not applied on B (B dials IPv6 first and wins), and applies again back on A".into(),
        passed: distinct && b_on_v6 && reused,
        detail: detail.clone(),
    };
    let steps: Vec<Step> = phases.into_iter().flatten().collect();
    let note = format!(
        "one dialer: {PHASE_DIALS} dials on network A (faults in force), {PHASE_DIALS} on B (another IPv6 gateway, nothing impaired), {PHASE_DIALS} on A again; {detail}"
    );
    Ok((row(label, &steps, started, note), outcome))
}
