//! What recent dials learnt about each path (target host, family,
//! transport): whether it worked and how fast. RFC 6555 §4.2 asks for such a
//! cache with entries flushed after about ten minutes; HEv3 requires that a
//! client "eventually converge", so a failure stops counting long before the
//! entry expires and the demoted path gets a normal race again.
//!
//! The store is plain data driven by the caller's wall clock, so the engine
//! stays pure. Merging is here too (`History::merged_into`): the CLI
//! keeps the history in a file that several processes may share, and a
//! save applies this process's observations to what the file holds by then
//! (the file itself is [`crate::history_file`]'s business).
//!
//! Wall clocks step backwards: an entry dated more than [`FUTURE_SKEW`]
//! after "now" was written by a clock we no longer trust. It is ignored and
//! pruned, so it cannot demote its path until the clock catches up.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, Family, Transport};
use crate::race::{AttemptEnd, AttemptRecord, CancelReason};

/// A path as history sees it. Addresses are not part of the key: SRV
/// targets rotate addresses, and it is the family's route that breaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathKey {
    pub host: String,
    pub family: Family,
    pub transport: Transport,
}

impl PathKey {
    pub fn of(e: &Endpoint) -> PathKey {
        PathKey {
            host: e.host.to_string(),
            family: e.family(),
            transport: e.transport,
        }
    }
}

/// What the engine uses of history when it orders candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathVerdict {
    Unknown,
    Worked { rtt: Duration },
    Failed,
}

/// A snapshot of history for one dial.
#[derive(Debug, Clone, Default)]
pub struct HistoryView {
    paths: HashMap<PathKey, PathVerdict>,
}

impl HistoryView {
    pub fn verdict(&self, e: &Endpoint) -> PathVerdict {
        self.verdict_of_path(&e.host, e.family(), e.transport)
    }

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

    pub fn insert(&mut self, e: &Endpoint, v: PathVerdict) {
        self.paths.insert(PathKey::of(e), v);
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: PathKey,
    /// Smoothed RTT in microseconds (RFC 6298-style, alpha = 1/8), if it ever worked.
    srtt_us: Option<u64>,
    last_failed: bool,
    /// Wall-clock seconds since the epoch of the last update.
    updated_s: u64,
}

/// One outcome this process observed, kept until the history is saved so
/// that [`History::save_merged`] can apply it to what the file holds then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    at_s: u64,
    key: PathKey,
    outcome: PathOutcome,
}

/// The history store. Cheap to clone; serialisable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// One entry per path (a file holding a path twice is read as its
    /// newest entry, so that recording and viewing agree on which counts).
    #[serde(deserialize_with = "one_entry_per_path")]
    entries: Vec<Entry>,
    /// Entries older than this are forgotten (RFC 6555: ~10 minutes).
    #[serde(skip, default = "default_expiry")]
    pub expiry: Duration,
    /// A failure older than this no longer demotes its path, so that a
    /// repaired path wins again (HEv3 convergence); its RTT is kept.
    #[serde(skip, default = "default_failure_memory")]
    pub failure_memory: Duration,
    /// What [`History::record`] learnt since the history was loaded or last
    /// saved, oldest first (at most [`MAX_ENTRIES`]).
    #[serde(skip)]
    unsaved: Vec<Observation>,
}

/// Reads the entries, keeping only the most recently updated one of each
/// path (the first of equals), in file order.
fn one_entry_per_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
    let entries = Vec::<Entry>::deserialize(d)?;
    let mut newest: HashMap<&PathKey, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let best = newest.entry(&e.key).or_insert(i);
        if e.updated_s > entries[*best].updated_s {
            *best = i;
        }
    }
    let keep: HashSet<usize> = newest.into_values().collect();
    Ok(entries
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| keep.contains(&i).then_some(e))
        .collect())
}

fn default_expiry() -> Duration {
    Duration::from_secs(600)
}

fn default_failure_memory() -> Duration {
    Duration::from_secs(60)
}

impl Default for History {
    fn default() -> Self {
        History {
            entries: Vec::new(),
            expiry: default_expiry(),
            failure_memory: default_failure_memory(),
            unsaved: Vec::new(),
        }
    }
}

/// Bound on entries, so a long-running process dialing many hosts cannot grow without limit.
const MAX_ENTRIES: usize = 4096;

/// How far in the future an entry's date may be and still count as "now":
/// clocks of processes sharing a file disagree a little, and dates are
/// whole seconds. Later dates come from a clock that has since stepped back.
pub const FUTURE_SKEW: Duration = Duration::from_secs(10);

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl History {
    /// Records the attempts of a finished dial.
    pub fn record(&mut self, now: SystemTime, outcomes: &[(Endpoint, PathOutcome)]) {
        // Entries from a clock that stepped back would outrank this dial's news.
        self.prune(now);
        let now_s = secs(now);
        for (endpoint, outcome) in outcomes {
            let key = PathKey::of(endpoint);
            // What this dial just saw is the newest news of its path, even
            // when the entry it updates is dated a few seconds ahead (within
            // FUTURE_SKEW: another process's clock, or ours before a step
            // back); dated `now`, it would lose to that entry and a failure
            // just seen would stay hidden behind an older success.
            let held = self
                .entries
                .iter()
                .find(|e| e.key == key)
                .map_or(0, |e| e.updated_s);
            let observation = Observation {
                at_s: now_s.max(held),
                key,
                outcome: *outcome,
            };
            self.apply(&observation);
            self.unsaved.push(observation);
        }
        if self.unsaved.len() > MAX_ENTRIES {
            let excess = self.unsaved.len() - MAX_ENTRIES;
            self.unsaved.drain(..excess);
        }
        self.prune(now);
        self.cap_entries();
    }

    /// Applies one observation. The newer observation decides the verdict
    /// (a failure seen before the entry's last update does not demote it,
    /// an older success does not clear a newer failure), while every RTT
    /// sample feeds the smoothed RTT, whichever process measured it.
    fn apply(&mut self, observation: &Observation) {
        let idx = match self.entries.iter().position(|e| e.key == observation.key) {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    key: observation.key.clone(),
                    srtt_us: None,
                    last_failed: false,
                    updated_s: observation.at_s,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[idx];
        let newer = observation.at_s >= entry.updated_s;
        match observation.outcome {
            PathOutcome::Worked(rtt) => {
                let sample = rtt.as_micros().min(u128::from(u64::MAX)) as u64;
                entry.srtt_us = Some(match entry.srtt_us {
                    Some(s) => s - s / 8 + sample / 8,
                    None => sample,
                });
                if newer {
                    entry.last_failed = false;
                }
            }
            PathOutcome::Failed => {
                if newer {
                    entry.last_failed = true;
                }
            }
        }
        if newer {
            entry.updated_s = observation.at_s;
        }
    }

    /// Keeps the [`MAX_ENTRIES`] most recently updated entries.
    pub(crate) fn cap_entries(&mut self) {
        if self.entries.len() > MAX_ENTRIES {
            self.entries.sort_by_key(|e| std::cmp::Reverse(e.updated_s));
            self.entries.truncate(MAX_ENTRIES);
        }
    }

    /// Drops expired entries, and entries dated after `now` + [`FUTURE_SKEW`]
    /// (written before the clock stepped back).
    pub fn prune(&mut self, now: SystemTime) {
        let now_s = secs(now);
        let expiry = self.expiry.as_secs();
        let latest = now_s.saturating_add(FUTURE_SKEW.as_secs());
        self.entries
            .retain(|e| e.updated_s <= latest && now_s.saturating_sub(e.updated_s) < expiry);
    }

    /// The view the engine sorts with, at `now`. Entries dated after
    /// `now` + [`FUTURE_SKEW`] are ignored.
    pub fn view(&self, now: SystemTime) -> HistoryView {
        let now_s = secs(now);
        let latest = now_s.saturating_add(FUTURE_SKEW.as_secs());
        let mut view = HistoryView::default();
        for e in &self.entries {
            if e.updated_s > latest {
                continue;
            }
            let age = now_s.saturating_sub(e.updated_s);
            if age >= self.expiry.as_secs() {
                continue;
            }
            let verdict = if e.last_failed && age < self.failure_memory.as_secs() {
                PathVerdict::Failed
            } else if let Some(us) = e.srtt_us {
                PathVerdict::Worked {
                    rtt: Duration::from_micros(us),
                }
            } else {
                continue;
            };
            view.paths.insert(e.key.clone(), verdict);
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
        base.cap_entries();
        base
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ep(addr: &str) -> Endpoint {
        Endpoint {
            transport: Transport::Tcp,
            addr: addr.parse().unwrap(),
            host: Arc::from("sip.example.test"),
            rank: 0,
        }
    }

    #[test]
    fn failure_demotes_then_is_forgotten_then_expires() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = History::default();
        let v6 = ep("[2001:db8::1]:5060");
        let v4 = ep("192.0.2.1:5060");
        h.record(
            t0,
            &[
                (v6.clone(), PathOutcome::Failed),
                (v4.clone(), PathOutcome::Worked(Duration::from_millis(20))),
            ],
        );
        let view = h.view(t0 + Duration::from_secs(5));
        assert_eq!(view.verdict(&v6), PathVerdict::Failed);
        assert_eq!(
            view.verdict(&v4),
            PathVerdict::Worked {
                rtt: Duration::from_millis(20)
            }
        );
        // Another address of the same host and family shares the verdict.
        assert_eq!(view.verdict(&ep("[2001:db8::2]:5060")), PathVerdict::Failed);
        // After the failure memory the path is no longer demoted (convergence).
        assert_eq!(
            h.view(t0 + Duration::from_secs(61)).verdict(&v6),
            PathVerdict::Unknown
        );
        // After expiry everything is gone.
        h.prune(t0 + Duration::from_secs(601));
        assert!(h.is_empty());
    }

    #[test]
    fn srtt_is_smoothed_and_success_clears_failure() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = History::default();
        let v4 = ep("192.0.2.1:5060");
        h.record(
            t0,
            &[(v4.clone(), PathOutcome::Worked(Duration::from_millis(80)))],
        );
        h.record(t0, &[(v4.clone(), PathOutcome::Failed)]);
        h.record(
            t0,
            &[(v4.clone(), PathOutcome::Worked(Duration::from_millis(0)))],
        );
        assert_eq!(
            h.view(t0).verdict(&v4),
            PathVerdict::Worked {
                rtt: Duration::from_millis(70)
            }
        );
    }

    fn record(id: u32, addr: &str, started: u64, ended: u64, end: AttemptEnd) -> AttemptRecord {
        let t0 = std::time::Instant::now();
        AttemptRecord {
            id: crate::race::AttemptId(id),
            endpoint: ep(addr),
            started: t0 + Duration::from_millis(started),
            transport_up: None,
            ended: Some(t0 + Duration::from_millis(ended)),
            end,
        }
    }

    #[test]
    fn outcomes_keep_one_verdict_per_path() {
        let lost = AttemptEnd::Cancelled(CancelReason::LostRace);
        // IPv6 #1 wins; IPv6 #2 (same path) and IPv4, started later, lose: the
        // IPv6 path worked and nothing is learnt about IPv4.
        let out = outcomes_of(&[
            record(1, "[2001:db8::1]:5060", 0, 300, AttemptEnd::Won),
            record(2, "192.0.2.1:5060", 250, 300, lost.clone()),
            record(3, "[2001:db8::2]:5060", 280, 300, lost.clone()),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, PathOutcome::Worked(Duration::from_millis(300)));
        // IPv6 started first and lost to IPv4: IPv6 is demoted.
        let out = outcomes_of(&[
            record(1, "[2001:db8::1]:5060", 0, 260, lost),
            record(2, "192.0.2.1:5060", 250, 260, AttemptEnd::Won),
        ]);
        assert_eq!(out[0], (ep("[2001:db8::1]:5060"), PathOutcome::Failed));
        assert_eq!(out[1].1, PathOutcome::Worked(Duration::from_millis(10)));
    }

    #[test]
    fn round_trips_through_json() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = History::default();
        h.record(t0, &[(ep("192.0.2.1:5060"), PathOutcome::Failed)]);
        let text = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.view(t0).verdict(&ep("192.0.2.9:1")),
            PathVerdict::Failed
        );
        assert_eq!(back.expiry, Duration::from_secs(600));
    }

    fn ep_at(host: &str, addr: &str) -> Endpoint {
        Endpoint {
            host: Arc::from(host),
            ..ep(addr)
        }
    }

    #[test]
    fn a_file_holding_a_path_twice_is_read_as_its_newest_entry() {
        // Found by fuzzing (fuzz/regressions/history_load): recording
        // updated the first entry of a path while the view let the last one
        // win, so a failure just recorded stayed hidden behind a stale twin.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let entry = |failed: bool, at: u64| {
            format!(
                r#"{{"key":{{"host":"sip1.example.test","family":"ipv6","transport":"udp"}},"srtt_us":12000,"last_failed":{failed},"updated_s":{at}}}"#
            )
        };
        let text = format!(
            r#"{{"entries":[{},{},{}]}}"#,
            entry(false, 1_700_000_000),
            entry(true, 1_700_000_050),
            entry(false, 1_700_000_010)
        );
        let mut h: History = serde_json::from_str(&text).unwrap();
        assert_eq!(h.len(), 1, "one entry per path");
        let v6 = Endpoint {
            host: "sip1.example.test".into(),
            transport: Transport::Udp,
            ..ep("[2001:db8::1]:5060")
        };
        assert_eq!(
            h.view(now).verdict(&v6),
            PathVerdict::Failed,
            "the newest entry counts"
        );
        h.record(
            now,
            &[(v6.clone(), PathOutcome::Worked(Duration::from_millis(7)))],
        );
        assert!(matches!(
            h.view(now).verdict(&v6),
            PathVerdict::Worked { .. }
        ));
        h.record(now, &[(v6.clone(), PathOutcome::Failed)]);
        assert_eq!(
            h.view(now).verdict(&v6),
            PathVerdict::Failed,
            "news is never hidden"
        );
    }

    #[test]
    fn news_outranks_an_entry_dated_a_few_seconds_ahead() {
        // Found by fuzzing (fuzz/regressions/history_load): a file entry
        // dated within FUTURE_SKEW after `now` counts as current, and a
        // failure recorded at `now` was older than it, so the path kept
        // its old verdict.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let text = r#"{"entries":[{"key":{"host":"sip1.example.test","family":"ipv6","transport":"udp"},"srtt_us":12000,"last_failed":false,"updated_s":1700000005}]}"#;
        let v6 = Endpoint {
            host: "sip1.example.test".into(),
            transport: Transport::Udp,
            ..ep("[2001:db8::1]:5060")
        };
        let mut h: History = serde_json::from_str(text).unwrap();
        h.record(now, &[(v6.clone(), PathOutcome::Failed)]);
        assert_eq!(h.view(now).verdict(&v6), PathVerdict::Failed);
        // Saving applies the same news over what the file holds.
        let file: History = serde_json::from_str(text).unwrap();
        let saved = h.merged_into(file, now);
        assert_eq!(saved.view(now).verdict(&v6), PathVerdict::Failed);
    }

    #[test]
    fn future_dated_entries_do_not_demote() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v6 = ep("[2001:db8::1]:5060");
        // Written an hour "ahead", before the clock stepped back.
        let mut h = History::default();
        h.record(
            now + Duration::from_secs(3600),
            &[(v6.clone(), PathOutcome::Failed)],
        );
        assert_eq!(h.view(now).verdict(&v6), PathVerdict::Unknown);
        // A small skew between clocks still counts as now.
        let mut near = History::default();
        near.record(now + FUTURE_SKEW, &[(v6.clone(), PathOutcome::Failed)]);
        assert_eq!(near.view(now).verdict(&v6), PathVerdict::Failed);
        // Pruning drops the future entry; a new observation stands alone.
        h.record(
            now,
            &[(v6.clone(), PathOutcome::Worked(Duration::from_millis(30)))],
        );
        assert_eq!(h.len(), 1);
        assert_eq!(
            h.view(now).verdict(&v6),
            PathVerdict::Worked {
                rtt: Duration::from_millis(30)
            }
        );
        // A future-dated entry in the file does not outrank this process's news.
        let mut base = History::default();
        base.record(
            now + Duration::from_secs(3600),
            &[(v6.clone(), PathOutcome::Failed)],
        );
        let mut mine = History::default();
        mine.record(
            now,
            &[(v6.clone(), PathOutcome::Worked(Duration::from_millis(5)))],
        );
        let merged = mine.merged_into(base, now);
        assert_eq!(
            merged.view(now).verdict(&v6),
            PathVerdict::Worked {
                rtt: Duration::from_millis(5)
            }
        );
    }

    #[test]
    fn merge_keeps_both_processes_news_and_the_newer_verdict() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = ep_at("a.example.test", "192.0.2.1:5060");
        let b = ep_at("b.example.test", "192.0.2.2:5060");
        let shared = ep("192.0.2.3:5060");
        // Two processes load the same file...
        let mut file = History::default();
        file.record(
            t0,
            &[(
                shared.clone(),
                PathOutcome::Worked(Duration::from_millis(80)),
            )],
        );
        file.unsaved.clear();
        let mut p1 = file.clone();
        let mut p2 = file.clone();
        // ...p1 learns about a and that the shared path failed (at t0+10)...
        p1.record(
            t0 + Duration::from_secs(10),
            &[
                (a.clone(), PathOutcome::Failed),
                (shared.clone(), PathOutcome::Failed),
            ],
        );
        // ...p2 learns about b and that the shared path worked, later (t0+20).
        p2.record(
            t0 + Duration::from_secs(20),
            &[
                (b.clone(), PathOutcome::Worked(Duration::from_millis(10))),
                (
                    shared.clone(),
                    PathOutcome::Worked(Duration::from_millis(0)),
                ),
            ],
        );
        let now = t0 + Duration::from_secs(30);
        // p2 saves first, then p1 (whose shared-path news is older).
        let after_p2 = p2.merged_into(file.clone(), now);
        let after_both = p1.merged_into(after_p2.clone(), now);
        let view = after_both.view(now);
        assert_eq!(view.verdict(&a), PathVerdict::Failed);
        assert_eq!(
            view.verdict(&b),
            PathVerdict::Worked {
                rtt: Duration::from_millis(10)
            }
        );
        // The newer success wins over p1's older failure; the RTT is 80 ms
        // smoothed with p2's 0 ms sample.
        assert_eq!(
            view.verdict(&shared),
            PathVerdict::Worked {
                rtt: Duration::from_millis(70)
            }
        );
        // Saving in the other order gives the same verdicts.
        let other = p2.merged_into(p1.merged_into(file, now), now).view(now);
        assert_eq!(other.verdict(&a), PathVerdict::Failed);
        assert_eq!(other.verdict(&shared), view.verdict(&shared));
    }
}
