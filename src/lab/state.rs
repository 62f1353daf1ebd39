//! What a lab keeps on disk, in its state directory ([`state_dir`]):
//! `state.json` ([`State`]: the processes it started and the faults in
//! force) and the shaper's two files (`shaper.json`, [`ShaperConfig`], which
//! the lab writes, and `shaper.applied`, [`ShaperAck`], which the shaper
//! writes back), with the fault records ([`Impairment`]) they hold.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::LabError;
use super::names::{state_dir, Role};
use super::sys;
use crate::endpoint::Family;

/// A process the lab started (killed by [`down`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spawned {
    pub pid: u32,
    pub role: Role,
    pub what: String,
}

/// What a lab keeps on disk, in `state.json` of its state directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub shaper_pid: Option<u32>,
    pub processes: Vec<Spawned>,
    pub impairments: Vec<Impairment>,
}

impl State {
    pub fn load(name: &str) -> Option<State> {
        let data = std::fs::read(state_dir(name).join("state.json")).ok()?;
        serde_json::from_slice(&data).ok()
    }
    pub fn save(&self) -> Result<(), LabError> {
        let data = serde_json::to_vec_pretty(self).expect("state serializes");
        sys::write_atomic(&state_dir(&self.name).join("state.json"), &data)
    }
}

/// A silent drop or an active refusal of client→server traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// nftables `drop`: nothing comes back, attempts time out.
    Blackhole,
    /// TCP RST for TCP, ICMP/ICMPv6 port unreachable for the rest: attempts fail at once.
    Reject,
}

/// Which way a delay or loss applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Client → server only (the default: a delay of D ms adds D ms to the RTT).
    #[default]
    ToServer,
    /// Server → client only.
    ToClient,
    /// Both ways (a delay of D ms adds 2·D ms to the RTT).
    Both,
}

impl Direction {
    pub fn covers(self, to_server: bool) -> bool {
        match self {
            Direction::ToServer => to_server,
            Direction::ToClient => !to_server,
            Direction::Both => true,
        }
    }
}

/// The faults on one (family, server) key. `server: None` means every server
/// address of the family (the whole server prefix; DNS traffic is not affected
/// unless its address is named as `server`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    pub family: Family,
    pub server: Option<IpAddr>,
    pub filter: Option<Filter>,
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub delay_direction: Direction,
    /// 0..=100
    pub loss_pct: f64,
    pub loss_direction: Direction,
}

impl Impairment {
    /// No fault yet on the key (`family`, `server`).
    pub(super) fn new(family: Family, server: Option<IpAddr>) -> Impairment {
        Impairment {
            family,
            server,
            filter: None,
            delay_ms: 0,
            jitter_ms: 0,
            delay_direction: Direction::ToServer,
            loss_pct: 0.0,
            loss_direction: Direction::ToServer,
        }
    }
    /// Needs the delay line.
    pub fn shaped(&self) -> bool {
        self.delay_ms > 0 || self.jitter_ms > 0 || self.loss_pct > 0.0
    }
    /// No fault at all: the record can go.
    pub(super) fn is_empty(&self) -> bool {
        self.filter.is_none() && !self.shaped()
    }
}

/// The shaper's configuration file in the state directory.
pub const SHAPER_CONFIG: &str = "shaper.json";
/// What the shaper writes (atomically) after it has read a configuration: a [`ShaperAck`].
pub const SHAPER_APPLIED: &str = "shaper.applied";

/// `<state>/shaper.json`: the shaped faults, with a generation number that grows
/// with every write, so that the writer can tell when the shaper has applied it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShaperConfig {
    pub generation: u64,
    pub rules: Vec<Impairment>,
}

impl ShaperConfig {
    /// Parses a configuration; a bare list of faults (the format before generations) is generation 0.
    pub fn parse(data: &[u8]) -> Result<ShaperConfig, serde_json::Error> {
        serde_json::from_slice::<ShaperConfig>(data).or_else(|e| {
            serde_json::from_slice::<Vec<Impairment>>(data)
                .map(|rules| ShaperConfig {
                    generation: 0,
                    rules,
                })
                .map_err(|_| e)
        })
    }
}

/// `<state>/shaper.applied`: the generation of the configuration the shaper read last,
/// and whether it could use it (`error`: it kept the previous rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShaperAck {
    pub generation: u64,
    pub rules: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The shaper configuration of lab `name` as on disk, if readable.
pub fn read_shaper_config(name: &str) -> Option<ShaperConfig> {
    let data = std::fs::read(state_dir(name).join(SHAPER_CONFIG)).ok()?;
    ShaperConfig::parse(&data).ok()
}

/// The shaper's last acknowledgement in lab `name`, if any.
pub fn read_shaper_ack(name: &str) -> Option<ShaperAck> {
    let data = std::fs::read(state_dir(name).join(SHAPER_APPLIED)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Writes the shaper's view of the faults, `<state>/shaper.json` (the shaped ones, under
/// the next generation number); the shaper picks it up at once. Returns the generation.
/// Does not wait: see [`super::impair::apply`].
pub fn write_shaper_config(name: &str, imps: &[Impairment]) -> Result<u64, LabError> {
    let generation = read_shaper_config(name).map_or(0, |c| c.generation) + 1;
    let cfg = ShaperConfig {
        generation,
        rules: imps.iter().filter(|i| i.shaped()).cloned().collect(),
    };
    let data = serde_json::to_vec_pretty(&cfg).expect("serializes");
    sys::write_atomic(&state_dir(name).join(SHAPER_CONFIG), &data)?;
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaper_config_round_trips_and_reads_the_old_format() {
        let mut rule = Impairment::new(Family::V6, None);
        rule.delay_ms = 200;
        let cfg = ShaperConfig {
            generation: 7,
            rules: vec![rule.clone()],
        };
        let data = serde_json::to_vec(&cfg).unwrap();
        assert_eq!(ShaperConfig::parse(&data).unwrap(), cfg);
        // a bare list (before generations) is generation 0
        let old = serde_json::to_vec(&vec![rule.clone()]).unwrap();
        assert_eq!(
            ShaperConfig::parse(&old).unwrap(),
            ShaperConfig {
                generation: 0,
                rules: vec![rule]
            }
        );
        assert!(ShaperConfig::parse(b"{\"generation\": 3}").is_err());
        let ack: ShaperAck = serde_json::from_str(r#"{"generation":3,"rules":1}"#).unwrap();
        assert_eq!(ack.error, None);
    }
}
