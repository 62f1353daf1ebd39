//! The location machine: RFC 3263 sequencing as a pure (sans-IO) state
//! machine, the way [`crate::race`] is the race.
//!
//! [`Location`] decides which DNS queries to send and when, and turns their
//! answers into service locations and address answers; a driver performs the
//! queries. [`Location::start`] gives the first actions; every answer
//! ([`Input::Answer`]) and every expiry of the wake-up time
//! [`Location::next_wake`] ([`Input::Timer`]) goes to [`Location::step`]
//! with the current time, which says what to do next.
//!
//! The results come in this order: [`Action::Targets`] once, then one
//! [`Action::Addresses`] per (host, family) the moment that answer arrives,
//! then [`Action::Done`]; or [`Action::Failed`], always before any Targets.
//! [`Action::Query`] and [`Action::Abandon`] can come in between.
//!
//! The machine sees every query and answer with its time, so it keeps the
//! DNS timeline itself ([`Location::queries`]), along with the address
//! answers handed on ([`Location::address_answers`]). The rules it follows
//! are those of the [module documentation](super); the pure rules
//! themselves (NAPTR selection, RFC 2782 order, budgets, fallbacks'
//! transports) are in [`select`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::select::{self, NaptrChoice, NaptrRecord, SrvChoice, SrvRecord};
use super::{DnsOutcome, LocateConfig, LocateError};
use crate::endpoint::{Family, TargetSpec, Transport};
use crate::target::{Host, Scheme, Target};

/// Identifies one DNS query of a location (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u32);

/// The record types location asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// NAPTR (RFC 3403), the first step of RFC 3263 §4.1.
    Naptr,
    /// SRV (RFC 2782), RFC 3263 §4.2.
    Srv,
    /// AAAA: IPv6 addresses (RFC 3596).
    Aaaa,
    /// A: IPv4 addresses.
    A,
}

impl RecordType {
    /// The type's mnemonic: "NAPTR", "SRV", "AAAA" or "A".
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Naptr => "NAPTR",
            RecordType::Srv => "SRV",
            RecordType::Aaaa => "AAAA",
            RecordType::A => "A",
        }
    }

    /// The type that carries `family`'s addresses.
    pub fn of_family(family: Family) -> RecordType {
        match family {
            Family::V6 => RecordType::Aaaa,
            Family::V4 => RecordType::A,
        }
    }
}

/// A query to send. `name` has no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Names the query; its [`Answer`] carries the same id.
    pub id: QueryId,
    /// The name to look up, e.g. `_sip._udp.example.test`.
    pub name: String,
    /// The record type to ask for.
    pub rtype: RecordType,
}

/// The data of one record, in location's own terms (names normalised with
/// [`select::normalize_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// A NAPTR record (RFC 3403).
    Naptr(NaptrRecord),
    /// An SRV record (RFC 2782).
    Srv(SrvRecord),
    /// An A (IPv4) or AAAA (IPv6) record.
    Address(IpAddr),
}

impl RecordData {
    /// Whether this record answers a query of `rtype`.
    fn is_of(&self, rtype: RecordType) -> bool {
        match (self, rtype) {
            (RecordData::Naptr(_), RecordType::Naptr) | (RecordData::Srv(_), RecordType::Srv) => {
                true
            }
            (RecordData::Address(ip), RecordType::Aaaa) => ip.is_ipv6(),
            (RecordData::Address(ip), RecordType::A) => ip.is_ipv4(),
            _ => false,
        }
    }
}

/// One record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's data, parsed.
    pub data: RecordData,
    /// The RDATA as zone-file text, for the timeline.
    pub text: String,
}

impl Record {
    /// An A or AAAA record.
    pub fn address(ip: IpAddr) -> Record {
        Record {
            data: RecordData::Address(ip),
            text: ip.to_string(),
        }
    }
}

/// Why a query gave no records (NODATA is an empty record list).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsFailure {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The server failed to answer (SERVFAIL).
    ServFail,
    /// No answer within the query timeout.
    Timeout,
    /// Anything else (REFUSED, a network error...), said plainly.
    Error(String),
}

/// A query's answer, as the driver got it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The query this answers.
    pub id: QueryId,
    /// When it arrived (it may be a little before it is fed in).
    pub at: Instant,
    /// The records of the answer section (those of another type than the
    /// query's, like CNAMEs, are ignored), or why there are none.
    pub result: Result<Vec<Record>, DnsFailure>,
}

/// What happens to location.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The answer to a query location asked for.
    Answer(Answer),
    /// The time [`Location::next_wake`] asked for has come (a spurious one
    /// changes nothing).
    Timer,
}

/// What location asks for or gives, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this query.
    Query(Query),
    /// This query's answer is not needed any more (an unused pipelined SRV
    /// query, or one past its timeout, already recorded as a timeout): stop
    /// it. An answer fed in later is ignored.
    Abandon(QueryId),
    /// The ordered service locations (rank 0 first); once, before any Addresses.
    Targets(Vec<TargetSpec>),
    /// One per (host in Targets, configured family): the usable addresses
    /// of that answer; empty on NODATA, NXDOMAIN, timeout or error.
    Addresses {
        /// The host name of a [`TargetSpec`].
        host: Arc<str>,
        /// The family of the answer (AAAA: V6, A: V4).
        family: Family,
        /// Its usable addresses, in answer order.
        addrs: Vec<IpAddr>,
    },
    /// Nothing more will come.
    Done,
    /// No target could be located; nothing more will come.
    Failed(LocateError),
}

/// One query of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRecord {
    /// The query's id.
    pub id: QueryId,
    /// The name looked up, without the trailing dot.
    pub name: String,
    /// The record type asked for.
    pub rtype: RecordType,
    /// When the query was sent.
    pub sent: Instant,
    /// When its answer came, or its timeout passed; `None` if it was
    /// abandoned or location stopped first.
    pub answered: Option<Instant>,
    /// How it ended; `None` while pending, or if abandoned or stopped first.
    pub outcome: Option<DnsOutcome>,
    /// When and why it was abandoned unanswered (its answer was not needed
    /// any more); `None` if it was answered, timed out or is still pending.
    pub abandoned: Option<(Instant, Abandoned)>,
}

/// Why location stopped waiting for a query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Abandoned {
    /// A pipelined SRV query the NAPTR answer did not name: a
    /// higher-priority answer made it unnecessary.
    NotNeeded,
    /// The dial was decided (won or failed) before it came.
    DialDecided,
    /// Location failed for another reason before it came.
    LocationFailed,
}

impl Abandoned {
    /// The reason in words, for the timeline.
    pub fn explain(self) -> &'static str {
        match self {
            Abandoned::NotNeeded => "cancelled, a higher-priority answer made it unnecessary",
            Abandoned::DialDecided => "cancelled, the dial was decided",
            Abandoned::LocationFailed => "cancelled, location had failed",
        }
    }
}

/// An address answer as handed on ([`Action::Addresses`]), with its time.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressAnswer {
    /// The host name of a [`TargetSpec`].
    pub host: Arc<str>,
    /// The family of the answer (AAAA: V6, A: V4).
    pub family: Family,
    /// When the answer arrived.
    pub at: Instant,
    /// Its usable addresses, in answer order (empty on NODATA or failure).
    pub addrs: Vec<IpAddr>,
}

/// How many NAPTR/SRV records of one answer selection looks at (a 64 KiB
/// message holds fewer SRV records than this).
const ORDERING_CAP: usize = 4096;

/// A service to locate: its transport and the SRV name of its targets.
type Service = (Transport, String);

/// What an answer is for.
#[derive(Debug, Clone)]
enum Purpose {
    Naptr,
    Srv(String),
    Address { host: Arc<str>, family: Family },
}

/// A query in flight.
#[derive(Debug, Clone)]
struct Pending {
    id: QueryId,
    deadline: Instant,
    purpose: Purpose,
}

/// Where the domain itself is tried when no SRV answer gave a target
/// (RFC 3263 §4.2), on the default ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// The default transports of those still allowed.
    DefaultTransports,
    /// The transports of the services NAPTR named, in their order.
    ServiceTransports,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    New,
    /// Waiting for the NAPTR answer; the constructed services are the
    /// fallback without SIP NAPTR records (their SRV queries may already
    /// be in flight).
    Naptr {
        constructed: Vec<Service>,
    },
    /// Waiting for the SRV answers of these services.
    Srv {
        services: Vec<Service>,
        fallback: Fallback,
    },
    /// Waiting for the address answers.
    Addresses,
    /// Done, failed or stopped.
    Over,
}

/// The location machine. See the module docs.
#[derive(Debug)]
pub struct Location {
    target: Target,
    /// The transports asked for, as given (for error messages).
    transports: Vec<Transport>,
    /// Those of them the scheme allows, without duplicates.
    allowed: Vec<Transport>,
    /// The families to query, in order, without duplicates.
    families: Vec<Family>,
    /// The name to locate (normalised), or the literal address's text.
    domain: String,
    pipelined: bool,
    query_timeout: Duration,
    /// [`LocateConfig::max_records`].
    max: usize,
    rng: StdRng,
    stage: Stage,
    queries: Vec<QueryRecord>,
    pending: Vec<Pending>,
    /// SRV answers by name (no records when the query failed).
    srv_answers: Vec<(String, Vec<SrvRecord>)>,
    targets: Vec<TargetSpec>,
    address_answers: Vec<AddressAnswer>,
    result: Option<Result<(), LocateError>>,
}

impl Location {
    /// Locates `target` over the allowed `transports`. `seed` seeds the
    /// RFC 2782 weighted choices (the driver takes it from the OS, tests
    /// fix it).
    pub fn new(target: &Target, transports: &[Transport], cfg: &LocateConfig, seed: u64) -> Self {
        let mut allowed = Vec::new();
        for &t in transports {
            if !allowed.contains(&t) && (target.scheme == Scheme::Sip || t.is_secure()) {
                allowed.push(t);
            }
        }
        let mut families = Vec::new();
        for f in &cfg.families {
            if !families.contains(f) {
                families.push(*f);
            }
        }
        let domain = match &target.host {
            Host::Name(name) => select::normalize_name(name),
            Host::Ip(ip) => ip.to_string(),
        };
        Location {
            target: target.clone(),
            transports: transports.to_vec(),
            allowed,
            families,
            domain,
            pipelined: cfg.pipelined,
            query_timeout: cfg.query_timeout,
            max: cfg.max_records.max(1),
            rng: StdRng::seed_from_u64(seed),
            stage: Stage::New,
            queries: Vec::new(),
            pending: Vec::new(),
            srv_answers: Vec::new(),
            targets: Vec::new(),
            address_answers: Vec::new(),
            result: None,
        }
    }

    /// The first actions; nothing after the first call.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stage == Stage::New {
            self.stage = Stage::Over;
            if let Err(e) = self.begin(now, &mut out) {
                self.fail(now, e, &mut out);
            }
        }
        out
    }

    /// Feeds one input at `now` and returns what to do, in order. Answers
    /// to queries not in flight (abandoned, unknown, already answered) and
    /// every input once location is over are ignored.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Answer(answer) => self.take(answer, now, &mut out),
            Input::Timer => {
                let expired: Vec<QueryId> = self
                    .pending
                    .iter()
                    .filter(|p| p.deadline <= now)
                    .map(|p| p.id)
                    .collect();
                for id in expired {
                    // An earlier expiry may have ended location, and with
                    // it every query.
                    if self.is_pending(id) {
                        out.push(Action::Abandon(id));
                        let timeout = Answer {
                            id,
                            at: now,
                            result: Err(DnsFailure::Timeout),
                        };
                        self.take(timeout, now, &mut out);
                    }
                }
            }
        }
        out
    }

    /// When the next query times out, if one is in flight.
    pub fn next_wake(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Stops location where it stands (the dial is over): the queries
    /// still in flight, to abandon, are returned.
    /// `now` is recorded as the time they were abandoned.
    pub fn stop(&mut self, now: Instant) -> Vec<QueryId> {
        self.stage = Stage::Over;
        let mut out = Vec::new();
        self.abandon_pending(now, Abandoned::DialDecided, &mut out);
        out.into_iter()
            .filter_map(|a| match a {
                Action::Abandon(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Every query sent, in order, with its answer as far as it came.
    pub fn queries(&self) -> &[QueryRecord] {
        &self.queries
    }

    /// The service locations found (empty until [`Action::Targets`]).
    pub fn targets(&self) -> &[TargetSpec] {
        &self.targets
    }

    /// The address answers handed on, in order.
    pub fn address_answers(&self) -> &[AddressAnswer] {
        &self.address_answers
    }

    /// `Some` once location is done or failed.
    pub fn result(&self) -> Option<&Result<(), LocateError>> {
        self.result.as_ref()
    }

    fn begin(&mut self, now: Instant, out: &mut Vec<Action>) -> Result<(), LocateError> {
        if self.families.is_empty() {
            return Err(LocateError::NoFamilies);
        }
        if self.allowed.is_empty() {
            return Err(self.no_transport());
        }
        let target = &self.target;
        let defaults = select::default_transports(target.scheme, target.transport, &self.allowed);
        if let Host::Ip(ip) = target.host {
            return self.literal(ip, &defaults, now, out);
        }
        if target.port.is_some() || target.transport.is_some() {
            if defaults.is_empty() {
                return Err(self.no_transport());
            }
            if target.port.is_some() {
                let specs = select::direct_specs(&self.domain, target.port, &defaults);
                self.resolve(specs, now, out);
                return Ok(());
            }
            // `;transport=` without a port: that transport's SRV only.
            let services = defaults
                .iter()
                .map(|&t| (t, select::srv_name(t, &self.domain)))
                .collect();
            return self.await_services(services, Fallback::DefaultTransports, now, out);
        }
        let constructed = select::constructed_services(target.scheme, &self.domain, &self.allowed);
        self.send(
            now,
            self.domain.clone(),
            RecordType::Naptr,
            Purpose::Naptr,
            out,
        );
        if self.pipelined {
            self.query_services(&constructed, now, out);
        }
        self.stage = Stage::Naptr { constructed };
        Ok(())
    }

    /// An IP literal: no DNS. The address answer of its family holds it;
    /// the other family's is empty.
    fn literal(
        &mut self,
        ip: IpAddr,
        transports: &[Transport],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LocateError> {
        if transports.is_empty() {
            return Err(self.no_transport());
        }
        let family = Family::of(&ip);
        if !self.families.contains(&family) {
            return Err(LocateError::FamilyDisabled { ip, family });
        }
        let specs = select::direct_specs(&self.domain, self.target.port, transports);
        let host = specs[0].host.clone();
        self.targets = specs.clone();
        out.push(Action::Targets(specs));
        for f in self.families.clone() {
            let addrs = if f == family { vec![ip] } else { vec![] };
            self.hand_on(host.clone(), f, addrs, now, out);
        }
        self.done(out);
        Ok(())
    }

    /// Sends a query.
    fn send(
        &mut self,
        now: Instant,
        name: String,
        rtype: RecordType,
        purpose: Purpose,
        out: &mut Vec<Action>,
    ) {
        let id = QueryId(self.queries.len() as u32 + 1);
        self.queries.push(QueryRecord {
            id,
            name: name.clone(),
            rtype,
            sent: now,
            answered: None,
            outcome: None,
            abandoned: None,
        });
        self.pending.push(Pending {
            id,
            deadline: now + self.query_timeout,
            purpose,
        });
        out.push(Action::Query(Query { id, name, rtype }));
    }

    /// Sends the SRV queries of these services whose names were not
    /// queried yet (a NAPTR replacement equal to a pipelined name reuses
    /// its answer).
    fn query_services(&mut self, services: &[Service], now: Instant, out: &mut Vec<Action>) {
        for (_, name) in services {
            let queried = self
                .queries
                .iter()
                .any(|q| q.rtype == RecordType::Srv && q.name == *name);
            if !queried {
                self.send(
                    now,
                    name.clone(),
                    RecordType::Srv,
                    Purpose::Srv(name.clone()),
                    out,
                );
            }
        }
    }

    fn is_pending(&self, id: QueryId) -> bool {
        self.pending.iter().any(|p| p.id == id)
    }

    /// Records an answer in the timeline and moves on with it.
    fn take(&mut self, answer: Answer, now: Instant, out: &mut Vec<Action>) {
        let Some(index) = self.pending.iter().position(|p| p.id == answer.id) else {
            return;
        };
        let pending = self.pending.remove(index);
        let query = &mut self.queries[pending.id.0 as usize - 1];
        let (outcome, records) = read_answer(query.rtype, answer.result, self.max);
        query.answered = Some(answer.at);
        query.outcome = Some(outcome);
        let next = match pending.purpose {
            Purpose::Naptr => {
                let records: Vec<NaptrRecord> = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RecordData::Naptr(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                self.on_naptr(&records, now, out)
            }
            Purpose::Srv(name) => {
                let records = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RecordData::Srv(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                self.srv_answers.push((name, records));
                self.on_srv(now, out)
            }
            Purpose::Address { host, family } => {
                let ips: Vec<IpAddr> = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RecordData::Address(ip) => Some(ip),
                        _ => None,
                    })
                    .collect();
                let addrs = usable_addresses(&host, family, &ips);
                self.hand_on(host, family, addrs, answer.at, out);
                if self.pending.is_empty() {
                    self.done(out);
                }
                Ok(())
            }
        };
        if let Err(e) = next {
            self.fail(now, e, out);
        }
    }

    /// RFC 3263 §4.1: the NAPTR answer names the services, or says there
    /// are none for SIP (then the constructed ones), or that none is usable.
    fn on_naptr(
        &mut self,
        records: &[NaptrRecord],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LocateError> {
        let Stage::Naptr { constructed } = std::mem::replace(&mut self.stage, Stage::Over) else {
            return Ok(());
        };
        let scheme = self.target.scheme;
        match select::select_naptr(records, scheme, &self.allowed, self.max) {
            NaptrChoice::Services(services) => {
                self.await_services(services, Fallback::ServiceTransports, now, out)
            }
            NaptrChoice::NoSip if constructed.is_empty() => Err(self.no_transport()),
            NaptrChoice::NoSip => {
                self.await_services(constructed, Fallback::DefaultTransports, now, out)
            }
            NaptrChoice::NoneUsable { offered } => Err(LocateError::NoUsableService {
                domain: self.domain.clone(),
                offered: offered.join(", "),
                reason: select::none_usable_reason(scheme, &self.allowed),
            }),
        }
    }

    /// Queries the services' SRV names not queried yet and waits for all
    /// their answers (some may be in already).
    fn await_services(
        &mut self,
        services: Vec<Service>,
        fallback: Fallback,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LocateError> {
        self.query_services(&services, now, out);
        self.stage = Stage::Srv { services, fallback };
        self.on_srv(now, out)
    }

    /// Once every service awaited has its SRV answer: the targets, or the
    /// fallback to the domain itself, then the address queries.
    fn on_srv(&mut self, now: Instant, out: &mut Vec<Action>) -> Result<(), LocateError> {
        let Stage::Srv { services, .. } = &self.stage else {
            // A pipelined answer that came before NAPTR's: kept for later.
            return Ok(());
        };
        let answered = |name: &String| self.srv_answers.iter().any(|(n, _)| n == name);
        if !services.iter().all(|(_, name)| answered(name)) {
            return Ok(());
        }
        let Stage::Srv { services, fallback } = std::mem::replace(&mut self.stage, Stage::Over)
        else {
            unreachable!("matched above")
        };
        // Pipelined queries NAPTR did not name are not needed any more.
        self.abandon_pending(now, Abandoned::NotNeeded, out);
        let specs = match self.srv_specs(&services) {
            Ok(specs) => specs,
            Err(not_offered) => self.fallback_specs(&services, fallback, not_offered)?,
        };
        self.resolve(specs, now, out);
        Ok(())
    }

    /// Turns the SRV answers of `services` (in service order) into specs: at
    /// most `max` targets per service and four times `max` in all, shared
    /// so that neither a crowded priority level nor a crowded service hides
    /// the targets after it (see [`select::level_quotas`]). Without any
    /// target: the services whose SRV said "not offered".
    fn srv_specs(&mut self, services: &[Service]) -> Result<Vec<TargetSpec>, Vec<Service>> {
        let no_records = Vec::new();
        let answers: Vec<&Vec<SrvRecord>> = services
            .iter()
            .map(|(_, name)| {
                self.srv_answers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(&no_records, |(_, records)| records)
            })
            .collect();
        let dialable: Vec<usize> = answers
            .iter()
            .map(|records| records.iter().filter(|r| select::dialable(r)).count())
            .collect();
        let total_budget = self.max.saturating_mul(4);
        let budgets = select::service_budgets(&dialable, self.max, total_budget);
        let mut ordered: Vec<(Transport, Vec<SrvRecord>)> = Vec::new();
        let mut not_offered: Vec<Service> = Vec::new();
        for (((t, name), records), budget) in services.iter().zip(answers).zip(budgets) {
            match select::choose_srv(records, budget, &mut self.rng) {
                SrvChoice::Targets {
                    ordered: v,
                    dropped,
                } => {
                    if dropped > 0 {
                        tracing::debug!(%name, kept = v.len(), dropped, "SRV targets beyond the budget dropped");
                    }
                    ordered.push((*t, v));
                }
                SrvChoice::NotOffered => not_offered.push((*t, name.clone())),
                SrvChoice::Empty => {}
            }
        }
        let specs = select::specs_from_srv(&ordered, total_budget);
        if specs.is_empty() {
            Err(not_offered)
        } else {
            Ok(specs)
        }
    }

    /// RFC 3263 §4.2 without SRV: the domain itself on default ports, over
    /// the transports `fallback` names minus those whose SRV said "not
    /// offered". None left: the service is not offered at all.
    fn fallback_specs(
        &self,
        services: &[Service],
        fallback: Fallback,
        not_offered: Vec<Service>,
    ) -> Result<Vec<TargetSpec>, LocateError> {
        let offered = |t: &Transport| !not_offered.iter().any(|(n, _)| n == t);
        let transports = match fallback {
            Fallback::DefaultTransports => {
                let left: Vec<Transport> = self.allowed.iter().copied().filter(offered).collect();
                select::default_transports(self.target.scheme, self.target.transport, &left)
            }
            Fallback::ServiceTransports => {
                let mut ts: Vec<Transport> = Vec::new();
                for (t, _) in services {
                    if !ts.contains(t) && offered(t) {
                        ts.push(*t);
                    }
                }
                ts
            }
        };
        if transports.is_empty() {
            let mut names: Vec<String> = not_offered.into_iter().map(|(_, n)| n).collect();
            names.dedup();
            return Err(LocateError::ServiceNotOffered {
                domain: self.domain.clone(),
                names: names.join(", "),
            });
        }
        Ok(select::direct_specs(&self.domain, None, &transports))
    }

    /// Hands on the targets and resolves every distinct host once per
    /// family, AAAA and A as separate queries, all at once.
    fn resolve(&mut self, specs: Vec<TargetSpec>, now: Instant, out: &mut Vec<Action>) {
        debug_assert!(!specs.is_empty());
        let mut hosts: Vec<Arc<str>> = Vec::new();
        for s in &specs {
            if !hosts.iter().any(|h| **h == *s.host) {
                hosts.push(s.host.clone());
            }
        }
        self.targets = specs.clone();
        out.push(Action::Targets(specs));
        self.stage = Stage::Addresses;
        for host in hosts {
            for family in self.families.clone() {
                let purpose = Purpose::Address {
                    host: host.clone(),
                    family,
                };
                self.send(
                    now,
                    host.to_string(),
                    RecordType::of_family(family),
                    purpose,
                    out,
                );
            }
        }
    }

    fn hand_on(
        &mut self,
        host: Arc<str>,
        family: Family,
        addrs: Vec<IpAddr>,
        at: Instant,
        out: &mut Vec<Action>,
    ) {
        self.address_answers.push(AddressAnswer {
            host: host.clone(),
            family,
            at,
            addrs: addrs.clone(),
        });
        out.push(Action::Addresses {
            host,
            family,
            addrs,
        });
    }

    /// Stops waiting for every query in flight, recording when and why.
    fn abandon_pending(&mut self, now: Instant, why: Abandoned, out: &mut Vec<Action>) {
        for p in self.pending.drain(..) {
            self.queries[p.id.0 as usize - 1].abandoned = Some((now, why));
            out.push(Action::Abandon(p.id));
        }
    }

    fn done(&mut self, out: &mut Vec<Action>) {
        self.stage = Stage::Over;
        self.result = Some(Ok(()));
        out.push(Action::Done);
    }

    fn fail(&mut self, now: Instant, error: LocateError, out: &mut Vec<Action>) {
        self.abandon_pending(now, Abandoned::LocationFailed, out);
        self.stage = Stage::Over;
        self.result = Some(Err(error.clone()));
        out.push(Action::Failed(error));
    }

    fn no_transport(&self) -> LocateError {
        LocateError::NoTransport {
            target: self.target.to_string(),
            allowed: if self.transports.is_empty() {
                "none".into()
            } else {
                let names: Vec<&str> = self.transports.iter().map(|t| t.as_str()).collect();
                names.join(", ")
            },
        }
    }
}

/// An answer as the timeline shows it, and the records location reads: for
/// NAPTR and SRV every record of the type (up to [`ORDERING_CAP`]), so
/// that selection sees every level before it bounds them; for addresses
/// the first `max`. The timeline renders the first `max` records and counts
/// all of them; an address location drops is marked.
fn read_answer(
    rtype: RecordType,
    result: Result<Vec<Record>, DnsFailure>,
    max: usize,
) -> (DnsOutcome, Vec<RecordData>) {
    let records = match result {
        Ok(records) => records,
        Err(failure) => {
            let outcome = match failure {
                DnsFailure::NxDomain => DnsOutcome::NxDomain,
                DnsFailure::ServFail => DnsOutcome::ServFail,
                DnsFailure::Timeout => DnsOutcome::Timeout,
                DnsFailure::Error(detail) => DnsOutcome::Error(detail),
            };
            return (outcome, Vec::new());
        }
    };
    let of_type: Vec<Record> = records
        .into_iter()
        .filter(|r| r.data.is_of(rtype))
        .collect();
    let total = of_type.len();
    let take = match rtype {
        RecordType::Naptr | RecordType::Srv => ORDERING_CAP.max(max),
        RecordType::Aaaa | RecordType::A => max,
    };
    if total == 0 {
        return (DnsOutcome::NoRecords, Vec::new());
    }
    let shown = of_type.iter().take(max).map(render).collect();
    let kept = of_type.into_iter().take(take).map(|r| r.data).collect();
    (DnsOutcome::Records { shown, total }, kept)
}

/// A record's text in the timeline; an address location drops is marked.
fn render(record: &Record) -> String {
    match &record.data {
        RecordData::Address(ip) => match select::unusable_address(*ip) {
            Some(why) => format!("{} (dropped: {why})", record.text),
            None => record.text.clone(),
        },
        _ => record.text.clone(),
    }
}

/// The usable addresses of an A/AAAA answer for `family`; the others are
/// dropped with a debug trace.
fn usable_addresses(host: &str, family: Family, ips: &[IpAddr]) -> Vec<IpAddr> {
    ips.iter()
        .copied()
        .filter(|ip| Family::of(ip) == family)
        .filter(|ip| match select::unusable_address(*ip) {
            Some(why) => {
                tracing::debug!(%host, %ip, "dropping a {why} address from the {family} answer");
                false
            }
            None => true,
        })
        .collect()
}
