//! Turning dial records into numbers, tables, files and plots.
//!
//! `results/<UTC timestamp>/` receives:
//! - `results.json`: `{ "schema": 1, "started_utc", "quick", "machine": {..},
//!   "parameters": {..}, "cases": [ { "scenario", "transport", "description",
//!   "rows": [ { "row", "note", "dials", "ok", "failed", "p50_ms", "p95_ms",
//!   "p99_ms", "max_ms", "overhead_p50_ms", "overhead_p95_ms", "ratio_p50",
//!   "ratio_p95", "ipv6_share", "extra_attempts_per_dial", "abandoned_per_dial",
//!   "server": { "requests_v6", "requests_v4", "connections_v6", "connections_v4" },
//!   "dns_first_answer_ms": { "NAPTR": p50, ... }, "latencies_ms": [ in dial order ],
//!   "wall_ms" } ] } ],
//!   "checks": [ { "what", "passed", "detail" } ] }`;
//! - `summary.md`: the tables printed at the end of the run;
//! - `<scenario>-<transport>-<row>.hgrm`: HdrHistogram percentile distributions (ms);
//! - `cdf-<scenario>-<transport>.svg`: a latency CDF per case;
//! - `overview.svg`: p95 overhead over the oracle per case and strategy.

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
    pub p99_ms: f64,
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
        p99_ms: ms(h.value_at_quantile(0.99)),
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
            "| {} | {}/{} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.0}% | {:.2} | {}/{} |",
            r.row,
            r.ok,
            r.dials,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
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
        .x_desc("setup latency (ms, log scale)")
        .y_desc("fraction of dials")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, r) in c.rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
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
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(r.row.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
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

/// Writes the overview: p95 overhead over the oracle, per case and strategy.
pub fn plot_overview(path: &Path, cases: &[CaseStats]) -> Result<(), String> {
    use plotters::prelude::*;
    let labels: Vec<String> = cases.iter().map(|c| c.key()).collect();
    let rows: Vec<String> = cases
        .first()
        .map(|c| {
            c.rows
                .iter()
                .filter(|r| r.row != "oracle")
                .map(|r| r.row.clone())
                .collect()
        })
        .unwrap_or_default();
    let height = 120 + 26 * labels.len() as u32;
    let root = SVGBackend::new(path, (1000, height.max(300))).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = cases
        .iter()
        .flat_map(|c| c.rows.iter().filter_map(|r| r.overhead_p95_ms))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
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
                names.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .x_desc("ms over oracle p95 (values below 0.1 ms drawn at 0.1)")
        .draw()
        .map_err(|e| e.to_string())?;
    for (si, row) in rows.iter().enumerate() {
        let color = Palette99::pick(si + 1).to_rgba();
        let points: Vec<(f64, SegmentValue<usize>)> = cases
            .iter()
            .enumerate()
            .filter_map(|(ci, c)| {
                c.row(row)
                    .and_then(|r| r.overhead_p95_ms)
                    .map(|o| (o.max(0.1), SegmentValue::CenterOf(ci)))
            })
            .collect();
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 5, color.filled())),
            )
            .map_err(|e| e.to_string())?
            .label(row.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
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
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
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
