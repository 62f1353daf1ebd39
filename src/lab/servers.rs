//! The lab's servers: the DNS server and three SIP server implementations,
//! one per server address, all started with [`super::spawn_in`] (so
//! [`super::down`] kills them):
//!
//! | what | namespace | addresses | how |
//! |------|-----------|-----------|-----|
//! | DNS | dns | 2001:db8:d5::53, 203.0.113.53 port 53, UDP+TCP | `siprace lab dns --zone Z [--faults F]` |
//! | responder | server | #1 2001:db8:5e::10, 198.51.100.10 port 5060, UDP+TCP | `siprace responder --listen both:...` |
//! | SIPp | server | #2 2001:db8:5e::11, 198.51.100.11 port 5060, UDP+TCP | `sipp -sf uas.xml -i ADDR -p 5060 -t u1\|t1`, one process per transport and family |
//! | Kamailio | server | #3 2001:db8:5e::12, 198.51.100.12 port 5060, UDP+TCP; port 5061 TLS (mutual) | `kamailio -DD -E -f kamailio.cfg` |
//!
//! The SIPp scenario, the Kamailio configuration and the default zone are the
//! files under `lab/` of the source tree, built into the binary and written to
//! the lab's state directory, so `siprace` works from any directory.
//!
//! [`start_servers`] returns once every server answers from the client
//! namespace (a SIP OPTIONS over each family and transport gets a final
//! response; the DNS server accepts TCP on both addresses), or fails naming
//! the server that did not come up, with the tail of its log.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::LabError;
use super::names::Role;
use super::sys;
use super::topology::{self, Lab};
use crate::endpoint::Transport;

/// The zone `lab/zones/example.test.zone`, served when no other is given.
pub const EXAMPLE_ZONE: &str = include_str!("../../lab/zones/example.test.zone");
/// `lab/kamailio.cfg` (listens on server address #3).
pub const KAMAILIO_CFG: &str = include_str!("../../lab/kamailio.cfg");
/// `lab/kamailio-tls.cfg`: Kamailio's TLS domains (see [`KamailioTls`]).
pub const KAMAILIO_TLS_CFG: &str = include_str!("../../lab/kamailio-tls.cfg");
/// `lab/kamailio-registrar.cfg`: Kamailio as an RFC 5626 (SIP Outbound)
/// registrar (see [`start_outbound_registrar`]).
pub const KAMAILIO_REGISTRAR_CFG: &str = include_str!("../../lab/kamailio-registrar.cfg");
/// `lab/sipp/uas.xml` (answers every OPTIONS with 200).
pub const SIPP_UAS_XML: &str = include_str!("../../lab/sipp/uas.xml");

/// The SIP port every lab server listens on.
pub const SIP_PORT: u16 = 5060;
/// The DNS port of the lab DNS server.
pub const DNS_PORT: u16 = 53;
/// The port of Kamailio's TLS listeners.
pub const KAMAILIO_TLS_PORT: u16 = 5061;
/// The port of the Outbound registrar ([`start_outbound_registrar`]): not
/// 5060, which the bench's responder holds on every server address.
pub const REGISTRAR_PORT: u16 = 5080;

/// Which SIP server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    Responder,
    Sipp,
    Kamailio,
}

impl ServerKind {
    pub const ALL: [ServerKind; 3] = [
        ServerKind::Responder,
        ServerKind::Sipp,
        ServerKind::Kamailio,
    ];

    /// Index of its address in [`super::LabAddrs::servers_v6`] / `servers_v4`.
    pub fn index(self) -> usize {
        match self {
            ServerKind::Responder => 0,
            ServerKind::Sipp => 1,
            ServerKind::Kamailio => 2,
        }
    }

    /// Its name, also its host name in the example zone (`<name>.example.test`).
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Responder => "responder",
            ServerKind::Sipp => "sipp",
            ServerKind::Kamailio => "kamailio",
        }
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The lab DNS server to start.
#[derive(Debug, Clone, Default)]
pub struct DnsOpts {
    /// Zone file; `None`: [`EXAMPLE_ZONE`].
    pub zone: Option<PathBuf>,
    /// Fault specification (see [`super::dns`]), e.g. `AAAA=delay:300ms`.
    pub faults: String,
    /// Strip the A/AAAA additionals of SRV answers.
    pub no_srv_additionals: bool,
}

/// What [`start_servers`] starts.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    pub dns: Option<DnsOpts>,
    pub responder: bool,
    pub sipp: bool,
    pub kamailio: bool,
    /// The `siprace` binary (for `lab dns` and `responder`); `None`:
    /// [`topology::find_siprace_binary`].
    pub siprace_bin: Option<PathBuf>,
    /// Bound on the wait for each server to answer. The wait ends as soon as it does
    /// (or at once when its process exits), so the default is generous: a loaded
    /// machine can take seconds to start Kamailio and its children.
    pub ready_timeout: Duration,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            dns: None,
            responder: false,
            sipp: false,
            kamailio: false,
            siprace_bin: None,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerOpts {
    /// Everything: the DNS server with the example zone and the three SIP servers.
    pub fn all() -> ServerOpts {
        ServerOpts {
            dns: Some(DnsOpts::default()),
            responder: true,
            sipp: true,
            kamailio: true,
            ..ServerOpts::default()
        }
    }
}

/// One running SIP server.
#[derive(Debug, Clone, Serialize)]
pub struct SipServer {
    pub kind: ServerKind,
    pub v6: Ipv6Addr,
    pub v4: Ipv4Addr,
    pub port: u16,
    /// Its processes (SIPp: one per transport and family).
    pub pids: Vec<u32>,
    pub logs: Vec<PathBuf>,
    /// Time from its start until it answered OPTIONS on every address and transport.
    pub ready_ms: f64,
}

/// The running DNS server.
#[derive(Debug, Clone, Serialize)]
pub struct DnsInfo {
    pub v6: Ipv6Addr,
    pub v4: Ipv4Addr,
    pub port: u16,
    pub zone: PathBuf,
    pub faults: String,
    pub pid: u32,
    pub log: PathBuf,
    pub ready_ms: f64,
}

/// What [`start_servers`] started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Servers {
    pub dns: Option<DnsInfo>,
    pub sip: Vec<SipServer>,
}

impl Servers {
    pub fn get(&self, kind: ServerKind) -> Option<&SipServer> {
        self.sip.iter().find(|s| s.kind == kind)
    }
    /// Every PID started.
    pub fn pids(&self) -> Vec<u32> {
        self.dns
            .iter()
            .map(|d| d.pid)
            .chain(self.sip.iter().flat_map(|s| s.pids.iter().copied()))
            .collect()
    }
}

/// Starts what `opts` asks for in `lab` and waits until each answers.
/// On failure the servers started so far keep running (the caller's `down`
/// removes them); the error names the server and quotes its log.
pub fn start_servers(lab: &Lab, opts: &ServerOpts) -> Result<Servers, LabError> {
    sys::preflight()?;
    let mut out = Servers::default();
    let needs_siprace = opts.dns.is_some() || opts.responder;
    let bin = if needs_siprace {
        Some(
            opts.siprace_bin
                .clone()
                .or_else(topology::find_siprace_binary)
                .ok_or_else(|| {
                    LabError::Invalid("cannot find the siprace binary: set SIPRACE_BIN".into())
                })?,
        )
    } else {
        None
    };
    if opts.sipp {
        sys::require("sipp", "sip-tester")?;
    }
    if opts.kamailio {
        sys::require("kamailio", "kamailio")?;
    }

    if let Some(d) = &opts.dns {
        out.dns = Some(start_dns(
            lab,
            bin.as_deref().expect("siprace binary"),
            d,
            opts.ready_timeout,
        )?);
    }
    // Start all SIP servers first, then wait for each: their start-ups overlap.
    let mut pending: Vec<(ServerKind, Vec<u32>, Vec<PathBuf>, Instant)> = Vec::new();
    if opts.responder {
        let t = Instant::now();
        let (pids, logs) = spawn_responder(lab, bin.as_deref().expect("siprace binary"))?;
        pending.push((ServerKind::Responder, pids, logs, t));
    }
    if opts.sipp {
        let t = Instant::now();
        let (pids, logs) = spawn_sipp(lab)?;
        pending.push((ServerKind::Sipp, pids, logs, t));
    }
    if opts.kamailio {
        let t = Instant::now();
        let (pids, logs) = spawn_kamailio(lab)?;
        pending.push((ServerKind::Kamailio, pids, logs, t));
    }
    for (kind, pids, logs, t) in pending {
        let v6 = lab.addrs.servers_v6[kind.index()];
        let v4 = lab.addrs.servers_v4[kind.index()];
        wait_sip_ready(lab, kind, v6, v4, &pids, &logs, opts.ready_timeout)?;
        out.sip.push(SipServer {
            kind,
            v6,
            v4,
            port: SIP_PORT,
            pids,
            logs,
            ready_ms: t.elapsed().as_secs_f64() * 1e3,
        });
    }
    Ok(out)
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn write_state_file(lab: &Lab, file: &str, text: &str) -> Result<PathBuf, LabError> {
    let p = lab.state_dir.join(file);
    sys::write_atomic(&p, text.as_bytes())?;
    Ok(p)
}

fn log_path(lab: &Lab, what: &str) -> PathBuf {
    lab.state_dir.join(format!("{what}.log"))
}

/// The last `n` lines of a log, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let tail = lines[from..].join("\n");
    if tail.trim().is_empty() {
        format!("({} is empty)", path.display())
    } else {
        format!("{}:\n{tail}", path.display())
    }
}

fn start_dns(lab: &Lab, bin: &Path, d: &DnsOpts, timeout: Duration) -> Result<DnsInfo, LabError> {
    let zone = match &d.zone {
        Some(z) => {
            std::fs::canonicalize(z).map_err(LabError::io(format!("zone file {}", z.display())))?
        }
        None => write_state_file(lab, "example.test.zone", EXAMPLE_ZONE)?,
    };
    // Check the zone and the faults here, so a mistake is reported at once.
    let text = std::fs::read_to_string(&zone)
        .map_err(LabError::io(format!("reading {}", zone.display())))?;
    super::dns::DnsServerConfig::parse(&text, &d.faults)
        .map_err(|e| LabError::Invalid(format!("lab dns: {}: {e}", zone.display())))?;
    let (v6, v4) = (lab.addrs.dns_v6, lab.addrs.dns_v4);
    let mut args: Vec<OsString> = os(&["lab", "dns", "--name", &lab.name, "--zone"]);
    args.push(zone.clone().into());
    args.extend(os(&[
        "--listen",
        &SocketAddr::new(v6.into(), DNS_PORT).to_string(),
        "--listen",
        &SocketAddr::new(v4.into(), DNS_PORT).to_string(),
    ]));
    if !d.faults.is_empty() {
        args.extend(os(&["--faults", &d.faults]));
    }
    if d.no_srv_additionals {
        args.push("--no-srv-additionals".into());
    }
    let t = Instant::now();
    let pid = topology::spawn_in(&lab.name, Role::Dns, "dns", bin, &args)?;
    let log = log_path(lab, "dns");
    let targets = [
        SocketAddr::new(v6.into(), DNS_PORT),
        SocketAddr::new(v4.into(), DNS_PORT),
    ];
    poll_ready(
        lab,
        "the lab DNS server",
        &[pid],
        std::slice::from_ref(&log),
        timeout,
        move || {
            targets
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
        },
    )?;
    Ok(DnsInfo {
        v6,
        v4,
        port: DNS_PORT,
        zone,
        faults: d.faults.clone(),
        pid,
        log,
        ready_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

fn spawn_responder(lab: &Lab, bin: &Path) -> Result<(Vec<u32>, Vec<PathBuf>), LabError> {
    let i = ServerKind::Responder.index();
    let v6 = SocketAddr::new(lab.addrs.servers_v6[i].into(), SIP_PORT);
    let v4 = SocketAddr::new(lab.addrs.servers_v4[i].into(), SIP_PORT);
    let mut args = os(&[
        "responder",
        "--listen",
        &format!("both:{v6}"),
        "--listen",
        &format!("both:{v4}"),
        "--stats-file",
    ]);
    args.push(lab.state_dir.join("responder.stats.json").into());
    let pid = topology::spawn_in(&lab.name, Role::Server, "responder", bin, &args)?;
    Ok((vec![pid], vec![log_path(lab, "responder")]))
}

/// `sh -c 'cd DIR && exec PROG "$@"'`: the program runs in DIR (SIPp writes its
/// files next to itself) and keeps the PID spawn_in recorded.
fn in_dir(dir: &Path, program: &str, args: Vec<OsString>) -> (PathBuf, Vec<OsString>) {
    let mut a: Vec<OsString> = vec![
        "-c".into(),
        format!("cd \"$0\" && exec {program} \"$@\"").into(),
        dir.into(),
    ];
    a.extend(args);
    (PathBuf::from("/bin/sh"), a)
}

fn spawn_sipp(lab: &Lab) -> Result<(Vec<u32>, Vec<PathBuf>), LabError> {
    let i = ServerKind::Sipp.index();
    let dir = lab.state_dir.join("sipp");
    std::fs::create_dir_all(&dir).map_err(LabError::io(format!("creating {}", dir.display())))?;
    let scenario = dir.join("uas.xml");
    sys::write_atomic(&scenario, SIPP_UAS_XML.as_bytes())?;
    let mut pids = Vec::new();
    let mut logs = Vec::new();
    let addrs: [(IpAddr, &str); 2] = [
        (lab.addrs.servers_v6[i].into(), "6"),
        (lab.addrs.servers_v4[i].into(), "4"),
    ];
    for (t, tname) in [("u1", "udp"), ("t1", "tcp")] {
        for (ip, fam) in addrs {
            let what = format!("sipp-{tname}{fam}");
            let mut args: Vec<OsString> = vec!["-sf".into(), scenario.clone().into()];
            // -nostdin: no keyboard; -f 60: the screen (stdout, i.e. the log) once a minute.
            args.extend(os(&[
                "-i",
                &ip.to_string(),
                "-p",
                &SIP_PORT.to_string(),
                "-t",
                t,
                "-nostdin",
                "-f",
                "60",
            ]));
            let (prog, args) = in_dir(&dir, "sipp", args);
            pids.push(topology::spawn_in(
                &lab.name,
                Role::Server,
                &what,
                &prog,
                &args,
            )?);
            logs.push(log_path(lab, &what));
        }
    }
    Ok((pids, logs))
}

/// The TLS side of the lab's Kamailio: two SIP domains on one address and
/// port ([`KAMAILIO_TLS_PORT`]), each with its own certificate (chosen by
/// SNI), neither covering the other; client certificates required, issued
/// by the lab CA. The files are written to the lab's state directory at
/// each start, with certificates made there (rcgen); the CA key is never
/// written, so nothing else can be issued afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct KamailioTls {
    /// The lab CA (PEM): trust it (`siprace dial --ca`).
    pub ca: PathBuf,
    /// A client certificate (PEM) for [`Self::CLIENT_NAME`] from the lab CA
    /// (`siprace dial --cert`), and its key (`--key`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl KamailioTls {
    /// Domain A: Kamailio's default TLS certificate covers it and
    /// [`Self::LAB_DOMAIN`] only.
    pub const DOMAIN_A: &'static str = "tls-a.example.test";
    /// The lab's SIP domain, whose `_sips._tcp` SRV lists Kamailio's TLS
    /// port (after the responder's and SIPp's, which serve no TLS): covered
    /// by domain A's certificate, so `sips:example.test` reaches Kamailio.
    pub const LAB_DOMAIN: &'static str = "example.test";
    /// Domain B, hosted on the same address: a certificate of its own.
    pub const DOMAIN_B: &'static str = "tls-b.example.test";
    /// The SIP identity of the lab client's certificate.
    pub const CLIENT_NAME: &'static str = "client.example.test";

    /// The `siprace dial` flags that trust the lab CA and present the lab
    /// client's certificate: `--ca CA --cert CERT --key KEY`.
    pub fn dial_args(&self) -> Vec<OsString> {
        vec![
            "--ca".into(),
            self.ca.clone().into(),
            "--cert".into(),
            self.client_cert.clone().into(),
            "--key".into(),
            self.client_key.clone().into(),
        ]
    }

    /// Where the files of `lab`'s Kamailio are (whether written yet or not).
    pub fn of(lab: &Lab) -> KamailioTls {
        KamailioTls {
            ca: lab.state_dir.join("kamailio-tls-ca.pem"),
            client_cert: lab.state_dir.join("kamailio-tls-client.pem"),
            client_key: lab.state_dir.join("kamailio-tls-client.key"),
        }
    }

    /// Makes the CA and the certificates and writes them, with
    /// `kamailio-tls.cfg`, to the lab's state directory.
    fn write(lab: &Lab) -> Result<KamailioTls, LabError> {
        use crate::responder::ThrowawayCa;
        let files = KamailioTls::of(lab);
        let bad = |e: String| LabError::Invalid(format!("kamailio TLS certificates: {e}"));
        let ca = ThrowawayCa::new(&format!("siprace lab {} CA", lab.name)).map_err(bad)?;
        sys::write_atomic(&files.ca, ca.pem().as_bytes())?;
        for (names, file) in [
            (&[Self::DOMAIN_A, Self::LAB_DOMAIN][..], "kamailio-tls-a"),
            (&[Self::DOMAIN_B], "kamailio-tls-b"),
            (&[Self::CLIENT_NAME], "kamailio-tls-client"),
        ] {
            let (cert, key) = ca.leaf_for(names).map_err(bad)?;
            sys::write_atomic(&lab.state_dir.join(format!("{file}.pem")), cert.as_bytes())?;
            sys::write_atomic(&lab.state_dir.join(format!("{file}.key")), key.as_bytes())?;
        }
        write_state_file(lab, "kamailio-tls.cfg", KAMAILIO_TLS_CFG)?;
        Ok(files)
    }
}

/// The path of the lab Kamailio's ctl socket (its RPC interface, `kamcmd -s`).
fn kamailio_ctl_socket(lab: &Lab) -> PathBuf {
    lab.state_dir.join("kamailio").join("kamailio_ctl")
}

fn spawn_kamailio(lab: &Lab) -> Result<(Vec<u32>, Vec<PathBuf>), LabError> {
    // Beside kamailio.cfg: kamailio-tls.cfg names its files relative to it.
    KamailioTls::write(lab)?;
    let cfg = write_state_file(lab, "kamailio.cfg", KAMAILIO_CFG)?;
    let run = lab.state_dir.join("kamailio");
    std::fs::create_dir_all(&run).map_err(LabError::io(format!("creating {}", run.display())))?;
    let mut args: Vec<OsString> = os(&["-DD", "-E", "-f"]);
    args.push(cfg.into());
    args.push("-P".into());
    args.push(lab.state_dir.join("kamailio.pid").into());
    args.push("-Y".into());
    args.push(run.clone().into());
    args.push("-w".into());
    args.push(run.clone().into());
    // Each lab's Kamailio gets its own ctl socket (unix sockets are not
    // per network namespace).
    args.push("-A".into());
    args.push(format!("CTL_SOCKET=\"unix:{}\"", kamailio_ctl_socket(lab).display()).into());
    let kam = sys::require("kamailio", "kamailio")?;
    let pid = topology::spawn_in(&lab.name, Role::Server, "kamailio", &kam, &args)?;
    Ok((vec![pid], vec![log_path(lab, "kamailio")]))
}

/// One TLS connection open in the lab's Kamailio (`tls.list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KamailioTlsConnection {
    /// Kamailio's connection id.
    pub id: u64,
    /// The client's end.
    pub client: SocketAddr,
    /// Kamailio's end.
    pub server: SocketAddr,
}

/// What the lab's Kamailio says of its connections, read over its ctl
/// socket with `kamcmd` (from any namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KamailioConnections {
    /// Connections Kamailio accepted since it started, TCP and TLS
    /// together (counter `tcp:passive_open`). The readiness check opens a
    /// few, so compare two readings: the difference is what was opened in
    /// between.
    pub accepted_total: u64,
    /// Connections open now, TCP and TLS (`core.tcp_info` opened_connections).
    pub open: u64,
    /// Of which TLS (`core.tcp_info` opened_tls_connections).
    pub open_tls: u64,
    /// The TLS connections open now, one by one.
    pub tls_open: Vec<KamailioTlsConnection>,
}

/// Reads the lab Kamailio's connection counter and its open TLS
/// connections. Call it before and after the dials to count: see
/// [`KamailioConnections::accepted_total`].
pub fn kamailio_connections(lab: &Lab) -> Result<KamailioConnections, LabError> {
    let kamcmd = sys::require("kamcmd", "kamailio")?;
    let socket = format!("unix:{}", kamailio_ctl_socket(lab).display());
    let rpc = |args: &[&str]| -> Result<String, LabError> {
        let out = std::process::Command::new(&kamcmd)
            .arg("-s")
            .arg(&socket)
            .args(args)
            .output()
            .map_err(LabError::io(format!("running {}", kamcmd.display())))?;
        if !out.status.success() {
            return Err(LabError::Invalid(format!(
                "kamcmd {}: {} {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let text = rpc(&["cnt.get", "tcp", "passive_open"])?;
    let accepted_total = text.trim().parse().map_err(|_| {
        LabError::Invalid(format!(
            "kamcmd cnt.get tcp passive_open: {text:?} is no number"
        ))
    })?;
    let info = rpc(&["core.tcp_info"])?;
    let field = |name: &str| -> Result<u64, LabError> {
        info.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .ok_or_else(|| {
                LabError::Invalid(format!("kamcmd core.tcp_info: no {name} in {info:?}"))
            })
    };
    let (open, open_tls) = (
        field("opened_connections")?,
        field("opened_tls_connections")?,
    );
    let tls_open = parse_tls_list(&rpc(&["tls.list"])?)?;
    Ok(KamailioConnections {
        accepted_total,
        open,
        open_tls,
        tls_open,
    })
}

/// Parses `kamcmd tls.list`: one `{ key: value ... }` block per connection.
fn parse_tls_list(text: &str) -> Result<Vec<KamailioTlsConnection>, LabError> {
    let bad = |why: String| LabError::Invalid(format!("kamcmd tls.list: {why}"));
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        match line {
            "{" => fields.clear(),
            "}" => {
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.as_str())
                        .ok_or_else(|| bad(format!("a connection without {k}")))
                };
                let addr = |ip: &str, port: &str| -> Result<SocketAddr, LabError> {
                    let ip: IpAddr = get(ip)?.parse().map_err(|_| bad(format!("bad {ip}")))?;
                    let port: u16 = get(port)?.parse().map_err(|_| bad(format!("bad {port}")))?;
                    Ok(SocketAddr::new(ip, port))
                };
                out.push(KamailioTlsConnection {
                    id: get("id")?.parse().map_err(|_| bad("bad id".into()))?,
                    client: addr("src_ip", "src_port")?,
                    server: addr("dst_ip", "dst_port")?,
                });
            }
            _ => {
                if let Some((k, v)) = line.split_once(':') {
                    fields.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
    }
    Ok(out)
}

fn wait_sip_ready(
    lab: &Lab,
    kind: ServerKind,
    v6: Ipv6Addr,
    v4: Ipv4Addr,
    pids: &[u32],
    logs: &[PathBuf],
    timeout: Duration,
) -> Result<(), LabError> {
    let targets: Vec<(Transport, SocketAddr)> = [Transport::Udp, Transport::Tcp]
        .into_iter()
        .flat_map(|t| {
            [
                (t, SocketAddr::new(v6.into(), SIP_PORT)),
                (t, SocketAddr::new(v4.into(), SIP_PORT)),
            ]
        })
        .collect();
    // Kamailio's TLS listeners accept too (a TCP connect; no handshake, as
    // it needs the lab client's certificate).
    let tls_targets: Vec<SocketAddr> = if kind == ServerKind::Kamailio {
        vec![
            SocketAddr::new(v6.into(), KAMAILIO_TLS_PORT),
            SocketAddr::new(v4.into(), KAMAILIO_TLS_PORT),
        ]
    } else {
        Vec::new()
    };
    let what = format!("{kind} ({v6}, {v4} port {SIP_PORT})");
    poll_ready(lab, &what, pids, logs, timeout, move || {
        targets
            .iter()
            .all(|(t, a)| options_ping(*t, *a, Duration::from_millis(200)).is_ok())
            && tls_targets
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
    })
}

/// Starts Kamailio as an RFC 5626 registrar (`lab/kamailio-registrar.cfg`,
/// digest user alice, MD5) on server 0's IPv6 and IPv4 addresses, UDP and TCP
/// port [`REGISTRAR_PORT`], sending `Flow-Timer: flow_timer_s` in its 2xx.
/// Returns its PID (recorded in the lab's state, so [`super::down`] kills
/// it too) once it answers OPTIONS from the client namespace over both
/// families and transports.
pub fn start_outbound_registrar(
    lab: &Lab,
    flow_timer_s: u64,
    timeout: Duration,
) -> Result<u32, LabError> {
    let kam = sys::require("kamailio", "kamailio")?;
    let cfg = write_state_file(lab, "kamailio-registrar.cfg", KAMAILIO_REGISTRAR_CFG)?;
    let run = lab.state_dir.join("kamailio-registrar");
    std::fs::create_dir_all(&run).map_err(LabError::io(format!("creating {}", run.display())))?;
    let (v6, v4) = (lab.addrs.servers_v6[0], lab.addrs.servers_v4[0]);
    let mut args: Vec<OsString> = os(&["-DD", "-E", "-f"]);
    args.push(cfg.into());
    args.push("-Y".into());
    args.push(run.clone().into());
    args.push("-w".into());
    args.push(run.into());
    args.push("-A".into());
    args.push(format!("FLOW_TIMER={flow_timer_s}").into());
    // MD5 digest: baresip 1.0's libre answers no other algorithm.
    args.push("-A".into());
    args.push("WITH_MD5".into());
    for listen in [
        format!("udp:[{v6}]:{REGISTRAR_PORT}"),
        format!("tcp:[{v6}]:{REGISTRAR_PORT}"),
        format!("udp:{v4}:{REGISTRAR_PORT}"),
        format!("tcp:{v4}:{REGISTRAR_PORT}"),
    ] {
        args.push("-l".into());
        args.push(listen.into());
    }
    let pid = topology::spawn_in(&lab.name, Role::Server, "kamailio-registrar", &kam, &args)?;
    let targets: Vec<(Transport, SocketAddr)> = [Transport::Udp, Transport::Tcp]
        .into_iter()
        .flat_map(|t| {
            [
                (t, SocketAddr::new(v6.into(), REGISTRAR_PORT)),
                (t, SocketAddr::new(v4.into(), REGISTRAR_PORT)),
            ]
        })
        .collect();
    let what = format!("the Outbound registrar ({v6}, {v4} port {REGISTRAR_PORT})");
    let ready = poll_ready(
        lab,
        &what,
        &[pid],
        &[log_path(lab, "kamailio-registrar")],
        timeout,
        move || {
            targets
                .iter()
                .all(|(t, a)| options_ping(*t, *a, Duration::from_millis(200)).is_ok())
        },
    );
    if let Err(e) = ready {
        sys::kill_all(&[pid], Duration::from_secs(5));
        return Err(e);
    }
    Ok(pid)
}

/// Calls `check` from the client namespace until it returns true (each call is
/// itself bounded), at most until `timeout`; fails early if a process died.
fn poll_ready<F>(
    lab: &Lab,
    what: &str,
    pids: &[u32],
    logs: &[PathBuf],
    timeout: Duration,
    check: F,
) -> Result<(), LabError>
where
    F: Fn() -> bool + Send + Sync + Clone + 'static,
{
    let start = Instant::now();
    let fail = |why: String| {
        let tails: Vec<String> = logs.iter().map(|l| log_tail(l, 15)).collect();
        LabError::Invalid(format!(
            "{what} did not come up in lab {}: {why}\n{}",
            lab.name,
            tails.join("\n")
        ))
    };
    // Bounded: each try takes at most a few hundred ms and the loop stops at `timeout`.
    let max_tries = (timeout.as_millis() / 20).max(1) as usize;
    for _ in 0..max_tries {
        if let Some(dead) = pids.iter().find(|p| !sys::alive(**p)) {
            return Err(fail(format!("process {dead} exited")));
        }
        let c = check.clone();
        if lab.in_ns(Role::Client, c)? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            break;
        }
        // Back off a little between tries (a refused TCP connect returns at once).
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(fail(format!("no answer within {timeout:?}")))
}

/// Sends one SIP OPTIONS over `transport` to `to` (from the calling thread's
/// namespace) and waits up to `timeout` for a response, which must be final;
/// returns its status line.
pub fn options_ping(
    transport: Transport,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<String> {
    let branch = format!("z9hG4bK-lab-{:x}", rand::random::<u64>());
    let host = match to.ip() {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    let (sock_udp, local) = match transport {
        Transport::Udp => {
            let bind: SocketAddr = if to.is_ipv6() {
                "[::]:0".parse().unwrap()
            } else {
                "0.0.0.0:0".parse().unwrap()
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(to)?;
            let l = s.local_addr()?;
            (Some(s), l)
        }
        _ => (
            None,
            SocketAddr::new(
                if to.is_ipv6() {
                    Ipv6Addr::UNSPECIFIED.into()
                } else {
                    Ipv4Addr::UNSPECIFIED.into()
                },
                0,
            ),
        ),
    };
    let mk = |via: &str, local: SocketAddr| {
        let lhost = match local.ip() {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        format!(
            "OPTIONS sip:{host}:{port} SIP/2.0\r\n\
             Via: SIP/2.0/{via} {lhost}:{lport};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:lab@{lhost}>;tag={tag}\r\n\
             To: <sip:{host}:{port}>\r\n\
             Call-ID: {branch}@lab\r\n\
             CSeq: 1 OPTIONS\r\n\
             Contact: <sip:lab@{lhost}:{lport}>\r\n\
             Accept: application/sdp\r\n\
             Content-Length: 0\r\n\r\n",
            port = to.port(),
            lport = local.port(),
            tag = &branch[8..],
        )
    };
    // One deadline for the whole exchange; every read keeps to it, also when a
    // signal interrupts it (see [`sys::read_with_deadline`]).
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    let text = match sock_udp {
        Some(s) => {
            s.send(mk("UDP", local).as_bytes())?;
            let n = sys::read_with_deadline(&s, deadline, |s| s.recv(&mut buf))?;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        None => {
            let s = TcpStream::connect_timeout(&to, timeout)?;
            s.set_write_timeout(Some(timeout))?;
            let local = s.local_addr()?;
            (&s).write_all(mk("TCP", local).as_bytes())?;
            let mut got = Vec::new();
            // Bounded: stops at the end of the headers, at 16 reads or at the deadline.
            for _ in 0..16 {
                let n = sys::read_with_deadline(&s, deadline, |mut s| s.read(&mut buf))?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        }
    };
    let status = text.lines().next().unwrap_or("").to_string();
    // Any final response proves a SIP server answers (provisional ones are not final).
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status.starts_with("SIP/2.0 ") && code >= 200 {
        Ok(status)
    } else {
        Err(std::io::Error::other(format!(
            "no final SIP response: {status:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamailio_tls_list_is_read() {
        // As kamcmd 5.6 prints it: one block per connection.
        let text = "{\n\tid: 4\n\ttimeout: 3\n\tsrc_ip: 192.0.2.10\n\tsrc_port: 56762\n\tdst_ip: 198.51.100.12\n\
                    \tdst_port: 5061\n\tcipher: TLS_AES_256_GCM_SHA384 TLSv1.3 Kx=any\n\tstate: established\n}\n\
                    {\n\tid: 7\n\tsrc_ip: 2001:db8:c::10\n\tsrc_port: 40000\n\tdst_ip: 2001:db8:5e::12\n\tdst_port: 5061\n}\n";
        let conns = parse_tls_list(text).unwrap();
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0].id, 4);
        assert_eq!(conns[0].client, "192.0.2.10:56762".parse().unwrap());
        assert_eq!(conns[1].server, "[2001:db8:5e::12]:5061".parse().unwrap());
        assert_eq!(parse_tls_list("").unwrap(), []);
        assert!(parse_tls_list("{\n\tid: 1\n}\n").is_err(), "no addresses");
    }
}
