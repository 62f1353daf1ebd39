//! Turning dial records into numbers, tables, files and plots.
//!
//! `<out>/<UTC timestamp>/` receives:
//! - `results.json`: `{ "schema": 1, "started_utc", "quick", "machine": {..},
//!   "parameters": {..}, "cases": [ { "scenario", "transport", "description",
//!   "rows": [ { "row", "note", "dials", "ok", "failed", "p50_ms", "p95_ms",
//!   "p99_ms" (null below 100 dials), "max_ms", "overhead_p50_ms", "overhead_p95_ms", "ratio_p50",
//!   "ratio_p95", "ipv6_share", "extra_attempts_per_dial", "abandoned_per_dial",
//!   "server": { "requests_v6", "requests_v4", "connections_v6", "connections_v4" },
//!   "dns_first_answer_ms": { "NAPTR": p50, ... }, "latencies_ms": [ in dial order ],
//!   "wall_ms" } ] } ],
//!   "checks": [ { "what", "passed", "detail" } ] }`;
//! - `summary.md`: the tables printed at the end of the run;
//! - `<scenario>-<transport>-<row>.hgrm`: HdrHistogram percentile distributions (ms);
//! - `cdf-<scenario>-<transport>.svg`: a latency CDF per case;
//! - `overview.svg`: p95 overhead over the oracle per case and strategy.
//!
//! Plots give each strategy a colour of a colour-blind-safe palette, a
//! dash pattern and a marker (rows with the same figures stay visible),
//! and label log axes 1 / 10 / 1k / 10k.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bench::records::{
    CaseResult, DialRecord, RowResult, ServerSeen, SweepPoint, TimelineOutcome,
};
use crate::bench::sweep;
use crate::endpoint::Family;

/// Latency figures of one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowStats {
    pub row: String,
    pub note: Option<String>,
    pub dials: usize,
    pub ok: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Absent (null) below [`MIN_DIALS_FOR_P99`] dials: with fewer, the
    /// "99th percentile" is just the slowest dial or two.
    pub p99_ms: Option<f64>,
    pub max_ms: f64,
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p95_ms: Option<f64>,
    pub ratio_p50: Option<f64>,
    pub ratio_p95: Option<f64>,
    /// Share of successful dials won over IPv6.
    pub ipv6_share: f64,
    /// Attempts beyond the first, per dial.
    pub extra_attempts_per_dial: f64,
    pub abandoned_per_dial: f64,
    pub server: ServerSeen,
    /// Median arrival of the first answer per record type, ms.
    pub dns_first_answer_ms: BTreeMap<String, f64>,
    /// Every dial's latency, in the order the dials finished (one at a
    /// time: the order they were made).
    pub latencies_ms: Vec<f64>,
    pub wall_ms: f64,
    /// Dials a kept connection carried (connection reuse, issue #10).
    pub reused: usize,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// One case's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CaseStats {
    pub scenario: String,
    pub transport: String,
    pub description: String,
    pub rows: Vec<RowStats>,
    /// What a timeline scenario showed.
    pub timeline: Option<TimelineOutcome>,
    /// A sweep scenario's figures.
    pub sweep: Option<Vec<SweepPoint>>,
}

impl CaseStats {
    pub fn key(&self) -> String {
        format!("{}/{}", self.scenario, self.transport)
    }

    pub fn row(&self, label: &str) -> Option<&RowStats> {
        self.rows.iter().find(|r| r.row == label)
    }
}

/// The fewest dials a row needs for a p99: at least one dial beyond it.
pub const MIN_DIALS_FOR_P99: u64 = 100;

/// Latencies in µs from 1 µs to one hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn row_stats(r: &RowResult) -> RowStats {
    let mut h = new_histogram();
    for d in &r.dials {
        h.saturating_record(d.latency_us.max(1));
    }
    let ok: Vec<&DialRecord> = r.dials.iter().filter(|d| d.ok).collect();
    let v6 = ok.iter().filter(|d| d.family == Some(Family::V6)).count();
    let n = r.dials.len().max(1) as f64;
    let mut dns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for d in &r.dials {
        for (t, at) in &d.dns_ms {
            dns.entry(t.clone()).or_default().push(*at);
        }
    }
    RowStats {
        row: r.row.clone(),
        note: r.note.clone(),
        dials: r.dials.len(),
        ok: ok.len(),
        failed: r.dials.len() - ok.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: (h.len() >= MIN_DIALS_FOR_P99).then(|| ms(h.value_at_quantile(0.99))),
        max_ms: ms(h.max()),
        overhead_p50_ms: None,
        overhead_p95_ms: None,
        ratio_p50: None,
        ratio_p95: None,
        ipv6_share: if ok.is_empty() {
            0.0
        } else {
            v6 as f64 / ok.len() as f64
        },
        extra_attempts_per_dial: r
            .dials
            .iter()
            .map(|d| d.attempts.saturating_sub(1) as f64)
            .sum::<f64>()
            / n,
        abandoned_per_dial: r.dials.iter().map(|d| d.abandoned as f64).sum::<f64>() / n,
        server: r.server,
        dns_first_answer_ms: dns
            .into_iter()
            .filter_map(|(t, v)| median(v).map(|m| (t, m)))
            .collect(),
        latencies_ms: r.dials.iter().map(|d| ms(d.latency_us)).collect(),
        wall_ms: r.wall_ms,
        reused: r.dials.iter().filter(|d| d.reused).count(),
        histogram: h,
    }
}

/// Computes every row's figures and the overhead over the case's oracle.
pub fn case_stats(c: &CaseResult) -> CaseStats {
    let mut rows: Vec<RowStats> = c.rows.iter().map(row_stats).collect();
    // Overheads only mean something against an oracle whose every dial worked.
    if let Some(oracle) = rows
        .iter()
        .find(|r| r.row == "oracle" && r.failed == 0)
        .cloned()
    {
        for r in rows.iter_mut() {
            r.overhead_p50_ms = Some(r.p50_ms - oracle.p50_ms);
            r.overhead_p95_ms = Some(r.p95_ms - oracle.p95_ms);
            r.ratio_p50 = (oracle.p50_ms > 0.0).then(|| r.p50_ms / oracle.p50_ms);
            r.ratio_p95 = (oracle.p95_ms > 0.0).then(|| r.p95_ms / oracle.p95_ms);
        }
    }
    CaseStats {
        scenario: c.scenario.clone(),
        transport: c.transport.to_string(),
        description: c.description.clone(),
        rows,
        timeline: c.timeline.clone(),
        sweep: c.sweep.clone(),
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    }
}

/// The markdown table of one case (also what the terminal shows).
pub fn case_table(c: &CaseStats) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "### {} — {}\n", c.key(), c.description);
    if c.rows.is_empty() {
        // A sweep: its own table, no rows of the usual kind.
        if let Some(points) = &c.sweep {
            let _ = writeln!(t, "{}", sweep::table(&c.key(), points, 50));
        }
        return t;
    }
    let _ = writeln!(
        t,
        "| strategy | ok/dials | p50 ms | p95 ms | p99 ms | max ms | +p50 ms | +p95 ms | ×p50 | IPv6 wins | extra attempts/dial | server req v6/v4 |"
    );
    let _ = writeln!(
        t,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &c.rows {
        let _ = writeln!(
            t,
            "| {} | {}/{} | {:.1} | {:.1} | {} | {:.1} | {} | {} | {} | {:.0}% | {:.2} | {}/{} |",
            r.row,
            r.ok,
            r.dials,
            r.p50_ms,
            r.p95_ms,
            opt(r.p99_ms, 1),
            r.max_ms,
            opt(r.overhead_p50_ms, 1),
            opt(r.overhead_p95_ms, 1),
            opt(r.ratio_p50, 2),
            r.ipv6_share * 100.0,
            r.extra_attempts_per_dial,
            r.server.requests_v6 + r.server.connections_v6,
            r.server.requests_v4 + r.server.connections_v4,
        );
    }
    if let Some(points) = &c.sweep {
        let _ = writeln!(t, "\n{}", sweep::table(&c.key(), points, 50));
    }
    let notes: Vec<String> = c
        .rows
        .iter()
        .filter_map(|r| r.note.as_ref().map(|n| format!("{}: {n}", r.row)))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(t, "\n_{}_", notes.join("; "));
    }
    if c.rows.iter().any(|r| r.p99_ms.is_none()) {
        let _ = writeln!(
            t,
            "\n_p99 \"-\": fewer than {MIN_DIALS_FOR_P99} dials, too few for a 99th percentile._"
        );
    }
    t
}

/// An acceptance check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

/// A check that also requires every dial of the rows it compares to have
/// connected: a failed dial must never pass as a fast one.
fn compare(what: String, rows: &[&RowStats], holds: bool, detail: String) -> Check {
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.failed > 0)
        .map(|r| format!("{} failed {} of {} dials", r.row, r.failed, r.dials))
        .collect();
    let detail = if failed.is_empty() {
        detail
    } else {
        format!("{detail}; {}", failed.join(", "))
    };
    Check {
        what,
        passed: holds && failed.is_empty(),
        detail,
    }
}

/// The acceptance criteria, compared within this run only (ratios and
/// differences between rows, never absolute times). Cases that are not in
/// the run are skipped.
pub fn checks(cases: &[CaseStats]) -> Vec<Check> {
    let mut out = Vec::new();
    let find = |key: &str| cases.iter().find(|c| c.key() == key);
    // Today's stacks differ in the family they try first; for each broken
    // family the comparison is with the stacks that try that family first.
    for (scenario, sequential) in [
        ("ipv6-blackholed", "sequential"),
        ("ipv4-blackholed", "sequential-v4"),
    ] {
        for transport in ["udp", "tcp"] {
            let key = format!("{scenario}/{transport}");
            let Some(c) = find(&key) else { continue };
            let (Some(oracle), Some(cold), Some(warm), Some(seq)) = (
                c.row("oracle"),
                c.row("siprace-cold"),
                c.row("siprace-warm"),
                c.row(sequential),
            ) else {
                continue;
            };
            out.push(compare(
                format!("{key}: siprace cold p95 <= oracle p95 + 150 ms"),
                &[oracle, cold],
                cold.p95_ms <= oracle.p95_ms + 150.0,
                format!("{:.1} vs {:.1} + 150", cold.p95_ms, oracle.p95_ms),
            ));
            out.push(compare(
                format!("{key}: siprace warm p95 <= oracle p95 + 20 ms"),
                &[oracle, warm],
                warm.p95_ms <= oracle.p95_ms + 20.0,
                format!("{:.1} vs {:.1} + 20", warm.p95_ms, oracle.p95_ms),
            ));
            out.push(compare(
                format!("{key}: {sequential} p50 >= 10 x siprace cold p50"),
                &[seq, cold],
                seq.p50_ms >= 10.0 * cold.p50_ms,
                format!("{:.1} vs 10 x {:.1}", seq.p50_ms, cold.p50_ms),
            ));
        }
    }
    for transport in ["udp", "tcp"] {
        let key = format!("healthy/{transport}");
        let Some(c) = find(&key) else { continue };
        let Some(oracle) = c.row("oracle") else {
            continue;
        };
        for label in ["siprace-cold", "siprace-warm"] {
            let Some(r) = c.row(label) else { continue };
            out.push(compare(
                format!("{key}: {label} p95 <= oracle p95 + 5 ms, no extra attempt"),
                &[oracle, r],
                r.p95_ms <= oracle.p95_ms + 5.0 && r.extra_attempts_per_dial == 0.0,
                format!(
                    "{:.2} vs {:.2} + 5; extra attempts per dial {:.2}",
                    r.p95_ms, oracle.p95_ms, r.extra_attempts_per_dial
                ),
            ));
        }
    }
    out.extend(learning_checks(cases));
    out.extend(reuse_checks(cases));
    out
}

/// The checks of connection reuse (issue #10), within each reuse case:
/// after the first dial, every dial rides the kept connection (the server
/// accepts no other: one handshake for the whole series, where the goal is
/// one per 1,000 dials to a domain); over TLS a reused dial is faster than
/// a raced one, and a domain the certificate does not cover is never
/// reused (opensips#1651).
fn reuse_checks(cases: &[CaseStats]) -> Vec<Check> {
    let mut out = Vec::new();
    for key in ["reuse-tls/tls", "reuse-tcp/tcp"] {
        let Some(c) = cases.iter().find(|c| c.key() == key) else {
            continue;
        };
        let (Some(raced), Some(reuse)) = (c.row("no-reuse"), c.row("reuse")) else {
            continue;
        };
        let opened = |r: &RowStats| r.server.connections_v6 + r.server.connections_v4;
        out.push(compare(
            format!(
                "{key}: reuse: dials 2..N all reused, the server accepted 1 connection for all N"
            ),
            &[reuse],
            reuse.reused == reuse.dials && opened(reuse) == 1,
            format!(
                "{} of {} reused; {} connection(s) for {} dials; no-reuse: {} for {}",
                reuse.reused,
                reuse.dials,
                opened(reuse),
                reuse.dials + 1,
                opened(raced),
                raced.dials + 1
            ),
        ));
        if key == "reuse-tls/tls" {
            out.push(compare(
                format!("{key}: reuse p50 < no-reuse p50 (no TCP or TLS handshake)"),
                &[raced, reuse],
                reuse.p50_ms < raced.p50_ms,
                format!("{:.2} vs {:.2}", reuse.p50_ms, raced.p50_ms),
            ));
        }
        if let Some(vhost) = c.row("virtual-host") {
            // Its dials must fail (the certificate does not cover the
            // domain): `compare` would count that against it.
            out.push(Check {
                what: format!(
                    "{key}: virtual-host: no dial reused a connection whose certificate does not cover its domain"
                ),
                passed: vhost.reused == 0 && vhost.ok == 0 && vhost.dials > 0,
                detail: format!(
                    "{} of {} reused, {} connected (certificate for {} only)",
                    vhost.reused,
                    vhost.dials,
                    vhost.ok,
                    crate::bench::scenario::DOMAIN
                ),
            });
        }
    }
    out
}

/// The checks of what history and the DNS cache buy (issue 12), each
/// against the oracle of the same case.
fn learning_checks(cases: &[CaseStats]) -> Vec<Check> {
    let mut out = Vec::new();
    let rows = |key: &str, label: &str| {
        let c = cases.iter().find(|c| c.key() == key)?;
        Some((c.row("oracle")?, c.row(label)?))
    };
    // The cold bound over TLS too (UDP and TCP are checked above; TLS only
    // runs in full runs).
    if let Some((oracle, cold)) = rows("ipv6-blackholed/tls", "siprace-cold") {
        out.push(compare(
            "ipv6-blackholed/tls: siprace cold p95 <= oracle p95 + 150 ms".into(),
            &[oracle, cold],
            cold.p95_ms <= oracle.p95_ms + 150.0,
            format!("{:.1} vs {:.1} + 150", cold.p95_ms, oracle.p95_ms),
        ));
    }
    // One dialer meeting new hosts on a network whose IPv6 is broken: from
    // the third host on, the cross-host evidence leaves IPv6 only the
    // shortest head start.
    for transport in ["udp", "tcp", "tls"] {
        let key = format!("new-hosts-v6-broken/{transport}");
        if let Some((oracle, warm)) = rows(&key, "siprace-warm") {
            let later = warm.latencies_ms.get(2..).unwrap_or_default();
            let worst = later.iter().copied().fold(0.0, f64::max);
            out.push(compare(
                format!("{key}: siprace warm dials 3.. each <= oracle p95 + 30 ms"),
                &[oracle, warm],
                !later.is_empty() && worst <= oracle.p95_ms + 30.0,
                format!(
                    "slowest of dials 3..{}: {:.1} vs {:.1} + 30",
                    warm.latencies_ms.len(),
                    worst,
                    oracle.p95_ms
                ),
            ));
        }
    }
    // A slower IPv6: left when clearly slower, kept when within reach.
    if let Some((oracle, warm)) = rows("ipv6-slower-150/udp", "siprace-warm") {
        out.push(compare(
            "ipv6-slower-150/udp: siprace warm p95 <= oracle p95 + 30 ms".into(),
            &[oracle, warm],
            warm.p95_ms <= oracle.p95_ms + 30.0,
            format!("{:.1} vs {:.1} + 30", warm.p95_ms, oracle.p95_ms),
        ));
    }
    for scenario in ["ipv6-slower-10", "ipv6-slower-50"] {
        let key = format!("{scenario}/udp");
        if let Some((oracle, warm)) = rows(&key, "siprace-warm") {
            out.push(compare(
                format!("{key}: siprace warm stays on IPv6 (>= 95% of dials)"),
                &[oracle, warm],
                warm.ipv6_share >= 0.95,
                format!("IPv6 won {:.0}%", warm.ipv6_share * 100.0),
            ));
        }
    }
    // Timelines (history following a changing network) judge themselves.
    for c in cases {
        if let Some(t) = &c.timeline {
            out.push(Check {
                what: format!("{}/{}: {}", c.scenario, c.transport, t.what),
                passed: t.passed,
                detail: t.detail.clone(),
            });
        }
    }
    // A burst from a warm dialer: its DNS answers are cached for their TTL.
    if let Some((oracle, warm)) = rows("burst-100/udp", "siprace-warm") {
        out.push(compare(
            "burst-100/udp: siprace warm p95 <= oracle p95 + 5 ms".into(),
            &[oracle, warm],
            warm.p95_ms <= oracle.p95_ms + 5.0,
            format!("{:.1} vs {:.1} + 5", warm.p95_ms, oracle.p95_ms),
        ));
    }
    out
}

/// The HdrHistogram percentile distribution text (`.hgrm`), values in ms.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "")
        };
        let _ = writeln!(
            t,
            "{:>12.3} {:>14.12} {:>10} {inv}",
            ms(v.value_iterated_to()),
            q,
            v.count_since_last_iteration(),
        );
    }
    let _ = writeln!(
        t,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        ms(h.max()),
        h.len()
    );
    t
}

/// Okabe & Ito's palette for colour-blind readers (its yellow left out: it
/// does not show on white), one colour per row in [`crate::bench::runner::Row::ALL`] order.
const PALETTE: [(u8, u8, u8); 7] = [
    (0x00, 0x00, 0x00), // black: the oracle
    (0xE6, 0x9F, 0x00), // orange
    (0x56, 0xB4, 0xE9), // sky blue
    (0x00, 0x9E, 0x73), // bluish green
    (0xCC, 0x79, 0xA7), // reddish purple
    (0x00, 0x72, 0xB2), // blue
    (0xD5, 0x5E, 0x00), // vermillion
];

/// How series `i` is drawn: its colour, its dash pattern (dash and gap in
/// pixels; a gap of 0 is a solid line) and its marker. Two rows whose
/// dials took the same times draw on top of each other; different dashes
/// and markers keep both visible.
fn series_style(i: usize) -> (plotters::style::RGBColor, (u32, u32), Marker) {
    const DASHES: [(u32, u32); 4] = [(1, 0), (10, 5), (4, 4), (14, 4)];
    const MARKERS: [Marker; 7] = [
        Marker::Circle,
        Marker::Triangle,
        Marker::Cross,
        Marker::Square,
        Marker::Diamond,
        Marker::TriangleDown,
        Marker::Plus,
    ];
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    (
        plotters::style::RGBColor(r, g, b),
        DASHES[i % DASHES.len()],
        MARKERS[i % MARKERS.len()],
    )
}

/// The CDF line width of row `i`: 4 px for the first rows down to 2 px,
/// wider for rfc8305 (4) than for siprace-cold (5), which often coincide.
fn stroke_width_of_row(i: usize) -> u32 {
    const WIDTHS: [u32; 7] = [4, 4, 4, 3, 3, 2, 2];
    WIDTHS.get(i).copied().unwrap_or(2)
}

/// The shapes marking each series' p50 and p95 (and its legend entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Cross,
    Square,
    Diamond,
    TriangleDown,
    Plus,
}

impl Marker {
    /// The marker's outline in pixels around the point (0, 0) shifted by
    /// `(dx, dy)`: one open path, drawn hollow so that markers of
    /// coinciding series stay visible through each other.
    fn outline(self, dx: i32, dy: i32) -> Vec<(i32, i32)> {
        let shape: &[(i32, i32)] = match self {
            // An octagon reads as a circle at this size.
            Marker::Circle => &[
                (-2, -5),
                (2, -5),
                (5, -2),
                (5, 2),
                (2, 5),
                (-2, 5),
                (-5, 2),
                (-5, -2),
                (-2, -5),
            ],
            Marker::Triangle => &[(0, -6), (6, 5), (-6, 5), (0, -6)],
            Marker::Cross => &[(-5, -5), (5, 5), (0, 0), (5, -5), (-5, 5)],
            Marker::Square => &[(-4, -4), (4, -4), (4, 4), (-4, 4), (-4, -4)],
            Marker::Diamond => &[(0, -6), (6, 0), (0, 6), (-6, 0), (0, -6)],
            Marker::TriangleDown => &[(0, 6), (6, -5), (-6, -5), (0, 6)],
            Marker::Plus => &[(-6, 0), (6, 0), (0, 0), (0, -6), (0, 6)],
        };
        shape.iter().map(|(x, y)| (x + dx, y + dy)).collect()
    }
}

/// A log axis tick as people write it: 0.1, 1, 10, 100, 1k, 10k, 1M.
pub fn tick_label(v: f64) -> String {
    let trim = |x: f64| {
        let text = format!("{x:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    match v.abs() {
        a if a >= 1e6 => format!("{}M", trim(v / 1e6)),
        a if a >= 1e3 => format!("{}k", trim(v / 1e3)),
        _ => trim(v),
    }
}

/// Writes the per-case CDF plot.
pub fn plot_cdf(path: &Path, c: &CaseStats) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_ms = c
        .rows
        .iter()
        .map(|r| ms(r.histogram.max()))
        .fold(1.0f64, f64::max);
    let x_max = (max_ms * 2.0).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} — setup latency CDF", c.key()),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.01f64..x_max).log_scale(), 0f64..1.0f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| tick_label(*x))
        .x_desc("setup latency (ms, log scale); markers: p50 and p95 of each strategy")
        .y_desc("fraction of dials")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, r) in c.rows.iter().enumerate() {
        let (color, (dash, gap), marker) = series_style(i);
        // A step function: at each recorded value the fraction jumps, so
        // a row whose dials all took the same time shows as a vertical line.
        let mut points = Vec::new();
        let total = r.histogram.len().max(1) as f64;
        let mut seen = 0u64;
        for v in r.histogram.iter_recorded() {
            let x = ms(v.value_iterated_to()).max(0.01);
            points.push((x, seen as f64 / total));
            seen += v.count_since_last_iteration();
            points.push((x, seen as f64 / total));
        }
        // Earlier rows are drawn wider, so that a later row with the same
        // times (drawn on top, dashed) leaves a rim of the earlier colour.
        let line = color.stroke_width(stroke_width_of_row(i));
        if gap == 0 {
            chart.draw_series(LineSeries::new(points, line))
        } else {
            chart.draw_series(DashedLineSeries::new(points, dash, gap, line))
        }
        .map_err(|e| e.to_string())?
        .label(r.row.clone())
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (24, 0)], line)
                + PathElement::new(marker.outline(12, 0), line)
        });
        // Markers at the p50 and p95 of the row, on the curve.
        let marks = [(r.p50_ms, 0.5), (r.p95_ms, 0.95)]
            .into_iter()
            .filter(|_| !r.histogram.is_empty())
            .map(|(x, y)| {
                EmptyElement::at((x.max(0.01), y)) + PathElement::new(marker.outline(0, 0), line)
            });
        chart.draw_series(marks).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// What the overview's "oracle" is, printed under it.
const ORACLE_NOTE: &str = "oracle = a direct dial to the working address (no DNS, no race): \
the fastest any strategy could be. Cases in name order; a strategy at 0.1 is as fast as the oracle.";

/// Writes the overview: p95 overhead over the oracle, per case (in name
/// order, top to bottom) and strategy (each its own colour and marker).
pub fn plot_overview(path: &Path, cases: &[CaseStats]) -> Result<(), String> {
    use plotters::prelude::*;
    let mut cases: Vec<&CaseStats> = cases.iter().collect();
    cases.sort_by_key(|c| c.key());
    let labels: Vec<String> = cases.iter().map(|c| c.key()).collect();
    // Strategies keep their CDF styles: index 0 of the rows is the oracle.
    let rows: Vec<(usize, String)> = cases
        .first()
        .map(|c| {
            c.rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.row != "oracle")
                .map(|(i, r)| (i, r.row.clone()))
                .collect()
        })
        .unwrap_or_default();
    let height = (150 + 30 * labels.len() as u32).max(320);
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (plot_area, note_area) = root.split_vertically(height - 28);
    note_area
        .draw(&Text::new(ORACLE_NOTE, (12, 6), ("sans-serif", 13)))
        .map_err(|e| e.to_string())?;
    let max = cases
        .iter()
        .flat_map(|c| c.rows.iter().filter_map(|r| r.overhead_p95_ms))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(
            "p95 overhead over the oracle (ms, log scale)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(230)
        .build_cartesian_2d(
            // Room on the right for the legend.
            (0.1f64..max * 30.0).log_scale(),
            (0..labels.len()).into_segmented(),
        )
        .map_err(|e| e.to_string())?;
    let names = labels.clone();
    chart
        .configure_mesh()
        .y_labels(labels.len())
        .y_label_formatter(&move |y| match y {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                // Segments count from the bottom: the first case goes on top.
                names
                    .len()
                    .checked_sub(i + 1)
                    .and_then(|k| names.get(k))
                    .cloned()
                    .unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .x_label_formatter(&|x| tick_label(*x))
        .x_desc("ms over oracle p95 (values below 0.1 ms drawn at 0.1)")
        .draw()
        .map_err(|e| e.to_string())?;
    let spread = rows.len() as i32;
    for (k, (style_index, row)) in rows.iter().enumerate() {
        let (color, _, marker) = series_style(*style_index);
        let stroke = color.stroke_width(2);
        // Strategies with the same figure for a case sit a few pixels
        // apart, so that none hides another.
        let dy = 3 * (2 * k as i32 - (spread - 1)) / 2;
        let points: Vec<(f64, SegmentValue<usize>)> = cases
            .iter()
            .enumerate()
            .filter_map(|(ci, c)| {
                let slot = labels.len() - 1 - ci;
                c.row(row)
                    .and_then(|r| r.overhead_p95_ms)
                    .map(|o| (o.max(0.1), SegmentValue::CenterOf(slot)))
            })
            .collect();
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| EmptyElement::at(p) + PathElement::new(marker.outline(0, dy), stroke)),
            )
            .map_err(|e| e.to_string())?
            .label(row.clone())
            .legend(move |(x, y)| PathElement::new(marker.outline(x + 8, y), stroke));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// `YYYYMMDDTHHMMSSZ` for a wall-clock time (UTC, no dependency on a date crate).
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::civil_date::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_matches_known_dates() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc_stamp(t(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(t(951_782_400)), "20000229T000000Z");
        assert_eq!(utc_stamp(t(1_795_812_345)), "20261127T204545Z");
    }

    #[test]
    fn log_ticks_read_like_numbers() {
        assert_eq!(tick_label(0.01), "0.01");
        assert_eq!(tick_label(0.1), "0.1");
        assert_eq!(tick_label(10.0), "10");
        assert_eq!(tick_label(1000.0), "1k");
        assert_eq!(tick_label(10000.0), "10k");
        assert_eq!(tick_label(2500.0), "2.5k");
        assert_eq!(tick_label(3_000_000.0), "3M");
    }

    #[test]
    fn every_strategy_has_its_own_style() {
        let styles: Vec<_> = (0..7).map(series_style).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a.0, b.0, "two rows share a colour");
            }
        }
        // Every row has its own marker; neighbours (drawn on top of each
        // other most often) also differ in dash pattern.
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a.2, b.2, "two rows share a marker");
            }
        }
        for w in styles.windows(2) {
            assert_ne!(w[0].1, w[1].1);
        }
    }

    #[test]
    fn hgrm_lists_percentiles_and_totals() {
        let mut h = new_histogram();
        for v in [1000u64, 2000, 3000, 250_000] {
            h.record(v).unwrap();
        }
        let text = hgrm(&h);
        assert!(text.contains("Total count    =            4"));
        assert!(text.lines().any(|l| l.trim_start().starts_with("250.")));
    }
}
