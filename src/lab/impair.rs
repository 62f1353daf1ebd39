//! Faults: per family, optionally per server address. Blackhole and reject are
//! nftables rules in the router namespace; delay and loss divert the traffic
//! through the TUN of the shaper (see [`super::shaper`]).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use super::error::LabError;
use super::names::{ns_name, state_dir, Role};
use super::state::State;
pub use super::state::{
    read_shaper_ack, read_shaper_config, write_shaper_config, Direction, Filter, Impairment,
    ShaperAck, ShaperConfig, SHAPER_APPLIED, SHAPER_CONFIG,
};
use super::sys;
use super::topology::{LabAddrs, Prefix, RTR_CLIENT_IF, SHAPE_MARK, TUN_DEV};
use crate::endpoint::Family;

/// One change to the faults.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Blackhole,
    Reject,
    /// Fixed delay plus a uniform jitter in [-jitter, +jitter] (clamped at 0), FIFO order kept.
    Delay {
        ms: u32,
        jitter_ms: u32,
        direction: Direction,
    },
    /// Drop this percentage of the packets (0-100).
    Loss {
        pct: f64,
        direction: Direction,
    },
    /// Remove the faults of the key (with `server: None`, every fault of the family;
    /// with `family: None` too, every fault).
    Clear,
}

/// Applies one fault. `family` is required except for `Clear`; `server`, if
/// given, must be of that family. Returns the faults now in force.
pub fn impair(
    name: &str,
    family: Option<Family>,
    server: Option<IpAddr>,
    fault: Fault,
) -> Result<Vec<Impairment>, LabError> {
    sys::preflight()?;
    let mut st = State::load(name).ok_or_else(|| LabError::NotUp(name.to_string()))?;
    if let (Some(f), Some(s)) = (family, server) {
        if Family::of(&s) != f {
            return Err(LabError::Invalid(format!(
                "server {s} is not of family {f:?}"
            )));
        }
    }
    let family = match (family, server) {
        (Some(f), _) => Some(f),
        (None, Some(s)) => Some(Family::of(&s)),
        (None, None) => None,
    };
    if let Fault::Clear = fault {
        st.impairments.retain(|i| match (family, server) {
            (None, _) => false,
            (Some(f), None) => i.family != f,
            (Some(f), Some(s)) => !(i.family == f && i.server == Some(s)),
        });
    } else {
        let family = family.ok_or_else(|| LabError::Invalid("--family is required".into()))?;
        let idx = match st
            .impairments
            .iter()
            .position(|i| i.family == family && i.server == server)
        {
            Some(i) => i,
            None => {
                st.impairments.push(Impairment::new(family, server));
                st.impairments.len() - 1
            }
        };
        let imp = &mut st.impairments[idx];
        match fault {
            Fault::Blackhole => imp.filter = Some(Filter::Blackhole),
            Fault::Reject => imp.filter = Some(Filter::Reject),
            Fault::Delay {
                ms,
                jitter_ms,
                direction,
            } => {
                imp.delay_ms = ms;
                imp.jitter_ms = jitter_ms;
                imp.delay_direction = direction;
            }
            Fault::Loss { pct, direction } => {
                if !(0.0..=100.0).contains(&pct) {
                    return Err(LabError::Invalid(format!(
                        "loss {pct}% is not within 0-100"
                    )));
                }
                imp.loss_pct = pct;
                imp.loss_direction = direction;
            }
            Fault::Clear => unreachable!(),
        }
        if imp.shaped() && !st.shaper_pid.is_some_and(sys::alive) {
            return Err(LabError::Invalid("delay/loss need the shaper, which is not running (lab up without shaper, or it died)".into()));
        }
        st.impairments.retain(|i| !i.is_empty());
    }
    apply(name, &st.impairments)?;
    st.save()?;
    Ok(st.impairments)
}

/// How often and how many times [`apply`] looks for the shaper's acknowledgement (5 ms × 600 = 3 s).
pub const ACK_POLL: Duration = Duration::from_millis(5);
pub const ACK_TRIES: u32 = 600;
/// Pushes the faults to the router: first the shaper config (waiting until the shaper
/// has applied it, if any fault is shaped), then the nftables table `inet siprace`.
/// In this order a delay or loss is in force for the first packet nftables diverts,
/// and when this returns every fault is in force. Blackhole and reject need no
/// shaper: they are in force when `nft` returns. Errors if a shaped fault is asked
/// for and the shaper is dead or does not acknowledge within 3 s.
pub fn apply(name: &str, imps: &[Impairment]) -> Result<(), LabError> {
    let shaped: Vec<Impairment> = imps.iter().filter(|i| i.shaped()).cloned().collect();
    let prev = read_shaper_config(name);
    let prev_acked = match (&prev, read_shaper_ack(name)) {
        (Some(p), Some(a)) => a.generation >= p.generation && a.error.is_none(),
        _ => false,
    };
    let unchanged = prev.as_ref().is_some_and(|p| p.rules == shaped);
    // Without shaped faults nothing is diverted to the shaper once nft returns: no wait.
    if !(unchanged && (prev_acked || shaped.is_empty())) {
        let generation = write_shaper_config(name, imps)?;
        if !shaped.is_empty() {
            let pid = State::load(name).and_then(|s| s.shaper_pid);
            wait_shaper_applied(name, pid, generation)?;
        }
    }
    let script = nft_script(&LabAddrs::standard(), imps);
    if !imps.is_empty() || sys::which("nft").is_some() {
        sys::require("nft", "nftables")?;
        let mut cmd: Command = sys::netns_command(&ns_name(name, Role::Router), "nft");
        cmd.args(["-f", "-"]);
        sys::run_input(&mut cmd, Some(&script))?;
    }
    Ok(())
}

/// Waits (bounded: [`ACK_TRIES`] × [`ACK_POLL`]) until the shaper `pid` of lab `name`
/// reports that it applied configuration `generation` (or a later one).
pub fn wait_shaper_applied(name: &str, pid: Option<u32>, generation: u64) -> Result<(), LabError> {
    let Some(pid) = pid else {
        return Err(LabError::Invalid(format!(
            "delay/loss need the shaper, and lab {name} has none (up without shaper)"
        )));
    };
    let log = state_dir(name).join("shaper.log");
    let outcome = sys::poll(ACK_TRIES, ACK_POLL, || {
        if !sys::alive(pid) {
            return Some(Err(LabError::Invalid(format!(
                "the shaper of lab {name} (pid {pid}) is not running, so delay/loss cannot take effect (see {})",
                log.display()
            ))));
        }
        match read_shaper_ack(name) {
            Some(a) if a.generation == generation && a.error.is_some() => {
                Some(Err(LabError::Invalid(format!(
                    "the shaper of lab {name} rejected its configuration (generation {generation}): {}",
                    a.error.unwrap_or_default()
                ))))
            }
            Some(a) if a.generation >= generation => Some(Ok(())),
            _ => None,
        }
    });
    outcome.unwrap_or_else(|| {
        let last = read_shaper_ack(name)
            .map(|a| a.generation.to_string())
            .unwrap_or_else(|| "none".into());
        Err(LabError::Invalid(format!(
            "the shaper of lab {name} (pid {pid}) did not apply its configuration (generation {generation}, last applied: {last}) within {:?} (see {})",
            ACK_POLL * ACK_TRIES,
            log.display()
        )))
    })
}

/// The nftables keyword of a family's address matches.
fn fam_kw(f: Family) -> &'static str {
    match f {
        Family::V6 => "ip6",
        Family::V4 => "ip",
    }
}

/// The complete nftables script for a set of faults (replaces the previous table).
pub fn nft_script(a: &LabAddrs, imps: &[Impairment]) -> String {
    let mut s = String::from("table inet siprace\ndelete table inet siprace\n");
    if imps.is_empty() {
        return s;
    }
    let scope = |i: &Impairment| -> String {
        match i.server {
            Some(ip) => ip.to_string(),
            None => match i.family {
                Family::V6 => a.server_net_v6.to_string(),
                Family::V4 => a.server_net_v4.to_string(),
            },
        }
    };
    let client_net = |f: Family| -> Prefix {
        match f {
            Family::V6 => a.client_net_v6,
            Family::V4 => a.client_net_v4,
        }
    };
    // Specific servers first so that their rules win over family-wide ones.
    let mut order: Vec<&Impairment> = imps.iter().collect();
    order.sort_by_key(|i| i.server.is_none());

    s.push_str("table inet siprace {\n");
    s.push_str(
        "  chain shape_mark {\n    type filter hook prerouting priority mangle; policy accept;\n",
    );
    for i in order.iter().filter(|i| i.shaped()) {
        let k = fam_kw(i.family);
        let sc = scope(i);
        let _ = writeln!(
            s,
            "    iifname \"{RTR_CLIENT_IF}\" {k} daddr {sc} meta mark set {SHAPE_MARK:#x}"
        );
        let _ = writeln!(
            s,
            "    iifname != \"{TUN_DEV}\" {k} saddr {sc} {k} daddr {} meta mark set {SHAPE_MARK:#x}",
            client_net(i.family)
        );
    }
    s.push_str("  }\n");
    s.push_str("  chain faults {\n    type filter hook forward priority filter; policy accept;\n");
    for i in order.iter() {
        let k = fam_kw(i.family);
        let sc = scope(i);
        match i.filter {
            Some(Filter::Blackhole) => {
                let _ = writeln!(
                    s,
                    "    iifname \"{RTR_CLIENT_IF}\" {k} daddr {sc} counter drop"
                );
            }
            Some(Filter::Reject) => {
                let _ = writeln!(s, "    iifname \"{RTR_CLIENT_IF}\" {k} daddr {sc} meta l4proto tcp counter reject with tcp reset");
                let _ = writeln!(s, "    iifname \"{RTR_CLIENT_IF}\" {k} daddr {sc} counter reject with icmpx type port-unreachable");
            }
            None => {}
        }
    }
    s.push_str("  }\n}\n");
    s
}
