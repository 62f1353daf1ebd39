//! The checks behind siprace's fuzz targets, one public function per target
//! (`fuzz_targets/NAME.rs` calls `NAME`). Each feeds arbitrary bytes to one
//! parser or selection stage and asserts what must hold for every input: no
//! panic, bounds respected, and round trips where the crate has a printer for
//! what it parses. A failed assertion is a finding, exactly like a panic.
//!
//! The main crate's `tests/fuzz_regressions.rs` includes this file as a
//! module and replays `fuzz/seeds/` and `fuzz/regressions/` through the same
//! functions, so the stable test suite guards every crash ever found without
//! nightly or cargo-fuzz. Keep it free of dependencies the main crate's
//! tests do not have (siprace, rand, serde_json).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;

use siprace::connect::tls::{CertIdentities, IdentitySource};
use siprace::endpoint::{Endpoint, TargetSpec, Transport};
use siprace::lab::dns::{parse_faults, DnsFault, DnsServerConfig};
use siprace::locate::select::{
    self, choose_srv, rfc2782_order, select_naptr, specs_from_srv, NaptrChoice, NaptrRecord,
    NaptrService, SrvChoice, SrvRecord,
};
use siprace::race::history::{History, NetworkId, PathOutcome, PathVerdict, MAX_NETWORKS};
use siprace::responder;
use siprace::sip::{
    parse_request, parse_response, Frame, SipParseError, StreamFramer, MAX_HEADERS,
    MAX_MESSAGE_SIZE,
};
use siprace::target::{Host, Scheme, Target};

// ---------------------------------------------------------------------------
// SIP codec

/// `parse_response` on one datagram: no panic; what it accepts is within
/// the codec's bounds and self-consistent.
pub fn sip_response(data: &[u8]) {
    let Ok(response) = parse_response(data) else {
        return;
    };
    assert!((100..=699).contains(&response.status));
    assert!(response.headers.len() <= MAX_HEADERS);
    assert!(!response.call_id.is_empty());
    assert!(response.cseq.seq <= i32::MAX as u32);
    if let Some(length) = response.content_length {
        assert_eq!(
            response.body.len(),
            length,
            "body and Content-Length differ"
        );
    }
    assert!(response.body.len() <= data.len());
}

/// `parse_request` plus the responder's answer to it: no panic, and every
/// answer the responder gives to a request it accepted is a response siprace's
/// own client parses, for the same transaction (Call-ID, CSeq, branch).
pub fn sip_request(data: &[u8]) {
    let Ok(request) = parse_request(data) else {
        return;
    };
    assert!(request.headers.len() <= MAX_HEADERS);
    assert!(!request.vias.is_empty());
    assert!(request.uri.contains(':'));
    if let Some(length) = request.content_length {
        assert_eq!(request.body.len(), length, "body and Content-Length differ");
    }
    // The packet's source decides the Via's received/rport stamping: vary it.
    let peers: [SocketAddr; 3] = [
        "127.0.0.1:5060".parse().unwrap(),
        "[::1]:5062".parse().unwrap(),
        "[::ffff:192.0.2.1]:1".parse().unwrap(),
    ];
    let peer = peers[data.len() % peers.len()];
    let Some(answer) = responder::respond(&request, peer) else {
        assert_eq!(request.method, "ACK", "only an ACK goes unanswered");
        return;
    };
    let response = match parse_response(&answer) {
        Ok(r) => r,
        // A request at the codec's limits gets an answer a little larger (the
        // stamped Via, Server, Allow...): past the limit is refused, not misread.
        Err(SipParseError::TooLarge { .. } | SipParseError::TooManyHeaders(_)) => return,
        Err(e) => panic!(
            "the responder's answer does not parse ({e}):\n{}",
            String::from_utf8_lossy(&answer)
        ),
    };
    assert_eq!(response.call_id, request.call_id);
    assert_eq!(response.cseq, request.cseq);
    let request_branch = siprace::sip::split_comma_list(&request.vias[0])
        .first()
        .and_then(|v| siprace::sip::Via::parse(v))
        .and_then(|v| v.branch().map(str::to_string));
    assert_eq!(
        response.branch, request_branch,
        "the top Via's branch changed"
    );
    // RFC 3261 §8.2.6.2: a To tag, the request's own if it had one.
    match siprace::sip::tag_param(&request.to) {
        Some(tag) => assert_eq!(response.to_tag.as_deref(), Some(tag)),
        None => assert!(response.to_tag.is_some_and(|t| !t.is_empty())),
    }
}

/// The TCP framer. The first byte picks the size limit, the second the size of
/// the chunks the rest arrives in. Framing must not depend on how the stream
/// was segmented: pushed whole or in chunks, the same frames come out, and the
/// same error (or none). Every message ends exactly where its Content-Length says.
pub fn sip_framer(data: &[u8]) {
    let [limit_pick, chunk_pick, stream @ ..] = data else {
        return;
    };
    let limits = [64, 256, 1024, 4096, MAX_MESSAGE_SIZE];
    let limit = limits[usize::from(*limit_pick) % limits.len()];
    let chunk = usize::from(*chunk_pick % 64) + 1;

    let whole = frame_stream(limit, [stream].into_iter());
    let chunked = frame_stream(limit, stream.chunks(chunk));
    assert_eq!(
        whole.frames, chunked.frames,
        "framing depends on segmentation"
    );
    assert_eq!(
        whole.failed, chunked.failed,
        "an error depends on segmentation"
    );

    let mut framed_bytes = 0;
    for frame in &whole.frames {
        match frame {
            Frame::KeepAlive => framed_bytes += 4,
            Frame::Message(message) => {
                framed_bytes += message.len();
                assert!(message.len() <= limit, "a message over the limit");
                // Keep-alives and stray line ends before a message are skipped (a
                // lone CR before other bytes is the message's own garbage).
                assert!(!message.starts_with(b"\r\n") && !message.starts_with(b"\n"));
                // Framed messages are what the responder and the TCP probe parse.
                if let Ok(request) = parse_request(message) {
                    assert_eq!(request.body.len(), request.content_length.unwrap_or(0));
                }
                if let Ok(response) = parse_response(message) {
                    assert_eq!(response.body.len(), response.content_length.unwrap_or(0));
                }
            }
        }
    }
    // Frames and what is still buffered never hold more than was pushed
    // (the rest is skipped line ends).
    assert!(framed_bytes + whole.buffered <= stream.len());
}

struct Framed {
    frames: Vec<Frame>,
    failed: bool,
    buffered: usize,
}

fn frame_stream<'a>(limit: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Framed {
    let mut framer = StreamFramer::new(limit);
    let mut out = Framed {
        frames: Vec::new(),
        failed: false,
        buffered: 0,
    };
    for chunk in chunks {
        framer.push(chunk);
        // Each frame consumes at least one byte, so this many rounds suffice.
        let mut rounds_left = framer.buffered() + 1;
        loop {
            assert!(rounds_left > 0, "next_frame keeps returning frames");
            rounds_left -= 1;
            match framer.next_frame() {
                Ok(Some(frame)) => out.frames.push(frame),
                Ok(None) => break,
                Err(_) => {
                    // Fatal for the stream: the caller closes it.
                    out.failed = true;
                    return out;
                }
            }
        }
    }
    out.buffered = framer.buffered();
    out
}

// ---------------------------------------------------------------------------
// Target

/// `Target::parse`: no panic; a parsed target prints as a URI that parses
/// back to itself; `sips:` only ever allows TLS.
pub fn target_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(target) = Target::parse(&text) else {
        return;
    };
    let shown = target.to_string();
    let again = Target::parse(&shown)
        .unwrap_or_else(|e| panic!("{shown:?} (printed from {text:?}) does not parse: {e}"));
    assert_eq!(again, target, "{text:?} printed as {shown:?}");

    let request_uri = target.request_uri();
    let from_request_uri = Target::parse(&request_uri)
        .unwrap_or_else(|e| panic!("request URI {request_uri:?} does not parse: {e}"));
    assert_eq!(from_request_uri.scheme, target.scheme);
    assert_eq!(from_request_uri.host, target.host);
    assert_eq!(from_request_uri.port, target.port);
    assert_eq!(from_request_uri.user, None);

    assert_ne!(target.port, Some(0));
    if let Host::Name(name) = &target.host {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(!name.ends_with('.'));
        assert_eq!(*name, name.to_ascii_lowercase());
    }
    let allowed = target.allowed_transports();
    assert!(!allowed.is_empty());
    if target.scheme == Scheme::Sips {
        assert_eq!(
            allowed,
            [Transport::Tls],
            "sips: allows a non-TLS transport"
        );
    }
}

// ---------------------------------------------------------------------------
// NAPTR / SRV selection

/// Reads structured values from fuzzer bytes; past the end it yields zeros,
/// so every input decodes.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.u8()))
    }

    /// Mostly one of `choices` (the values that reach deep code), sometimes
    /// arbitrary text.
    fn text(&mut self, choices: &[&str]) -> String {
        let pick = usize::from(self.u8());
        if let Some(choice) = choices.get(pick) {
            return choice.to_string();
        }
        let len = usize::from(self.u8() % 32).min(self.0.len());
        let (raw, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(raw).into_owned()
    }
}

const NAMES: &[&str] = &[
    ".",
    "",
    "example.test",
    "_sip._udp.example.test",
    "_sip._tcp.example.test",
    "_sips._tcp.example.test",
    "_sip._sctp.example.test",
    "sip1.example.test",
    "sip2.example.test",
    "SIP1.Example.Test.",
    "a..b",
];

const SERVICES: &[&str] = &[
    "SIP+D2U", "SIP+D2T", "SIP+D2S", "SIPS+D2T", "sips+d2t", "SIPS+D2U", "SIP+D2W", "SIPS+D2S",
    "E2U+sip", "", "SIP",
];

const FLAGS: &[&str] = &["s", "S", "", "a", "u", "sa"];

/// The pure half of RFC 3263 location over arbitrary records, run the way
/// `locate` runs it: `select_naptr`, then per service `choose_srv`, then
/// `specs_from_srv`, with caps and a seeded RNG taken from the input. Asserts
/// the caps, that every output comes from the input, that no duplicate
/// survives, and that a `sips:` target never yields a non-TLS transport.
pub fn locate_select(data: &[u8]) {
    let mut input = Input(data);
    let scheme = if input.u8() & 1 == 0 {
        Scheme::Sip
    } else {
        Scheme::Sips
    };
    let allowed_bits = input.u8();
    let allowed: Vec<Transport> = Transport::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed_bits & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect();
    let max = usize::from(input.u8() % 40) + 1;
    let mut rng = StdRng::seed_from_u64(input.u64());

    let naptrs: Vec<NaptrRecord> = (0..input.u8() % 17)
        .map(|_| NaptrRecord {
            order: input.u16(),
            preference: input.u16(),
            flags: input.text(FLAGS),
            services: input.text(SERVICES),
            replacement: select::normalize_name(&input.text(NAMES)),
        })
        .collect();

    let services = match select_naptr(&naptrs, scheme, &allowed, max) {
        NaptrChoice::Services(services) => {
            assert!(services.len() <= max, "NAPTR selection exceeded its limit");
            check_naptr_services(&naptrs, &services, scheme, &allowed);
            services
        }
        NaptrChoice::NoSip => {
            assert!(naptrs
                .iter()
                .all(|r| select::naptr_service(&r.services) == NaptrService::NotSip));
            select::constructed_services(scheme, "example.test", &allowed)
        }
        NaptrChoice::NoneUsable { offered } => {
            assert!(!offered.is_empty());
            return;
        }
    };
    for (transport, _) in &services {
        assert!(allowed.contains(transport));
        if scheme == Scheme::Sips {
            assert_eq!(
                *transport,
                Transport::Tls,
                "sips: selected a non-TLS service"
            );
        }
    }
    let mut services = services;
    services.truncate(max);

    // One SRV answer per distinct name, as the DNS would give.
    let mut answers: HashMap<String, Vec<SrvRecord>> = HashMap::new();
    let mut ordered: Vec<(Transport, Vec<SrvRecord>)> = Vec::new();
    for (transport, name) in &services {
        let records = answers
            .entry(name.clone())
            .or_insert_with(|| {
                (0..input.u8() % 13)
                    .map(|_| SrvRecord {
                        priority: input.u16() % 4,
                        weight: input.u16() >> (input.u8() % 16),
                        port: input.u16() % 8,
                        target: select::normalize_name(&input.text(NAMES)),
                    })
                    .collect()
            })
            .clone();
        let usable: Vec<&SrvRecord> = records
            .iter()
            .filter(|r| r.target != "." && r.port != 0)
            .collect();
        match choose_srv(&records, max, &mut rng) {
            SrvChoice::Targets {
                ordered: targets,
                dropped,
            } => {
                assert_eq!(targets.len(), usable.len().min(max));
                assert_eq!(targets.len() + dropped, usable.len());
                assert!(is_sub_multiset(&targets, &records));
                assert!(targets.iter().all(|r| r.target != "." && r.port != 0));
                assert!(targets.windows(2).all(|w| w[0].priority <= w[1].priority));
                ordered.push((*transport, targets));
            }
            SrvChoice::NotOffered => {
                assert!(usable.is_empty() && records.iter().any(|r| r.target == "."))
            }
            SrvChoice::Empty => {
                assert!(usable.is_empty() && records.iter().all(|r| r.target != "."))
            }
        }
    }

    let limit = max.saturating_mul(4);
    let specs = specs_from_srv(&ordered, limit);
    check_specs(&specs, &ordered, limit, scheme, &allowed);

    // RFC 2782 ordering on its own, with a limit of its own.
    let records: Vec<SrvRecord> = answers.into_values().flatten().collect();
    let own_limit = usize::from(input.u8());
    let order = rfc2782_order(records.clone(), own_limit, &mut rng);
    assert_eq!(order.len(), records.len().min(own_limit));
    assert!(is_sub_multiset(&order, &records));
    assert!(order.windows(2).all(|w| w[0].priority <= w[1].priority));
}

/// NAPTR services: allowed, unique, and in (ORDER, PREFERENCE) order of the
/// best record that offers each.
fn check_naptr_services(
    records: &[NaptrRecord],
    services: &[(Transport, String)],
    scheme: Scheme,
    allowed: &[Transport],
) {
    assert!(!services.is_empty());
    let mut keys = Vec::new();
    for (i, (transport, name)) in services.iter().enumerate() {
        assert!(
            !services[..i].contains(&(*transport, name.clone())),
            "duplicate service"
        );
        assert!(allowed.contains(transport));
        assert!(name != "." && !name.is_empty());
        let key = records
            .iter()
            .filter(|r| {
                r.replacement == *name
                    && r.flags.eq_ignore_ascii_case("s")
                    && matches!(select::naptr_service(&r.services),
                        NaptrService::Usable { transport: t, secure }
                            if t == *transport && (secure || scheme == Scheme::Sip))
            })
            .map(|r| (r.order, r.preference))
            .min()
            .expect("every service comes from a record");
        keys.push(key);
    }
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "services out of NAPTR order"
    );
}

/// Specs: capped, ranked 0, 1, 2..., unique, from the ordered SRV targets,
/// TLS only for `sips:`.
fn check_specs(
    specs: &[TargetSpec],
    ordered: &[(Transport, Vec<SrvRecord>)],
    limit: usize,
    scheme: Scheme,
    allowed: &[Transport],
) {
    assert!(specs.len() <= limit);
    for (i, spec) in specs.iter().enumerate() {
        assert_eq!(spec.rank as usize, i);
        assert!(allowed.contains(&spec.transport));
        if scheme == Scheme::Sips {
            assert_eq!(
                spec.transport,
                Transport::Tls,
                "sips: yields a non-TLS spec"
            );
        }
        assert!(ordered.iter().any(|(t, records)| *t == spec.transport
            && records
                .iter()
                .any(|r| *r.target == *spec.host && r.port == spec.port)));
        assert!(!specs[..i]
            .iter()
            .any(|s| s.host == spec.host && s.port == spec.port && s.transport == spec.transport));
    }
}

fn is_sub_multiset(part: &[SrvRecord], whole: &[SrvRecord]) -> bool {
    let mut left: Vec<&SrvRecord> = whole.iter().collect();
    part.iter()
        .all(|r| match left.iter().position(|w| *w == r) {
            Some(i) => {
                left.swap_remove(i);
                true
            }
            None => false,
        })
}

// ---------------------------------------------------------------------------
// History file

/// The history file as `--history-file` loads it (JSON into `History`,
/// format 2: partitions per network): no panic; what loads saves and loads
/// again to the same text; using it at any clock and on any network (view,
/// record, prune) neither panics nor breaks its bounds; a failure just
/// recorded is what the view then shows for that path on that network, and
/// nothing of it shows on another network.
pub fn history_load(data: &[u8]) {
    let Ok(mut history) = serde_json::from_slice::<History>(data) else {
        return;
    };
    let saved = serde_json::to_string(&history).expect("a loaded history saves");
    let reloaded: History = serde_json::from_str(&saved).expect("a saved history loads");
    assert_eq!(serde_json::to_string(&reloaded).unwrap(), saved);

    let clocks = [0, 1, 1_700_000_000, u64::from(u32::MAX), 1 << 40];
    let endpoint = Endpoint {
        transport: Transport::Udp,
        addr: "[2001:db8::1]:5060".parse().unwrap(),
        host: "sip1.example.test".into(),
        rank: 0,
    };
    let mut networks = history.network_ids();
    networks.push(NetworkId::unknown());
    for secs in clocks {
        let Some(now) = UNIX_EPOCH.checked_add(Duration::from_secs(secs)) else {
            continue;
        };
        for network in &networks {
            let view = history.view(now, network);
            if view.is_empty() {
                assert_eq!(view.verdict(&endpoint), PathVerdict::Unknown);
            }
            let _ = history.view(SystemTime::now(), network);
        }
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The file's first network (or one of our own), and one it cannot hold.
    let here = networks[0].clone();
    let elsewhere = NetworkId::named("a network no file names: more than 16 hex digits");
    let before = history.len();
    history.record(now, &here, &[(endpoint.clone(), PathOutcome::Failed)]);
    assert!(history.len() <= before + 1);
    assert!(history.networks() <= MAX_NETWORKS);
    history.prune(now);
    assert_eq!(
        history.view(now, &here).verdict(&endpoint),
        PathVerdict::Failed
    );
    assert!(history.view(now, &elsewhere).is_empty());
}

// ---------------------------------------------------------------------------
// Lab

/// The lab DNS server's zone check (`DnsServerConfig::parse`, hickory's
/// master-file parser behind it): no panic, no hang on any text.
pub fn lab_zone(data: &[u8]) {
    let zone = String::from_utf8_lossy(data);
    let _ = DnsServerConfig::parse(&zone, "");
}

/// The fault specification: no panic; what parses prints (`TYPE=FAULT+...`)
/// and parses back to the same faults, delays rounded down to the
/// millisecond as `Display` writes them.
pub fn lab_faults(data: &[u8]) {
    let spec = String::from_utf8_lossy(data);
    let Ok(faults) = parse_faults(&spec) else {
        return;
    };
    let as_printed = |f: &DnsFault| match f {
        DnsFault::Delay(d) => DnsFault::Delay(Duration::from_millis(d.as_millis() as u64)),
        other => *other,
    };
    for list in faults.values() {
        for fault in list {
            let printed = fault.to_string();
            let again = DnsFault::parse(&printed)
                .unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
            assert_eq!(again, as_printed(fault));
        }
    }
    let printed: Vec<String> = faults
        .iter()
        .map(|(rtype, list)| {
            let list: Vec<String> = list.iter().map(DnsFault::to_string).collect();
            format!("{rtype}={}", list.join("+"))
        })
        .collect();
    let printed = printed.join(",");
    let again =
        parse_faults(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
    assert_eq!(again.len(), faults.len());
    for (rtype, list) in &faults {
        let expected: Vec<DnsFault> = list.iter().map(as_printed).collect();
        assert_eq!(again[rtype], expected);
    }
}

// ---------------------------------------------------------------------------
// TLS

/// RFC 5922 identities from arbitrary DER: no panic; the identities that
/// count match themselves, wildcards never match, and a name the
/// certificate does not hold is refused.
pub fn cert_identities(data: &[u8]) {
    let Ok(ids) = CertIdentities::from_der(data) else {
        return;
    };
    if !ids.has_san {
        assert!(ids.sip_uris.is_empty() && ids.dns.is_empty() && ids.ips.is_empty());
        assert!(ids.other_uris.is_empty());
    }
    let _ = ids.describe();
    let (source, names) = ids.sip_identities();
    match source {
        IdentitySource::SipUri => assert_eq!(names, ids.sip_uris),
        IdentitySource::DnsName => assert!(ids.sip_uris.is_empty() && ids.has_san),
        IdentitySource::CommonName => assert!(!ids.has_san),
    }
    for name in &names {
        // `check` strips brackets and trailing dots from the domain it is given,
        // so only names without them can be compared verbatim.
        if name.contains(['[', ']']) || name.ends_with('.') {
            continue;
        }
        let verdict = ids.check(name);
        if name.contains('*') {
            assert!(verdict.is_err(), "wildcard {name:?} matched");
        } else {
            assert!(
                verdict.is_ok(),
                "{name:?} does not match itself: {verdict:?}"
            );
        }
    }
    let absent = "not-in-any-certificate.invalid";
    if !names.iter().any(|n| n == absent) {
        assert!(ids.check(absent).is_err());
    }
}
