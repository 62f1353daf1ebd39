//! `siprace lab ...`: the command-line face of [`super::topology`] and [`super::impair`].

use std::ffi::OsString;
use std::net::IpAddr;

use super::impair::{Direction, Fault};
use super::topology::{self, LabConfig, Role, ShaperLaunch};
use super::{sys, LabError};
use crate::endpoint::Family;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyArg {
    V6,
    V4,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Family {
        match f {
            FamilyArg::V6 => Family::V6,
            FamilyArg::V4 => Family::V4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DirectionArg {
    #[default]
    ToServer,
    ToClient,
    Both,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Direction {
        match d {
            DirectionArg::ToServer => Direction::ToServer,
            DirectionArg::ToClient => Direction::ToClient,
            DirectionArg::Both => Direction::Both,
        }
    }
}

/// A fault to apply.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FaultArg {
    /// Silently drop client→server packets.
    Blackhole,
    /// Refuse client→server packets: TCP RST, ICMP(v6) port unreachable.
    Reject,
    /// Hold packets for MS milliseconds (± jitter) in the shaper.
    Delay {
        ms: u32,
        #[arg(long, default_value_t = 0)]
        jitter: u32,
        #[arg(long, value_enum, default_value_t = DirectionArg::ToServer)]
        direction: DirectionArg,
    },
    /// Drop PCT percent of the packets in the shaper.
    Loss {
        pct: f64,
        #[arg(long, value_enum, default_value_t = DirectionArg::ToServer)]
        direction: DirectionArg,
    },
    /// Remove faults (of the family / server given, or all).
    Clear,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LabCommand {
    /// Build a lab: namespaces sr-NAME-{cli,rtr,srv,dns}, veths, addresses, routes, shaper.
    Up {
        #[arg(long, default_value = "lab")]
        name: String,
        /// Do not start the shaper (delay and loss are then refused).
        #[arg(long)]
        no_shaper: bool,
        /// Print the lab (addresses, namespaces) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tear a lab down (idempotent; also after its processes were killed).
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Show a lab (namespaces, shaper, faults, addresses); without --name, list labs.
    Status {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Apply a fault in the router.
    Impair {
        #[arg(long, default_value = "lab")]
        name: String,
        /// Family the fault applies to (optional only for `clear`).
        #[arg(long, value_enum)]
        family: Option<FamilyArg>,
        /// One server address (default: the whole server prefix of the family).
        #[arg(long)]
        server: Option<IpAddr>,
        #[command(subcommand)]
        fault: FaultArg,
    },
    /// (internal) The delay line; started by `up` in the router namespace.
    Shaper {
        /// Lab name (default: $SIPRACE_LAB_NAME).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run a command in a namespace of the lab: `siprace lab exec client -- ping -6 2001:db8:5e::10`.
    Exec {
        #[arg(long, default_value = "lab")]
        name: String,
        /// client|router|server|dns
        role: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

/// Runs one `siprace lab` command.
pub async fn run(cmd: LabCommand) -> Result<(), BoxError> {
    // Everything here is blocking (processes, sleeps): keep it off the async workers.
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

pub fn run_blocking(cmd: LabCommand) -> Result<(), BoxError> {
    match cmd {
        LabCommand::Up {
            name,
            no_shaper,
            json,
        } => {
            let t = std::time::Instant::now();
            let cfg = LabConfig {
                name,
                shaper: if no_shaper {
                    ShaperLaunch::Disabled
                } else {
                    ShaperLaunch::Auto
                },
            };
            let lab = topology::up(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lab)?);
            } else {
                let a = &lab.addrs;
                println!("lab {} up in {:.0?}", lab.name, t.elapsed());
                for r in Role::ALL {
                    println!("  {:<6} {}", r.to_string(), lab.ns(r));
                }
                println!("  client  {} {}", a.client_v6, a.client_v4);
                println!(
                    "  servers {} | {}",
                    join(&a.servers_v6),
                    join(&a.servers_v4)
                );
                println!("  dns     {} {}", a.dns_v6, a.dns_v4);
                if let Some(p) = lab.shaper_pid {
                    println!("  shaper  pid {p}");
                }
            }
        }
        LabCommand::Down { name } => {
            let removed = topology::down(&name)?;
            if removed.is_empty() {
                println!("lab {name}: nothing to remove");
            } else {
                println!("lab {name} down: removed {}", removed.join(", "));
            }
        }
        LabCommand::Status { name: None, json } => {
            let labs = topology::list();
            if json {
                println!("{}", serde_json::to_string(&labs)?);
            } else if labs.is_empty() {
                println!("no lab");
            } else {
                for l in labs {
                    println!("{l}");
                }
            }
        }
        LabCommand::Status {
            name: Some(name),
            json,
        } => {
            let st = topology::status(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("lab {}: {}", st.name, if st.up { "up" } else { "not up" });
                for (ns, e) in &st.namespaces {
                    println!("  {ns:<20} {}", if *e { "present" } else { "absent" });
                }
                match st.shaper_pid {
                    Some(p) => println!(
                        "  shaper pid {p} {}",
                        if st.shaper_alive { "running" } else { "DEAD" }
                    ),
                    None => println!("  no shaper"),
                }
                for (p, alive) in &st.processes {
                    println!(
                        "  {} pid {} in {} {}",
                        p.what,
                        p.pid,
                        p.role,
                        if *alive { "running" } else { "dead" }
                    );
                }
                if st.impairments.is_empty() {
                    println!("  no faults");
                }
                for i in &st.impairments {
                    println!("  fault {}", serde_json::to_string(i)?);
                }
            }
        }
        LabCommand::Impair {
            name,
            family,
            server,
            fault,
        } => {
            let fault = match fault {
                FaultArg::Blackhole => Fault::Blackhole,
                FaultArg::Reject => Fault::Reject,
                FaultArg::Delay {
                    ms,
                    jitter,
                    direction,
                } => Fault::Delay {
                    ms,
                    jitter_ms: jitter,
                    direction: direction.into(),
                },
                FaultArg::Loss { pct, direction } => Fault::Loss {
                    pct,
                    direction: direction.into(),
                },
                FaultArg::Clear => Fault::Clear,
            };
            let now = super::impair::impair(&name, family.map(Into::into), server, fault)?;
            if now.is_empty() {
                println!("lab {name}: no faults");
            }
            for i in now {
                println!("{}", serde_json::to_string(&i)?);
            }
        }
        LabCommand::Shaper { name } => super::shaper::run_from_env(name.as_deref())?,
        LabCommand::Exec {
            name,
            role,
            command,
        } => {
            sys::preflight()?;
            let role: Role = role.parse()?;
            let ns = topology::ns_name(&name, role);
            if !sys::netns_exists(&ns) {
                return Err(LabError::NotUp(name).into());
            }
            let (prog, args) = command
                .split_first()
                .ok_or_else(|| LabError::Invalid("no command".into()))?;
            let status = sys::netns_command(&ns, prog).args(args).status()?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
        }
    }
    Ok(())
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
