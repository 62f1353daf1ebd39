//! The lab topology: the single source of truth for namespaces, links, addresses,
//! routes and the processes a lab starts. `siprace lab ...` and `netns-scripts/*.sh`
//! both end up here. Everything is done by shelling out to `ip` and `sysctl`
//! (and `nft` for faults, see [`super::impair`]).
//!
//! ```text
//!                 2001:db8:c1::/64                          2001:db8:5e::/64
//!                 192.0.2.0/24                              198.51.100.0/24
//!  [sr-N-cli] eth0 ---------------- c0 [sr-N-rtr] s0 ---------------- eth0 [sr-N-srv]
//!   ::10 / .10                     ::1 / .1     ::1 / .1          ::10 ::11 ::12
//!                                        |  shp0 (TUN, shaper)     .10  .11  .12
//!                                       d0 ::1 / .1
//!                                        |   2001:db8:d5::/64, 203.0.113.0/24
//!                                      eth0 [sr-N-dns] ::53 / .53
//! ```

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::LabError;
pub use super::names::{check_name, ns_name, state_dir, Role, NS_PREFIX, STATE_ROOT};
use super::state::Impairment;
pub use super::state::{Spawned, State};
use super::sys;

/// The TUN device of the shaper, in the router namespace.
pub const TUN_DEV: &str = "shp0";
/// Firewall mark of the packets the router diverts through the shaper.
pub const SHAPE_MARK: u32 = 0x5;
/// Routing table (router namespace) that sends marked packets into the TUN.
pub const SHAPE_TABLE: u32 = 105;
/// Router interface names (inside the router namespace).
pub const RTR_CLIENT_IF: &str = "c0";
pub const RTR_SERVER_IF: &str = "s0";
pub const RTR_DNS_IF: &str = "d0";
/// The interface name on the client, server and DNS side of each veth.
pub const HOST_IF: &str = "eth0";

/// An IPv6 or IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub const fn v6(a: Ipv6Addr, len: u8) -> Prefix {
        Prefix {
            addr: IpAddr::V6(a),
            len,
        }
    }
    pub const fn v4(a: Ipv4Addr, len: u8) -> Prefix {
        Prefix {
            addr: IpAddr::V4(a),
            len,
        }
    }
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len as u32)
                };
                u128::from(p) & mask == u128::from(*a) & mask
            }
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len as u32)
                };
                u32::from(p) & mask == u32::from(*a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Every address of the lab. The same in every lab: labs are isolated by their namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabAddrs {
    pub client_v6: Ipv6Addr,
    pub client_v4: Ipv4Addr,
    /// The router on the client link (the client's gateways).
    pub router_client_v6: Ipv6Addr,
    pub router_client_v4: Ipv4Addr,
    /// The router on the server link.
    pub router_server_v6: Ipv6Addr,
    pub router_server_v4: Ipv4Addr,
    /// The router on the DNS link.
    pub router_dns_v6: Ipv6Addr,
    pub router_dns_v4: Ipv4Addr,
    /// The SIP server addresses (all on the one server namespace), in SRV order.
    pub servers_v6: Vec<Ipv6Addr>,
    pub servers_v4: Vec<Ipv4Addr>,
    pub dns_v6: Ipv6Addr,
    pub dns_v4: Ipv4Addr,
    pub client_net_v6: Prefix,
    pub client_net_v4: Prefix,
    pub server_net_v6: Prefix,
    pub server_net_v4: Prefix,
    pub dns_net_v6: Prefix,
    pub dns_net_v4: Prefix,
}

const fn v6(a: u16, b: u16, c: u16, h: u16) -> Ipv6Addr {
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, h)
}

impl LabAddrs {
    /// The fixed addressing plan (documentation prefixes only).
    pub fn standard() -> LabAddrs {
        LabAddrs {
            client_v6: v6(0x2001, 0xdb8, 0xc1, 0x10),
            client_v4: Ipv4Addr::new(192, 0, 2, 10),
            router_client_v6: v6(0x2001, 0xdb8, 0xc1, 0x1),
            router_client_v4: Ipv4Addr::new(192, 0, 2, 1),
            router_server_v6: v6(0x2001, 0xdb8, 0x5e, 0x1),
            router_server_v4: Ipv4Addr::new(198, 51, 100, 1),
            router_dns_v6: v6(0x2001, 0xdb8, 0xd5, 0x1),
            router_dns_v4: Ipv4Addr::new(203, 0, 113, 1),
            servers_v6: vec![
                v6(0x2001, 0xdb8, 0x5e, 0x10),
                v6(0x2001, 0xdb8, 0x5e, 0x11),
                v6(0x2001, 0xdb8, 0x5e, 0x12),
            ],
            servers_v4: vec![
                Ipv4Addr::new(198, 51, 100, 10),
                Ipv4Addr::new(198, 51, 100, 11),
                Ipv4Addr::new(198, 51, 100, 12),
            ],
            dns_v6: v6(0x2001, 0xdb8, 0xd5, 0x53),
            dns_v4: Ipv4Addr::new(203, 0, 113, 53),
            client_net_v6: Prefix::v6(v6(0x2001, 0xdb8, 0xc1, 0), 64),
            client_net_v4: Prefix::v4(Ipv4Addr::new(192, 0, 2, 0), 24),
            server_net_v6: Prefix::v6(v6(0x2001, 0xdb8, 0x5e, 0), 64),
            server_net_v4: Prefix::v4(Ipv4Addr::new(198, 51, 100, 0), 24),
            dns_net_v6: Prefix::v6(v6(0x2001, 0xdb8, 0xd5, 0), 64),
            dns_net_v4: Prefix::v4(Ipv4Addr::new(203, 0, 113, 0), 24),
        }
    }

    /// All server addresses, v6 first, as `IpAddr`.
    pub fn servers(&self) -> Vec<IpAddr> {
        self.servers_v6
            .iter()
            .map(|a| IpAddr::V6(*a))
            .chain(self.servers_v4.iter().map(|a| IpAddr::V4(*a)))
            .collect()
    }
}

/// How the lab starts its shaper (the userspace delay line, see [`super::shaper`]).
#[derive(Debug, Clone, Default)]
pub enum ShaperLaunch {
    /// `siprace lab shaper --name N`, with the binary from `SIPRACE_BIN`, the current
    /// executable if it is `siprace`, or `siprace` next to it (or one directory up, for
    /// test binaries in `target/*/deps`).
    #[default]
    Auto,
    /// Any program that ends up calling [`super::shaper::run`]; it finds the lab name in
    /// the environment variable `SIPRACE_LAB_NAME`.
    Command {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// No shaper: delay and loss faults are refused.
    Disabled,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// 1-16 characters of [a-z0-9-]; namespaces are `sr-<name>-<role>`.
    pub name: String,
    pub shaper: ShaperLaunch,
}

impl LabConfig {
    pub fn new(name: impl Into<String>) -> LabConfig {
        LabConfig {
            name: name.into(),
            shaper: ShaperLaunch::Auto,
        }
    }
}

/// A lab that is up. Dropping it does NOT tear it down: call [`down`].
#[derive(Debug, Clone, Serialize)]
pub struct Lab {
    pub name: String,
    pub addrs: LabAddrs,
    pub state_dir: PathBuf,
    pub shaper_pid: Option<u32>,
}

impl Lab {
    /// The namespace of `role`: `sr-<name>-<role>`.
    pub fn ns(&self, role: Role) -> String {
        ns_name(&self.name, role)
    }
    /// A `Command` running `program` inside `role`'s namespace.
    pub fn command(&self, role: Role, program: impl AsRef<std::ffi::OsStr>) -> Command {
        sys::netns_command(&self.ns(role), program)
    }
    /// Runs `f` on a dedicated thread inside `role`'s namespace (sockets it creates stay there).
    pub fn in_ns<T, F>(&self, role: Role, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        sys::in_netns(&self.ns(role), f)
    }
    /// Reopens a lab that is up (e.g. from another process).
    pub fn open(name: &str) -> Result<Lab, LabError> {
        check_name(name)?;
        let st = State::load(name).ok_or_else(|| LabError::NotUp(name.to_string()))?;
        Ok(Lab {
            name: name.to_string(),
            addrs: LabAddrs::standard(),
            state_dir: state_dir(name),
            shaper_pid: st.shaper_pid,
        })
    }
}

/// Builds the lab. Refuses if any part of a lab of that name exists. On failure
/// everything built so far is torn down again.
pub fn up(cfg: &LabConfig) -> Result<Lab, LabError> {
    sys::preflight()?;
    check_name(&cfg.name)?;
    let name = cfg.name.as_str();
    if state_dir(name).exists()
        || Role::ALL
            .iter()
            .any(|r| sys::netns_exists(&ns_name(name, *r)))
    {
        return Err(LabError::Exists(name.to_string()));
    }
    let dir = state_dir(name);
    // A concurrent `down` of another lab may remove the (empty) STATE_ROOT under our feet: retry.
    let mut made = std::fs::create_dir_all(&dir);
    for _ in 0..5 {
        if made.is_ok() {
            break;
        }
        made = std::fs::create_dir_all(&dir);
    }
    made.map_err(LabError::io(format!("creating {}", dir.display())))?;
    let state = State {
        name: name.to_string(),
        ..State::default()
    };
    let result = state.save().and_then(|_| build(cfg));
    match result {
        Ok(lab) => Ok(lab),
        Err(e) => {
            if let Err(e2) = down(name) {
                tracing::warn!("cleanup after failed up: {e2}");
            }
            Err(e)
        }
    }
}

fn build(cfg: &LabConfig) -> Result<Lab, LabError> {
    let name = cfg.name.as_str();
    let a = LabAddrs::standard();
    let [cli, rtr, srv, dns] = Role::ALL.map(|r| ns_name(name, r));

    for ns in [&cli, &rtr, &srv, &dns] {
        sys::ip(["netns", "add", ns.as_str()])?;
        // Before any interface exists, so that they all inherit it: no DAD (addresses
        // usable at once), no RA, no reverse path filter (the shaper re-injects packets
        // on the TUN with foreign source addresses).
        let mut keys = vec![
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ];
        if *ns == rtr {
            keys.extend([
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.default.forwarding=1",
                // A "reject" fault must refuse every packet at once: the kernel's
                // ICMP error rate limits (1/s per destination after a small burst)
                // would silently turn a burst of rejected probes into timeouts.
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            ]);
        }
        sys::run(
            sys::netns_command(ns, "sysctl")
                .arg("-q")
                .arg("-w")
                .args(&keys),
        )?;
        sys::ipn(ns, "link set lo up")?;
    }

    // veth pairs created directly in their namespaces: nothing ever appears in the root namespace.
    for (host_ns, rtr_if) in [
        (&cli, RTR_CLIENT_IF),
        (&srv, RTR_SERVER_IF),
        (&dns, RTR_DNS_IF),
    ] {
        sys::ip([
            "link", "add", HOST_IF, "netns", host_ns, "type", "veth", "peer", "name", rtr_if,
            "netns", &rtr,
        ])?;
    }

    let addr = |ns: &str, ip: String, len: u8, dev: &str| -> Result<(), LabError> {
        let nodad = if ip.contains(':') { " nodad" } else { "" };
        sys::ipn(ns, &format!("addr add {ip}/{len} dev {dev}{nodad}")).map(|_| ())
    };
    // client
    addr(&cli, a.client_v6.to_string(), 64, HOST_IF)?;
    addr(&cli, a.client_v4.to_string(), 24, HOST_IF)?;
    // router
    addr(&rtr, a.router_client_v6.to_string(), 64, RTR_CLIENT_IF)?;
    addr(&rtr, a.router_client_v4.to_string(), 24, RTR_CLIENT_IF)?;
    addr(&rtr, a.router_server_v6.to_string(), 64, RTR_SERVER_IF)?;
    addr(&rtr, a.router_server_v4.to_string(), 24, RTR_SERVER_IF)?;
    addr(&rtr, a.router_dns_v6.to_string(), 64, RTR_DNS_IF)?;
    addr(&rtr, a.router_dns_v4.to_string(), 24, RTR_DNS_IF)?;
    // servers
    for s in &a.servers_v6 {
        addr(&srv, s.to_string(), 64, HOST_IF)?;
    }
    for s in &a.servers_v4 {
        addr(&srv, s.to_string(), 24, HOST_IF)?;
    }
    // dns
    addr(&dns, a.dns_v6.to_string(), 64, HOST_IF)?;
    addr(&dns, a.dns_v4.to_string(), 24, HOST_IF)?;

    for ns in [&cli, &srv, &dns] {
        sys::ipn(ns, &format!("link set {HOST_IF} up"))?;
    }
    for dev in [RTR_CLIENT_IF, RTR_SERVER_IF, RTR_DNS_IF] {
        sys::ipn(&rtr, &format!("link set {dev} up"))?;
    }

    // Static neighbours on every link: no neighbour discovery or ARP on the first
    // packet (a fresh namespace can hold the first IPv6 packet ~1 s in ND), so the
    // lab's timings are the faults' and nothing else.
    let mac_cli = mac(&cli, HOST_IF)?;
    let mac_srv = mac(&srv, HOST_IF)?;
    let mac_dns = mac(&dns, HOST_IF)?;
    let mac_c0 = mac(&rtr, RTR_CLIENT_IF)?;
    let mac_s0 = mac(&rtr, RTR_SERVER_IF)?;
    let mac_d0 = mac(&rtr, RTR_DNS_IF)?;
    let neigh = |ns: &str, ip: String, lladdr: &str, dev: &str| -> Result<(), LabError> {
        sys::ipn(
            ns,
            &format!("neigh replace {ip} lladdr {lladdr} dev {dev} nud permanent"),
        )
        .map(|_| ())
    };
    neigh(&cli, a.router_client_v6.to_string(), &mac_c0, HOST_IF)?;
    neigh(&cli, a.router_client_v4.to_string(), &mac_c0, HOST_IF)?;
    neigh(&rtr, a.client_v6.to_string(), &mac_cli, RTR_CLIENT_IF)?;
    neigh(&rtr, a.client_v4.to_string(), &mac_cli, RTR_CLIENT_IF)?;
    neigh(&srv, a.router_server_v6.to_string(), &mac_s0, HOST_IF)?;
    neigh(&srv, a.router_server_v4.to_string(), &mac_s0, HOST_IF)?;
    for s in &a.servers_v6 {
        neigh(&rtr, s.to_string(), &mac_srv, RTR_SERVER_IF)?;
    }
    for s in &a.servers_v4 {
        neigh(&rtr, s.to_string(), &mac_srv, RTR_SERVER_IF)?;
    }
    neigh(&dns, a.router_dns_v6.to_string(), &mac_d0, HOST_IF)?;
    neigh(&dns, a.router_dns_v4.to_string(), &mac_d0, HOST_IF)?;
    neigh(&rtr, a.dns_v6.to_string(), &mac_dns, RTR_DNS_IF)?;
    neigh(&rtr, a.dns_v4.to_string(), &mac_dns, RTR_DNS_IF)?;

    // Default routes of the leaves; the router has only its connected routes.
    for (ns, gw6, gw4) in [
        (&cli, a.router_client_v6, a.router_client_v4),
        (&srv, a.router_server_v6, a.router_server_v4),
        (&dns, a.router_dns_v6, a.router_dns_v4),
    ] {
        sys::ipn(ns, &format!("-6 route add default via {gw6} dev {HOST_IF}"))?;
        sys::ipn(ns, &format!("-4 route add default via {gw4} dev {HOST_IF}"))?;
    }

    // The delay line: a persistent TUN, and packets marked SHAPE_MARK (by nftables,
    // only for impaired traffic arriving on a veth) routed into it by table SHAPE_TABLE.
    // What the shaper writes back arrives on the TUN unmarked and takes the main table.
    sys::ipn(&rtr, &format!("tuntap add dev {TUN_DEV} mode tun"))?;
    sys::ipn(&rtr, &format!("link set {TUN_DEV} up"))?;
    for fam in ["-4", "-6"] {
        sys::ipn(
            &rtr,
            &format!("{fam} rule add pref 100 fwmark {SHAPE_MARK:#x} lookup {SHAPE_TABLE}"),
        )?;
        sys::ipn(
            &rtr,
            &format!("{fam} route add default dev {TUN_DEV} table {SHAPE_TABLE}"),
        )?;
    }

    // Per-namespace resolv.conf (bind-mounted by `ip netns exec`) pointing at the lab DNS.
    for ns in [&cli, &srv, &rtr] {
        let d = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&d).map_err(LabError::io(format!("creating {}", d.display())))?;
        let conf = format!(
            "# siprace lab {name}\nnameserver {}\nnameserver {}\n",
            a.dns_v6, a.dns_v4
        );
        std::fs::write(d.join("resolv.conf"), conf).map_err(LabError::io("writing resolv.conf"))?;
    }

    let mut lab = Lab {
        name: name.to_string(),
        addrs: a,
        state_dir: state_dir(name),
        shaper_pid: None,
    };
    super::state::write_shaper_config(name, &[])?;
    if let Some((program, args)) = shaper_command(cfg)? {
        let pid = spawn_detached(name, Role::Router, "shaper", &program, &args)?;
        lab.shaper_pid = Some(pid);
        wait_shaper_ready(name, pid)?;
    }
    Ok(lab)
}

/// The MAC address of `dev` in `ns`.
fn mac(ns: &str, dev: &str) -> Result<String, LabError> {
    let out = sys::ipn(ns, &format!("-j link show dev {dev}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| LabError::Invalid(format!("ip -j link: {e}")))?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| LabError::Invalid(format!("no MAC for {dev} in {ns}")))
}

fn shaper_command(cfg: &LabConfig) -> Result<Option<(PathBuf, Vec<OsString>)>, LabError> {
    match &cfg.shaper {
        ShaperLaunch::Disabled => Ok(None),
        ShaperLaunch::Command { program, args } => Ok(Some((program.clone(), args.clone()))),
        ShaperLaunch::Auto => {
            let bin = find_siprace_binary().ok_or(LabError::NoShaperBinary)?;
            let args = ["lab", "shaper", "--name", cfg.name.as_str()]
                .map(OsString::from)
                .to_vec();
            Ok(Some((bin, args)))
        }
    }
}

/// `SIPRACE_BIN`, else the current executable if it is `siprace`, else `siprace` next to it or one up.
pub fn find_siprace_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIPRACE_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|f| f == "siprace") {
        return Some(exe);
    }
    let dir = exe.parent()?;
    [dir.join("siprace"), dir.parent()?.join("siprace")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Bound on the shaper's start (process start and TUN attach: milliseconds on an idle
/// machine). Generous, because a loaded one can take seconds, and it costs nothing:
/// the wait ends when the shaper is ready, or at once when it exits.
const SHAPER_START: Duration = Duration::from_secs(20);

fn wait_shaper_ready(name: &str, pid: u32) -> Result<(), LabError> {
    let ready = state_dir(name).join("shaper.ready");
    let start = Instant::now();
    while start.elapsed() < SHAPER_START {
        if ready.exists() {
            return Ok(());
        }
        if !sys::alive(pid) {
            let log =
                std::fs::read_to_string(state_dir(name).join("shaper.log")).unwrap_or_default();
            return Err(LabError::Invalid(format!(
                "the shaper exited at start: {}",
                log.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(LabError::Invalid(format!(
        "the shaper did not become ready within {} s",
        SHAPER_START.as_secs()
    )))
}

/// Starts `program args...` in `role`'s namespace, detached (survives the caller),
/// output appended to `<state>/<what>.log`, with `SIPRACE_LAB_NAME` set; its PID is
/// recorded so that [`down`] kills it. Returns the PID.
pub fn spawn_in(
    name: &str,
    role: Role,
    what: &str,
    program: &Path,
    args: &[OsString],
) -> Result<u32, LabError> {
    sys::preflight()?;
    let mut st = State::load(name).ok_or_else(|| LabError::NotUp(name.to_string()))?;
    let pid = spawn_detached(name, role, what, program, args)?;
    st.processes.push(Spawned {
        pid,
        role,
        what: what.to_string(),
    });
    st.save()?;
    Ok(pid)
}

fn spawn_detached(
    name: &str,
    role: Role,
    what: &str,
    program: &Path,
    args: &[OsString],
) -> Result<u32, LabError> {
    let log = state_dir(name).join(format!("{what}.log"));
    // The shell backgrounds the program and prints its PID; the program is
    // reparented to init when the shell exits, so nobody has to reap it.
    let mut cmd = sys::netns_command(&ns_name(name, role), "sh");
    cmd.arg("-c")
        .arg(r#""$@" </dev/null >>"$SIPRACE_LAB_LOG" 2>&1 & echo $!"#)
        .arg("sh")
        .arg(program)
        .args(args)
        .env("SIPRACE_LAB_NAME", name)
        .env("SIPRACE_LAB_LOG", &log);
    let out = sys::run(&mut cmd)?;
    let pid: u32 = out
        .trim()
        .parse()
        .map_err(|_| LabError::Invalid(format!("no pid from spawn: {out:?}")))?;
    // Record the shaper at once: if we die now, `down` still finds it (spawn_in records the others).
    if what == "shaper" {
        if let Some(mut st) = State::load(name) {
            st.shaper_pid = Some(pid);
            st.save()?;
        }
    }
    Ok(pid)
}

/// Tears a lab down: kills its processes, deletes its namespaces (and with them
/// every veth, address, route, rule, TUN and nftables table inside them), its
/// `/etc/netns` entries and its state directory. Idempotent; works from the
/// on-disk state alone, e.g. after the lab's processes were SIGKILLed.
/// Returns what it removed, for the log.
pub fn down(name: &str) -> Result<Vec<String>, LabError> {
    sys::preflight()?;
    check_name(name)?;
    let mut removed = Vec::new();
    let st = State::load(name);

    // 1. processes: everything inside our namespaces, plus what we recorded (if it is still ours).
    let mut pids: Vec<u32> = Role::ALL
        .iter()
        .flat_map(|r| sys::netns_pids(&ns_name(name, *r)))
        .collect();
    if let Some(st) = &st {
        for p in st
            .shaper_pid
            .iter()
            .chain(st.processes.iter().map(|s| &s.pid))
        {
            if sys::belongs_to_lab(*p, name) {
                pids.push(*p);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| *p != std::process::id());
    if !pids.is_empty() {
        sys::kill_all(&pids, Duration::from_millis(300));
        removed.push(format!("processes {pids:?}"));
    }

    // 2. namespaces (veths, TUN, routes, rules, nft tables die with them).
    let mut errors = Vec::new();
    for r in Role::ALL {
        let ns = ns_name(name, r);
        if sys::netns_exists(&ns) {
            match sys::ip(["netns", "del", ns.as_str()]) {
                Ok(_) => removed.push(format!("netns {ns}")),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let etc = Path::new("/etc/netns").join(&ns);
        if etc.exists() {
            match std::fs::remove_dir_all(&etc) {
                Ok(()) => removed.push(etc.display().to_string()),
                Err(e) => errors.push(format!("{}: {e}", etc.display())),
            }
        }
    }

    // 3. state.
    let dir = state_dir(name);
    if dir.exists() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir.display().to_string()),
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        }
    }
    let _ = std::fs::remove_dir(STATE_ROOT); // only if empty
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(LabError::Invalid(format!(
            "down {name}: {}",
            errors.join("; ")
        )))
    }
}

/// What is there of a lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub name: String,
    /// True if every namespace and the state exist.
    pub up: bool,
    pub namespaces: Vec<(String, bool)>,
    pub shaper_pid: Option<u32>,
    pub shaper_alive: bool,
    pub processes: Vec<(Spawned, bool)>,
    pub impairments: Vec<Impairment>,
    pub addrs: LabAddrs,
}

pub fn status(name: &str) -> Result<LabStatus, LabError> {
    check_name(name)?;
    let st = State::load(name);
    let namespaces: Vec<(String, bool)> = Role::ALL
        .iter()
        .map(|r| {
            let ns = ns_name(name, *r);
            let e = sys::netns_exists(&ns);
            (ns, e)
        })
        .collect();
    let up = st.is_some() && namespaces.iter().all(|(_, e)| *e);
    let st = st.unwrap_or_default();
    Ok(LabStatus {
        name: name.to_string(),
        up,
        shaper_alive: st
            .shaper_pid
            .is_some_and(|p| sys::alive(p) && sys::belongs_to_lab(p, name)),
        shaper_pid: st.shaper_pid,
        processes: st
            .processes
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    sys::alive(s.pid) && sys::belongs_to_lab(s.pid, name),
                )
            })
            .collect(),
        impairments: st.impairments.clone(),
        namespaces,
        addrs: LabAddrs::standard(),
    })
}

/// Names of the labs that have a state directory or a namespace.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for ns in sys::netns_list() {
        if let Some(rest) = ns.strip_prefix(NS_PREFIX) {
            if let Some((n, _)) = rest.rsplit_once('-') {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}
