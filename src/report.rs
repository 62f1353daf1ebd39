//! The report of one dial: a timeline of DNS queries and answers, attempts
//! and their outcomes, and the result. It renders for humans (like
//! `curl -v` meets `dig`) and serialises to one JSON object whose schema is
//! documented on [`Report`].

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::endpoint::{Family, TargetSpec, Transport};
use crate::race::{AttemptEnd, AttemptRecord};

/// Records of one answer printed in the timeline (the JSON lists more).
const RECORDS_SHOWN: usize = 8;

/// Milliseconds since the dial started, with microsecond resolution.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// One DNS query and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct DnsEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// When the query was sent, ms since the dial started.
    pub sent_ms: f64,
    /// When its answer arrived (absent if it never did before the dial ended).
    pub answered_ms: Option<f64>,
    /// "ok", "no-records", "nxdomain", "servfail", "timeout" or "error".
    pub outcome: Option<String>,
    /// The records, rendered as zone-file text (the first
    /// `max_records` of the answer), or the error detail.
    pub records: Vec<String>,
    /// How many records of the queried type the answer held (`records`
    /// may show fewer); 0 when the query failed.
    pub records_total: usize,
}

impl DnsEntry {
    /// The "N record(s)" of an answer line.
    fn count_text(&self) -> String {
        format!("{} record(s)", self.records_total.max(self.records.len()))
    }

    /// The line that follows the first `shown` records, if any are left.
    fn more_text(&self, shown: usize) -> Option<String> {
        let total = self.records_total.max(self.records.len());
        let more = total.checked_sub(shown).filter(|n| *n > 0)?;
        Some(if self.records.len() < total {
            format!(
                "... {more} more (--json lists the first {})",
                self.records.len()
            )
        } else {
            format!("... {more} more")
        })
    }
}

/// One connection attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptEntry {
    pub id: u32,
    pub family: Family,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The host name whose answer gave this address.
    pub host: String,
    pub rank: u32,
    pub started_ms: f64,
    /// When the transport was up (TCP connected) if later steps followed.
    pub transport_up_ms: Option<f64>,
    pub ended_ms: Option<f64>,
    /// "won", "failed", "cancelled" or "in-flight".
    pub outcome: &'static str,
    /// For failures: the error class; for cancellations: the reason.
    pub error_class: Option<String>,
    pub detail: Option<String>,
    /// The SIP response that proved reachability (probe dials).
    pub response: Option<String>,
}

/// How a dial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DialResult {
    Connected,
    /// Addresses were found but no attempt succeeded.
    Failed,
    /// Location found nothing to try.
    ResolutionFailed,
}

/// The whole report. JSON schema (`siprace dial --json`):
///
/// ```text
/// { "target": "sip:...", "strategy": "siprace",
///   "result": "connected" | "failed" | "resolution-failed",
///   "reason": null | "why it failed",
///   "total_ms": 12.3,
///   "targets": [ { "host", "port", "transport", "rank" } ],
///   "dns": [ { "name", "type", "sent_ms", "answered_ms", "outcome", "records": [..],
///              "records_total" } ],
///   "addresses": [ { "host", "family", "at_ms", "addrs": [..] } ],
///   "attempts": [ { "id", "family", "transport", "addr", "host", "rank", "started_ms",
///                   "transport_up_ms", "ended_ms", "outcome", "error_class", "detail",
///                   "response" } ],
///   "winner": null | <attempt id> }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub strategy: String,
    pub result: DialResult,
    pub reason: Option<String>,
    pub total_ms: f64,
    #[serde(skip)]
    pub total: Duration,
    pub targets: Vec<TargetSpec>,
    pub dns: Vec<DnsEntry>,
    pub addresses: Vec<AddressEntry>,
    pub attempts: Vec<AttemptEntry>,
    pub winner: Option<u32>,
}

/// An address answer as handed to the race.
#[derive(Debug, Clone, Serialize)]
pub struct AddressEntry {
    pub host: String,
    pub family: Family,
    pub at_ms: f64,
    pub addrs: Vec<IpAddr>,
}

impl Report {
    pub fn new(target: String, strategy: String) -> Report {
        Report {
            target,
            strategy,
            result: DialResult::Failed,
            reason: None,
            total_ms: 0.0,
            total: Duration::ZERO,
            targets: Vec::new(),
            dns: Vec::new(),
            addresses: Vec::new(),
            attempts: Vec::new(),
            winner: None,
        }
    }

    /// Fills the attempt list from the engine's records.
    pub fn set_attempts(&mut self, records: &[AttemptRecord], since: std::time::Instant) {
        self.attempts = records
            .iter()
            .map(|r| {
                let at = |t: std::time::Instant| millis(t.saturating_duration_since(since));
                let (outcome, class, detail) = match &r.end {
                    AttemptEnd::InFlight => ("in-flight", None, None),
                    AttemptEnd::Won => ("won", None, None),
                    AttemptEnd::Failed(e) => {
                        ("failed", Some(e.class.to_string()), Some(e.detail.clone()))
                    }
                    AttemptEnd::Cancelled(reason) => {
                        ("cancelled", Some(reason.as_str().to_string()), None)
                    }
                };
                AttemptEntry {
                    id: r.id.0,
                    family: r.endpoint.family(),
                    transport: r.endpoint.transport,
                    addr: r.endpoint.addr,
                    host: r.endpoint.host.to_string(),
                    rank: r.endpoint.rank,
                    started_ms: at(r.started),
                    transport_up_ms: r.transport_up.map(at),
                    ended_ms: r.ended.map(at),
                    outcome,
                    error_class: class,
                    detail,
                    response: None,
                }
            })
            .collect();
    }

    /// Attempts that did not win (started and then failed or were cancelled).
    pub fn abandoned_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| a.outcome != "won").count()
    }

    pub fn winner_entry(&self) -> Option<&AttemptEntry> {
        self.winner
            .and_then(|id| self.attempts.iter().find(|a| a.id == id))
    }

    /// The human-readable timeline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "* dialing {} (strategy {})",
            self.target, self.strategy
        );
        // Merge everything into one time-ordered list of lines.
        let mut lines: Vec<(f64, String)> = Vec::new();
        for q in &self.dns {
            lines.push((q.sent_ms, format!("> DNS {} {}?", q.rtype, q.name)));
            if let Some(at) = q.answered_ms {
                let outcome = q.outcome.as_deref().unwrap_or("?");
                let took = at - q.sent_ms;
                if q.records.is_empty() || outcome != "ok" {
                    let detail = q
                        .records
                        .first()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    lines.push((
                        at,
                        format!(
                            "< DNS {} {}: {outcome}{detail} in {took:.1} ms",
                            q.rtype, q.name
                        ),
                    ));
                } else {
                    lines.push((
                        at,
                        format!(
                            "< DNS {} {}: {} in {took:.1} ms",
                            q.rtype,
                            q.name,
                            q.count_text()
                        ),
                    ));
                    let shown = q.records.len().min(RECORDS_SHOWN);
                    for r in &q.records[..shown] {
                        lines.push((at, format!(";;   {r}")));
                    }
                    if let Some(more) = q.more_text(shown) {
                        lines.push((at, format!(";;   {more}")));
                    }
                }
            }
        }
        for a in &self.attempts {
            lines.push((
                a.started_ms,
                format!(
                    "* attempt #{} {} {} {} ({}, rank {}) started",
                    a.id, a.family, a.transport, a.addr, a.host, a.rank
                ),
            ));
            if let Some(up) = a.transport_up_ms {
                lines.push((
                    up,
                    format!(
                        "* attempt #{} transport up after {:.1} ms",
                        a.id,
                        up - a.started_ms
                    ),
                ));
            }
            if let Some(end) = a.ended_ms {
                let took = end - a.started_ms;
                let what = match a.outcome {
                    "won" => match &a.response {
                        Some(r) => format!("connected ({r})"),
                        None => "connected".to_string(),
                    },
                    "failed" => format!(
                        "failed [{}]: {}",
                        a.error_class.as_deref().unwrap_or("?"),
                        a.detail.as_deref().unwrap_or("")
                    ),
                    _ => format!("cancelled ({})", a.error_class.as_deref().unwrap_or("?")),
                };
                lines.push((
                    end,
                    format!("* attempt #{} {what} after {took:.1} ms", a.id),
                ));
            }
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, line) in lines {
            let _ = writeln!(out, "{at:>9.1} ms  {line}");
        }
        match (self.result, self.winner_entry()) {
            (DialResult::Connected, Some(w)) => {
                let _ = writeln!(
                    out,
                    "* winner: #{} {} {} {} ({}) in {:.1} ms; {} other attempt(s) abandoned",
                    w.id,
                    w.family,
                    w.transport,
                    w.addr,
                    w.host,
                    self.total_ms,
                    self.abandoned_attempts()
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "* no connection after {:.1} ms: {}",
                    self.total_ms,
                    self.reason.as_deref().unwrap_or("unknown reason")
                );
                for a in self.attempts.iter().filter(|a| a.outcome != "won") {
                    let _ = writeln!(
                        out,
                        "*   #{} {} {} {}: {} {}",
                        a.id,
                        a.family,
                        a.transport,
                        a.addr,
                        a.error_class.as_deref().unwrap_or(a.outcome),
                        a.detail.as_deref().unwrap_or("")
                    );
                }
            }
        }
        out
    }
}
