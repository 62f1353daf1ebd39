//! The report of one dial: a timeline of DNS queries and answers, attempts
//! and their outcomes, and the result. It renders for humans (like
//! `curl -v` meets `dig`) and serialises to one JSON object whose schema is
//! documented on [`Report`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::connect::ProbeResponse;
use crate::dial_machine::{DialMachine, Outcome};
use crate::endpoint::{Endpoint, Family, TargetSpec, Transport};
use crate::locate::{Abandoned, AddressAnswer, DnsOutcome, QueryRecord};
use crate::race::{
    AttemptEnd, AttemptId, AttemptRecord, CancelReason, DelayBound, DelaySource, HistoryNote,
    RaceFailure,
};

/// Records of one answer printed in the timeline (the JSON lists more).
const RECORDS_SHOWN: usize = 8;

/// The version of the JSON report's format, its `schema` field (described
/// by `docs/report.schema.json`). It goes up by one when a field is removed,
/// renamed or changes type or meaning; added fields keep it (readers ignore
/// fields they do not know). CHANGELOG.md notes every change.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// `at` as RFC 3339 UTC with milliseconds, e.g. `2026-12-02T08:52:48.123Z`
/// (times before 1970 are shown as 1970-01-01T00:00:00.000Z).
pub fn rfc3339_utc(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs() as i64;
    let (year, month, day) = crate::civil_date::civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Milliseconds since the dial started, with microsecond resolution.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Makes text safe to print on a terminal: control characters (C0, DEL,
/// C1) and the Unicode bidirectional formatting characters become visible
/// escapes, everything else (ordinary UTF-8 included) stays as it is.
///
/// Text from peers and DNS (a SIP reason phrase, a NAPTR field, a host
/// name, an error quoting any of them) must pass through this before it
/// reaches a terminal: raw ESC sequences would recolour, clear or retitle
/// the screen; CR and LF would forge whole lines of the timeline; the bidi
/// overrides (U+202A..U+202E, U+2066..U+2069) would display text in another
/// order than it is. The escapes are for reading, not a reversible
/// encoding (a backslash stays a backslash): the JSON report keeps the
/// exact values.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    // `is_control` is Unicode's Cc: C0 (U+0000..U+001F), DEL and C1 (U+0080..U+009F).
    c.is_control()
        || matches!(c,
            '\u{061c}'                    // ARABIC LETTER MARK
            | '\u{200e}' | '\u{200f}'     // LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
            | '\u{2028}' | '\u{2029}'     // LINE / PARAGRAPH SEPARATOR
            | '\u{202a}'..='\u{202e}'     // LRE, RLE, PDF, LRO, RLO
            | '\u{2066}'..='\u{2069}') // LRI, RLI, FSI, PDI
}

/// One DNS query and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct DnsEntry {
    /// The name queried (e.g. `_sip._udp.example.test`).
    pub name: String,
    /// The record type queried: "NAPTR", "SRV", "AAAA" or "A" (`type` in
    /// the JSON).
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// When the query was sent, ms since the dial started.
    pub sent_ms: f64,
    /// When its answer arrived (absent if it never did before the dial ended).
    pub answered_ms: Option<f64>,
    /// The [`DnsOutcome`] label: "records", "no-records", "nxdomain",
    /// "servfail", "timeout" or "error".
    pub outcome: Option<String>,
    /// The records, rendered as zone-file text (the first
    /// `max_records` of the answer), or the error detail.
    pub records: Vec<String>,
    /// How many records of the queried type the answer held (`records`
    /// may show fewer); 0 when the query failed.
    pub records_total: usize,
    /// The answer came from the dialer's DNS cache (kept for its TTL): no
    /// query was sent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// Why the dial stopped waiting for this query unanswered (present
    /// only then): "not-needed" (a pipelined SRV query a higher-priority
    /// answer made unnecessary), "dial-decided" or "location-failed".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<Abandoned>,
    /// When it was abandoned, ms since the dial started (present only with
    /// `abandoned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned_ms: Option<f64>,
}

impl DnsEntry {
    /// The "N record(s)" of an answer line.
    fn count_text(&self) -> String {
        format!("{} record(s)", self.records_total.max(self.records.len()))
    }

    /// The line that follows the first `shown` records, if any are left.
    fn more_text(&self, shown: usize) -> Option<String> {
        let total = self.records_total.max(self.records.len());
        let more = total.checked_sub(shown).filter(|n| *n > 0)?;
        Some(if self.records.len() < total {
            format!(
                "... {more} more (--json lists the first {})",
                self.records.len()
            )
        } else {
            format!("... {more} more")
        })
    }
}

/// One connection attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptEntry {
    /// The attempt's number in this dial, in start order from 1; `winner`
    /// refers to it.
    pub id: u32,
    /// The address family of `addr`: "ipv6" or "ipv4" (IPv4-mapped counts
    /// as IPv4).
    pub family: Family,
    /// The transport tried: "udp", "tcp", "tls" or "sctp".
    pub transport: Transport,
    /// The address and port connected to (or probed), e.g.
    /// `"[2001:db8::1]:5060"`.
    pub addr: SocketAddr,
    /// The host name whose answer gave this address.
    pub host: String,
    /// The rank of the service `addr` belongs to in NAPTR/SRV order (RFC
    /// 3263 §4.1, RFC 2782); lower ranks are tried first.
    pub rank: u32,
    /// When the attempt started, ms since the dial started.
    pub started_ms: f64,
    /// The Connection Attempt Delay it got (from history or the configured
    /// one): how long it ran alone before the next attempt could start.
    pub attempt_delay_ms: f64,
    /// Where `attempt_delay_ms` came from: "configured", "history-rtt" (the
    /// path's smoothed RTT plus a margin, RFC 6298), "doubtful-path" or
    /// "suspect-family" (both the minimum delay).
    pub attempt_delay_source: &'static str,
    /// The path's smoothed RTT from history, when `attempt_delay_source` is
    /// "history-rtt".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_rtt_ms: Option<f64>,
    /// The bound the delay was clamped to ("min" or "max"), when the source
    /// gave one outside the configured bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_delay_clamped: Option<DelayBound>,
    /// What history changed about this attempt's place in the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryEntry>,
    /// When the transport was up (TCP connected) if later steps followed.
    pub transport_up_ms: Option<f64>,
    /// When it ended (won, failed or cancelled), ms since the dial started;
    /// null while it is still in flight.
    pub ended_ms: Option<f64>,
    /// "won", "failed", "cancelled" or "in-flight".
    pub outcome: &'static str,
    /// For failures: the error class; for cancellations: the reason.
    pub error_class: Option<String>,
    /// For failures: the error in words (from the socket, TLS or the SIP
    /// probe); null otherwise.
    pub detail: Option<String>,
    /// The SIP response that proved reachability (probe dials); null
    /// otherwise.
    pub response: Option<ResponseEntry>,
}

/// What history changed about an attempt's place (see [`HistoryNote`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HistoryEntry {
    /// The path failed recently: tried after the others.
    FailedRecently {
        /// How long before the dial it failed, when known.
        failed_ago_ms: Option<f64>,
    },
    /// The family went first on its host: the preferred family's path
    /// there failed recently.
    PreferredFailed {
        /// The family that failed (tried after this one).
        failed_family: Family,
        /// How long before the dial it failed, when known.
        failed_ago_ms: Option<f64>,
    },
    /// The family went first on its host: its RTT is lower by more than
    /// the leeway.
    FasterFamily {
        /// This path's smoothed RTT.
        rtt_ms: f64,
        /// The other family's smoothed RTT.
        other_rtt_ms: f64,
    },
}

impl HistoryEntry {
    /// History's note on an attempt of `family`, for the report.
    fn of(note: HistoryNote, family: Family) -> HistoryEntry {
        match note {
            HistoryNote::FailedRecently { ago } => HistoryEntry::FailedRecently {
                failed_ago_ms: ago.map(millis),
            },
            HistoryNote::PreferredFailed { ago } => HistoryEntry::PreferredFailed {
                failed_family: family.other(),
                failed_ago_ms: ago.map(millis),
            },
            HistoryNote::FasterFamily { ours, theirs } => HistoryEntry::FasterFamily {
                rtt_ms: millis(ours),
                other_rtt_ms: millis(theirs),
            },
        }
    }
}

/// The SIP response to an attempt's OPTIONS probe.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseEntry {
    /// The status code (100 to 699), e.g. 200.
    pub status: u16,
    /// The reason phrase exactly as received (peer text: the timeline
    /// escapes it, the JSON keeps it).
    pub reason: String,
    /// From the first transmission of the OPTIONS to this answer, in ms.
    pub rtt_ms: f64,
}

/// The effective configuration of a dial, as validated and used (the
/// `config` object of the JSON report). Durations are in ms.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEntry {
    /// The strategy that ran the race, e.g. "siprace" or "rfc8305".
    pub strategy: String,
    /// How long the race waits for the preferred family's answer after
    /// another's (RFC 8305 Resolution Delay); null waits for every answer.
    pub resolution_delay_ms: Option<f64>,
    /// The Connection Attempt Delay used when history knows nothing.
    pub attempt_delay_ms: f64,
    /// The lower bound of every attempt delay (history's included).
    pub min_attempt_delay_ms: f64,
    /// The upper bound of every attempt delay (history's included).
    pub max_attempt_delay_ms: f64,
    /// RFC 8305 Preferred Address Family Count; 0: no interleaving.
    pub family_count: usize,
    /// At most this many attempts in flight.
    pub max_concurrent: usize,
    /// The overall bound of the dial, from its start.
    pub deadline_ms: f64,
    /// Whether a new attempt starts after the attempt delay while others
    /// are in flight (false: one at a time).
    pub staggered: bool,
    /// Whether history orders and paces the attempts.
    pub use_history: bool,
    /// The transports this dial could use: those the target allows,
    /// narrowed by the configuration (e.g. `--transports`).
    pub transports: Vec<Transport>,
    /// The address families queried, in order ("ipv6", "ipv4").
    pub families: Vec<Family>,
    /// The DNS server asked, "IP:PORT", or "system" for the servers of
    /// `/etc/resolv.conf`.
    pub resolver: String,
    /// The bound on each DNS query, retries included.
    pub dns_timeout_ms: f64,
    /// Whether TCP, TLS and SCTP attempts also send OPTIONS and wait for its
    /// answer (UDP always does).
    pub probe: bool,
    /// SIP Timer T1 of the UDP probe's retransmissions.
    pub t1_ms: f64,
}

/// How a dial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DialResult {
    /// An attempt won: `winner` names it.
    Connected,
    /// Addresses were found but no attempt succeeded.
    Failed,
    /// Location found nothing to try.
    ResolutionFailed,
}

/// The whole report. JSON form (`siprace dial --json`; the JSON Schema is
/// `docs/report.schema.json`, its version [`JSON_SCHEMA_VERSION`]):
///
/// ```text
/// { "schema": 1, "siprace_version": "0.1.0",
///   "started_at": "2026-12-02T08:52:48.123Z",
///   "config": { "strategy", "resolution_delay_ms" (null: wait for all), "attempt_delay_ms",
///               "min_attempt_delay_ms", "max_attempt_delay_ms", "family_count",
///               "max_concurrent", "deadline_ms", "staggered", "use_history",
///               "transports": [..], "families": [..], "resolver": "system" | "IP:PORT",
///               "dns_timeout_ms", "probe", "t1_ms" },
///   "target": "sip:...", "strategy": "siprace",
///   "result": "connected" | "failed" | "resolution-failed",
///   "reason": null | "why it failed",
///   "total_ms": 12.3,
///   "network": null | "<id> (<routes, prefixes and DNS servers it was identified by>)",
///   "targets": [ { "host", "port", "transport", "rank" } ],
///   "dns": [ { "name", "type", "sent_ms", "answered_ms",
///              "outcome": null (never answered) | "records" | "no-records" | "nxdomain"
///                         | "servfail" | "timeout" | "error",
///              "records": [ zone-file text of the first records | the error's detail ],
///              "records_total", "cached": true (only when answered from the cache),
///              "abandoned": "not-needed" | "dial-decided" | "location-failed",
///              "abandoned_ms" (both only when abandoned unanswered) } ],
///   "addresses": [ { "host", "family", "at_ms", "addrs": [..] } ],
///   "attempts": [ { "id", "family", "transport", "addr", "host", "rank", "started_ms",
///                   "attempt_delay_ms", "attempt_delay_source": "configured" | "history-rtt"
///                   | "doubtful-path" | "suspect-family", "history_rtt_ms" (history-rtt only),
///                   "attempt_delay_clamped": "min" | "max" (only when clamped),
///                   "history": { "kind": "failed-recently", "failed_ago_ms" }
///                            | { "kind": "preferred-failed", "failed_family", "failed_ago_ms" }
///                            | { "kind": "faster-family", "rtt_ms", "other_rtt_ms" } (only when it
///                              changed the order),
///                   "transport_up_ms", "ended_ms", "outcome", "error_class", "detail",
///                   "response": null | { "status", "reason", "rtt_ms" } } ],
///   "winner": null | <attempt id>,
///   "notes": [ "setup notes said at the start" ] (only when there are some) }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The version of this format, [`JSON_SCHEMA_VERSION`].
    pub schema: u32,
    /// The version of siprace that dialed (its Cargo package version).
    pub siprace_version: &'static str,
    /// The wall-clock start of the dial, RFC 3339 UTC with milliseconds
    /// (see [`rfc3339_utc`]); every `_ms` time counts from it.
    pub started_at: String,
    /// The configuration the dial ran with, after validation; null only in
    /// a report made by hand ([`Report::new`]), never in a dialer's.
    pub config: Option<ConfigEntry>,
    /// The target as the user gave it (`sip:`/`sips:` URI or `host[:port]`).
    pub target: String,
    /// The strategy that ran the race (see [`crate::race::strategy::Strategy`]),
    /// e.g. "siprace" or "rfc8305".
    pub strategy: String,
    /// How the dial ended: "connected", "failed" or "resolution-failed".
    pub result: DialResult,
    /// Why the dial did not connect, in words; null when it connected.
    pub reason: Option<String>,
    /// How long the whole dial took (location, race and teardown), in ms with
    /// microsecond resolution.
    pub total_ms: f64,
    /// The same as `total_ms`, for Rust callers (not in the JSON).
    #[serde(skip)]
    pub total: Duration,
    /// The network the dial ran on, whose history it used (see
    /// [`crate::network`]): its id and description.
    pub network: Option<String>,
    /// The targets location found (RFC 3263 §4: host, port, transport and
    /// rank from NAPTR/SRV or the URI).
    pub targets: Vec<TargetSpec>,
    /// Every DNS query of the dial with its answer, in the order sent.
    pub dns: Vec<DnsEntry>,
    /// Every address answer (AAAA or A) in the order it reached the race.
    pub addresses: Vec<AddressEntry>,
    /// Every connection attempt, in start order.
    pub attempts: Vec<AttemptEntry>,
    /// The `id` of the attempt that won; null when none did (and when a
    /// kept connection carried the dial: see `reuse`).
    pub winner: Option<u32>,
    /// Notes about how the dial was set up, said once at its start (e.g. a
    /// flag value clamped into its bounds, a history file a strategy
    /// ignores); absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The race ran one attempt at a time (the next only after a failure),
    /// so no attempt delay was in force (for the timeline; the JSON has
    /// `config.staggered`).
    #[serde(skip)]
    pub one_at_a_time: bool,
    // --- connection reuse (issue #10, h-reuse): the `reuse` field ---
    /// How the dial used the dialer's connection table; null without one
    /// (the library's default) and for a dial that did not connect.
    pub reuse: Option<ReuseEntry>,
    // --- end of connection reuse ---
}

// --- connection reuse (issue #10, h-reuse) ---

/// How a connected dial used the connection table (RFC 3261 §18.1.1,
/// RFC 5923; see [`crate::keep`]).
#[derive(Debug, Clone, Serialize)]
pub struct ReuseEntry {
    /// "reused": a kept connection carried the dial, with no race and no
    /// handshake; "new": the race's winner, now kept; "not-kept": the
    /// winner is not a connection to keep (UDP).
    pub connection: &'static str,
    /// The kept connection's number in the dialer's table (1, 2...); null
    /// for "not-kept".
    pub id: Option<u64>,
    /// Its transport.
    pub transport: Transport,
    /// Its remote address.
    pub addr: SocketAddr,
    /// Its family.
    pub family: Family,
    /// The host location gave for the address.
    pub host: String,
    /// For "reused": how long ago the connection was opened, in ms.
    pub opened_ms_ago: Option<f64>,
    /// For "new" and "not-kept": why no kept connection carried the dial
    /// ("no live connection", or "certificate of connection #k does not
    /// cover DOMAIN" for virtual hosting).
    pub why_not: Option<String>,
    /// Kept connections this dial found dead at first use (each was
    /// removed and the dial raced afresh), by number.
    pub found_dead: Vec<u64>,
    /// For "reused" with probing: the answer to the OPTIONS sent over it.
    pub response: Option<ResponseEntry>,
}

impl ReuseEntry {
    fn of(connection: &'static str, id: Option<u64>, endpoint: &Endpoint) -> ReuseEntry {
        ReuseEntry {
            connection,
            id,
            transport: endpoint.transport,
            addr: endpoint.addr,
            family: endpoint.family(),
            host: endpoint.host.to_string(),
            opened_ms_ago: None,
            why_not: None,
            found_dead: Vec::new(),
            response: None,
        }
    }

    /// Kept connection `id` to `endpoint`, opened `opened_ago`, carried the
    /// dial; `response` answered the probe sent over it.
    pub fn reused(
        id: u64,
        endpoint: &Endpoint,
        opened_ago: Duration,
        response: Option<&ProbeResponse>,
    ) -> ReuseEntry {
        ReuseEntry {
            opened_ms_ago: Some(millis(opened_ago)),
            response: response.map(|r| ResponseEntry {
                status: r.status,
                reason: r.reason.clone(),
                rtt_ms: millis(r.rtt),
            }),
            ..ReuseEntry::of("reused", Some(id), endpoint)
        }
    }

    /// The race's winner to `endpoint` is now kept as `id`.
    pub fn kept_new(id: u64, endpoint: &Endpoint, why_not: String) -> ReuseEntry {
        ReuseEntry {
            why_not: Some(why_not),
            ..ReuseEntry::of("new", Some(id), endpoint)
        }
    }

    /// The winner to `endpoint` is nothing to keep (UDP).
    pub fn not_kept(endpoint: &Endpoint, why_not: String) -> ReuseEntry {
        ReuseEntry {
            why_not: Some(why_not),
            ..ReuseEntry::of("not-kept", None, endpoint)
        }
    }

    /// The timeline's lines for it.
    fn lines(&self, total_ms: f64) -> Vec<String> {
        let mut out: Vec<String> = self
            .found_dead
            .iter()
            .map(|id| match id {
                0 => "* a kept connection was gone when taken: raced afresh".to_string(),
                id => format!("* connection #{id} found dead at first use: raced afresh"),
            })
            .collect();
        let id = self.id.unwrap_or(0);
        match self.connection {
            "reused" => {
                let answer = self
                    .response
                    .as_ref()
                    .map(|r| format!(", {} {} in {:.1} ms", r.status, r.reason, r.rtt_ms))
                    .unwrap_or_default();
                out.push(format!(
                    "* reused connection #{id} {} {} {} ({}) (opened {:.1} s ago{answer}) in {total_ms:.1} ms: no race, no handshake",
                    self.family,
                    self.transport,
                    self.addr,
                    self.host,
                    self.opened_ms_ago.unwrap_or(0.0) / 1000.0,
                ));
            }
            "new" => out.push(format!(
                "* new connection #{id} kept (not reused: {})",
                self.why_not.as_deref().unwrap_or("?")
            )),
            _ => {}
        }
        out
    }
}

// --- end of connection reuse ---

/// An address answer as handed to the race.
#[derive(Debug, Clone, Serialize)]
pub struct AddressEntry {
    /// The host name queried (an SRV target or the URI host).
    pub host: String,
    /// "ipv6" for an AAAA answer, "ipv4" for an A answer.
    pub family: Family,
    /// When the answer reached the race, ms since the dial started.
    pub at_ms: f64,
    /// The addresses of the answer, in DNS order (e.g. "2001:db8::1").
    pub addrs: Vec<IpAddr>,
}

impl Report {
    /// An empty report of a dial to `target` with `strategy`: no entries, result
    /// "failed" until filled (see [`Report::of_dial`]).
    pub fn new(target: String, strategy: String) -> Report {
        Report {
            schema: JSON_SCHEMA_VERSION,
            siprace_version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339_utc(SystemTime::now()),
            config: None,
            target,
            strategy,
            result: DialResult::Failed,
            reason: None,
            total_ms: 0.0,
            total: Duration::ZERO,
            network: None,
            targets: Vec::new(),
            dns: Vec::new(),
            addresses: Vec::new(),
            attempts: Vec::new(),
            winner: None,
            notes: Vec::new(),
            one_at_a_time: false,
            reuse: None,
        }
    }

    /// The report of a decided dial, from the records its machine kept:
    /// the targets, the DNS timeline, the address answers and the attempts,
    /// with the result and reason of its outcome. Times count from
    /// `started`, the machine's start; `total` is the whole dial, teardown
    /// included.
    pub fn of_dial(
        target: String,
        strategy: String,
        machine: &DialMachine,
        started: Instant,
        total: Duration,
    ) -> Report {
        let since = |t: Instant| millis(t.saturating_duration_since(started));
        let location = machine.location();
        let mut report = Report::new(target, strategy);
        report.total = total;
        report.total_ms = millis(total);
        report.targets = location.targets().to_vec();
        report.dns = location
            .queries()
            .iter()
            .map(|q| dns_entry(q, since))
            .collect();
        report.addresses = location
            .address_answers()
            .iter()
            .map(|a| address_entry(a, since))
            .collect();
        report.set_attempts(machine.race().attempts(), started);
        report.one_at_a_time = !machine.race().config().staggered;
        let deadline = machine.race().config().deadline;
        let (result, reason) = match machine.outcome() {
            Some(Outcome::Won { id, .. }) => {
                report.winner = Some(id.0);
                (DialResult::Connected, None)
            }
            // The dialer fills `reuse` once it holds the connection.
            Some(Outcome::Reused { .. }) => (DialResult::Connected, None),
            Some(Outcome::LocationFailed(e)) => (DialResult::ResolutionFailed, Some(e.to_string())),
            Some(Outcome::Failed(RaceFailure::NoAddresses)) => (
                DialResult::ResolutionFailed,
                Some(report.no_address_reason()),
            ),
            Some(Outcome::Failed(RaceFailure::AllFailed)) => (
                DialResult::Failed,
                Some(format!("all {} attempt(s) failed", report.attempts.len())),
            ),
            Some(Outcome::Failed(RaceFailure::Deadline)) => (
                DialResult::Failed,
                Some(format!("deadline of {} ms passed", deadline.as_millis())),
            ),
            None => (DialResult::Failed, Some("the dial was not decided".into())),
        };
        report.result = result;
        report.reason = reason;
        report
    }

    /// Shows the SIP response that proved attempt `id` reachable.
    pub fn show_response(&mut self, id: AttemptId, response: &ProbeResponse) {
        if let Some(entry) = self.attempts.iter_mut().find(|a| a.id == id.0) {
            entry.response = Some(ResponseEntry {
                status: response.status,
                reason: response.reason.clone(),
                rtt_ms: millis(response.rtt),
            });
        }
    }

    /// Why location found no address: said plainly, with the last query
    /// error (a refused query, no socket...) when one explains it.
    fn no_address_reason(&self) -> String {
        let error = self
            .dns
            .iter()
            .rev()
            .filter(|q| q.outcome.as_deref() == Some("error"))
            .find_map(|q| q.records.first());
        match error {
            Some(detail) => format!("DNS gave no usable address: {detail}"),
            None => "DNS gave no usable address".to_string(),
        }
    }

    /// Fills the attempt list from the engine's records.
    pub fn set_attempts(&mut self, records: &[AttemptRecord], since: Instant) {
        self.attempts = records
            .iter()
            .map(|r| {
                let at = |t: Instant| millis(t.saturating_duration_since(since));
                let (outcome, class, detail) = match &r.end {
                    AttemptEnd::InFlight => ("in-flight", None, None),
                    AttemptEnd::Won => ("won", None, None),
                    AttemptEnd::Failed(e) => {
                        ("failed", Some(e.class.to_string()), Some(e.detail.clone()))
                    }
                    AttemptEnd::Cancelled(reason) => {
                        ("cancelled", Some(reason.as_str().to_string()), None)
                    }
                };
                AttemptEntry {
                    id: r.id.0,
                    family: r.endpoint.family(),
                    transport: r.endpoint.transport,
                    addr: r.endpoint.addr,
                    host: r.endpoint.host.to_string(),
                    rank: r.endpoint.rank,
                    started_ms: at(r.started),
                    attempt_delay_ms: millis(r.delay),
                    attempt_delay_source: r.delay_source.as_str(),
                    history_rtt_ms: match r.delay_source {
                        DelaySource::HistoryRtt(rtt) => Some(millis(rtt.srtt)),
                        _ => None,
                    },
                    attempt_delay_clamped: r.delay_clamped,
                    history: r
                        .history_note
                        .map(|n| HistoryEntry::of(n, r.endpoint.family())),
                    transport_up_ms: r.transport_up.map(at),
                    ended_ms: r.ended.map(at),
                    outcome,
                    error_class: class,
                    detail,
                    response: None,
                }
            })
            .collect();
    }

    /// Attempts cancelled because another won (failed ones are not
    /// counted: they ended on their own).
    pub fn abandoned_attempts(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| {
                a.outcome == "cancelled"
                    && a.error_class.as_deref() == Some(CancelReason::LostRace.as_str())
            })
            .count()
    }

    /// Attempts that failed on their own.
    pub fn failed_attempts(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.outcome == "failed")
            .count()
    }

    /// The attempt that won, if any (the entry `winner` names).
    pub fn winner_entry(&self) -> Option<&AttemptEntry> {
        self.winner
            .and_then(|id| self.attempts.iter().find(|a| a.id == id))
    }

    /// The human-readable timeline: the header, every event in time order,
    /// the summary. Every line passes through [`terminal_safe`] as it is
    /// written, so text from peers and DNS (reason phrases, NAPTR fields,
    /// host names, error details) cannot move the cursor, clear the screen
    /// or start a line of its own; the JSON form keeps the exact values.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let events = self.timeline().iter().map(TimelineLine::render).collect();
        for text in [self.header_lines(), events, self.summary_lines()].concat() {
            out.push_str(&terminal_safe(&text));
            out.push('\n');
        }
        out
    }

    /// The lines before the events: what is dialed, and the setup notes.
    pub fn header_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "* dialing {} (strategy {})",
            self.target, self.strategy
        )];
        lines.extend(self.notes.iter().map(|n| format!("* note: {n}")));
        lines
    }

    /// The events of the dial (DNS queries and answers, attempts, their
    /// milestones and ends) in time order. Each line's [`LineKey`] names
    /// the event, so a report of the same dial taken later (it only grows)
    /// has the same key for it: a live view prints each event once.
    pub fn timeline(&self) -> Vec<TimelineLine> {
        let mut lines = Vec::new();
        let mut push =
            |at_ms: f64, key: LineKey, text: String| lines.push(TimelineLine { at_ms, key, text });
        for (i, q) in self.dns.iter().enumerate() {
            push(
                q.sent_ms,
                LineKey::DnsSent(i),
                format!("> DNS {} {}?", q.rtype, q.name),
            );
            if let (Some(why), Some(at)) = (q.abandoned, q.abandoned_ms) {
                push(
                    at,
                    LineKey::DnsAnswer(i, 0),
                    format!(
                        "< DNS {} {}: not needed ({}) after {:.1} ms",
                        q.rtype,
                        q.name,
                        why.explain(),
                        at - q.sent_ms
                    ),
                );
            }
            let Some(at) = q.answered_ms else {
                continue;
            };
            let outcome = q.outcome.as_deref().unwrap_or("?");
            let took = at - q.sent_ms;
            let cached = if q.cached { " (cached)" } else { "" };
            if q.records.is_empty() || outcome != "records" {
                let detail = q
                    .records
                    .first()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                push(
                    at,
                    LineKey::DnsAnswer(i, 0),
                    format!(
                        "< DNS {} {}: {outcome}{detail} in {took:.1} ms{cached}",
                        q.rtype, q.name
                    ),
                );
                continue;
            }
            push(
                at,
                LineKey::DnsAnswer(i, 0),
                format!(
                    "< DNS {} {}: {} in {took:.1} ms{cached}",
                    q.rtype,
                    q.name,
                    q.count_text()
                ),
            );
            let shown = q.records.len().min(RECORDS_SHOWN);
            for (n, r) in q.records[..shown].iter().enumerate() {
                push(at, LineKey::DnsAnswer(i, n + 1), format!(";;   {r}"));
            }
            if let Some(more) = q.more_text(shown) {
                push(at, LineKey::DnsAnswer(i, shown + 1), format!(";;   {more}"));
            }
        }
        for a in &self.attempts {
            push(
                a.started_ms,
                LineKey::AttemptStarted(a.id),
                format!(
                    "* attempt #{} {} {} {} ({}, rank {}) started; {}",
                    a.id,
                    a.family,
                    a.transport,
                    a.addr,
                    a.host,
                    a.rank,
                    if self.one_at_a_time {
                        "one at a time: the next only after it fails".to_string()
                    } else {
                        format!("next attempt after {}", a.delay_text())
                    }
                ),
            );
            if let Some(note) = &a.history {
                push(
                    a.started_ms,
                    LineKey::AttemptHistory(a.id),
                    format!("* history: {}", a.history_text(note)),
                );
            }
            if let Some(up) = a.transport_up_ms {
                push(
                    up,
                    LineKey::AttemptUp(a.id),
                    format!(
                        "* attempt #{} transport up after {:.1} ms",
                        a.id,
                        up - a.started_ms
                    ),
                );
            }
            if let Some(end) = a.ended_ms {
                let took = end - a.started_ms;
                let what = match a.outcome {
                    "won" => match &a.response {
                        Some(r) => format!(
                            "connected ({} {} in {:.1} ms)",
                            r.status, r.reason, r.rtt_ms
                        ),
                        None => "connected".to_string(),
                    },
                    "failed" => format!(
                        "failed [{}]: {}",
                        a.error_class.as_deref().unwrap_or("?"),
                        a.detail.as_deref().unwrap_or("")
                    ),
                    _ => format!("cancelled ({})", a.error_class.as_deref().unwrap_or("?")),
                };
                push(
                    end,
                    LineKey::AttemptEnded(a.id),
                    format!("* attempt #{} {what} after {took:.1} ms", a.id),
                );
            }
        }
        // A stable sort: events of the same instant keep the order above.
        lines.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        lines
    }

    /// The lines after the events: the winner, or why there was none with
    /// each attempt that did not win, named once.
    pub fn summary_lines(&self) -> Vec<String> {
        // Connection reuse (issue #10): what the table did comes first; a
        // dial a kept connection carried has no winner line.
        let mut reuse_lines = self
            .reuse
            .as_ref()
            .map(|r| r.lines(self.total_ms))
            .unwrap_or_default();
        if self
            .reuse
            .as_ref()
            .is_some_and(|r| r.connection == "reused")
        {
            return reuse_lines;
        }
        if let (DialResult::Connected, Some(w)) = (self.result, self.winner_entry()) {
            let failed = match self.failed_attempts() {
                0 => String::new(),
                n => format!("{n} failed, "),
            };
            reuse_lines.push(format!(
                "* winner: #{} {} {} {} ({}) in {:.1} ms; {failed}{} other attempt(s) abandoned",
                w.id,
                w.family,
                w.transport,
                w.addr,
                w.host,
                self.total_ms,
                self.abandoned_attempts()
            ));
            return reuse_lines;
        }
        let mut lines = reuse_lines;
        lines.push(format!(
            "* no connection after {:.1} ms: {}",
            self.total_ms,
            self.reason.as_deref().unwrap_or("unknown reason")
        ));
        for a in self.attempts.iter().filter(|a| a.outcome != "won") {
            let detail = a
                .detail
                .as_deref()
                .map(|d| format!(": {}", without_address(d, &a.addr)))
                .unwrap_or_default();
            lines.push(format!(
                "*   #{} {} {} {} {}{detail}",
                a.id,
                a.family,
                a.transport,
                a.addr,
                a.error_class.as_deref().unwrap_or(a.outcome),
            ));
        }
        lines
    }
}

/// Names one event of a dial's timeline (see [`Report::timeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKey {
    /// DNS query `n` (0-based, in the order sent) left.
    DnsSent(usize),
    /// Line `m` of DNS query `n`'s answer (0: the answer or why none came,
    /// then its records).
    DnsAnswer(usize, usize),
    /// Attempt `id` started.
    AttemptStarted(u32),
    /// What history said about attempt `id`.
    AttemptHistory(u32),
    /// Attempt `id`'s transport came up.
    AttemptUp(u32),
    /// Attempt `id` ended.
    AttemptEnded(u32),
}

/// One event line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineLine {
    /// When it happened, ms since the dial started.
    pub at_ms: f64,
    /// Which event it is.
    pub key: LineKey,
    /// The event in words (not yet made terminal-safe).
    pub text: String,
}

impl TimelineLine {
    /// The line as the timeline prints it: its time, then its text.
    pub fn render(&self) -> String {
        format!("{:>9.1} ms  {}", self.at_ms, self.text)
    }
}

impl AttemptEntry {
    /// The attempt delay in force after this attempt and where it came
    /// from, e.g. "100.0 ms (configured)".
    fn delay_text(&self) -> String {
        let source = match (self.attempt_delay_source, self.history_rtt_ms) {
            ("history-rtt", Some(rtt)) => format!("history RTT {rtt:.1} ms + margin"),
            ("doubtful-path", _) => {
                "minimum: this path failed before and has not worked since".to_string()
            }
            ("suspect-family", _) => format!(
                "minimum: {} failed to several hosts on this network",
                self.family
            ),
            (other, _) => other.to_string(),
        };
        let clamped = match self.attempt_delay_clamped {
            Some(DelayBound::Min) => ", raised to the minimum",
            Some(DelayBound::Max) => ", capped at the maximum",
            None => "",
        };
        format!("{:.1} ms ({source}{clamped})", self.attempt_delay_ms)
    }

    /// History's note on this attempt in words.
    fn history_text(&self, note: &HistoryEntry) -> String {
        let path = format!("{}/{} to {}", self.family, self.transport, self.host);
        match note {
            HistoryEntry::FailedRecently {
                failed_ago_ms: Some(ago),
            } => format!("{path} failed {}: tried last", ago_text(*ago)),
            HistoryEntry::FailedRecently {
                failed_ago_ms: None,
            } => {
                format!("{path} failed recently: tried last")
            }
            HistoryEntry::PreferredFailed {
                failed_family,
                failed_ago_ms,
            } => {
                let when = failed_ago_ms.map_or_else(|| "recently".to_string(), ago_text);
                format!(
                    "{} first: {failed_family}/{} to {} failed {when}, tried last",
                    self.family, self.transport, self.host
                )
            }
            HistoryEntry::FasterFamily {
                rtt_ms,
                other_rtt_ms,
            } => format!(
                "{} preferred on {}: history RTT {rtt_ms:.1} ms vs {other_rtt_ms:.1} ms",
                self.family, self.host
            ),
        }
    }
}

/// How long ago, in words: "0.8 s ago" below 10 s, "12 s ago" after.
fn ago_text(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 10.0 {
        format!("{s:.1} s ago")
    } else {
        format!("{s:.0} s ago")
    }
}

/// An attempt's error detail without its address, which the summary line
/// already names (e.g. "connect [::1]:5060: refused" becomes "connect:
/// refused").
fn without_address(detail: &str, addr: &SocketAddr) -> String {
    let addr = addr.to_string();
    let detail = detail
        .strip_prefix(&format!("{addr}: "))
        .or_else(|| detail.strip_prefix(&format!("{addr} ")))
        .unwrap_or(detail);
    detail
        .replace(&format!(" to {addr}"), "")
        .replace(&format!(" from {addr}"), "")
        .replace(&format!(" {addr}"), "")
}

/// A query of the timeline as the report shows it: its outcome's label,
/// the records shown or the error detail, and how many records arrived.
fn dns_entry(q: &QueryRecord, since: impl Fn(Instant) -> f64) -> DnsEntry {
    let (records, records_total) = match &q.outcome {
        Some(DnsOutcome::Records { shown, total }) => (shown.clone(), *total),
        Some(DnsOutcome::Error(detail)) => (vec![detail.clone()], 0),
        _ => (Vec::new(), 0),
    };
    DnsEntry {
        name: q.name.clone(),
        rtype: q.rtype.as_str(),
        sent_ms: since(q.sent),
        answered_ms: q.answered.map(&since),
        outcome: q.outcome.as_ref().map(|o| o.label().to_string()),
        records,
        records_total,
        cached: false,
        abandoned: q.abandoned.map(|(_, why)| why),
        abandoned_ms: q.abandoned.map(|(at, _)| since(at)),
    }
}

fn address_entry(a: &AddressAnswer, since: impl Fn(Instant) -> f64) -> AddressEntry {
    AddressEntry {
        host: a.host.to_string(),
        family: a.family,
        at_ms: since(a.at),
        addrs: a.addrs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "x\x1b[2J\r\n* winner: forged\x07\x7f\u{9b}\u{202e}rev\u{2066}";

    #[test]
    fn terminal_safe_escapes_controls_and_bidi_only() {
        assert!(matches!(terminal_safe("plain é ü 日本"), Cow::Borrowed(_)));
        assert_eq!(terminal_safe("a\\b \"q\""), "a\\b \"q\"");
        assert_eq!(
            terminal_safe(EVIL),
            r"x\x1b[2J\r\n* winner: forged\x07\x7f\u{9b}\u{202e}rev\u{2066}"
        );
        assert_eq!(terminal_safe("\t\0\u{85}\u{2028}"), r"\t\x00\u{85}\u{2028}");
    }

    /// An attempt entry of `outcome` with `class` (the error class or the
    /// cancel reason) and `detail`.
    fn entry(id: u32, outcome: &'static str, class: &str, detail: Option<&str>) -> AttemptEntry {
        AttemptEntry {
            id,
            family: Family::V4,
            transport: Transport::Tcp,
            addr: format!("192.0.2.{id}:5060").parse().unwrap(),
            host: "sip.example.test".into(),
            rank: 0,
            started_ms: 0.0,
            attempt_delay_ms: 100.0,
            attempt_delay_source: "configured",
            history_rtt_ms: None,
            attempt_delay_clamped: None,
            history: None,
            transport_up_ms: None,
            ended_ms: Some(1.0),
            outcome,
            error_class: (!class.is_empty()).then(|| class.to_string()),
            detail: detail.map(str::to_string),
            response: None,
        }
    }

    #[test]
    fn abandoned_counts_only_attempts_cancelled_by_the_win() {
        let mut r = Report::new("sip:sip.example.test".into(), "siprace".into());
        r.attempts = vec![
            entry(
                1,
                "failed",
                "refused",
                Some("connect 192.0.2.1:5060: refused"),
            ),
            entry(2, "cancelled", "lost-race", None),
            entry(3, "won", "", None),
        ];
        r.result = DialResult::Connected;
        r.winner = Some(3);
        assert_eq!(r.abandoned_attempts(), 1);
        assert_eq!(r.failed_attempts(), 1);
        assert!(
            r.render()
                .contains("in 0.0 ms; 1 failed, 1 other attempt(s) abandoned"),
            "{}",
            r.render()
        );
    }

    #[test]
    fn the_failure_summary_names_each_address_once() {
        let mut r = Report::new("sip:sip.example.test".into(), "siprace".into());
        r.attempts = vec![
            entry(
                1,
                "failed",
                "refused",
                Some("connect 192.0.2.1:5060: refused"),
            ),
            entry(
                2,
                "failed",
                "timeout",
                Some("192.0.2.2:5060: no response (after 7 request(s))"),
            ),
            entry(
                3,
                "failed",
                "reset",
                Some("read from 192.0.2.3:5060: reset"),
            ),
            entry(4, "cancelled", "deadline", None),
        ];
        r.reason = Some("deadline of 32000 ms passed".into());
        let summary = r.summary_lines();
        assert_eq!(
            summary[1..],
            [
                "*   #1 ipv4 tcp 192.0.2.1:5060 refused: connect: refused",
                "*   #2 ipv4 tcp 192.0.2.2:5060 timeout: no response (after 7 request(s))",
                "*   #3 ipv4 tcp 192.0.2.3:5060 reset: read: reset",
                "*   #4 ipv4 tcp 192.0.2.4:5060 deadline",
            ]
        );
        assert_eq!(
            r.abandoned_attempts(),
            0,
            "nothing won, nothing lost a race"
        );
    }

    #[test]
    fn rfc3339_utc_has_milliseconds_and_a_z() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_201_568_123);
        assert_eq!(rfc3339_utc(at), "2026-12-02T08:52:48.123Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29 (a leap day), one ms before midnight.
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_251_199_999);
        assert_eq!(rfc3339_utc(leap), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn render_escapes_every_field() {
        let mut r = Report::new(format!("sip:{EVIL}"), EVIL.into());
        r.result = DialResult::Failed;
        r.reason = Some(EVIL.into());
        r.dns = vec![
            DnsEntry {
                name: EVIL.into(),
                rtype: "NAPTR",
                sent_ms: 0.0,
                answered_ms: Some(1.0),
                outcome: Some("records".into()),
                records: vec![EVIL.into(); 10],
                records_total: 40,
                cached: false,
                abandoned: None,
                abandoned_ms: None,
            },
            DnsEntry {
                name: EVIL.into(),
                rtype: "A",
                sent_ms: 0.0,
                answered_ms: Some(1.0),
                outcome: Some("error".into()),
                records: vec![EVIL.into()],
                records_total: 0,
                cached: true,
                abandoned: Some(Abandoned::NotNeeded),
                abandoned_ms: Some(0.5),
            },
        ];
        let attempt = |id, outcome| AttemptEntry {
            id,
            family: Family::V4,
            transport: Transport::Udp,
            addr: "192.0.2.1:5060".parse().unwrap(),
            host: EVIL.into(),
            rank: 0,
            started_ms: 1.0,
            attempt_delay_ms: 250.0,
            attempt_delay_source: "configured",
            history_rtt_ms: None,
            attempt_delay_clamped: None,
            history: None,
            transport_up_ms: Some(1.5),
            ended_ms: Some(2.0),
            outcome,
            error_class: Some(EVIL.into()),
            detail: Some(EVIL.into()),
            response: Some(ResponseEntry {
                status: 200,
                reason: EVIL.into(),
                rtt_ms: 0.5,
            }),
        };
        r.attempts = vec![attempt(1, "failed"), attempt(2, "cancelled")];
        let failed = r.render();
        r.result = DialResult::Connected;
        r.winner = Some(3);
        r.attempts.push(attempt(3, "won"));
        let won = r.render();
        for text in [&failed, &won] {
            assert!(
                text.chars().all(|c| c == '\n' || !needs_escape(c)),
                "{text:?}"
            );
            assert!(text.contains(r"\x1b[2J\r\n* winner: forged"), "{text}");
            assert!(!text.lines().any(|l| l.starts_with("* winner: forged")));
        }
        assert!(failed.contains(";;   ... 32 more (--json lists the first 10)"));
        assert!(failed.contains(": 40 record(s) in 1.0 ms"), "{failed}");
        // The JSON keeps the raw text.
        let json = serde_json::to_string(&r).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["reason"], EVIL);
        assert_eq!(back["attempts"][2]["response"]["reason"], EVIL);
        assert_eq!(back["attempts"][2]["response"]["status"], 200);
        assert_eq!(back["schema"], JSON_SCHEMA_VERSION);
        assert_eq!(back["dns"][0]["records_total"], 40);
    }
}
