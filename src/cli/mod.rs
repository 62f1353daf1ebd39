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
pub mod lab;
pub mod output;
pub mod responder;
pub mod tls;

use clap::{Parser, Subcommand};

/// Happy Eyeballs for SIP: reach a dual-stack SIP server as fast as the
/// working path allows.
#[derive(Parser)]
#[command(name = "siprace", version, about)]
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
    /// A small SIP UAS answering OPTIONS over UDP and TCP, counting what it sees.
    Responder(responder::ResponderArgs),
    /// Build the lab, run the scenario matrix with every strategy, write results/ (root).
    Bench(bench::BenchArgs),
    /// The network-namespace lab: up, down, status, impair, and its helpers.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

/// Exit codes of `siprace dial` (the other commands use 0, 1 and 2 alike).
pub const EXIT_CONNECTED: u8 = 0;
pub const EXIT_NO_ANSWER: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_RESOLUTION: u8 = 3;
