//! `siprace lab ...`: its flags, and each subcommand run as calls to the
//! library's lab ([`siprace::lab::topology`], [`siprace::lab::impair`],
//! [`siprace::lab::servers`], [`siprace::lab::dns`]).

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use siprace::endpoint::Family;
use siprace::lab::impair::{Direction, Fault};
use siprace::lab::lock::LabLock;
use siprace::lab::servers::{self, DnsOpts, ServerOpts};
use siprace::lab::topology::{self, LabConfig, Role, ShaperLaunch};
use siprace::lab::{sys, LabError};

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
        /// Also start every server, as `siprace lab serve --name N` does
        /// (DNS with the example zone, responder, SIPp, Kamailio).
        #[arg(long)]
        with_servers: bool,
    },
    /// Tear a lab down (idempotent; also after its processes were killed).
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Show a lab (namespaces, shaper, faults, addresses); without --name, list labs.
    Status {
        /// The lab to show (without it: every lab on this machine, by name).
        #[arg(long)]
        name: Option<String>,
        /// Print the status as JSON (with --name: the lab; without: the list of names).
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
    #[command(hide = true)]
    Shaper {
        /// Lab name (default: $SIPRACE_LAB_NAME).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the lab DNS server in the foreground (in the current namespace) until
    /// SIGTERM or Ctrl-C. Zone: a standard zone file; faults: e.g. `AAAA=delay:300ms,A=drop`
    /// (see netns-scripts/README.md).
    Dns {
        /// Lab name: without --listen, listen on that lab's DNS addresses.
        #[arg(long)]
        name: Option<String>,
        /// Zone file (standard master file; use `$TTL 0`).
        #[arg(long, value_name = "FILE")]
        zone: PathBuf,
        /// Faults per record type: TYPE=FAULT[+FAULT],... with FAULT one of
        /// delay:DURATION, drop, servfail, nxdomain, truncate.
        #[arg(long, value_name = "SPEC", default_value = "")]
        faults: String,
        /// Strip the additional records (A/AAAA of SRV targets) from every answer.
        #[arg(long)]
        no_srv_additionals: bool,
        /// Address to listen on, UDP and TCP (repeatable). Default: the lab's DNS
        /// addresses with --name, else [::]:53 (and 0.0.0.0:53 if IPv6 sockets are v6-only).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Vec<SocketAddr>,
    },
    /// Start servers in a lab that is up: the DNS server (dns namespace, port 53),
    /// the siprace responder (server address #1), SIPp (#2), Kamailio (#3), SIP on
    /// port 5060 over UDP and TCP, both families. Without a server flag: all of them.
    /// Returns once each answers OPTIONS from the client namespace; `down` stops them.
    Serve {
        #[arg(long, default_value = "lab")]
        name: String,
        /// Start the DNS server with this zone (default: lab/zones/example.test.zone, built in).
        #[arg(long, value_name = "FILE")]
        dns_zone: Option<PathBuf>,
        /// DNS faults (see `siprace lab dns --help`).
        #[arg(long, value_name = "SPEC")]
        dns_faults: Option<String>,
        /// Start the DNS server (implied by --dns-zone / --dns-faults).
        #[arg(long)]
        dns: bool,
        /// Start `siprace responder` on 2001:db8:5e::10 and 198.51.100.10.
        #[arg(long)]
        responder: bool,
        /// Start SIPp (lab/sipp/uas.xml) on 2001:db8:5e::11 and 198.51.100.11.
        #[arg(long)]
        sipp: bool,
        /// Start Kamailio (lab/kamailio.cfg) on 2001:db8:5e::12 and 198.51.100.12.
        #[arg(long)]
        kamailio: bool,
        /// Seconds to wait for each server to answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print what was started as JSON.
        #[arg(long)]
        json: bool,
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
    if let LabCommand::Dns {
        name,
        zone,
        faults,
        no_srv_additionals,
        listen,
    } = cmd
    {
        return run_dns(name, zone, faults, no_srv_additionals, listen).await;
    }
    // Everything here is blocking (processes, sleeps): keep it off the async workers.
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: LabCommand) -> Result<(), BoxError> {
    match cmd {
        LabCommand::Up {
            name,
            no_shaper,
            json,
            with_servers,
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
            let started = if with_servers {
                match servers::start_servers(&lab, &ServerOpts::all()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // All or nothing: a half-served lab is torn down again.
                        let _ = topology::down(&lab.name);
                        return Err(e.into());
                    }
                }
            } else {
                None
            };
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
                if let Some(s) = &started {
                    print_servers(s);
                }
            }
        }
        LabCommand::Serve {
            name,
            dns_zone,
            dns_faults,
            dns,
            responder,
            sipp,
            kamailio,
            timeout,
            json,
        } => {
            let lab = topology::Lab::open(&name)?;
            let want_dns = dns || dns_zone.is_some() || dns_faults.is_some();
            let none = !(want_dns || responder || sipp || kamailio);
            let opts = ServerOpts {
                dns: (want_dns || none).then(|| DnsOpts {
                    zone: dns_zone,
                    faults: dns_faults.unwrap_or_default(),
                    no_srv_additionals: false,
                }),
                responder: responder || none,
                sipp: sipp || none,
                kamailio: kamailio || none,
                siprace_bin: None,
                ready_timeout: std::time::Duration::from_secs(timeout.max(1)),
            };
            let t = std::time::Instant::now();
            let s = servers::start_servers(&lab, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("lab {name}: servers up in {:.0?}", t.elapsed());
                print_servers(&s);
            }
        }
        LabCommand::Dns { .. } => unreachable!("handled in run"),
        LabCommand::Down { name } => {
            // A lab that a running bench holds is not torn down under it.
            if let Some(holder) = LabLock::holder(&name)? {
                return Err(LabError::InUse { name, holder }.into());
            }
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
            let now = siprace::lab::impair::impair(&name, family.map(Into::into), server, fault)?;
            if now.is_empty() {
                println!("lab {name}: no faults");
            }
            for i in now {
                println!("{}", serde_json::to_string(&i)?);
            }
        }
        LabCommand::Shaper { name } => siprace::lab::shaper::run_from_env(name.as_deref())?,
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

fn print_servers(s: &servers::Servers) {
    if let Some(d) = &s.dns {
        let faults = if d.faults.is_empty() {
            "no faults"
        } else {
            d.faults.as_str()
        };
        println!(
            "  dns       [{}]:{} {}:{} pid {} zone {} ({faults}), ready in {:.0} ms",
            d.v6,
            d.port,
            d.v4,
            d.port,
            d.pid,
            d.zone.display(),
            d.ready_ms
        );
    }
    for x in &s.sip {
        println!(
            "  {:<9} [{}]:{} {}:{} udp+tcp pids {:?}, ready in {:.0} ms",
            x.kind.to_string(),
            x.v6,
            x.port,
            x.v4,
            x.port,
            x.pids,
            x.ready_ms
        );
    }
}

/// `siprace lab dns`: serves until SIGTERM or Ctrl-C.
async fn run_dns(
    name: Option<String>,
    zone: PathBuf,
    faults: String,
    no_srv_additionals: bool,
    mut listen: Vec<SocketAddr>,
) -> Result<(), BoxError> {
    use siprace::lab::dns::{DnsServer, DnsServerConfig};
    let text =
        std::fs::read_to_string(&zone).map_err(|e| format!("zone file {}: {e}", zone.display()))?;
    let cfg = DnsServerConfig::parse(&text, &faults)
        .map_err(|e| format!("{}: {e}", zone.display()))?
        .with_srv_additionals(!no_srv_additionals);
    if listen.is_empty() {
        if let Some(n) = &name {
            topology::check_name(n)?;
            let a = siprace::lab::LabAddrs::standard();
            listen = vec![
                SocketAddr::new(a.dns_v6.into(), servers::DNS_PORT),
                SocketAddr::new(a.dns_v4.into(), servers::DNS_PORT),
            ];
        } else {
            listen.push("[::]:53".parse()?);
            // A [::] socket also takes IPv4 unless IPv6 sockets are v6-only.
            let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
                .map(|s| s.trim() == "1")
                .unwrap_or(false);
            if v6only {
                listen.push("0.0.0.0:53".parse()?);
            }
        }
    }
    let server = DnsServer::start(cfg, &listen).await?;
    let addrs: Vec<String> = server.addrs().iter().map(|a| a.to_string()).collect();
    let fault_text = if faults.is_empty() {
        "no faults".to_string()
    } else {
        faults.clone()
    };
    println!(
        "lab dns: serving {} on {} (udp+tcp), {fault_text}",
        zone.display(),
        addrs.join(" ")
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    let q = server.queries();
    println!("lab dns: stopping after {} queries", q.total());
    server.shutdown().await;
    Ok(())
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
