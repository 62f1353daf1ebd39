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
use crate::locate::{AddressAnswer, DnsOutcome, QueryRecord};
use crate::race::{AttemptEnd, AttemptId, AttemptRecord, RaceFailure};

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
///              "records_total", "cached": true (only when answered from the cache) } ],
///   "addresses": [ { "host", "family", "at_ms", "addrs": [..] } ],
///   "attempts": [ { "id", "family", "transport", "addr", "host", "rank", "started_ms",
///                   "attempt_delay_ms", "transport_up_ms", "ended_ms", "outcome", "error_class", "detail",
///                   "response": null | { "status", "reason", "rtt_ms" } } ],
///   "winner": null | <attempt id> }
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

    /// Attempts that did not win (started and then failed or were cancelled).
    pub fn abandoned_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| a.outcome != "won").count()
    }

    /// The attempt that won, if any (the entry `winner` names).
    pub fn winner_entry(&self) -> Option<&AttemptEntry> {
        self.winner
            .and_then(|id| self.attempts.iter().find(|a| a.id == id))
    }

    /// The human-readable timeline. Every line passes through
    /// [`terminal_safe`] as it is written, so text from peers and DNS (reason
    /// phrases, NAPTR fields, host names, error details) cannot move the
    /// cursor, clear the screen or start a line of its own; the JSON form
    /// keeps the exact values.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&terminal_safe(&text));
            out.push('\n');
        };
        line(format!(
            "* dialing {} (strategy {})",
            self.target, self.strategy
        ));
        // Merge everything into one time-ordered list of lines.
        let mut lines: Vec<(f64, String)> = Vec::new();
        for q in &self.dns {
            lines.push((q.sent_ms, format!("> DNS {} {}?", q.rtype, q.name)));
            if let Some(at) = q.answered_ms {
                let outcome = q.outcome.as_deref().unwrap_or("?");
                let took = at - q.sent_ms;
                let cached = if q.cached { " (cached)" } else { "" };
                if q.records.is_empty() || outcome != "records" {
                    let detail = q
                        .records
                        .first()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    lines.push((
                        at,
                        format!(
                            "< DNS {} {}: {outcome}{detail} in {took:.1} ms{cached}",
                            q.rtype, q.name
                        ),
                    ));
                } else {
                    lines.push((
                        at,
                        format!(
                            "< DNS {} {}: {} in {took:.1} ms{cached}",
                            q.rtype,
                            q.name,
                            q.count_text()
                        ),
                    ));
                    let shown = q.records.len().min(RECORDS_SHOWN);
                    for r in &q.records[..shown] {
                        lines.push((at, format!(";;   {r}")));
                    }
                    if let Some(more) = q.more_text(shown) {
                        lines.push((at, format!(";;   {more}")));
                    }
                }
            }
        }
        for a in &self.attempts {
            lines.push((
                a.started_ms,
                format!(
                    "* attempt #{} {} {} {} ({}, rank {}) started",
                    a.id, a.family, a.transport, a.addr, a.host, a.rank
                ),
            ));
            if let Some(up) = a.transport_up_ms {
                lines.push((
                    up,
                    format!(
                        "* attempt #{} transport up after {:.1} ms",
                        a.id,
                        up - a.started_ms
                    ),
                ));
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
                lines.push((
                    end,
                    format!("* attempt #{} {what} after {took:.1} ms", a.id),
                ));
            }
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, text) in lines {
            line(format!("{at:>9.1} ms  {text}"));
        }
        let reuse_lines = self
            .reuse
            .as_ref()
            .map(|r| r.lines(self.total_ms))
            .unwrap_or_default();
        let reused = self
            .reuse
            .as_ref()
            .is_some_and(|r| r.connection == "reused");
        for text in reuse_lines {
            line(text);
        }
        match (self.result, self.winner_entry()) {
            (DialResult::Connected, _) if reused => {}
            (DialResult::Connected, Some(w)) => {
                line(format!(
                    "* winner: #{} {} {} {} ({}) in {:.1} ms; {} other attempt(s) abandoned",
                    w.id,
                    w.family,
                    w.transport,
                    w.addr,
                    w.host,
                    self.total_ms,
                    self.abandoned_attempts()
                ));
            }
            _ => {
                line(format!(
                    "* no connection after {:.1} ms: {}",
                    self.total_ms,
                    self.reason.as_deref().unwrap_or("unknown reason")
                ));
                for a in self.attempts.iter().filter(|a| a.outcome != "won") {
                    line(format!(
                        "*   #{} {} {} {}: {} {}",
                        a.id,
                        a.family,
                        a.transport,
                        a.addr,
                        a.error_class.as_deref().unwrap_or(a.outcome),
                        a.detail.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        out
    }
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
