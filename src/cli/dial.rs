//! `siprace dial`: its flags, the [`DialerConfig`] they make (range errors
//! in the words of the command line), and the command's run: one dial, its
//! report on stdout, an exit status that says how it ended.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::output::{self, ColorChoice, WriteOut};
use super::tls::TlsArgs;
use super::{EXIT_CONNECTED, EXIT_NO_ANSWER, EXIT_RESOLUTION, EXIT_USAGE};

/// The exit status of a dial stopped by Ctrl-C (SIGINT): 128 + 2, as shells
/// report a process a SIGINT ended.
const EXIT_INTERRUPTED: u8 = 130;
use crate::{closed_output, complain};
use siprace::dialer::{Dial, DialError, Dialer, DialerConfig};
use siprace::endpoint::{ConfigError, Family};
use siprace::race::history::History;
use siprace::race::strategy::Strategy;
use siprace::target::Target;

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 connected, 1 no candidate answered (every reason is listed), \
2 usage error, 3 resolution failed, 130 interrupted (Ctrl-C: what was seen and a one-line summary are printed)."
)]
pub struct DialArgs {
    /// sip:/sips: URI or host[:port], e.g. sip:example.test;transport=tcp or [2001:db8::1]:5060
    target: String,
    /// sequential | sequential-v4 | rfc6555 | rfc8305 | siprace
    #[arg(long, default_value = "siprace")]
    strategy: Strategy,
    /// Resolution Delay in ms (wait for AAAA after A); "none" waits for every answer.
    #[arg(long, value_name = "MS")]
    resolution_delay: Option<String>,
    /// Connection Attempt Delay in ms when history knows nothing.
    #[arg(long, value_name = "MS")]
    attempt_delay: Option<u64>,
    /// Lower bound of the attempt delay in ms (at least 10).
    #[arg(long, value_name = "MS")]
    min_attempt_delay: Option<u64>,
    /// Upper bound of the attempt delay in ms.
    #[arg(long, value_name = "MS")]
    max_attempt_delay: Option<u64>,
    /// Preferred Address Family Count (RFC 8305); 0 turns interleaving off.
    #[arg(long, value_name = "N")]
    family_count: Option<usize>,
    /// Maximum attempts in flight.
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>,
    /// Overall deadline of the dial in ms (default 32000, Timer B).
    #[arg(long, value_name = "MS")]
    deadline: Option<u64>,
    /// Only these transports (comma-separated: udp,tcp,tls,sctp).
    #[arg(long, value_delimiter = ',')]
    transports: Option<Vec<String>>,
    /// IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6_only")]
    ipv4_only: bool,
    /// IPv6 only.
    #[arg(short = '6')]
    ipv6_only: bool,
    /// DNS server to ask, IP[:PORT] (default: /etc/resolv.conf).
    #[arg(long, value_name = "IP[:PORT]")]
    dns: Option<String>,
    /// Per-query DNS timeout in ms.
    #[arg(long, value_name = "MS")]
    dns_timeout: Option<u64>,
    /// Over TCP, TLS and SCTP, also send OPTIONS and wait for its answer (UDP always probes).
    #[arg(long)]
    probe: bool,
    /// The SIP domain TLS certificates must match when the target is an
    /// address (or another host) of that domain's server.
    #[arg(long, value_name = "DOMAIN")]
    sip_domain: Option<String>,
    /// SIP Timer T1 in ms for the UDP probe's retransmissions.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    t1: u64,
    /// Print the report as one JSON object instead of the timeline.
    #[arg(long)]
    json: bool,
    /// Quieter: -q prints only the winner line (nothing on failure), -qq
    /// nothing at all; the exit status says how the dial ended.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "json")]
    quiet: u8,
    /// After the report, print FORMAT with curl-style %{variable}s filled in
    /// (winner, family, transport, host, result, time_total, time_dns,
    /// time_connect, attempts, exitcode, target, strategy; times in seconds)
    /// and the escapes \n, \t, %%. Use -qq to print only this.
    #[arg(short = 'w', long, value_name = "FORMAT")]
    write_out: Option<String>,
    /// Load history from this file before the dial and save it after.
    #[arg(long, value_name = "FILE")]
    history_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    /// The local SIP host name for Via sent-by and From (RFC 5923), instead
    /// of the local IP address.
    #[arg(long, value_name = "HOST")]
    local_name: Option<String>,
    #[command(flatten)]
    count: Box<super::dial_count::CountArgs>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Builds the dialer configuration from the flags.
pub fn dial_config(args: &DialArgs) -> Result<DialerConfig, String> {
    let mut cfg = DialerConfig::for_strategy(args.strategy);
    if let Some(rd) = &args.resolution_delay {
        cfg.race.resolution_delay = match rd.as_str() {
            "none" => None,
            n => Some(ms(n.parse().map_err(|_| {
                format!("--resolution-delay takes ms or \"none\", not {n:?}")
            })?)),
        };
    }
    if let Some(v) = args.attempt_delay {
        cfg.race.attempt_delay = ms(v);
    }
    if let Some(v) = args.min_attempt_delay {
        cfg.race.min_attempt_delay = ms(v);
    }
    if let Some(v) = args.max_attempt_delay {
        cfg.race.max_attempt_delay = ms(v);
    }
    if let Some(v) = args.family_count {
        cfg.race.preferred_family_count = v;
    }
    if let Some(v) = args.max_concurrent {
        cfg.race.max_concurrent = v;
    }
    if let Some(v) = args.deadline {
        cfg.race.deadline = ms(v);
    }
    if let Some(list) = &args.transports {
        cfg.transports = Some(super::parse_transports(list)?);
    }
    if args.ipv4_only {
        cfg.locate.families = vec![Family::V4];
    } else if args.ipv6_only {
        cfg.locate.families = vec![Family::V6];
    }
    if let Some(dns) = &args.dns {
        cfg.locate.dns_server =
            Some(siprace::locate::parse_dns_server(dns).map_err(|e| format!("--dns: {e}"))?);
    }
    if let Some(v) = args.dns_timeout {
        cfg.locate.query_timeout = ms(v);
    }
    cfg.connect.probe_streams = args.probe;
    cfg.sip_domain = args.sip_domain.clone();
    cfg.connect.t1 = ms(args.t1);
    args.tls.apply(&mut cfg.connect)?;
    cfg.connect.local_name = args.local_name.clone();
    cfg.validated().map_err(flag_error)
}

/// The `siprace dial` flag behind each field the library validates, so that
/// a range error names what the user typed.
const FLAG_OF_FIELD: &[(&str, &str)] = &[
    ("race.deadline", "--deadline"),
    ("race.resolution_delay", "--resolution-delay"),
    ("race.attempt_delay", "--attempt-delay"),
    ("race.min_attempt_delay", "--min-attempt-delay"),
    ("race.max_attempt_delay", "--max-attempt-delay"),
    ("race.preferred_family_count", "--family-count"),
    ("race.max_concurrent", "--max-concurrent"),
    ("locate.query_timeout", "--dns-timeout"),
    ("locate.dns_server", "--dns"),
    ("connect.t1", "--t1"),
    ("connect.local_name", "--local-name"),
];

/// A configuration error in the words of the command line.
fn flag_error(e: ConfigError) -> String {
    match FLAG_OF_FIELD.iter().find(|(field, _)| *field == e.field) {
        Some((_, flag)) => format!("{flag} must be {}, not {}", e.allowed, e.given),
        None => e.to_string(),
    }
}

/// What the dial's setup changed about the flags, said once at its start:
/// an `--attempt-delay` outside `--min/--max-attempt-delay` runs at the
/// bound, and a history file is ignored by a strategy without history.
fn setup_notes(args: &DialArgs, cfg: &DialerConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(asked) = args.attempt_delay {
        let used = cfg.race.attempt_delay.as_millis();
        if u128::from(asked) > used {
            notes.push(format!(
                "--attempt-delay {asked} runs at the {used} ms maximum (--max-attempt-delay)"
            ));
        } else if u128::from(asked) < used {
            notes.push(format!(
                "--attempt-delay {asked} runs at the {used} ms minimum (--min-attempt-delay)"
            ));
        }
    }
    if args.history_file.is_some() && !cfg.race.use_history {
        notes.push(format!(
            "--history-file is ignored: strategy {} does not use history",
            cfg.strategy
        ));
    }
    notes
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    complain(format_args!("siprace dial: {msg}"));
    ExitCode::from(EXIT_USAGE)
}

/// Runs `siprace dial`; `color` says whether the timeline may be coloured.
pub async fn run(args: DialArgs, color: ColorChoice) -> ExitCode {
    let cfg = match dial_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => return usage(e),
    };
    if args.count.count.is_some() {
        return super::dial_count::run(&args.target, cfg, &args.count, args.json).await;
    }
    let write_out = match args.write_out.as_deref().map(WriteOut::parse).transpose() {
        Ok(w) => w,
        Err(e) => return usage(e),
    };
    let history = match &args.history_file {
        Some(path) => {
            let (history, warning) = History::load_file(path);
            if let Some(warning) = warning {
                eprintln!("siprace: warning: {warning}");
            }
            history
        }
        None => History::default(),
    };
    let notes = setup_notes(&args, &cfg);
    let dialer = match Dialer::with_history(cfg, history) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let target = match Target::parse(&args.target) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    // The human timeline is printed live, as the dial happens.
    let mut live = (args.quiet == 0 && !args.json).then(|| {
        output::LiveTimeline::new(
            crate::closed_output::Guarded(std::io::stdout()),
            color.stdout(),
            &args.target,
            &dialer.config().strategy.to_string(),
            notes.clone(),
        )
        .on_terminal(std::io::stdout().is_terminal())
    });
    // Ctrl-C stops the dial: dropping its future aborts its attempts and
    // queries and closes their sockets. The handler is in place before the
    // dial starts, so a SIGINT can never take the default (silent) exit.
    let mut interrupt =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                complain(format_args!("siprace: cannot handle SIGINT: {e}"));
                return ExitCode::from(EXIT_NO_ANSWER);
            }
        };
    let dial = async {
        match &mut live {
            Some(live) => dialer.dial_observed(&target, live).await,
            None => dialer.dial_target(&target).await,
        }
    };
    let result = tokio::select! {
        result = dial => result,
        _ = interrupt.recv() => {
            if let Some(live) = &mut live {
                live.interrupted();
            }
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    };
    let mut result = result;
    if let Some(path) = &args.history_file {
        if let Err(e) = dialer.history().save_merged(path) {
            eprintln!("siprace: {e}");
        }
    }
    if let Some(report) = match &mut result {
        Ok(Dial { report, .. }) => Some(report),
        Err(DialError::Resolution(report) | DialError::Failed(report)) => Some(report.as_mut()),
        Err(_) => None,
    } {
        report.notes = notes;
    }
    let (report, code) = match &result {
        Ok(Dial { report, .. }) => (report, EXIT_CONNECTED),
        Err(DialError::Target(e)) => return usage(e),
        Err(DialError::InvalidConfig(e)) => return usage(flag_error(e.clone())),
        Err(DialError::Resolution(report)) => (report.as_ref(), EXIT_RESOLUTION),
        Err(DialError::Failed(report)) => (report.as_ref(), EXIT_NO_ANSWER),
        Err(e) => return usage(e),
    };
    if let Some(live) = &mut live {
        live.finish(report);
    }
    let mut text = if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => text + "\n",
            Err(e) => {
                complain(format_args!("siprace: cannot encode the report: {e}"));
                String::new()
            }
        }
    } else {
        match args.quiet {
            // Printed live above.
            0 => String::new(),
            1 => output::quiet_line(report),
            _ => String::new(),
        }
    };
    if let Some(format) = &write_out {
        text.push_str(&format.render(report, code));
    }
    let mut stdout = std::io::stdout().lock();
    closed_output::check(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    );
    ExitCode::from(code)
}
