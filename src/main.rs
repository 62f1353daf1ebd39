//! The `siprace` command: `dial`, `register`, `responder`, `lab` and `bench`.
//!
//! [`cli`] holds every flag and what each subcommand does with them; this
//! file starts the runtime and logging, dispatches, and makes output to a
//! closed pipe end the process quietly ([`closed_output`]).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, EXIT_NO_ANSWER, EXIT_USAGE};

fn main() -> ExitCode {
    closed_output::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            closed_output::check(e.print());
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose, cli.color.stderr());
    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            complain(format_args!("siprace: cannot start the runtime: {e}"));
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Dial(args) => cli::dial::run(args, cli.color).await,
            Command::Register(args) => cli::register::run(args).await,
            Command::Bench(args) => match siprace::bench::run(args.config()).await {
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
            Command::Lab(cmd) => match cli::lab::run(cmd).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    complain(format_args!("siprace lab: {e}"));
                    ExitCode::from(EXIT_NO_ANSWER)
                }
            },
            Command::Completions { shell } => print_stdout(&cli::completions(shell)),
            Command::Man { subcommand } => match cli::man_page(subcommand.as_deref()) {
                Ok(page) => print_stdout(&page),
                Err(e) => {
                    complain(format_args!("siprace man: {e}"));
                    ExitCode::from(EXIT_USAGE)
                }
            },
            Command::Responder(args) => match cli::responder::run(args).await {
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

/// Logs go to stderr, with ANSI colour only when `ansi` (a terminal, see
/// `--color`). hickory's own debug output is filtered by its targets and
/// shown only from -vvv, so that -v and -vv stay readable timelines.
fn init_logging(verbose: u8, ansi: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "siprace=debug,hickory_proto=warn,hickory_resolver=warn,info",
        2 => "siprace=trace,hickory_proto=warn,hickory_resolver=warn,info",
        _ => "siprace=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| closed_output::Guarded(std::io::stderr()))
        .with_ansi(ansi)
        // Its own complaints go to stderr with eprintln!, which panics when
        // stderr is gone; a closed stderr is handled by the writer instead.
        .log_internal_errors(false)
        .try_init();
}

/// `bytes` on stdout (see [`closed_output`]), then success.
fn print_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    closed_output::check(stdout.write_all(bytes).and_then(|()| stdout.flush()));
    ExitCode::SUCCESS
}

/// One line on stderr (see [`closed_output`]).
fn complain(msg: impl std::fmt::Display) {
    closed_output::check(writeln!(std::io::stderr(), "{msg}"));
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
