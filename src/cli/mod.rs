//! The command line of `siprace`: every subcommand's flags, each with its
//! help and default, and how they become the library's configuration.
//!
//! Only the binary parses arguments (as ripgrep keeps its flags in the
//! binary): the library takes plain configuration structs
//! ([`siprace::DialerConfig`], [`siprace::responder::ResponderConfig`],
//! [`siprace::bench::BenchConfig`]) and checks them itself, so library users
//! never depend on clap. One file per subcommand; `main.rs` dispatches.

pub mod bench;
pub mod dial;
pub mod dial_count;
pub mod lab;
pub mod output;
pub mod register;
pub mod responder;
pub mod tls;

use clap::{CommandFactory, Parser, Subcommand};

/// Happy Eyeballs for SIP: reach a dual-stack SIP server as fast as the
/// working path allows.
/// `siprace -V`: the version, the commit and the build date (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SIPRACE_GIT_COMMIT"),
    ", built ",
    env!("SIPRACE_BUILD_DATE"),
    ")"
);

/// `siprace --version`: [`VERSION`] and the enabled features and target.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("SIPRACE_GIT_COMMIT"),
    "\nbuilt: ",
    env!("SIPRACE_BUILD_DATE"),
    "\nfeatures: ",
    env!("SIPRACE_FEATURES"),
    "\nlicense: ",
    env!("CARGO_PKG_LICENSE"),
);

#[derive(Parser)]
#[command(name = "siprace", version = VERSION, long_version = LONG_VERSION, about)]
pub struct Cli {
    /// More logging: -v debug, -vv trace of siprace, -vvv also the DNS
    /// resolver's (hickory) debug output; RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: output::ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Locate a SIP target (RFC 3263) and race its addresses; print the timeline.
    Dial(dial::DialArgs),
    /// A small SIP UAS over UDP, TCP, TLS and SCTP: answers OPTIONS and REGISTER, counts what it sees.
    Responder(responder::ResponderArgs),
    /// Register an AOR with SIP Outbound (RFC 5626): one flow per address family, each raced, kept alive, re-raced when it fails.
    Register(register::RegisterArgs),
    /// Build the lab, run the scenario matrix with every strategy, write the results (root).
    Bench(bench::BenchArgs),
    /// The network-namespace lab: up, down, status, impair, and its helpers.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Print a shell completion script, e.g. `siprace completions bash > /etc/bash_completion.d/siprace`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `siprace man | man -l -`; `siprace man dial` for a subcommand's.
    Man {
        /// The subcommand whose page to print (default: siprace's own).
        subcommand: Option<String>,
    },
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "siprace", &mut script);
    script
}

/// The manual page of `siprace` or of one of its subcommands (roff).
pub fn man_page(subcommand: Option<&str>) -> Result<Vec<u8>, String> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match subcommand {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(|c| c.get_name().to_owned())
                .collect();
            let Some(sub) = cmd.find_subcommand(name) else {
                return Err(format!(
                    "no subcommand {:?} (one of: {})",
                    siprace::report::terminal_safe(name),
                    names.join(", ")
                ));
            };
            // Once built, clap names it like git's pages: siprace-dial(1).
            sub.clone()
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| e.to_string())?;
    Ok(roff)
}

/// Exit codes of `siprace dial` (the other commands use 0, 1 and 2 alike).
pub const EXIT_CONNECTED: u8 = 0;
pub const EXIT_NO_ANSWER: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_RESOLUTION: u8 = 3;

/// `text` on stdout, flushed (a line of a stream of events or dials; see
/// `closed_output` for a closed stdout).
pub fn print(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    crate::closed_output::check(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    );
}

/// The transports of a `--transports udp,tcp,...` list.
pub fn parse_transports(list: &[String]) -> Result<Vec<siprace::Transport>, String> {
    list.iter()
        .map(|t| {
            siprace::Transport::parse(t)
                .ok_or_else(|| format!("unknown transport {t:?} (udp, tcp, tls, sctp)"))
        })
        .collect()
}
