//! What recent dials learnt about each path (target host, family,
//! transport): whether it worked and how fast. RFC 6555 §4.2 asks for such a
//! cache with entries flushed after about ten minutes; HEv3 requires that a
//! client "eventually converge", so a failure stops counting long before the
//! entry expires and the demoted path gets a normal race again.
//!
//! The store is plain data driven by the caller's wall clock, so the engine
//! stays pure and the CLI can keep it in a file (`--history-file`).

use std::collections::HashMap;
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

/// The history store. Cheap to clone; serialisable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    entries: Vec<Entry>,
    /// Entries older than this are forgotten (RFC 6555: ~10 minutes).
    #[serde(skip, default = "default_expiry")]
    pub expiry: Duration,
    /// A failure older than this no longer demotes its path, so that a
    /// repaired path wins again (HEv3 convergence); its RTT is kept.
    #[serde(skip, default = "default_failure_memory")]
    pub failure_memory: Duration,
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
        }
    }
}

/// Bound on entries, so a long-running process dialing many hosts cannot grow without limit.
const MAX_ENTRIES: usize = 4096;

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl History {
    /// Records the attempts of a finished dial.
    pub fn record(&mut self, now: SystemTime, outcomes: &[(Endpoint, PathOutcome)]) {
        let now_s = secs(now);
        for (endpoint, outcome) in outcomes {
            let key = PathKey::of(endpoint);
            let idx = match self.entries.iter().position(|e| e.key == key) {
                Some(i) => i,
                None => {
                    self.entries.push(Entry {
                        key,
                        srtt_us: None,
                        last_failed: false,
                        updated_s: now_s,
                    });
                    self.entries.len() - 1
                }
            };
            let entry = &mut self.entries[idx];
            entry.updated_s = now_s;
            match outcome {
                PathOutcome::Worked(rtt) => {
                    let sample = rtt.as_micros().min(u128::from(u64::MAX)) as u64;
                    entry.srtt_us = Some(match entry.srtt_us {
                        Some(s) => s - s / 8 + sample / 8,
                        None => sample,
                    });
                    entry.last_failed = false;
                }
                PathOutcome::Failed => entry.last_failed = true,
            }
        }
        self.prune(now);
        if self.entries.len() > MAX_ENTRIES {
            self.entries.sort_by_key(|e| std::cmp::Reverse(e.updated_s));
            self.entries.truncate(MAX_ENTRIES);
        }
    }

    /// Drops expired entries.
    pub fn prune(&mut self, now: SystemTime) {
        let now_s = secs(now);
        let expiry = self.expiry.as_secs();
        self.entries
            .retain(|e| now_s.saturating_sub(e.updated_s) < expiry);
    }

    /// The view the engine sorts with, at `now`.
    pub fn view(&self, now: SystemTime) -> HistoryView {
        let now_s = secs(now);
        let mut view = HistoryView::default();
        for e in &self.entries {
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
}
