//! The `[outbound]` section of a scenario: which UAs, and the timing. Kept
//! apart from the runner so that the scenario can name it without the
//! scenario and the runner importing each other.

use serde::{Deserialize, Serialize};

/// RFC 5626 §4.4.1: how long a keep-alive may go unanswered (siprace's
/// `FlowConfig::pong_timeout`).
pub const PONG_TIMEOUT_S: u64 = 10;
/// After the last affected UA re-registered, the senders go on this long.
pub const SETTLE_S: u64 = 3;

/// A user agent of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UaKind {
    /// `siprace register --flows 2`: one flow per family.
    #[serde(rename = "siprace-flows-2")]
    SipraceFlows2,
    /// `siprace register --flows 1`: the baseline.
    #[serde(rename = "siprace-flows-1")]
    SipraceFlows1,
    /// baresip with `sipnat=outbound`.
    Baresip,
}

impl UaKind {
    pub fn label(self) -> &'static str {
        match self {
            UaKind::SipraceFlows2 => "siprace --flows 2",
            UaKind::SipraceFlows1 => "siprace --flows 1",
            UaKind::Baresip => "baresip (outbound)",
        }
    }

    /// The user part of its AOR.
    pub(super) fn user(self) -> &'static str {
        match self {
            UaKind::SipraceFlows2 => "flows2",
            UaKind::SipraceFlows1 => "flows1",
            UaKind::Baresip => "baresip",
        }
    }

    /// How many flows it registers (baresip: `outbound` and `outbound2`).
    pub(super) fn flows(self) -> usize {
        match self {
            UaKind::SipraceFlows2 | UaKind::Baresip => 2,
            UaKind::SipraceFlows1 => 1,
        }
    }
}

/// The `[outbound]` section of a scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    #[serde(default = "default_uas")]
    pub uas: Vec<UaKind>,
    /// The UAs of a `--quick` run (default: the siprace ones of `uas`).
    pub quick_uas: Option<Vec<UaKind>>,
    #[serde(default = "default_flow_timer")]
    pub flow_timer_s: u64,
    #[serde(default = "default_observe")]
    pub observe_s: u64,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
}

fn default_uas() -> Vec<UaKind> {
    vec![UaKind::SipraceFlows2, UaKind::SipraceFlows1]
}
fn default_flow_timer() -> u64 {
    5
}
fn default_observe() -> u64 {
    30
}
fn default_interval() -> u64 {
    200
}

impl OutboundSpec {
    /// Checks the section's own values; [`Scenario::check`] checks how the
    /// rest of its scenario fits it.
    ///
    /// [`Scenario::check`]: crate::bench::scenario::Scenario::check
    pub fn check_values(&self) -> Result<(), String> {
        let uas_ok = |uas: &[UaKind]| {
            !uas.is_empty() && uas.iter().enumerate().all(|(i, u)| !uas[..i].contains(u))
        };
        if !uas_ok(&self.uas) || self.quick_uas.as_deref().is_some_and(|q| !uas_ok(q)) {
            return Err("outbound.uas (and quick_uas) must be non-empty, without repeats".into());
        }
        if !(1..=120).contains(&self.flow_timer_s) || !(50..=5000).contains(&self.interval_ms) {
            return Err("outbound: flow_timer_s must be 1-120, interval_ms 50-5000".into());
        }
        // A silent break shows after a keep-alive interval and the pong
        // timeout at most: watching less could never see it.
        let least = self.flow_timer_s + PONG_TIMEOUT_S + SETTLE_S;
        if !(least..=300).contains(&self.observe_s) {
            return Err(format!(
                "outbound: observe_s must be {least}-300 (flow_timer_s + {PONG_TIMEOUT_S} s pong \
                 timeout + {SETTLE_S} s)"
            ));
        }
        Ok(())
    }

    pub(super) fn uas(&self, quick: bool) -> Vec<UaKind> {
        match (quick, &self.quick_uas) {
            (true, Some(q)) => q.clone(),
            (true, None) => self
                .uas
                .iter()
                .copied()
                .filter(|u| *u != UaKind::Baresip)
                .collect(),
            (false, _) => self.uas.clone(),
        }
    }
}
