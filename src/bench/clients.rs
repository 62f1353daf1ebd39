//! Real third-party SIP clients as extra benchmark rows: SIPp as a UAC
//! (OPTIONS over UDP and TCP), sipsak (OPTIONS) and baresip (one REGISTER),
//! each started as its own process in the lab's client namespace and given
//! the SIP domain, so each resolves it the way it normally does.
//!
//! Timing (the same for every client): a `tshark` capture on `eth0` of the
//! client namespace runs through all dials of a [`run`]; the dials run one
//! at a time, so each dial's packets form a clean time window. A dial's
//! latency is from the **first packet the client sends** (its first DNS
//! query included, as siprace's own figures include DNS) to the **first SIP
//! response it receives** (any status code; only a response to a port the
//! client sent SIP from in this dial counts). Both instants are kernel
//! capture timestamps, so process start-up before the first packet is not
//! counted, and neither is the delay until `tshark` shows the packet.
//!
//! A dial with no SIP response within the bound (counted from the client's
//! start) is failed with `latency_us` = the bound and
//! `error: "no response within N s"`; the client is killed by PID at the
//! bound. A client that exits earlier without a response is failed the same
//! way, with its exit status and the tail of its output in `error`.
//!
//! How each client is invoked (all in the client namespace, whose
//! `resolv.conf` points at the lab DNS; `T` = `udp`|`tcp`):
//!
//! | client | command | resolution |
//! |---|---|---|
//! | SIPp | `sipp -sf options.xml -m 1 -r 1000 -t u1\|t1 -nostdin -timeout S HOST:PORT` | No SRV support in SIPp: HOST:PORT is the lowest-priority target of `_sip._T.<domain>` (looked up by siprace before the dial, outside the timed window), else `<domain>:5060`. SIPp resolves HOST itself with `getaddrinfo` and uses the first result only (normally IPv6). `-r 1000`: the first call goes out at once instead of after SIPp's default 100 ms pacing. |
//! | sipsak | `sipsak -vv -s sip:bench@<domain> --transport T` | Its own c-ares SRV lookup (TLS, TCP, UDP), then `gethostbyname`: IPv4 only. |
//! | baresip | `baresip -f DIR -t S` with the account `<sip:bench@<domain>;transport=T>;regint=3600` | libre's RFC 3263 resolver (SRV of the given transport, then A/AAAA or the SRV additionals); one REGISTER, the process is killed on the first response. |

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench::priority::at_ordinary_priority;
use crate::bench::records::DialRecord;
use crate::endpoint::{Family, Transport};
use crate::lab::sys;
use crate::lab::topology::{Lab, Role, HOST_IF};

/// The SIPp UAC scenario (`lab/sipp/options.xml`): one OPTIONS, expects 200.
const SIPP_OPTIONS_XML: &str = include_str!("../../lab/sipp/options.xml");

/// Bound on the wait for the capture to show a marker sent after a dial. The
/// marker comes out ~0.5 s later on an idle machine; the wait ends then, so the
/// bound is generous for a loaded one.
const SYNC: Duration = Duration::from_secs(15);
/// Pause between dials, so kernel packets of the previous one (FIN, RST) are
/// not in the next dial's window.
const GAP: Duration = Duration::from_millis(100);
/// Bound on the capture's start.
const CAPTURE_START: Duration = Duration::from_secs(15);

/// The timing definition every client row uses.
pub const TIMING_SOURCE: &str = "tshark capture on eth0 of the client namespace: from the first packet the client process sends (its first DNS query included) to the first SIP response it receives (kernel capture timestamps; dials one at a time)";

/// A third-party SIP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// SIPp as UAC: one OPTIONS (`lab/sipp/options.xml`).
    SippUac,
    /// sipsak: one OPTIONS (its default "shoot" mode).
    Sipsak,
    /// baresip: one REGISTER.
    Baresip,
}

impl Client {
    pub const ALL: [Client; 3] = [Client::SippUac, Client::Sipsak, Client::Baresip];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Client::SippUac => "sipp-uac",
            Client::Sipsak => "sipsak",
            Client::Baresip => "baresip",
        }
    }

    /// The program run.
    pub fn program(self) -> &'static str {
        match self {
            Client::SippUac => "sipp",
            Client::Sipsak => "sipsak",
            Client::Baresip => "baresip",
        }
    }

    /// The Debian package that has it.
    pub fn package(self) -> &'static str {
        match self {
            Client::SippUac => "sip-tester",
            Client::Sipsak => "sipsak",
            Client::Baresip => "baresip",
        }
    }

    /// The request it sends.
    pub fn method(self) -> &'static str {
        match self {
            Client::Baresip => "REGISTER",
            _ => "OPTIONS",
        }
    }

    /// The transports it is run over.
    pub fn transports(self) -> &'static [Transport] {
        &[Transport::Udp, Transport::Tcp]
    }

    /// Whether its program is in PATH (a capture needs `tshark` too, see [`capture_available`]).
    pub fn installed(self) -> bool {
        sys::which(self.program()).is_some()
    }

    /// How the client finds the server, for the report.
    pub fn resolution(self) -> &'static str {
        match self {
            Client::SippUac => "no SRV support: given the lowest-priority SRV target of the domain (looked up before the dial, not timed), resolved by SIPp with getaddrinfo, first result only",
            Client::Sipsak => "its own SRV lookup (c-ares), then gethostbyname: IPv4 only",
            Client::Baresip => "libre's RFC 3263 resolver for sip:DOMAIN;transport=T (SRV, then A/AAAA), one REGISTER",
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether `tshark` (the timing source) is in PATH.
pub fn capture_available() -> bool {
    sys::which("tshark").is_some()
}

/// Why `client` cannot run here, if it cannot.
pub fn unavailable(client: Client) -> Option<String> {
    if !client.installed() {
        Some(format!(
            "{} not installed (package {})",
            client.program(),
            client.package()
        ))
    } else if !capture_available() {
        Some("tshark not installed (package tshark): it times the third-party clients".into())
    } else {
        None
    }
}

/// Runs `n` dials of `client` over `transport` toward `domain`, one at a
/// time, from `lab`'s client namespace, and returns one record per dial.
/// Blocking (up to about `n` × (`bound` + 0.5 s) plus the capture's start).
/// Nothing else should send from the client namespace meanwhile: packets
/// are attributed to a dial by time.
pub fn run(
    lab: &Lab,
    client: Client,
    transport: Transport,
    domain: &str,
    n: usize,
    bound: Duration,
) -> Result<Vec<DialRecord>, String> {
    if let Some(why) = unavailable(client) {
        return Err(why);
    }
    if !client.transports().contains(&transport) {
        return Err(format!("{client} is not run over {transport}"));
    }
    if bound.is_zero() {
        return Err("the time bound must be positive".into());
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let dir = TempDir::new(client.label())?;
    let invocation = prepare(lab, client, transport, domain, bound, &dir.0)?;
    // The capture may run at most this long (dumpcap's own bound).
    let capture_bound = (bound + SYNC + GAP) * n as u32 + Duration::from_secs(60);
    let capture = Capture::start(lab, &dir.0, capture_bound)?;
    let client_addrs = [
        IpAddr::V6(lab.addrs.client_v6),
        IpAddr::V4(lab.addrs.client_v4),
    ];
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(GAP);
        }
        records.push(dial(
            lab,
            client,
            transport,
            &invocation,
            &capture,
            &client_addrs,
            bound,
            &dir.0,
        ));
    }
    capture.stop();
    Ok(records)
}

/// The command line of a client (program and arguments), the same for every dial.
struct Invocation {
    program: &'static str,
    args: Vec<String>,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn bound_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Writes the client's files into `dir` and builds its command line.
fn prepare(
    lab: &Lab,
    client: Client,
    transport: Transport,
    domain: &str,
    bound: Duration,
    dir: &Path,
) -> Result<Invocation, String> {
    let self_bound = (ceil_secs(bound) + 2).to_string();
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
        Ok(p)
    };
    match client {
        Client::SippUac => {
            let xml = write("options.xml", SIPP_OPTIONS_XML)?;
            let (host, port) = sipp_target(lab, domain, transport);
            let t = match transport {
                Transport::Tcp => "t1",
                _ => "u1",
            };
            Ok(Invocation {
                program: "sipp",
                args: vec![
                    "-sf".into(),
                    xml.display().to_string(),
                    "-m".into(),
                    "1".into(),
                    "-r".into(),
                    "1000".into(),
                    "-t".into(),
                    t.into(),
                    "-nostdin".into(),
                    "-timeout".into(),
                    self_bound,
                    format!("{host}:{port}"),
                ],
            })
        }
        Client::Sipsak => Ok(Invocation {
            program: "sipsak",
            args: vec![
                "-vv".into(),
                "-s".into(),
                format!("sip:bench@{domain}"),
                "--transport".into(),
                transport.as_str().into(),
            ],
        }),
        Client::Baresip => {
            let conf = dir.join("baresip");
            std::fs::create_dir_all(&conf)
                .map_err(|e| format!("creating {}: {e}", conf.display()))?;
            // No audio/video modules: only what a REGISTER needs.
            let config = "poll_method\t\tepoll\n\
                          module_path\t\t/usr/lib/baresip/modules\n\
                          module_app\t\taccount.so\n\
                          sip_trans_def\t\tudp\n";
            write("baresip/config", config)?;
            write(
                "baresip/accounts",
                &format!("<sip:bench@{domain};transport={transport}>;regint=3600\n"),
            )?;
            write("baresip/contacts", "")?;
            Ok(Invocation {
                program: "baresip",
                args: vec![
                    "-f".into(),
                    conf.display().to_string(),
                    "-t".into(),
                    self_bound,
                ],
            })
        }
    }
}

/// SIPp cannot do SRV: the host and port of the lowest-priority SRV target
/// of the domain for `transport`, else the domain itself on 5060. Looked up
/// from the client namespace through the lab DNS, before any timed dial.
fn sipp_target(lab: &Lab, domain: &str, transport: Transport) -> (String, u16) {
    use crate::dns::build_resolver;
    use crate::locate::LocateConfig;
    use hickory_resolver::proto::rr::{RData, RecordType};

    let fallback = (domain.to_string(), transport.default_port());
    let dns = SocketAddr::new(lab.addrs.dns_v6.into(), 53);
    let name = format!("{}.", crate::locate::select::srv_name(transport, domain));
    let found = lab.in_ns(Role::Client, move || -> Option<(String, u16)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let cfg = LocateConfig {
                dns_server: Some(dns),
                ..LocateConfig::default()
            };
            let resolver = build_resolver(&cfg).ok()?;
            let lookup = tokio::time::timeout(
                Duration::from_secs(3),
                resolver.lookup(name.as_str(), RecordType::SRV),
            )
            .await
            .ok()?
            .ok()?;
            lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some((
                        s.priority,
                        crate::locate::select::normalize_name(&s.target.to_ascii()),
                        s.port,
                    )),
                    _ => None,
                })
                .filter(|(_, t, _)| t != ".")
                .min_by_key(|(p, _, _)| *p)
                .map(|(_, t, port)| (t, port))
        })
    });
    found.ok().flatten().unwrap_or(fallback)
}

/// One dial: start the client, wait for its first SIP response in the
/// capture (or its exit, or the bound), kill it, and read its window.
#[allow(clippy::too_many_arguments)]
fn dial(
    lab: &Lab,
    client: Client,
    transport: Transport,
    inv: &Invocation,
    capture: &Capture,
    client_addrs: &[IpAddr],
    bound: Duration,
    dir: &Path,
) -> DialRecord {
    let failed = |error: String| DialRecord::failed(bound, error);
    // Whatever the capture still holds belongs to earlier dials.
    capture.drain();
    let out_path = dir.join("client.out");
    let out = match std::fs::File::create(&out_path) {
        Ok(f) => f,
        Err(e) => return failed(format!("creating {}: {e}", out_path.display())),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return failed(format!("client output: {e}")),
    };
    let window_start = epoch_ns(SystemTime::now());
    let started = Instant::now();
    let mut cmd: Command = lab.command(Role::Client, inv.program);
    cmd.args(&inv.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("starting {}: {e}", inv.program)),
    };

    let mut window = Window::new(window_start, client_addrs, capture.marker_port);
    let deadline = started + bound;
    let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
    // Bounded: every iteration waits at most 20 ms, and the loop ends at the
    // bound at the latest.
    while window.response().is_none() && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some((status, Instant::now()));
            break;
        }
        match capture.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(p) => window.add(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                kill(&mut child);
                return failed("the capture (tshark) stopped".into());
            }
        }
    }
    // At the bound, or once answered: it has done its part.
    kill(&mut child);
    // The capture shows packets with a lag (about 0.5 s): read on until a
    // marker sent now comes out, so the window holds all the dial's packets.
    if window.response().is_none() && !capture.sync(&mut window) {
        return failed(format!(
            "the capture (tshark) did not show a marker packet within {} s",
            SYNC.as_secs()
        ));
    }

    let bound_ns = window_start + bound.as_nanos() as u64;
    let first = window.first_sent();
    let response = window.response().filter(|r| r.ts_ns <= bound_ns).cloned();
    let attempts = window.sip_destinations(response.as_ref().map(|r| r.ts_ns));
    let dns_ms = window.dns_ms(first.map(|f| f.ts_ns), response.as_ref().map(|r| r.ts_ns));
    match (first, response) {
        (Some(first), Some(resp)) => DialRecord {
            ok: true,
            latency_us: (resp.ts_ns.saturating_sub(first.ts_ns) / 1000).max(1),
            family: Some(Family::of(&resp.src)),
            transport: Some(if resp.tcp { Transport::Tcp } else { transport }),
            attempts: attempts.len(),
            abandoned: attempts.len().saturating_sub(1),
            dns_ms,
            error: None,
        },
        (first, _) => {
            let mut error = match exited {
                Some((status, at)) if at < deadline => format!(
                    "{} exited ({status}) after {:.0} ms without a SIP response: {}",
                    client.program(),
                    (at - started).as_secs_f64() * 1e3,
                    tail(&out_path, 3)
                ),
                _ => format!("no response within {}", bound_text(bound)),
            };
            if first.is_none() {
                error += " (it sent no packet)";
            } else if !attempts.is_empty() {
                let to: Vec<String> = attempts.iter().map(|a| a.to_string()).collect();
                error += &format!(" (SIP sent to {})", to.join(", "));
            }
            DialRecord {
                ok: false,
                latency_us: bound.as_micros() as u64,
                family: None,
                transport: None,
                attempts: attempts.len(),
                abandoned: attempts.len(),
                dns_ms,
                error: Some(error),
            }
        }
    }
}

/// Kills our own child by PID (SIGKILL) and reaps it, bounded.
fn kill(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = child.kill();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last `n` non-empty lines of a file, on one line.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    let t = lines[from..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}

fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One captured packet (the fields the timing needs).
#[derive(Debug, Clone)]
struct Packet {
    ts_ns: u64,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    tcp: bool,
    /// TCP RST (a kernel's answer, never the client's first packet).
    rst: bool,
    /// DNS: (is a response, query type).
    dns: Option<(bool, u16)>,
    /// A SIP response's status code.
    status: Option<u16>,
}

/// The `-e` fields, in the order [`parse_line`] reads them.
const FIELDS: [&str; 14] = [
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags.reset",
    "dns.flags.response",
    "dns.qry.type",
    "sip.Status-Code",
    "sip.Method",
];

fn flag(s: &str) -> bool {
    matches!(s, "1" | "True" | "true")
}

/// "1795814137.408458604" → nanoseconds since the epoch.
fn parse_epoch(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let frac: u64 = digits.parse().ok()?;
    Some(secs * 1_000_000_000 + frac)
}

fn parse_line(line: &str) -> Option<Packet> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < FIELDS.len() - 1 {
        return None;
    }
    let get = |i: usize| f.get(i).copied().unwrap_or("").trim();
    let ts_ns = parse_epoch(get(0))?;
    let ip = |a: &str, b: &str| -> Option<IpAddr> {
        if !a.is_empty() {
            a.parse().ok()
        } else {
            b.parse().ok()
        }
    };
    let src = ip(get(1), get(2))?;
    let dst = ip(get(3), get(4))?;
    let tcp = get(5).is_empty() && !get(7).is_empty();
    let (sport, dport) = if tcp {
        (get(7).parse().ok()?, get(8).parse().ok()?)
    } else {
        (get(5).parse().ok()?, get(6).parse().ok()?)
    };
    let dns = (sport == 53 || dport == 53).then(|| {
        let resp = flag(get(10)) || sport == 53;
        // "1" or "A"-style values: keep numbers only (0 when absent).
        (resp, get(11).parse().unwrap_or(0))
    });
    let status = get(12).parse().ok();
    Some(Packet {
        ts_ns,
        src,
        dst,
        sport,
        dport,
        tcp,
        rst: flag(get(9)),
        dns,
        status,
    })
}

fn rtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        35 => "NAPTR".into(),
        other => format!("TYPE{other}"),
    }
}

/// The packets of one dial.
struct Window {
    start_ns: u64,
    /// The source port of the capture's marker datagrams (not the client's).
    marker_port: u16,
    client: Vec<IpAddr>,
    packets: Vec<Packet>,
    /// Local ports the client sent SIP from (UDP or TCP).
    sip_ports: BTreeSet<(bool, u16)>,
    response: Option<usize>,
}

impl Window {
    fn new(start_ns: u64, client: &[IpAddr], marker_port: u16) -> Window {
        Window {
            start_ns,
            marker_port,
            client: client.to_vec(),
            packets: Vec::new(),
            sip_ports: BTreeSet::new(),
            response: None,
        }
    }

    fn outgoing(&self, p: &Packet) -> bool {
        self.client.contains(&p.src)
    }

    fn add(&mut self, p: Packet) {
        if p.ts_ns < self.start_ns || (self.outgoing(&p) && p.sport == self.marker_port) {
            return;
        }
        if self.outgoing(&p) && p.dns.is_none() && !p.rst {
            self.sip_ports.insert((p.tcp, p.sport));
        }
        if self.response.is_none()
            && !self.outgoing(&p)
            && self.client.contains(&p.dst)
            && p.status.is_some()
            && self.sip_ports.contains(&(p.tcp, p.dport))
        {
            self.response = Some(self.packets.len());
        }
        self.packets.push(p);
    }

    fn response(&self) -> Option<&Packet> {
        self.response.map(|i| &self.packets[i])
    }

    /// The first packet the client sent (DNS included; not a kernel RST).
    fn first_sent(&self) -> Option<&Packet> {
        self.packets
            .iter()
            .filter(|p| self.outgoing(p) && !p.rst)
            .min_by_key(|p| p.ts_ns)
    }

    /// The server addresses the client sent SIP (or a TCP SYN) to, up to `until`.
    fn sip_destinations(&self, until: Option<u64>) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = Vec::new();
        let mut sorted: Vec<&Packet> = self.packets.iter().collect();
        sorted.sort_by_key(|p| p.ts_ns);
        for p in sorted {
            if until.is_some_and(|u| p.ts_ns > u) {
                break;
            }
            if self.outgoing(p) && p.dns.is_none() && !p.rst && !v.contains(&p.dst) {
                v.push(p.dst);
            }
        }
        v
    }

    /// When the first DNS answer of each record type arrived, ms after `first`.
    fn dns_ms(&self, first: Option<u64>, until: Option<u64>) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let Some(first) = first else {
            return m;
        };
        for p in &self.packets {
            if until.is_some_and(|u| p.ts_ns > u) {
                continue;
            }
            if let Some((true, t)) = p.dns {
                if self.client.contains(&p.dst) && t != 0 {
                    let ms = p.ts_ns.saturating_sub(first) as f64 / 1e6;
                    let e = m.entry(rtype_name(t)).or_insert(ms);
                    *e = f64::min(*e, ms);
                }
            }
        }
        m
    }
}

/// A running `tshark` in the client namespace, its packets on a channel.
struct Capture {
    child: Child,
    rx: Receiver<Packet>,
    /// A UDP socket in the client namespace for marker datagrams.
    marker: std::net::UdpSocket,
    marker_port: u16,
    marker_to: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Capture {
    fn start(lab: &Lab, dir: &Path, max: Duration) -> Result<Capture, String> {
        let marker = lab
            .in_ns(Role::Client, || std::net::UdpSocket::bind("0.0.0.0:0"))
            .map_err(|e| format!("client namespace: {e}"))?
            .map_err(|e| format!("marker socket: {e}"))?;
        let marker_port = marker
            .local_addr()
            .map_err(|e| format!("marker socket: {e}"))?
            .port();
        let marker_to = SocketAddr::new(lab.addrs.router_client_v4.into(), 9);
        let mut cmd = lab.command(Role::Client, "tshark");
        cmd.args(["-i", HOST_IF, "-l", "-n", "-q", "-p"])
            .arg("--temp-dir")
            .arg(dir)
            .args(["-a", &format!("duration:{}", ceil_secs(max))])
            .args(["-f", "udp or tcp"])
            .args(["--enable-heuristic", "sip_udp"])
            .args(["--enable-heuristic", "sip_tcp"])
            .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
        for f in FIELDS {
            cmd.args(["-e", f]);
        }
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The kernel stamps the packets, so tshark's own scheduling does not show in
        // the figures: it need not share a benchmark run's real-time priority.
        at_ordinary_priority(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("starting tshark: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let err_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_buf = err_text.clone();
        let t_err = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            // Until EOF (tshark's exit); each line is bounded by tshark's output.
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.contains("Capturing on") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut b) = err_buf.lock() {
                    if b.len() < 16_384 {
                        b.push_str(&line);
                    }
                }
                line.clear();
            }
        });
        let t_out = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let mut open = true;
            // Until EOF (tshark's exit). Once nobody listens, the rest is
            // still read, so tshark never blocks on a full pipe.
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if open {
                    if let Some(p) = parse_line(line.trim_end_matches(['\n', '\r'])) {
                        open = tx.send(p).is_ok();
                    }
                }
                line.clear();
            }
        });
        let mut cap = Capture {
            child,
            rx,
            marker,
            marker_port,
            marker_to,
            stderr: err_text,
            threads: vec![t_err, t_out],
        };
        // "Capturing on" comes before the pipeline delivers packets: wait
        // for a marker to come out too.
        let started = Instant::now();
        let ready = ready_rx.recv_timeout(CAPTURE_START).is_ok()
            && cap.wait_marker(CAPTURE_START.saturating_sub(started.elapsed()), |_| {});
        if ready {
            return Ok(cap);
        }
        let text = cap.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        cap.stop_inner();
        Err(format!(
            "tshark did not show packets within {} s: {}",
            CAPTURE_START.as_secs(),
            text.trim()
        ))
    }

    /// Sends marker datagrams from the client namespace (to the discard
    /// port of the client's router), one every 100 ms, passing every packet
    /// read to `each`, until a marker comes out of the capture (true) or
    /// `within` has passed (false). Earlier markers are dropped. The capture keeps the order of packets,
    /// so everything sent before the marker has been read by then.
    fn wait_marker(&self, within: Duration, mut each: impl FnMut(Packet)) -> bool {
        let end = Instant::now() + within;
        // Markers of earlier calls may still be on their way: only a marker
        // sent by this call counts.
        let since = epoch_ns(SystemTime::now());
        // Bounded by `within`.
        while Instant::now() < end {
            let _ = self
                .marker
                .send_to(b"siprace capture marker", self.marker_to);
            let until = (Instant::now() + Duration::from_millis(100)).min(end);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match self.rx.recv_timeout(left) {
                    Ok(p) if p.sport == self.marker_port && p.dport == 9 && p.ts_ns >= since => {
                        return true
                    }
                    Ok(p) => each(p),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        }
        false
    }

    /// Reads packets into `window` until a marker sent now comes out.
    fn sync(&self, window: &mut Window) -> bool {
        self.wait_marker(SYNC, |p| window.add(p))
    }

    /// Discards what is queued (earlier dials' packets).
    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    fn stop(mut self) {
        self.stop_inner();
    }

    /// SIGTERM (tshark stops its dumpcap and removes its temporary file),
    /// then SIGKILL after 3 s; joins the reader threads.
    fn stop_inner(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own child (`ip netns exec`
            // execs tshark, so it is tshark's PID), which is not yet reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        kill(&mut self.child);
        // The readers end at EOF of the pipes, i.e. once tshark is gone.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_inner();
        }
    }
}

/// A private temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        let base = std::env::temp_dir();
        // Bounded: a handful of names.
        for i in 0..16u32 {
            let p = base.join(format!(
                "siprace-{tag}-{}-{}-{i}",
                std::process::id(),
                epoch_ns(SystemTime::now()) % 1_000_000_000
            ));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", p.display())),
            }
        }
        Err("cannot create a temporary directory".into())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fields: &[&str]) -> String {
        let mut v: Vec<&str> = fields.to_vec();
        v.resize(FIELDS.len(), "");
        v.join("\t")
    }

    #[test]
    fn parses_epoch_to_nanoseconds() {
        assert_eq!(
            parse_epoch("1795814137.408458604"),
            Some(1_795_814_137_408_458_604)
        );
        assert_eq!(parse_epoch("10.5"), Some(10_500_000_000));
        assert_eq!(parse_epoch("x"), None);
    }

    #[test]
    fn window_times_first_packet_to_first_response() {
        let c6: IpAddr = "2001:db8:c1::10".parse().unwrap();
        let c4: IpAddr = "192.0.2.10".parse().unwrap();
        let mut w = Window::new(1_000, &[c6, c4], 1);
        let pkts = [
            // an old packet: before the window
            line(&[
                "0.000000500",
                "",
                "2001:db8:c1::10",
                "",
                "2001:db8:d5::53",
                "5000",
                "53",
                "",
                "",
                "",
                "0",
                "1",
            ]),
            // DNS query (first packet) and answer
            line(&[
                "1.000000000",
                "",
                "2001:db8:c1::10",
                "",
                "2001:db8:d5::53",
                "40000",
                "53",
                "",
                "",
                "",
                "0",
                "28",
            ]),
            line(&[
                "1.001000000",
                "",
                "2001:db8:d5::53",
                "",
                "2001:db8:c1::10",
                "53",
                "40000",
                "",
                "",
                "",
                "1",
                "28",
            ]),
            // OPTIONS to v6, then to v4
            line(&[
                "1.002000000",
                "",
                "2001:db8:c1::10",
                "",
                "2001:db8:5e::10",
                "41000",
                "5060",
                "",
                "",
                "",
                "",
                "",
                "",
                "OPTIONS",
            ]),
            line(&[
                "1.003000000",
                "192.0.2.10",
                "",
                "198.51.100.10",
                "",
                "41001",
                "5060",
                "",
                "",
                "",
                "",
                "",
                "",
                "OPTIONS",
            ]),
            // a response to a port we never used: ignored
            line(&[
                "1.004000000",
                "198.51.100.10",
                "",
                "192.0.2.10",
                "",
                "5060",
                "9999",
                "",
                "",
                "",
                "",
                "",
                "200",
            ]),
            // the answer
            line(&[
                "1.005000000",
                "198.51.100.10",
                "",
                "192.0.2.10",
                "",
                "5060",
                "41001",
                "",
                "",
                "",
                "",
                "",
                "200",
            ]),
        ];
        for l in &pkts {
            w.add(parse_line(l).expect("parses"));
        }
        let r = w.response().expect("a response").clone();
        let first = w.first_sent().expect("first").ts_ns;
        assert_eq!(r.ts_ns - first, 5_000_000);
        assert_eq!(Family::of(&r.src), Family::V4);
        assert_eq!(w.sip_destinations(Some(r.ts_ns)).len(), 2);
        let dns = w.dns_ms(Some(first), Some(r.ts_ns));
        assert_eq!(dns.get("AAAA"), Some(&1.0));
    }

    #[test]
    fn tcp_rst_is_not_a_first_packet() {
        let c4: IpAddr = "192.0.2.10".parse().unwrap();
        let mut w = Window::new(0, &[c4], 1);
        w.add(
            parse_line(&line(&[
                "1.0",
                "192.0.2.10",
                "",
                "198.51.100.10",
                "",
                "",
                "",
                "40000",
                "5060",
                "1",
            ]))
            .unwrap(),
        );
        assert!(w.first_sent().is_none());
        assert!(w.sip_destinations(None).is_empty());
    }
}
