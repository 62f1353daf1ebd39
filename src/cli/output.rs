//! Output conventions shared by the subcommands: when to colour
//! (`--color`, `NO_COLOR`, a terminal or not), `siprace dial -q`'s one line,
//! and `-w/--write-out FORMAT` (curl's `%{variable}` templates) read from
//! the dial's [`Report`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Instant;

use siprace::dial_machine::DialMachine;
use siprace::dialer::DialObserver;
use siprace::report::{terminal_safe, DialResult, LineKey, Report};

/// `--color`: when output may carry ANSI colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Only on a terminal, and not when NO_COLOR is set (non-empty).
    Auto,
    /// Always, even into a pipe or file (and despite NO_COLOR).
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether a stream that is (`is_terminal`) a terminal gets colour.
    /// `NO_COLOR` (https://no-color.org) only changes `auto`: a flag given
    /// on the command line is the user's more specific wish.
    pub fn enabled(self, is_terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                is_terminal && !no_color
            }
        }
    }

    /// Colour for standard output.
    pub fn stdout(self) -> bool {
        self.enabled(std::io::stdout().is_terminal())
    }

    /// Colour for standard error (the logs and warnings).
    pub fn stderr(self) -> bool {
        self.enabled(std::io::stderr().is_terminal())
    }
}

const GREEN_BOLD: &str = "\x1b[1;32m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The rendered timeline with colour: the winner in bold green, failures
/// and the no-connection summary in red, DNS records dimmed. The text was
/// already made terminal-safe by [`Report::render`]; only whole lines are
/// wrapped here, so no peer text can reach inside an escape.
pub fn colorize(timeline: &str) -> String {
    let mut out = String::with_capacity(timeline.len() + 64);
    for line in timeline.lines() {
        // Lines are "   12.3 ms  <event>" or "* <summary>".
        let event = line.split_once(" ms  ").map_or(line, |(_, e)| e);
        let color = if line.starts_with("* winner:") || event.contains(" connected") {
            Some(GREEN_BOLD)
        } else if line.starts_with("* no connection") || event.contains(" failed [") {
            Some(RED)
        } else if event.starts_with(";;") {
            Some(DIM)
        } else {
            None
        };
        match color {
            Some(c) => {
                let _ = writeln!(out, "{c}{line}{RESET}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `siprace dial`'s live timeline: the report's header, then each event of
/// the dial printed as it happens, in the final timeline's format, then
/// ([`LiveTimeline::finish`]) what the decided dial added and its summary,
/// or ([`LiveTimeline::interrupted`]) a one-line summary of what was seen.
/// Each event is printed once: it is named by its [`LineKey`].
pub struct LiveTimeline<W: std::io::Write> {
    out: W,
    color: bool,
    target: String,
    strategy: String,
    notes: Vec<String>,
    printed: HashSet<LineKey>,
    header_printed: bool,
    /// The dial's start, once it has started.
    started: Option<Instant>,
    /// Attempts started so far, and how many failed.
    attempts: usize,
    failed: usize,
    /// `out` is a terminal: the line after Ctrl-C starts on a line of its
    /// own (the terminal has echoed "^C" where the cursor was).
    on_terminal: bool,
}

impl<W: std::io::Write> LiveTimeline<W> {
    /// A timeline of the dial of `target` with `strategy`, printed to
    /// `out` (coloured if `color`), with `notes` under its header.
    pub fn new(out: W, color: bool, target: &str, strategy: &str, notes: Vec<String>) -> Self {
        LiveTimeline {
            out,
            color,
            target: target.to_string(),
            strategy: strategy.to_string(),
            notes,
            printed: HashSet::new(),
            header_printed: false,
            started: None,
            attempts: 0,
            failed: 0,
            on_terminal: false,
        }
    }

    /// Says that `out` is a terminal (see [`LiveTimeline::interrupted`]).
    pub fn on_terminal(mut self, yes: bool) -> Self {
        self.on_terminal = yes;
        self
    }

    /// Prints the header (once) and the events of `report` not printed yet.
    fn print_new(&mut self, report: &Report) {
        let mut text = String::new();
        if !self.header_printed {
            self.header_printed = true;
            for line in report.header_lines() {
                text.push_str(&terminal_safe(&line));
                text.push('\n');
            }
        }
        for line in report.timeline() {
            if self.printed.insert(line.key) {
                text.push_str(&terminal_safe(&line.render()));
                text.push('\n');
            }
        }
        self.write(&text);
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let text = if self.color {
            colorize(text)
        } else {
            text.to_string()
        };
        // A closed stdout is the reader's wish (`| head`): ignored here,
        // the final write reports it.
        let _ = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
    }

    /// The end of a decided dial: the events its final report adds (the
    /// winner's response, the cancelled losers) and its summary.
    pub fn finish(&mut self, report: &Report) {
        self.print_new(report);
        let mut text = String::new();
        for line in report.summary_lines() {
            text.push_str(&terminal_safe(&line));
            text.push('\n');
        }
        self.write(&text);
    }

    /// The end of a dial stopped by the user (Ctrl-C): one line summing up
    /// what was seen, e.g. "interrupted after 1.234 s: 3 attempts, none
    /// answered".
    pub fn interrupted(&mut self) {
        let elapsed = self.started.map(|t| t.elapsed()).unwrap_or_default();
        let attempts = match self.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        let failed = match self.failed {
            0 => String::new(),
            n => format!(" ({n} failed)"),
        };
        let line = format!(
            "{}* interrupted after {:.3} s: {attempts}{failed}, none answered\n",
            if self.on_terminal { "\n" } else { "" },
            elapsed.as_secs_f64()
        );
        self.write(&line);
    }
}

impl<W: std::io::Write> DialObserver for LiveTimeline<W> {
    fn observe(&mut self, machine: &DialMachine, started: Instant) {
        self.started = Some(started);
        let attempts = machine.race().attempts();
        self.attempts = attempts.len();
        self.failed = attempts
            .iter()
            .filter(|a| matches!(a.end, siprace::race::AttemptEnd::Failed(_)))
            .count();
        if machine.outcome().is_some() {
            // The decided dial's lines come from its final report, which
            // has the winner's response: see `finish`.
            return;
        }
        let mut report = Report::of_dial(
            self.target.clone(),
            self.strategy.clone(),
            machine,
            started,
            started.elapsed(),
        );
        report.notes = self.notes.clone();
        self.print_new(&report);
    }
}

/// `-q`'s line: the winner as `FAMILY TRANSPORT ADDR (HOST) in MS ms`, or
/// nothing when the dial failed (the exit status says so).
pub fn quiet_line(report: &Report) -> String {
    match (report.result, report.winner_entry()) {
        (DialResult::Connected, Some(w)) => format!(
            "{} {} {} ({}) in {:.1} ms\n",
            w.family,
            w.transport,
            w.addr,
            siprace::report::terminal_safe(&w.host),
            report.total_ms
        ),
        _ => String::new(),
    }
}

/// The variables of `--write-out`, each with what it is (for `--help` and
/// the error naming an unknown one).
pub const WRITE_OUT_VARIABLES: &[(&str, &str)] = &[
    (
        "winner",
        "the winning address, e.g. [::1]:5060 (empty if none)",
    ),
    ("family", "ipv6 or ipv4 of the winner"),
    ("transport", "udp, tcp, tls or sctp of the winner"),
    ("host", "the host name that gave the winning address"),
    ("result", "connected, failed or resolution-failed"),
    ("time_total", "the whole dial in seconds"),
    (
        "time_dns",
        "seconds until the first address answer (or the last DNS answer)",
    ),
    (
        "time_connect",
        "seconds until the winner connected (empty if none)",
    ),
    ("attempts", "how many connection attempts were started"),
    ("exitcode", "the exit status siprace returns"),
    ("target", "the target as given"),
    ("strategy", "the strategy used"),
];

/// One piece of a parsed `--write-out` format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Variable(&'static str),
}

/// A parsed `--write-out` format: text with `%{variable}`s and the escapes
/// `\n`, `\t`, `\r`, `\\`, and `%%` for a `%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOut(Vec<Piece>);

impl WriteOut {
    /// Parses `format`; an unknown variable or an unclosed `%{` is an error
    /// (a usage error before any dial).
    pub fn parse(format: &str) -> Result<WriteOut, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '\\' => match rest.chars().next() {
                    Some(e @ ('n' | 't' | 'r' | '\\')) => {
                        text.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            _ => '\\',
                        });
                        rest = &rest[1..];
                    }
                    _ => text.push('\\'),
                },
                '%' if rest.starts_with('%') => {
                    text.push('%');
                    rest = &rest[1..];
                }
                '%' if rest.starts_with('{') => {
                    let Some(end) = rest.find('}') else {
                        return Err(format!("--write-out: unclosed %{{ in {format:?}"));
                    };
                    let name = &rest[1..end];
                    let Some((known, _)) = WRITE_OUT_VARIABLES.iter().find(|(v, _)| *v == name)
                    else {
                        let known: Vec<&str> =
                            WRITE_OUT_VARIABLES.iter().map(|(v, _)| *v).collect();
                        return Err(format!(
                            "--write-out: unknown variable %{{{}}} (known: {})",
                            siprace::report::terminal_safe(name),
                            known.join(", ")
                        ));
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Variable(known));
                    rest = &rest[end + 1..];
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(WriteOut(pieces))
    }

    /// The format filled in from `report` and the exit status `exit_code`.
    /// Values from peers and DNS (the host name) are made terminal-safe.
    pub fn render(&self, report: &Report, exit_code: u8) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Variable(name) => out.push_str(&variable(name, report, exit_code)),
            }
        }
        out
    }
}

/// Seconds with microseconds, as curl writes its times.
fn seconds(ms: f64) -> String {
    format!("{:.6}", ms / 1000.0)
}

fn variable(name: &str, report: &Report, exit_code: u8) -> String {
    let winner = report.winner_entry();
    let of_winner =
        |f: &dyn Fn(&siprace::report::AttemptEntry) -> String| winner.map(f).unwrap_or_default();
    match name {
        "winner" => of_winner(&|w| w.addr.to_string()),
        "family" => of_winner(&|w| w.family.to_string()),
        "transport" => of_winner(&|w| w.transport.to_string()),
        "host" => of_winner(&|w| siprace::report::terminal_safe(&w.host).into_owned()),
        "result" => match report.result {
            DialResult::Connected => "connected",
            DialResult::Failed => "failed",
            DialResult::ResolutionFailed => "resolution-failed",
        }
        .to_string(),
        "time_total" => seconds(report.total_ms),
        "time_dns" => seconds(time_dns_ms(report)),
        "time_connect" => of_winner(&|w| w.ended_ms.map(seconds).unwrap_or_default()),
        "attempts" => report.attempts.len().to_string(),
        "exitcode" => exit_code.to_string(),
        "target" => siprace::report::terminal_safe(&report.target).into_owned(),
        "strategy" => report.strategy.clone(),
        _ => String::new(),
    }
}

/// When DNS first gave the race something to try: the first address
/// answer; without one, the last DNS answer; 0 when no DNS was asked.
fn time_dns_ms(report: &Report) -> f64 {
    let first_address = report.addresses.iter().map(|a| a.at_ms).reduce(f64::min);
    let last_answer = report
        .dns
        .iter()
        .filter_map(|q| q.answered_ms)
        .reduce(f64::max);
    first_address.or(last_answer).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_out_parses_escapes_and_variables() {
        let f = WriteOut::parse(r"%{family} %%{x}\t%{attempts}\n\q").unwrap();
        let r = Report::new("sip:t".into(), "siprace".into());
        assert_eq!(f.render(&r, 1), " %{x}\t0\n\\q");
    }

    #[test]
    fn unknown_or_unclosed_variables_are_errors() {
        let e = WriteOut::parse("%{nope}").unwrap_err();
        assert!(e.contains("%{nope}") && e.contains("winner"), "{e}");
        assert!(WriteOut::parse("%{winner").is_err());
    }

    #[test]
    fn the_live_timeline_prints_each_event_once_then_the_summary() {
        use siprace::report::{AttemptEntry, DnsEntry};
        let mut live = LiveTimeline::new(Vec::new(), false, "sip:t", "siprace", vec![]);
        let mut r = Report::new("sip:t".into(), "siprace".into());
        r.dns.push(DnsEntry {
            name: "t".into(),
            rtype: "A",
            sent_ms: 0.0,
            answered_ms: None,
            outcome: None,
            records: vec![],
            records_total: 0,
            cached: false,
            abandoned: None,
            abandoned_ms: None,
        });
        live.print_new(&r);
        live.print_new(&r);
        r.dns[0].answered_ms = Some(2.0);
        r.dns[0].outcome = Some("records".into());
        r.dns[0].records = vec!["192.0.2.1".into()];
        r.dns[0].records_total = 1;
        r.attempts.push(AttemptEntry {
            id: 1,
            family: siprace::endpoint::Family::V4,
            transport: siprace::endpoint::Transport::Udp,
            addr: "192.0.2.1:5060".parse().unwrap(),
            host: "t".into(),
            rank: 0,
            started_ms: 2.0,
            attempt_delay_ms: 100.0,
            attempt_delay_source: "configured",
            history_rtt_ms: None,
            attempt_delay_clamped: None,
            history: None,
            transport_up_ms: None,
            ended_ms: Some(3.0),
            outcome: "failed",
            error_class: Some("refused".into()),
            detail: Some("192.0.2.1:5060: refused".into()),
            response: None,
        });
        r.reason = Some("all 1 attempt(s) failed".into());
        live.finish(&r);
        let text = String::from_utf8(live.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "* dialing sip:t (strategy siprace)");
        assert_eq!(lines[1], "      0.0 ms  > DNS A t?");
        assert_eq!(lines[2], "      2.0 ms  < DNS A t: 1 record(s) in 2.0 ms");
        assert_eq!(lines[3], "      2.0 ms  ;;   192.0.2.1");
        assert!(lines[4].starts_with("      2.0 ms  * attempt #1 ipv4 udp 192.0.2.1:5060 (t, rank 0) started; next attempt after 100.0 ms (configured)"), "{text}");
        assert_eq!(
            lines[5],
            "      3.0 ms  * attempt #1 failed [refused]: 192.0.2.1:5060: refused after 1.0 ms"
        );
        assert!(lines[6].starts_with("* no connection after"), "{text}");
        // The summary names the address once.
        assert_eq!(lines[7], "*   #1 ipv4 udp 192.0.2.1:5060 refused: refused");
        assert_eq!(lines.len(), 8, "{text}");
    }

    #[test]
    fn colour_wraps_whole_lines_only() {
        let text = "* dialing x\n      1.0 ms  * attempt #1 failed [refused]: no\n* winner: #2\n";
        let c = colorize(text);
        assert!(c.contains("\x1b[31m      1.0 ms  * attempt #1 failed"));
        assert!(c.starts_with("* dialing x\n"));
        assert!(c.ends_with("* winner: #2\x1b[0m\n"));
    }
}
