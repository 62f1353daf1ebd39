//! What recent dials learnt, per network: for each path (target host,
//! family, transport) whether it worked and how fast, and from that, per
//! family, whether the family is failing on the network as a whole.
//!
//! The store is plain data driven by the caller's wall clock, and the
//! network is plain data too (a [`NetworkId`] the driver derives from the
//! routes, source prefixes and DNS servers it sees, see `crate::network`),
//! so the engine stays pure. Merging is here as well
//! (`History::merged_into`): the CLI keeps the history in a file that
//! several processes may share, and a save applies this process's
//! observations to what the file holds by then (the file itself is
//! [`crate::history_file`]'s business). Since everything below is derived
//! from the per-path entries, a series of processes sharing one file
//! learns exactly what one long-lived `Dialer` learns.
//!
//! # The rules
//!
//! 1. **Partitioned by network** (HEv3: history "MUST NOT be used across
//!    networks"). Every entry belongs to the network it was learnt on; a
//!    dial sees only its own network's entries ([`History::view`]), so a
//!    new network starts from a clean slate. Partitions of other networks
//!    are kept (at most [`MAX_NETWORKS`], the least recently used go first),
//!    so coming back to a known network reuses what was learnt there.
//! 2. **Per path**: a path's newest observation decides its verdict
//!    ([`PathVerdict`]). A failure younger than the failure memory
//!    (`failure_memory`, 30 s) **demotes** the path: its family is tried
//!    after the other one. An older failure with no success since leaves
//!    the path [`PathVerdict::Doubtful`]: back in its usual place, with the
//!    shortest head start (see rule 5), so that a repair is noticed by the
//!    next dial and a path still broken costs that dial only the head
//!    start. Entries expire after `expiry` (10 min, RFC 6555 §4.2).
//! 3. **RTT per path**, RFC 6298 style: a smoothed RTT and its variance
//!    ([`RttEstimate`]) from every success. The attempt delay after an
//!    attempt on a path with an estimate is `srtt + max(4·rttvar,`
//!    [`RTT_LEEWAY`]`)` (the retransmission timeout of RFC 6298 with the
//!    leeway as its clock granularity), clamped to the configured bounds.
//! 4. **RTT rule** (HEv3 §4, Apple's 25 ms leeway): when history knows both
//!    families' RTTs for a service location, the faster family goes first
//!    unless the preferred family is within [`RTT_LEEWAY`] of it.
//! 5. **Cross-host evidence**: a family is *suspect* on a network when
//!    paths of that family to at least [`SUSPECT_HOSTS`] distinct hosts
//!    failed after the last success of that family on the network (any
//!    host). A suspect family keeps its place in the order, so it can never
//!    be locked out, but a new host (no verdict of its own) gives it only
//!    the shortest head start the configuration allows (the minimum
//!    attempt delay, 10 ms, HEv3's floor): the other family starts that
//!    soon after it. A working path still wins unless it is slower than
//!    the other family by more than that, and its first success ends the
//!    suspicion. The evidence lasts as long as its entries (`expiry`): its
//!    effect is mild, so it needs no shorter memory.
//!
//! # Convergence (HEv3: clients MUST "eventually converge")
//!
//! Nothing is ever locked out. A demoted path is tried first again once its
//! failure is older than `failure_memory`; during the demotion the path is
//! not attempted, so its last failure predates a repair, and the first dial
//! at most `failure_memory` (30 s) after the repair tries it first again
//! and wins with it. A suspect family is tried first on every new host all
//! along, so a repair of the network is used by the next such dial.
//!
//! Wall clocks step backwards: an entry dated more than [`FUTURE_SKEW`]
//! after "now" was written by a clock we no longer trust. It is ignored and
//! pruned, so it cannot demote its path until the clock catches up.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, Family, Transport};
use crate::race::{AttemptEnd, AttemptRecord, CancelReason};

/// The network a history partition belongs to: an opaque key, the same
/// for every visit to the same network (see `crate::network` for how the
/// driver derives it). A hash, so the file does not spell out addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NetworkId(String);

impl NetworkId {
    /// The key of the network described by `description` (the driver's
    /// canonical text of routes, prefixes and DNS servers): its 64-bit
    /// FNV-1a hash in hex, stable across processes and versions.
    pub fn of(description: &str) -> NetworkId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in description.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        NetworkId(format!("{hash:016x}"))
    }

    /// A network given by name, e.g. by an application that knows which
    /// network it is on.
    pub fn named(name: &str) -> NetworkId {
        NetworkId(name.to_string())
    }

    /// The network when it cannot be identified: all such dials share it.
    pub fn unknown() -> NetworkId {
        NetworkId::named("unknown")
    }

    /// The id as text (as stored in the history file and shown in reports).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path as history sees it. Addresses are not part of the key: SRV
/// targets rotate addresses, and it is the family's route that breaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathKey {
    /// The host name the endpoint was found through (SRV target or URI host).
    pub host: String,
    /// The address family of the path.
    pub family: Family,
    /// The transport of the path.
    pub transport: Transport,
}

impl PathKey {
    /// The path `e` is on: its host, family and transport (its address is
    /// left out).
    pub fn of(e: &Endpoint) -> PathKey {
        PathKey {
            host: e.host.to_string(),
            family: e.family(),
            transport: e.transport,
        }
    }
}

/// The RTT difference below which the preferred family keeps its place
/// (Apple's documented leeway), and the smallest margin an RTT-based
/// attempt delay keeps over the smoothed RTT.
pub const RTT_LEEWAY: Duration = Duration::from_millis(25);

/// How many distinct hosts must have failed over a family, with no success
/// of that family since, for the family to be suspect on a network: one
/// broken server is that server's problem, two are the network's.
pub const SUSPECT_HOSTS: usize = 2;

/// A path's smoothed round-trip time (time from the attempt's start to its
/// success) and its mean deviation, after RFC 6298 §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimate {
    /// The smoothed RTT (SRTT, RFC 6298 §2).
    pub srtt: Duration,
    /// The RTT variation (RTTVAR, RFC 6298 §2).
    pub rttvar: Duration,
}

impl RttEstimate {
    /// An estimate from one sample (RFC 6298 §2.2: the variance is half of it).
    pub fn of(rtt: Duration) -> RttEstimate {
        RttEstimate {
            srtt: rtt,
            rttvar: rtt / 2,
        }
    }

    /// How long the next family waits after an attempt on this path:
    /// `srtt + max(4·rttvar, RTT_LEEWAY)` (RFC 6298's RTO with the leeway
    /// as its granularity), before the configured bounds.
    pub fn attempt_delay(&self) -> Duration {
        self.srtt
            .saturating_add(self.rttvar.saturating_mul(4).max(RTT_LEEWAY))
    }
}

/// What the engine uses of history about one path when it orders
/// candidates and paces attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathVerdict {
    /// History holds nothing about it: the engine uses the configured
    /// attempt delay and the usual order.
    Unknown,
    /// Its newest observation is a success.
    Worked {
        /// The smoothed RTT of its successes.
        rtt: RttEstimate,
    },
    /// It failed within the failure memory: demoted.
    Failed,
    /// It failed longer ago than the failure memory and has not worked
    /// since: tried in its usual place again, with the shortest head start.
    Doubtful,
}

/// A snapshot of history for one dial, on one network.
#[derive(Debug, Clone, Default)]
pub struct HistoryView {
    paths: HashMap<PathKey, PathVerdict>,
    /// How long before the view was taken each failed path last failed
    /// (for the report's explanations).
    failed_ago: HashMap<PathKey, Duration>,
    /// Per family (IPv6, IPv4): suspect on this network (rule 5).
    suspect: [bool; 2],
}

fn family_slot(f: Family) -> usize {
    match f {
        Family::V6 => 0,
        Family::V4 => 1,
    }
}

impl HistoryView {
    /// The verdict on the path `e` is on ([`PathVerdict::Unknown`] when
    /// history has none).
    pub fn verdict(&self, e: &Endpoint) -> PathVerdict {
        self.verdict_of_path(&e.host, e.family(), e.transport)
    }

    /// The verdict on the path of `host`, `family` and `transport`
    /// ([`PathVerdict::Unknown`] when history has none).
    pub fn verdict_of_path(&self, host: &str, family: Family, transport: Transport) -> PathVerdict {
        let key = PathKey {
            host: host.to_string(),
            family,
            transport,
        };
        self.paths
            .get(&key)
            .copied()
            .unwrap_or(PathVerdict::Unknown)
    }

    /// Sets the verdict on the path `e` is on, replacing any earlier one.
    pub fn insert(&mut self, e: &Endpoint, v: PathVerdict) {
        self.paths.insert(PathKey::of(e), v);
    }

    /// How long before this view was taken the path `e` is on last failed,
    /// when history knows (for explanations; the rules use the verdict).
    pub fn failed_ago(&self, e: &Endpoint) -> Option<Duration> {
        self.failed_ago.get(&PathKey::of(e)).copied()
    }

    /// [`HistoryView::failed_ago`] of the path of `host`, `family` and
    /// `transport`.
    pub fn failed_ago_of_path(
        &self,
        host: &str,
        family: Family,
        transport: Transport,
    ) -> Option<Duration> {
        let key = PathKey {
            host: host.to_string(),
            family,
            transport,
        };
        self.failed_ago.get(&key).copied()
    }

    /// Records that the path `e` is on last failed `ago` before the view.
    pub fn set_failed_ago(&mut self, e: &Endpoint, ago: Duration) {
        self.failed_ago.insert(PathKey::of(e), ago);
    }

    /// Whether `family` is failing on this network as a whole (rule 5).
    pub fn family_suspect(&self, family: Family) -> bool {
        self.suspect[family_slot(family)]
    }

    /// Marks `family` as failing (or not) on this network as a whole (rule 5).
    pub fn set_family_suspect(&mut self, family: Family, suspect: bool) {
        self.suspect[family_slot(family)] = suspect;
    }

    /// True when the view says nothing: no path verdicts, no suspect family.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.suspect == [false; 2]
    }
}

/// How one attempt of a finished dial went, as history records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOutcome {
    /// Connected after `rtt` (time from attempt start to success).
    Worked(Duration),
    /// Failed, or lost the race without finishing within the attempt delay.
    Failed,
}

/// What a finished race teaches, one outcome per path (several attempts
/// may share a path: the addresses of one host and family):
/// - a path with a winning attempt worked, with that attempt's time;
/// - otherwise a path failed if one of its attempts failed, timed out, met
///   the deadline, or lost the race although it started before the winner
///   (a head start it could not use: slower or broken);
/// - attempts started after the winner teach nothing.
pub fn outcomes_of(attempts: &[AttemptRecord]) -> Vec<(Endpoint, PathOutcome)> {
    let winner_started = attempts
        .iter()
        .find(|a| a.end == AttemptEnd::Won)
        .map(|a| a.started);
    let mut out: Vec<(Endpoint, PathOutcome)> = Vec::new();
    for a in attempts {
        let outcome = match &a.end {
            AttemptEnd::Won => match a.ended {
                Some(end) => PathOutcome::Worked(end.saturating_duration_since(a.started)),
                None => continue,
            },
            AttemptEnd::Failed(_)
            | AttemptEnd::Cancelled(CancelReason::Deadline | CancelReason::AttemptTimeout) => {
                PathOutcome::Failed
            }
            AttemptEnd::Cancelled(CancelReason::LostRace)
                if winner_started.is_some_and(|w| a.started < w) =>
            {
                PathOutcome::Failed
            }
            AttemptEnd::Cancelled(CancelReason::LostRace) | AttemptEnd::InFlight => continue,
        };
        let key = PathKey::of(&a.endpoint);
        match out.iter_mut().find(|(e, _)| PathKey::of(e) == key) {
            // A success on the path outweighs a failure of another address on it.
            Some(slot) if matches!(outcome, PathOutcome::Worked(_)) => {
                *slot = (a.endpoint.clone(), outcome)
            }
            Some(_) => {}
            None => out.push((a.endpoint.clone(), outcome)),
        }
    }
    out
}

/// One path's record on one network. Times are wall-clock milliseconds
/// since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PathEntry {
    #[serde(flatten)]
    key: PathKey,
    /// Smoothed RTT and its variance in microseconds (RFC 6298, alpha =
    /// 1/8, beta = 1/4), once the path ever worked.
    srtt_us: Option<u64>,
    rttvar_us: Option<u64>,
    /// The last success and the last failure.
    worked_ms: Option<u64>,
    failed_ms: Option<u64>,
    /// Whether the newest observation was a failure.
    last_failed: bool,
}

impl PathEntry {
    fn new(key: PathKey) -> PathEntry {
        PathEntry {
            key,
            srtt_us: None,
            rttvar_us: None,
            worked_ms: None,
            failed_ms: None,
            last_failed: false,
        }
    }

    /// The time of the newest observation.
    fn updated_ms(&self) -> u64 {
        self.worked_ms.max(self.failed_ms).unwrap_or(0)
    }

    fn rtt(&self) -> Option<RttEstimate> {
        Some(RttEstimate {
            srtt: Duration::from_micros(self.srtt_us?),
            rttvar: Duration::from_micros(self.rttvar_us.unwrap_or(0)),
        })
    }

    /// The newer observation decides the verdict (a failure seen before
    /// the entry's last update does not demote it, an older success does
    /// not clear a newer failure), while every RTT sample feeds the
    /// estimate, whichever process measured it.
    fn apply(&mut self, at_ms: u64, outcome: PathOutcome) {
        let newer = at_ms >= self.updated_ms();
        match outcome {
            PathOutcome::Worked(rtt) => {
                let sample = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                let (srtt, rttvar) = match (self.srtt_us, self.rttvar_us) {
                    (Some(s), var) => {
                        let var = var.unwrap_or(s / 2);
                        let dev = s.abs_diff(sample);
                        (s - s / 8 + sample / 8, var - var / 4 + dev / 4)
                    }
                    (None, _) => (sample, sample / 2),
                };
                self.srtt_us = Some(srtt);
                self.rttvar_us = Some(rttvar);
                self.worked_ms = self.worked_ms.max(Some(at_ms));
                if newer {
                    self.last_failed = false;
                }
            }
            PathOutcome::Failed => {
                self.failed_ms = self.failed_ms.max(Some(at_ms));
                if newer {
                    self.last_failed = true;
                }
            }
        }
    }
}

/// What one network taught: one entry per path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Partition {
    network: NetworkId,
    paths: Vec<PathEntry>,
}

impl Partition {
    fn updated_ms(&self) -> u64 {
        self.paths
            .iter()
            .map(PathEntry::updated_ms)
            .max()
            .unwrap_or(0)
    }
}

/// One outcome this process observed, kept until the history is saved so
/// that `History::save_merged` can apply it to what the file holds then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    at_ms: u64,
    network: NetworkId,
    key: PathKey,
    outcome: PathOutcome,
}

/// The version of the serialised form. Version 1 (before networks) is not
/// read: its entries cannot be placed on a network, and HEv3 forbids using
/// them across networks ([`crate::history_file`] says so and starts empty).
pub const FORMAT_VERSION: u32 = 2;

/// The history store. Cheap to clone; serialisable (see the module docs
/// for what it holds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    #[serde(deserialize_with = "this_version")]
    version: u32,
    /// One partition per network, one entry per path in each (a file
    /// holding either twice is read as one, keeping each path's newest
    /// entry, so that recording and viewing agree on which counts).
    #[serde(deserialize_with = "one_entry_per_path")]
    networks: Vec<Partition>,
    /// Entries older than this are forgotten (RFC 6555: ~10 minutes).
    #[serde(skip, default = "default_expiry")]
    pub expiry: Duration,
    /// A failure older than this no longer demotes its path, so that a
    /// repaired path wins again (HEv3 convergence); see the module docs.
    #[serde(skip, default = "default_failure_memory")]
    pub failure_memory: Duration,
    /// What [`History::record`] learnt since the history was loaded or last
    /// saved, oldest first (at most [`MAX_UNSAVED`]).
    #[serde(skip)]
    unsaved: Vec<Observation>,
}

fn this_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v != FORMAT_VERSION {
        return Err(serde::de::Error::custom(format!(
            "history format version {v}, expected {FORMAT_VERSION}"
        )));
    }
    Ok(v)
}

/// Reads the partitions, merging those of the same network and keeping
/// only the most recently updated entry of each path (the first of
/// equals), in file order.
fn one_entry_per_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Partition>, D::Error> {
    let read = Vec::<Partition>::deserialize(d)?;
    let mut out: Vec<Partition> = Vec::new();
    for part in read {
        match out.iter_mut().find(|p| p.network == part.network) {
            Some(p) => p.paths.extend(part.paths),
            None => out.push(part),
        }
    }
    for part in &mut out {
        let mut newest: HashMap<&PathKey, usize> = HashMap::new();
        for (i, e) in part.paths.iter().enumerate() {
            let best = newest.entry(&e.key).or_insert(i);
            if e.updated_ms() > part.paths[*best].updated_ms() {
                *best = i;
            }
        }
        let keep: HashSet<usize> = newest.into_values().collect();
        let paths = std::mem::take(&mut part.paths);
        part.paths = paths
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| keep.contains(&i).then_some(e))
            .collect();
    }
    Ok(out)
}

fn default_expiry() -> Duration {
    Duration::from_secs(600)
}

fn default_failure_memory() -> Duration {
    Duration::from_secs(30)
}

impl Default for History {
    fn default() -> Self {
        History {
            version: FORMAT_VERSION,
            networks: Vec::new(),
            expiry: default_expiry(),
            failure_memory: default_failure_memory(),
            unsaved: Vec::new(),
        }
    }
}

/// Bound on entries per network, so a long-running process dialing many
/// hosts cannot grow without limit.
pub const MAX_ENTRIES: usize = 2048;

/// Bound on the networks remembered (the least recently used go first).
pub const MAX_NETWORKS: usize = 8;

/// Bound on the observations kept for the next save.
const MAX_UNSAVED: usize = 4096;

/// How far in the future an entry's date may be and still count as "now":
/// clocks of processes sharing a file disagree a little. Later dates come
/// from a clock that has since stepped back.
pub const FUTURE_SKEW: Duration = Duration::from_secs(10);

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl History {
    /// Records the attempts of a finished dial on `network`.
    pub fn record(
        &mut self,
        now: SystemTime,
        network: &NetworkId,
        outcomes: &[(Endpoint, PathOutcome)],
    ) {
        // Entries from a clock that stepped back would outrank this dial's news.
        self.prune(now);
        let now_ms = millis(now);
        for (endpoint, outcome) in outcomes {
            let key = PathKey::of(endpoint);
            // What this dial just saw is the newest news of its path, even
            // when the entry it updates is dated a few seconds ahead (within
            // FUTURE_SKEW: another process's clock, or ours before a step
            // back); dated `now`, it would lose to that entry and a failure
            // just seen would stay hidden behind an older success.
            let held = self
                .networks
                .iter()
                .find(|p| &p.network == network)
                .and_then(|p| p.paths.iter().find(|e| e.key == key))
                .map_or(0, PathEntry::updated_ms);
            let observation = Observation {
                at_ms: now_ms.max(held),
                network: network.clone(),
                key,
                outcome: *outcome,
            };
            self.apply(&observation);
            self.unsaved.push(observation);
        }
        if self.unsaved.len() > MAX_UNSAVED {
            let excess = self.unsaved.len() - MAX_UNSAVED;
            self.unsaved.drain(..excess);
        }
        self.prune(now);
        let unsaved = std::mem::take(&mut self.unsaved);
        let fresh = unsaved.len().saturating_sub(outcomes.len());
        let just: Vec<&Observation> = unsaved[fresh..].iter().collect();
        self.cap_entries_keeping(&just);
        self.unsaved = unsaved;
    }

    fn apply(&mut self, observation: &Observation) {
        let part = match self
            .networks
            .iter()
            .position(|p| p.network == observation.network)
        {
            Some(i) => &mut self.networks[i],
            None => {
                self.networks.push(Partition {
                    network: observation.network.clone(),
                    paths: Vec::new(),
                });
                self.networks.last_mut().expect("just pushed")
            }
        };
        let entry = match part.paths.iter().position(|e| e.key == observation.key) {
            Some(i) => &mut part.paths[i],
            None => {
                part.paths.push(PathEntry::new(observation.key.clone()));
                part.paths.last_mut().expect("just pushed")
            }
        };
        entry.apply(observation.at_ms, observation.outcome);
    }

    /// Keeps the [`MAX_NETWORKS`] most recently used networks and the
    /// [`MAX_ENTRIES`] most recently updated entries of each.
    pub(crate) fn cap_entries(&mut self) {
        self.cap_entries_keeping(&[]);
    }

    /// [`History::cap_entries`], never dropping the paths just observed
    /// (`kept`) nor their networks: entries dated a little ahead (within
    /// [`FUTURE_SKEW`]) must not push this process's news out.
    fn cap_entries_keeping(&mut self, kept: &[&Observation]) {
        let kept_paths: HashSet<(&NetworkId, &PathKey)> =
            kept.iter().map(|o| (&o.network, &o.key)).collect();
        let kept_networks: HashSet<&NetworkId> = kept.iter().map(|o| &o.network).collect();
        for part in &mut self.networks {
            if part.paths.len() > MAX_ENTRIES {
                let network = &part.network;
                part.paths.sort_by_key(|e| {
                    (
                        !kept_paths.contains(&(network, &e.key)),
                        std::cmp::Reverse(e.updated_ms()),
                    )
                });
                part.paths.truncate(MAX_ENTRIES);
            }
        }
        if self.networks.len() > MAX_NETWORKS {
            self.networks.sort_by_key(|p| {
                (
                    !kept_networks.contains(&p.network),
                    std::cmp::Reverse(p.updated_ms()),
                )
            });
            self.networks.truncate(MAX_NETWORKS);
        }
    }

    /// Whether an entry updated at `updated_ms` is still good at `now_ms`:
    /// not expired, and not dated after `now` + [`FUTURE_SKEW`].
    fn current(&self, updated_ms: u64, now_ms: u64) -> bool {
        updated_ms <= now_ms.saturating_add(duration_ms(FUTURE_SKEW))
            && now_ms.saturating_sub(updated_ms) < duration_ms(self.expiry)
    }

    /// Drops expired entries, entries dated after `now` + [`FUTURE_SKEW`]
    /// (written before the clock stepped back), and networks left empty.
    pub fn prune(&mut self, now: SystemTime) {
        let now_ms = millis(now);
        let mut networks = std::mem::take(&mut self.networks);
        for part in &mut networks {
            part.paths.retain(|e| self.current(e.updated_ms(), now_ms));
        }
        networks.retain(|p| !p.paths.is_empty());
        self.networks = networks;
    }

    /// The view the engine sorts and paces with, for a dial on `network`
    /// at `now` (see the module docs for the rules). Entries dated after
    /// `now` + [`FUTURE_SKEW`] are ignored.
    pub fn view(&self, now: SystemTime, network: &NetworkId) -> HistoryView {
        let mut view = HistoryView::default();
        let Some(part) = self.networks.iter().find(|p| &p.network == network) else {
            return view;
        };
        let now_ms = millis(now);
        let live: Vec<&PathEntry> = part
            .paths
            .iter()
            .filter(|e| self.current(e.updated_ms(), now_ms))
            .collect();
        for e in &live {
            let verdict = if e.last_failed {
                let failed = e.failed_ms.unwrap_or_else(|| e.updated_ms());
                view.failed_ago.insert(
                    e.key.clone(),
                    Duration::from_millis(now_ms.saturating_sub(failed)),
                );
                if now_ms.saturating_sub(failed) < duration_ms(self.failure_memory) {
                    PathVerdict::Failed
                } else {
                    PathVerdict::Doubtful
                }
            } else if let Some(rtt) = e.rtt() {
                PathVerdict::Worked { rtt }
            } else {
                continue;
            };
            view.paths.insert(e.key.clone(), verdict);
        }
        for family in [Family::V6, Family::V4] {
            let of_family = || live.iter().filter(|e| e.key.family == family);
            let last_success = of_family().filter_map(|e| e.worked_ms).max();
            let failed_hosts: HashSet<&str> = of_family()
                .filter(|e| e.failed_ms > last_success)
                .map(|e| e.key.host.as_str())
                .collect();
            view.set_family_suspect(family, failed_hosts.len() >= SUSPECT_HOSTS);
        }
        view
    }

    /// This history's unsaved observations applied to `base` (what the file
    /// holds now, pruned at `now`): the history a save writes.
    pub(crate) fn merged_into(&self, mut base: History, now: SystemTime) -> History {
        base.expiry = self.expiry;
        base.failure_memory = self.failure_memory;
        base.unsaved.clear();
        base.prune(now);
        for observation in &self.unsaved {
            base.apply(observation);
        }
        base.prune(now);
        let mine: Vec<&Observation> = self.unsaved.iter().collect();
        base.cap_entries_keeping(&mine);
        base
    }

    /// The number of path entries, over every network.
    pub fn len(&self) -> usize {
        self.networks.iter().map(|p| p.paths.len()).sum()
    }

    /// The number of networks with entries.
    pub fn networks(&self) -> usize {
        self.networks.len()
    }

    /// The networks history holds entries for, most recently used last.
    pub fn network_ids(&self) -> Vec<NetworkId> {
        let mut parts: Vec<&Partition> = self.networks.iter().collect();
        parts.sort_by_key(|p| p.updated_ms());
        parts.into_iter().map(|p| p.network.clone()).collect()
    }

    /// True when no network holds an entry for any path.
    pub fn is_empty(&self) -> bool {
        self.networks.iter().all(|p| p.paths.is_empty())
    }
}

#[cfg(test)]
mod tests;
