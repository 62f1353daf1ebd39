//! The `siprace` command: `dial`, `responder`, `lab` (and later `bench`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use siprace::dialer::{Dial, DialError, Dialer, DialerConfig};
use siprace::endpoint::{ConfigError, Family, Transport};
use siprace::race::history::History;
use siprace::race::strategy::Strategy;

/// Happy Eyeballs for SIP: reach a dual-stack SIP server as fast as the
/// working path allows.
#[derive(Parser)]
#[command(name = "siprace", version, about)]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Locate a SIP target (RFC 3263) and race its addresses; print the timeline.
    Dial(DialArgs),
    /// A small SIP UAS answering OPTIONS over UDP and TCP, counting what it sees.
    Responder(siprace::responder::ResponderArgs),
    /// Build the lab, run the scenario matrix with every strategy, write results/ (root).
    Bench(siprace::bench::BenchArgs),
    /// The network-namespace lab: up, down, status, impair, and its helpers.
    #[command(subcommand)]
    Lab(siprace::lab::cli::LabCommand),
}

/// Exit codes of `siprace dial`.
const EXIT_CONNECTED: u8 = 0;
const EXIT_NO_ANSWER: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_RESOLUTION: u8 = 3;

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 connected, 1 no candidate answered (every reason is listed), \
2 usage error, 3 resolution failed."
)]
struct DialArgs {
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
    /// Load history from this file before the dial and save it after.
    #[arg(long, value_name = "FILE")]
    history_file: Option<PathBuf>,
    #[command(flatten)]
    tls: siprace::connect::tls::TlsArgs,
}

fn main() -> ExitCode {
    closed_output::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            closed_output::check(e.print());
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose);
    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            complain(format_args!("siprace: cannot start the runtime: {e}"));
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Dial(args) => dial(args).await,
            Command::Bench(args) => match siprace::bench::run(args).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    complain("siprace bench: an acceptance check failed (see above)");
                    ExitCode::from(EXIT_NO_ANSWER)
                }
                Err(e) => {
                    complain(format_args!("siprace bench: {e}"));
                    ExitCode::from(EXIT_NO_ANSWER)
                }
            },
            Command::Lab(cmd) => match siprace::lab::cli::run(cmd).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    complain(format_args!("siprace lab: {e}"));
                    ExitCode::from(EXIT_NO_ANSWER)
                }
            },
            Command::Responder(args) => match siprace::responder::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    complain(format_args!("siprace responder: {e}"));
                    ExitCode::from(EXIT_NO_ANSWER)
                }
            },
        }
    })
}

/// The tokio runtime, or why there is none. tokio's signal driver panics
/// (instead of returning an error) when no file descriptor is left for its
/// socket pair; that panic is caught, unreported, and becomes the error.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    closed_output::SILENT_PANICS.store(true, std::sync::atomic::Ordering::SeqCst);
    let built = std::panic::catch_unwind(tokio::runtime::Runtime::new);
    closed_output::SILENT_PANICS.store(false, std::sync::atomic::Ordering::SeqCst);
    built.unwrap_or_else(|payload| {
        Err(std::io::Error::other(
            closed_output::panic_message(payload.as_ref()).to_string(),
        ))
    })
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "siprace=debug,info",
        _ => "siprace=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| closed_output::Guarded(std::io::stderr()))
        // Its own complaints go to stderr with eprintln!, which panics when
        // stderr is gone; a closed stderr is handled by the writer instead.
        .log_internal_errors(false)
        .try_init();
}

/// One line on stderr (see [`closed_output`]).
fn complain(msg: impl std::fmt::Display) {
    closed_output::check(writeln!(std::io::stderr(), "{msg}"));
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    complain(format_args!("siprace dial: {msg}"));
    ExitCode::from(EXIT_USAGE)
}

/// Output to a closed pipe (`siprace dial ... | head -c5`) ends the program
/// as it ends a Unix filter: killed by SIGPIPE, quietly, with the status a
/// shell reports as 141 — never a panic (exit 101).
///
/// Rust ignores SIGPIPE, so writes fail with `EPIPE` instead, and
/// `println!`/`eprintln!` panic on that. Restoring SIGPIPE's default action
/// for the whole process is not an option: the dialer's sockets would then
/// kill it too (a TLS peer that resets while rustls writes with `writev`).
/// So the writes to stdout and stderr here check for `EPIPE` and die of
/// SIGPIPE on it, the log writer does the same, and a panic hook does it for
/// a `println!` elsewhere (the responder's, the lab's) that hit `EPIPE`.
mod closed_output {
    use std::any::Any;
    use std::io::{self, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Ends the process as SIGPIPE's default action does.
    pub fn die_of_sigpipe() -> ! {
        // SAFETY: setting a signal's disposition to SIG_DFL and raising it
        // touch no memory of this program.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
        // Only reached if SIGPIPE is blocked: the same status by hand.
        std::process::exit(128 + libc::SIGPIPE)
    }

    /// Dies of SIGPIPE if a write to stdout or stderr found the pipe
    /// closed; passes any other result on.
    fn or_die<T>(result: io::Result<T>) -> io::Result<T> {
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => die_of_sigpipe(),
            other => other,
        }
    }

    /// [`or_die`], ignoring any other write error (there is nowhere left
    /// to report it).
    pub fn check<T>(result: io::Result<T>) {
        let _ = or_die(result);
    }

    /// A writer that dies of SIGPIPE when its stream's reader is gone.
    pub struct Guarded<W>(pub W);

    impl<W: Write> Write for Guarded<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            or_die(self.0.write(buf))
        }

        fn flush(&mut self) -> io::Result<()> {
            or_die(self.0.flush())
        }
    }

    /// While set, panics are not reported: they are caught and turned
    /// into errors (see `build_runtime`).
    pub static SILENT_PANICS: AtomicBool = AtomicBool::new(false);

    /// The text of a panic's payload ("" if it is not text).
    pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
        payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("")
    }

    /// `println!` and `eprintln!` panic with "failed printing to stdout: <the
    /// io::Error>"; for `EPIPE` this hook dies of SIGPIPE before the panic
    /// is reported or unwinds. Every other panic goes to the default hook
    /// (unless [`SILENT_PANICS`] is set).
    pub fn install_panic_hook() {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            let epipe = format!("(os error {})", libc::EPIPE);
            if message.starts_with("failed printing to std") && message.ends_with(&epipe) {
                die_of_sigpipe();
            }
            if !SILENT_PANICS.load(Ordering::SeqCst) {
                default(info)
            }
        }));
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Builds the dialer configuration from the flags.
fn dial_config(args: &DialArgs) -> Result<DialerConfig, String> {
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
        let parsed: Result<Vec<Transport>, String> = list
            .iter()
            .map(|t| {
                Transport::parse(t)
                    .ok_or_else(|| format!("unknown transport {t:?} (udp, tcp, tls, sctp)"))
            })
            .collect();
        cfg.transports = Some(parsed?);
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
];

/// A configuration error in the words of the command line.
fn flag_error(e: ConfigError) -> String {
    match FLAG_OF_FIELD.iter().find(|(field, _)| *field == e.field) {
        Some((_, flag)) => format!("{flag} must be {}, not {}", e.allowed, e.given),
        None => e.to_string(),
    }
}

async fn dial(args: DialArgs) -> ExitCode {
    let cfg = match dial_config(&args) {
        Ok(cfg) => cfg,
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
    let dialer = match Dialer::with_history(cfg, history) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let result = dialer.dial(&args.target).await;
    if let Some(path) = &args.history_file {
        if let Err(e) = dialer.history().save_merged(path) {
            eprintln!("siprace: {e}");
        }
    }
    let (report, code) = match &result {
        Ok(Dial { report, .. }) => (report, EXIT_CONNECTED),
        Err(DialError::Target(e)) => return usage(e),
        Err(DialError::InvalidConfig(e)) => return usage(flag_error(e.clone())),
        Err(DialError::Resolution(report)) => (report.as_ref(), EXIT_RESOLUTION),
        Err(DialError::Failed(report)) => (report.as_ref(), EXIT_NO_ANSWER),
        Err(e) => return usage(e),
    };
    let text = if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => text + "\n",
            Err(e) => {
                complain(format_args!("siprace: cannot encode the report: {e}"));
                String::new()
            }
        }
    } else {
        report.render()
    };
    let mut stdout = std::io::stdout().lock();
    closed_output::check(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    );
    ExitCode::from(code)
}
