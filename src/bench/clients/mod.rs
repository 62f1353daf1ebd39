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
//!
//! The parts of a client run ([`run`]): the client's command line is built
//! once ([`sipp`], [`sipsak`], [`baresip`], one file per client, each saying
//! how that client resolves and what it sends); the capture is started
//! ([`capture`]: `tshark` in the client namespace, its lines read as
//! [`packet`]s); then each dial ([`dial`]) starts the client, collects the
//! packets of its time window and reads the dial's figures off them
//! ([`window`], pure and unit-tested).

mod baresip;
mod capture;
mod curl;
mod dial;
mod kamailio;
mod linphone;
mod packet;
mod pjsua;
mod python;
mod sipp;
mod siprace_cli;
mod sipsak;
mod sofia;
mod window;

pub use dial::Observed;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench::records::DialRecord;
use crate::endpoint::Transport;
use crate::lab::sys;
use crate::lab::topology::Lab;
use crate::race::strategy::Strategy;
use capture::{Capture, SYNC};

/// Pause between dials, so kernel packets of the previous one (FIN, RST) are
/// not in the next dial's window.
const GAP: Duration = Duration::from_millis(100);
/// The timing definition every client row uses.
pub const TIMING_SOURCE: &str = "tshark capture on eth0 of the client namespace: from the first packet the client process sends (its first DNS query included) to the first SIP response it receives (kernel capture timestamps; dials one at a time)";

/// A client the bench or the census runs: a third-party SIP client, a
/// non-SIP Happy Eyeballs reference, or siprace's own CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// SIPp as UAC: one OPTIONS (`lab/sipp/options.xml`).
    SippUac,
    /// sipsak: one OPTIONS (its default "shoot" mode).
    Sipsak,
    /// baresip: one REGISTER.
    Baresip,
    /// sofia-sip's `sip-options`: one OPTIONS (census only).
    SofiaOptions,
    /// PJSIP through pjsua2: one REGISTER (census only).
    Pjsua,
    /// linphonec (liblinphone, belle-sip): one REGISTER, UDP only (census only).
    Linphone,
    /// Kamailio as a forwarding proxy in the client namespace: SIPp sends
    /// OPTIONS to it on loopback, it relays them to the domain (census only).
    KamailioProxy,
    /// curl toward the SIP port over TCP: a non-SIP Happy Eyeballs
    /// reference, done when the TCP connection is up (census only).
    Curl,
    /// Python asyncio's `open_connection(..., happy_eyeballs_delay=0.25)`
    /// (census only; a non-SIP reference, done when connected).
    PythonHappyEyeballs,
    /// Python asyncio's `open_connection` with its defaults (no Happy
    /// Eyeballs: one address after the other; census only).
    PythonDefault,
    /// `siprace dial --strategy S` (census only).
    Siprace(Strategy),
}

impl Client {
    /// The bench's default client rows.
    pub const ALL: [Client; 3] = [Client::SippUac, Client::Sipsak, Client::Baresip];

    /// Every client of the census, third-party clients first.
    pub const CENSUS: [Client; 15] = [
        Client::SippUac,
        Client::Sipsak,
        Client::Baresip,
        Client::SofiaOptions,
        Client::Pjsua,
        Client::Linphone,
        Client::KamailioProxy,
        Client::Curl,
        Client::PythonHappyEyeballs,
        Client::PythonDefault,
        Client::Siprace(Strategy::Sequential),
        Client::Siprace(Strategy::SequentialV4),
        Client::Siprace(Strategy::Rfc6555),
        Client::Siprace(Strategy::Rfc8305),
        Client::Siprace(Strategy::Siprace),
    ];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Client::SippUac => "sipp-uac",
            Client::Sipsak => "sipsak",
            Client::Baresip => "baresip",
            Client::SofiaOptions => "sofia-sip-options",
            Client::Pjsua => "pjsua2",
            Client::Linphone => "linphonec",
            Client::KamailioProxy => "kamailio-proxy",
            Client::Curl => "curl",
            Client::PythonHappyEyeballs => "python-asyncio-he250",
            Client::PythonDefault => "python-asyncio-default",
            Client::Siprace(s) => match s {
                Strategy::Sequential => "siprace:sequential",
                Strategy::SequentialV4 => "siprace:sequential-v4",
                Strategy::Rfc6555 => "siprace:rfc6555",
                Strategy::Rfc8305 => "siprace:rfc8305",
                _ => "siprace:siprace",
            },
        }
    }

    /// The program run.
    pub fn program(self) -> &'static str {
        match self {
            Client::SippUac => "sipp",
            Client::Sipsak => "sipsak",
            Client::Baresip => "baresip",
            Client::SofiaOptions => "sip-options",
            Client::Pjsua => pjsua::VENV_PYTHON,
            Client::Linphone => "linphonec",
            Client::KamailioProxy => "kamailio",
            Client::Curl => "curl",
            Client::PythonHappyEyeballs | Client::PythonDefault => python::PROGRAM,
            Client::Siprace(_) => "siprace",
        }
    }

    /// The Debian package that has it.
    pub fn package(self) -> &'static str {
        match self {
            Client::SippUac => "sip-tester",
            Client::Sipsak => "sipsak",
            Client::Baresip => "baresip",
            Client::SofiaOptions => "sofia-sip-bin",
            Client::Pjsua => {
                "PyPI pjsua2-python in the venv /opt/siprace-pjsua2 (scripts/census-clients.sh)"
            }
            Client::Linphone => "linphone-cli",
            Client::KamailioProxy => "kamailio (and sip-tester, whose SIPp sends it the request)",
            Client::Curl => "curl",
            Client::PythonHappyEyeballs | Client::PythonDefault => "python3",
            Client::Siprace(_) => "this crate (cargo build)",
        }
    }

    /// The request it sends.
    pub fn method(self) -> &'static str {
        match self {
            Client::Baresip | Client::Pjsua | Client::Linphone => "REGISTER",
            Client::Curl | Client::PythonHappyEyeballs | Client::PythonDefault => "(TCP connect)",
            _ => "OPTIONS",
        }
    }

    /// The transports the bench's scenarios run it over.
    pub fn transports(self) -> &'static [Transport] {
        match self {
            Client::Curl | Client::PythonHappyEyeballs | Client::PythonDefault => &[Transport::Tcp],
            _ => &[Transport::Udp, Transport::Tcp],
        }
    }

    /// The transports the census runs it over: TLS too where the client
    /// can (a TLS dial ends at the server's ServerHello, see [`run_series`]).
    pub fn census_transports(self) -> &'static [Transport] {
        match self {
            Client::Curl => &[Transport::Tcp, Transport::Tls],
            Client::PythonHappyEyeballs | Client::PythonDefault => &[Transport::Tcp],
            // Debian's SIPp is built without OpenSSL; sofia-sip's
            // sip-options says "transport tls is not supported".
            Client::SippUac | Client::SofiaOptions | Client::Sipsak | Client::KamailioProxy => {
                &[Transport::Udp, Transport::Tcp]
            }
            Client::Linphone => &[Transport::Udp],
            _ => &[Transport::Udp, Transport::Tcp, Transport::Tls],
        }
    }

    /// Whether it can be run toward the domain with no transport given
    /// (see [`run_transport_choice`]); the others are always given one
    /// (SIPp, sipsak, Kamailio's `$du`) or are TCP-only references.
    pub fn picks_transport(self) -> bool {
        matches!(
            self,
            Client::Baresip | Client::SofiaOptions | Client::Pjsua | Client::Siprace(_)
        )
    }

    /// Whether its dial ends when a TCP connection is up (no SIP).
    pub fn connects_only(self) -> bool {
        matches!(
            self,
            Client::Curl | Client::PythonHappyEyeballs | Client::PythonDefault
        )
    }

    /// Whether its program is in PATH (a capture needs `tshark` too, see [`capture_available`]).
    pub fn installed(self) -> bool {
        match self {
            Client::Siprace(_) => crate::lab::topology::find_siprace_binary().is_some(),
            Client::Pjsua => Path::new(pjsua::VENV_PYTHON).is_file(),
            Client::KamailioProxy => {
                sys::which("kamailio").is_some() && sys::which("sipp").is_some()
            }
            Client::Linphone => {
                sys::which("linphonec").is_some() && Path::new(python::PROGRAM).is_file()
            }
            _ => sys::which(self.program()).is_some(),
        }
    }

    /// How the client finds the server, for the report.
    pub fn resolution(self) -> &'static str {
        match self {
            Client::SippUac => "no SRV support: given the lowest-priority SRV target of the domain (looked up before the dial, not timed), resolved by SIPp with getaddrinfo, first result only",
            Client::Sipsak => "its own SRV lookup (c-ares), then gethostbyname: IPv4 only",
            Client::Baresip => "libre's RFC 3263 resolver for sip:DOMAIN;transport=T (SRV, then A/AAAA), one REGISTER",
            Client::Pjsua => "pjsip's resolver (nameserver = the lab DNS over IPv4) for the registrar sip:DOMAIN;transport=T: SRV (the census saw no NAPTR query, not even with no transport given), then A/AAAA; a transport of each family; one REGISTER",
            Client::Linphone => "belle-sip's resolver for the proxy sip:DOMAIN;transport=udp (SRV, then A/AAAA), one REGISTER; linphonec driven through its stdin (`ports sip 5070`, `register`), as liblinphone 5.1 ignores the configuration file's SIP port",
            Client::SofiaOptions => "sofia-sip's resolver (sresolv) for sip:DOMAIN;transport=T: RFC 3263 with NAPTR/SRV, one OPTIONS",
            Client::KamailioProxy => "Kamailio's resolver for $du = sip:DOMAIN;transport=T (SRV, then A, AAAA only without A; DNS cache on with failover), restarted for every dial; SIPp sends the OPTIONS to it on loopback",
            Client::Curl => "curl http://HOST:5060/ (over TLS: curl -k https://HOST:PORT/ to the _sips._tcp target's port) to the most preferred SRV target host (no SRV in curl): getaddrinfo, its own Happy Eyeballs (200 ms)",
            Client::PythonHappyEyeballs => "asyncio.open_connection(HOST, 5060, happy_eyeballs_delay=0.25) to the SRV target host: getaddrinfo, then RFC 8305-style staggered attempts",
            Client::PythonDefault => "asyncio.open_connection(HOST, 5060) to the SRV target host: getaddrinfo, then one address after the other",
            Client::Siprace(_) => "siprace dial --strategy S --probe sip:DOMAIN (NAPTR/SRV/AAAA/A, its own resolver)",
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
    let dials = run_series(lab, client, transport, domain, n, bound, |_| Ok(()))?;
    Ok(dials.into_iter().map(|(record, _)| record).collect())
}

/// Runs `steps` dials of `client` over `transport` toward `domain`, one at
/// a time under one capture, calling `before(i)` ahead of dial `i` (the
/// census changes the lab's faults there; an error ends the series). Each
/// dial comes with what the capture showed of it ([`Observed`]). Blocking,
/// bounded like [`run`].
#[allow(clippy::too_many_arguments)]
pub fn run_series(
    lab: &Lab,
    client: Client,
    transport: Transport,
    domain: &str,
    steps: usize,
    bound: Duration,
    before: impl FnMut(usize) -> Result<(), String>,
) -> Result<Vec<(DialRecord, Observed)>, String> {
    if !client.census_transports().contains(&transport) {
        return Err(format!("{client} is not run over {transport}"));
    }
    series(
        lab,
        client,
        Over::Given(transport),
        domain,
        steps,
        bound,
        before,
    )
}

/// One dial of `client` toward `domain` with no transport given, so a
/// client that does NAPTR picks the transport itself (the census's NAPTR
/// fall-over case). Only for clients that [`Client::picks_transport`]. A
/// response over TCP is recorded as TCP, any other as UDP.
pub fn run_transport_choice(
    lab: &Lab,
    client: Client,
    domain: &str,
    bound: Duration,
) -> Result<(DialRecord, Observed), String> {
    let mut dials = series(lab, client, Over::Choice, domain, 1, bound, |_| Ok(()))?;
    dials.pop().ok_or_else(|| "no dial".to_string())
}

/// Whether a client is given its transport, or picks it itself.
#[derive(Debug, Clone, Copy)]
enum Over {
    Given(Transport),
    Choice,
}

#[allow(clippy::too_many_arguments)]
fn series(
    lab: &Lab,
    client: Client,
    over: Over,
    domain: &str,
    steps: usize,
    bound: Duration,
    mut before: impl FnMut(usize) -> Result<(), String>,
) -> Result<Vec<(DialRecord, Observed)>, String> {
    if let Some(why) = unavailable(client) {
        return Err(why);
    }
    // What a response not over TCP is recorded as.
    let transport = match over {
        Over::Given(t) => t,
        Over::Choice => Transport::Udp,
    };
    if bound.is_zero() {
        return Err("the time bound must be positive".into());
    }
    if steps == 0 {
        return Ok(Vec::new());
    }
    let dir = TempDir::new(client.label().replace(':', "-").as_str())?;
    let mut invocation = prepare(lab, client, over, domain, bound, &dir.0)?;
    // Over TLS the dial ends at the ServerHello, not the SYN-ACK.
    invocation.connects = client.connects_only() && transport != Transport::Tls;
    invocation.domain = domain.to_string();
    // The capture may run at most this long (dumpcap's own bound).
    let capture_bound = (bound + SYNC + GAP) * steps as u32 + Duration::from_secs(60);
    let capture = Capture::start(lab, &dir.0, capture_bound)?;
    let client_addrs = [
        IpAddr::V6(lab.addrs.client_v6),
        IpAddr::V4(lab.addrs.client_v4),
    ];
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        if i > 0 {
            std::thread::sleep(GAP);
        }
        if let Err(e) = before(i) {
            capture.stop();
            return Err(e);
        }
        out.push(dial::dial_observed(
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
    Ok(out)
}

/// The command line of a client (program and arguments), the same for every dial.
struct Invocation {
    program: String,
    args: Vec<String>,
    /// A TCP SYN-ACK ends the dial (the non-SIP references).
    connects: bool,
    /// A process started before each dial and stopped after it (Kamailio,
    /// which the client program sends its request to).
    background: Option<kamailio::BackgroundSpec>,
    /// The dialled domain: only DNS packets about it are the dial's.
    domain: String,
}

impl Invocation {
    fn new(program: impl Into<String>, args: Vec<String>) -> Invocation {
        Invocation {
            program: program.into(),
            args,
            connects: false,
            background: None,
            domain: String::new(),
        }
    }
}

/// Writes the client's files into `dir` and builds its command line, over
/// `transport`, or with none given ([`Over::Choice`]: the client picks).
fn prepare(
    lab: &Lab,
    client: Client,
    over: Over,
    domain: &str,
    bound: Duration,
    dir: &Path,
) -> Result<Invocation, String> {
    // The client's own time limit, past the dial's bound (which kills it).
    let self_bound = (ceil_secs(bound) + 2).to_string();
    let transport = match over {
        Over::Given(t) => t,
        Over::Choice => {
            let t = None;
            return match client {
                Client::Baresip => baresip::invocation(t, domain, self_bound, dir),
                Client::SofiaOptions => Ok(sofia::invocation(t, domain)),
                Client::Pjsua => pjsua::invocation(lab, t, domain, self_bound, dir),
                Client::Siprace(strategy) => {
                    siprace_cli::invocation(lab, strategy, t, domain, bound)
                }
                c => Err(format!("{c} is always given its transport")),
            };
        }
    };
    let t = Some(transport);
    match client {
        Client::SippUac => sipp::invocation(lab, transport, domain, self_bound, dir),
        Client::Sipsak => Ok(sipsak::invocation(transport, domain)),
        Client::Baresip => baresip::invocation(t, domain, self_bound, dir),
        Client::SofiaOptions => Ok(sofia::invocation(t, domain)),
        Client::Pjsua => pjsua::invocation(lab, t, domain, self_bound, dir),
        Client::Linphone => linphone::invocation(transport, domain, self_bound, dir),
        Client::KamailioProxy => kamailio::invocation(lab, transport, domain, self_bound, dir),
        Client::Curl => Ok(curl::invocation(lab, transport, domain, self_bound)),
        Client::PythonHappyEyeballs => python::invocation(lab, domain, Some(0.25), dir),
        Client::PythonDefault => python::invocation(lab, domain, None, dir),
        Client::Siprace(strategy) => siprace_cli::invocation(lab, strategy, t, domain, bound),
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

/// Writes `text` to the file `name` in `dir`.
fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
    Ok(p)
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

fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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
