//! `siprace dial URI --count N [--interval MS] [--no-reuse]`: N dials in
//! one process, like ping. By default they share the dialer's connection
//! table (RFC 3261 §18.1.1, RFC 5923), so dials after the first reuse the
//! kept connection; `--no-reuse` races every time (the comparison). One line
//! per dial, then a summary, also on Ctrl-C (exit 130); `--json` gives
//! each dial's report as one JSON object per line, then a summary object.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{print, EXIT_CONNECTED, EXIT_NO_ANSWER, EXIT_USAGE};
use crate::complain;
use siprace::dialer::{DialError, Dialer, DialerConfig};
use siprace::endpoint::{Family, Transport};
use siprace::keep::KeepConfig;
use siprace::report::{terminal_safe, Report};

/// The most dials one `--count` may ask for.
pub const MAX_COUNT: u32 = 100_000;
/// The longest `--interval`.
pub const MAX_INTERVAL_MS: u64 = 60_000;
/// Exit status after Ctrl-C (128 + SIGINT), as ping's.
const EXIT_INTERRUPTED: u8 = 130;

/// The flags of repeated dials.
#[derive(Args, Debug, Clone)]
pub struct CountArgs {
    /// Dial N times in one process, like ping (1 to 100000); dials after
    /// the first reuse the connection kept by the first, unless --no-reuse.
    #[arg(long, value_name = "N", conflicts_with_all = ["history_file", "write_out", "quiet"])]
    pub count: Option<u32>,
    /// With --count: wait MS between the end of one dial and the start of
    /// the next (0 to 60000, default 1000).
    #[arg(long, value_name = "MS", requires = "count")]
    pub interval: Option<u64>,
    /// With --count: race every dial (no connection table), for comparison.
    #[arg(long, requires = "count")]
    pub no_reuse: bool,
}

impl CountArgs {
    /// The count and interval, checked (absurd values are usage errors).
    fn checked(&self) -> Result<(u32, Duration), String> {
        let count = self.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(format!(
                "--count must be between 1 and {MAX_COUNT}, not {count}"
            ));
        }
        let interval = self.interval.unwrap_or(1000);
        if interval > MAX_INTERVAL_MS {
            return Err(format!(
                "--interval must be between 0 and {MAX_INTERVAL_MS} ms, not {interval}"
            ));
        }
        Ok((count, Duration::from_millis(interval)))
    }
}

/// One dial as the summary counts it.
#[derive(Debug, Clone, Serialize)]
struct DialLine {
    seq: u32,
    connected: bool,
    total_ms: f64,
    transport: Option<Transport>,
    family: Option<Family>,
    addr: Option<String>,
    /// "reused", "new", "not-kept", or null (no table, or failed).
    connection: Option<&'static str>,
    id: Option<u64>,
}

impl DialLine {
    fn of(seq: u32, report: &Report) -> DialLine {
        let winner = report.winner_entry();
        let reuse = report.reuse.as_ref();
        DialLine {
            seq,
            connected: report.result == siprace::report::DialResult::Connected,
            total_ms: report.total_ms,
            transport: reuse.map(|r| r.transport).or(winner.map(|w| w.transport)),
            family: reuse.map(|r| r.family).or(winner.map(|w| w.family)),
            addr: reuse
                .map(|r| r.addr.to_string())
                .or(winner.map(|w| w.addr.to_string())),
            connection: reuse.map(|r| r.connection),
            id: reuse.and_then(|r| r.id),
        }
    }

    fn reused(&self) -> bool {
        self.connection == Some("reused")
    }

    fn text(&self, report: &Report) -> String {
        if !self.connected {
            return format!(
                "#{:<4} no connection after {:.1} ms: {}",
                self.seq,
                self.total_ms,
                report.reason.as_deref().unwrap_or("?")
            );
        }
        let how = match (self.connection, self.id) {
            (Some("reused"), Some(id)) => format!("reused #{id}"),
            (Some("new"), Some(id)) => format!("new #{id}"),
            _ => "new".to_string(),
        };
        format!(
            "#{:<4} {} {} {}  {:.1} ms  {how}",
            self.seq,
            self.transport.map(|t| t.to_string()).unwrap_or_default(),
            self.family.map(|f| f.to_string()).unwrap_or_default(),
            self.addr.as_deref().unwrap_or("?"),
            self.total_ms,
        )
    }
}

/// The summary of the dials so far.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    dials: u32,
    connected: u32,
    interrupted: bool,
    min_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Connected dials over IPv6, as a share of the connected ones.
    ipv6_share: Option<f64>,
    /// Dials carried by a kept connection.
    reused: u32,
    /// Connections the dials opened (every connected dial not reused).
    connections_opened: u32,
    /// TLS handshakes: the TLS connections opened (a reused one costs none).
    tls_handshakes: u32,
}

/// The `p`th percentile (0 to 100) of `sorted` by nearest rank.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Summary {
    fn of(lines: &[DialLine], interrupted: bool) -> Summary {
        let connected: Vec<&DialLine> = lines.iter().filter(|l| l.connected).collect();
        let mut times: Vec<f64> = connected.iter().map(|l| l.total_ms).collect();
        times.sort_by(f64::total_cmp);
        let opened: Vec<&&DialLine> = connected.iter().filter(|l| !l.reused()).collect();
        let v6 = connected
            .iter()
            .filter(|l| l.family == Some(Family::V6))
            .count();
        Summary {
            dials: lines.len() as u32,
            connected: connected.len() as u32,
            interrupted,
            min_ms: times.first().copied(),
            p50_ms: percentile(&times, 50.0),
            p95_ms: percentile(&times, 95.0),
            max_ms: times.last().copied(),
            ipv6_share: (!connected.is_empty()).then(|| v6 as f64 / connected.len() as f64),
            reused: connected.iter().filter(|l| l.reused()).count() as u32,
            connections_opened: opened
                .iter()
                .filter(|l| l.transport != Some(Transport::Udp))
                .count() as u32,
            tls_handshakes: opened
                .iter()
                .filter(|l| l.transport == Some(Transport::Tls))
                .count() as u32,
        }
    }

    fn text(&self, target: &str) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "--- {} dial statistics ---\n\
             {} dials, {} connected, {} reused{}\n\
             setup min/p50/p95/max = {}/{}/{}/{} ms\n\
             IPv6 share {}, connections opened {}, TLS handshakes {}\n",
            terminal_safe(target),
            self.dials,
            self.connected,
            self.reused,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            ms(self.min_ms),
            ms(self.p50_ms),
            ms(self.p95_ms),
            ms(self.max_ms),
            self.ipv6_share
                .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0)),
            self.connections_opened,
            self.tls_handshakes,
        )
    }
}

/// Runs the dials of `siprace dial --count`; `cfg` is the dial's
/// configuration from its other flags.
pub async fn run(target: &str, mut cfg: DialerConfig, args: &CountArgs, json: bool) -> ExitCode {
    let (count, interval) = match args.checked() {
        Ok(v) => v,
        Err(e) => {
            complain(format_args!("siprace dial: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    cfg.keep = (!args.no_reuse).then(KeepConfig::default);
    let dialer = match Dialer::new(cfg) {
        Ok(d) => d,
        Err(e) => {
            complain(format_args!("siprace dial: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut lines: Vec<DialLine> = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    for seq in 1..=count {
        let dial = tokio::select! {
            result = dialer.dial(target) => result,
            _ = &mut ctrl_c => { interrupted = true; break; }
        };
        let report = match &dial {
            Ok(d) => &d.report,
            Err(DialError::Resolution(r) | DialError::Failed(r)) => r.as_ref(),
            Err(e) => {
                complain(format_args!("siprace dial: {e}"));
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let line = DialLine::of(seq, report);
        if json {
            match serde_json::to_string(report) {
                Ok(text) => print(&(text + "\n")),
                Err(e) => complain(format_args!("siprace: cannot encode the report: {e}")),
            }
        } else {
            print(&(terminal_safe(&line.text(report)) + "\n"));
        }
        lines.push(line);
        // The dial's handle goes; a kept connection stays in the table.
        drop(dial);
        if seq < count {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut ctrl_c => { interrupted = true; break; }
            }
        }
    }
    let summary = Summary::of(&lines, interrupted);
    if json {
        #[derive(Serialize)]
        struct Wrapped<'a> {
            summary: &'a Summary,
        }
        match serde_json::to_string(&Wrapped { summary: &summary }) {
            Ok(text) => print(&(text + "\n")),
            Err(e) => complain(format_args!("siprace: cannot encode the summary: {e}")),
        }
    } else {
        print(&summary.text(target));
    }
    if interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if summary.connected == summary.dials {
        ExitCode::from(EXIT_CONNECTED)
    } else {
        ExitCode::from(EXIT_NO_ANSWER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        seq: u32,
        ms: f64,
        family: Family,
        transport: Transport,
        conn: &'static str,
    ) -> DialLine {
        DialLine {
            seq,
            connected: true,
            total_ms: ms,
            transport: Some(transport),
            family: Some(family),
            addr: Some("[2001:db8::10]:5061".into()),
            connection: Some(conn),
            id: Some(1),
        }
    }

    #[test]
    fn the_summary_counts_opened_connections_and_handshakes() {
        let lines = vec![
            line(1, 30.0, Family::V6, Transport::Tls, "new"),
            line(2, 2.0, Family::V6, Transport::Tls, "reused"),
            line(3, 3.0, Family::V4, Transport::Tls, "reused"),
            line(4, 1.0, Family::V6, Transport::Tls, "reused"),
        ];
        let s = Summary::of(&lines, false);
        assert_eq!((s.dials, s.connected, s.reused), (4, 4, 3));
        assert_eq!((s.connections_opened, s.tls_handshakes), (1, 1));
        assert_eq!(s.min_ms, Some(1.0));
        assert_eq!(s.p50_ms, Some(2.0));
        assert_eq!(s.p95_ms, Some(30.0));
        assert_eq!(s.max_ms, Some(30.0));
        assert_eq!(s.ipv6_share, Some(0.75));
        let text = s.text("sips:example.test");
        assert!(
            text.contains("setup min/p50/p95/max = 1.0/2.0/30.0/30.0 ms"),
            "{text}"
        );
        assert!(
            text.contains("connections opened 1, TLS handshakes 1"),
            "{text}"
        );
    }

    #[test]
    fn udp_opens_no_connection_and_failures_are_not_timed() {
        let mut failed = line(2, 32000.0, Family::V6, Transport::Udp, "not-kept");
        failed.connected = false;
        let lines = vec![line(1, 5.0, Family::V4, Transport::Udp, "not-kept"), failed];
        let s = Summary::of(&lines, true);
        assert_eq!((s.dials, s.connected), (2, 1));
        assert_eq!((s.connections_opened, s.tls_handshakes), (0, 0));
        assert_eq!(s.max_ms, Some(5.0));
        assert_eq!(s.ipv6_share, Some(0.0));
        assert!(s.text("x").contains("(interrupted)"));
    }

    #[test]
    fn absurd_counts_and_intervals_are_usage_errors() {
        let args = |count, interval| CountArgs {
            count: Some(count),
            interval,
            no_reuse: false,
        };
        assert!(args(0, None).checked().is_err());
        assert!(args(MAX_COUNT + 1, None).checked().is_err());
        assert!(args(10, Some(MAX_INTERVAL_MS + 1)).checked().is_err());
        assert_eq!(args(10, Some(0)).checked().unwrap(), (10, Duration::ZERO));
        assert_eq!(
            args(3, None).checked().unwrap(),
            (3, Duration::from_millis(1000))
        );
    }
}
