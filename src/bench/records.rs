//! What a benchmark run records: one [`DialRecord`] per dial (siprace's own
//! and the third-party clients' alike), grouped into a [`RowResult`] per way
//! of dialing and a [`CaseResult`] per scenario and transport, with what
//! the responder saw ([`ServerSeen`]). The runner and the clients fill them
//! in; the output turns them into statistics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::endpoint::{Family, Transport};
use crate::report::Report;
use crate::responder::StatsSnapshot;

/// What one dial did.
#[derive(Debug, Clone, Serialize)]
pub struct DialRecord {
    pub ok: bool,
    /// Setup latency: from the dial's start to the winning attempt's
    /// success. A failed dial counts as the row's time bound, so failures
    /// sit at the top of the distribution (the convention for every row,
    /// third-party clients included).
    pub latency_us: u64,
    pub family: Option<Family>,
    pub transport: Option<Transport>,
    pub attempts: usize,
    /// Attempts started that did not win (failed or cancelled).
    pub abandoned: usize,
    /// When the first answer of each record type arrived, ms since the start.
    pub dns_ms: BTreeMap<String, f64>,
    pub error: Option<String>,
    /// A kept connection carried the dial (connection reuse, issue #10).
    pub reused: bool,
}

impl DialRecord {
    /// The record of a dial from its report; a dial without a winner counts
    /// as failed at `bound`.
    pub fn from_report(report: &Report, bound: Duration) -> DialRecord {
        let winner = report.winner_entry();
        // Up to the winner's success; the teardown of losers is not setup.
        // A dial a kept connection carried has no winner: its setup is the
        // whole dial (location and the probe over the kept connection).
        let reused = report.reuse.as_ref().filter(|r| r.connection == "reused");
        let setup_us = winner
            .and_then(|w| w.ended_ms)
            .or(reused.map(|_| report.total_ms))
            .map(|ms| (ms * 1000.0) as u64);
        let mut dns_ms = BTreeMap::new();
        for q in &report.dns {
            if let Some(at) = q.answered_ms {
                let e = dns_ms.entry(q.rtype.to_string()).or_insert(at);
                *e = f64::min(*e, at);
            }
        }
        let ok = setup_us.is_some();
        DialRecord {
            ok,
            latency_us: setup_us.unwrap_or(bound.as_micros() as u64),
            family: winner.map(|w| w.family).or(reused.map(|r| r.family)),
            transport: winner.map(|w| w.transport).or(reused.map(|r| r.transport)),
            reused: reused.is_some(),
            attempts: report.attempts.len(),
            abandoned: report.abandoned_attempts(),
            dns_ms,
            error: (!ok).then(|| report.reason.clone().unwrap_or_default()),
        }
    }

    /// A dial that gave no connection, counted at the bound.
    pub fn failed(bound: Duration, error: String) -> DialRecord {
        DialRecord {
            ok: false,
            latency_us: bound.as_micros() as u64,
            family: None,
            transport: None,
            attempts: 0,
            abandoned: 0,
            dns_ms: BTreeMap::new(),
            error: Some(error),
            reused: false,
        }
    }
}

/// Requests and connections the responder saw during a row, per family.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerSeen {
    pub requests_v6: u64,
    pub requests_v4: u64,
    pub connections_v6: u64,
    pub connections_v4: u64,
}

impl ServerSeen {
    /// What the responder counted over `transport` between two snapshots.
    pub fn delta(
        before: &StatsSnapshot,
        after: &StatsSnapshot,
        transport: Transport,
    ) -> ServerSeen {
        let d = |f: Family| {
            let (a, b) = (after.get(transport, f), before.get(transport, f));
            (a.requests - b.requests, a.connections - b.connections)
        };
        let ((r6, c6), (r4, c4)) = (d(Family::V6), d(Family::V4));
        ServerSeen {
            requests_v6: r6,
            requests_v4: r4,
            connections_v6: c6,
            connections_v4: c4,
        }
    }
}

/// One strategy's dials in one case.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    pub row: String,
    pub dials: Vec<DialRecord>,
    pub server: ServerSeen,
    /// How the row was run, when it differs from one dial at a time.
    pub note: Option<String>,
    pub wall_ms: f64,
}

/// One scenario over one transport.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub scenario: String,
    pub transport: Transport,
    pub description: String,
    pub rows: Vec<RowResult>,
    /// What a timeline scenario showed ([`crate::bench::timeline`]).
    pub timeline: Option<TimelineOutcome>,
    /// A sweep scenario's figures ([`crate::bench::sweep`]).
    pub sweep: Option<Vec<SweepPoint>>,
}

impl CaseResult {
    pub fn key(&self) -> String {
        format!("{}/{}", self.scenario, self.transport)
    }
}

/// What a timeline showed: its figure and whether it met its goal.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineOutcome {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

/// One row at one swept value.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub row: String,
    pub dials: usize,
    pub ok: usize,
    pub p50_ms: f64,
    /// Share of the successful dials won over IPv6.
    pub ipv6_share: f64,
}

impl SweepRow {
    pub fn of(row: String, records: &[DialRecord]) -> SweepRow {
        let ok: Vec<&DialRecord> = records.iter().filter(|r| r.ok).collect();
        let mut ms: Vec<f64> = records
            .iter()
            .map(|r| r.latency_us as f64 / 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let v6 = ok.iter().filter(|r| r.family == Some(Family::V6)).count();
        SweepRow {
            row,
            dials: records.len(),
            ok: ok.len(),
            p50_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            ipv6_share: if ok.is_empty() {
                0.0
            } else {
                v6 as f64 / ok.len() as f64
            },
        }
    }
}

/// Every row at one swept value.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub delay_ms: u32,
    pub rows: Vec<SweepRow>,
}
