//! Benchmark scenarios: one TOML file each under `bench-scenarios/`.
//!
//! ```toml
//! name = "ipv6-blackholed"                  # unique; used in file names
//! description = "IPv6 to the server silently dropped"
//! transports = ["udp", "tcp", "tls"]        # each runs as its own case: <name>/<transport>
//! quick = true                              # part of `siprace bench --quick`
//! quick_transports = ["udp", "tcp"]         # ... over these (default: all of `transports`)
//! dials = 20                                # measured dials per strategy (full run)
//! quick_dials = 5                           # ... with --quick
//! concurrency = 1                           # dials in flight at once (a burst: 100)
//! time_bound_s = 90                         # per strategy; dials still running then count as failed
//! oracle = { family = "ipv4", server = 0 }  # the address known to work best
//! clients = true                            # also run SIPp, sipsak, baresip (full runs only)
//! client_dials = 3                          # dials per third-party client and transport
//! client_bound_s = 5                        # a client dial without an answer by then fails
//! hosts = 10                                # distinct host names h1..h10 (records = "addresses"):
//!                                           # dial i goes to h(i mod hosts + 1), and the warm row
//!                                           # is one dialer from an empty history (no warm-up dial)
//! timeline = "v6-repaired"                 # v6-repaired | network-change: one dialer while the
//!                                           # network changes (see siprace::bench::timeline)
//! repair_after_s = 35                       # v6-repaired: the faults are cleared after this
//! interval_ms = 1000                        # v6-repaired: one dial every this long
//! reuse = true                              # connection reuse (issue #10): rows no-reuse, reuse
//!                                           # and, over TLS, virtual-host (a second domain on the
//!                                           # same address, its certificate not covering it)
//!
//! [sweep]                                   # the cold attempt delay sweep (siprace::bench::sweep):
//! from_ms = 0                               # the first [[impair]] (a delay) at every value
//! to_ms = 400                               # from_ms..=to_ms in step_ms steps
//! step_ms = 10
//! siprace_delays_ms = [50, 100, 150, 200]   # siprace's cold attempt delays compared
//!
//! [dns]
//! records = "naptr-srv"                     # naptr-srv | srv | addresses
//! srv_targets = 1                           # 1-3 SRV targets: sip1..sip3 → server addresses 0..2
//! faults = "AAAA=delay:50ms"                # lab DNS fault spec (see siprace::lab::dns)
//! srv_additionals = true                    # A/AAAA of SRV targets in the additional section
//! ttl = 0                                   # the zone's TTL, s (0: no answer may be cached)
//!
//! [outbound]                                # SIP Outbound failover instead of dials:
//! uas = ["siprace-flows-2", "siprace-flows-1"] # see siprace::bench::outbound
//!
//! [[impair]]                                # any number; see `siprace lab impair`
//! family = "ipv6"                           # ipv6 | ipv4
//! server = 0                                # optional: only this server address (0-2)
//! fault = "blackhole"                       # blackhole | reject | delay | loss
//! ms = 150                                  # delay: added one-way, client → server
//! jitter_ms = 0
//! pct = 5.0                                 # loss
//! direction = "to-server"                   # to-server | to-client | both
//! ```
//!
//! The SIP domain is always `example.test`; the zone is generated from these
//! settings and the lab's addresses, so a scenario never names an address.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bench::outbound::spec::OutboundSpec;
use crate::bench::sweep::SweepSpec;
use crate::endpoint::{Family, Transport};
use crate::lab::impair::{Direction, Fault};
use crate::lab::topology::LabAddrs;

/// The SIP domain every scenario's zone serves.
pub const DOMAIN: &str = "example.test";
/// The label of the virtual host of reuse scenarios (`vhost.example.test`).
pub const VHOST: &str = "vhost";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    #[serde(default = "default_transports")]
    pub transports: Vec<Transport>,
    #[serde(default)]
    pub quick: bool,
    pub quick_transports: Option<Vec<Transport>>,
    #[serde(default = "default_dials")]
    pub dials: usize,
    #[serde(default = "default_quick_dials")]
    pub quick_dials: usize,
    #[serde(default = "one")]
    pub concurrency: usize,
    #[serde(default = "default_time_bound")]
    pub time_bound_s: u64,
    pub oracle: Oracle,
    #[serde(default)]
    pub clients: bool,
    #[serde(default = "default_client_dials")]
    pub client_dials: usize,
    #[serde(default = "default_client_bound")]
    pub client_bound_s: u64,
    #[serde(default = "one")]
    pub hosts: usize,
    pub timeline: Option<TimelineKind>,
    pub sweep: Option<SweepSpec>,
    #[serde(default = "default_repair_after")]
    pub repair_after_s: u64,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Connection reuse rows instead of the strategies (see the runner's
    /// `run_reuse`); the zone then also has `vhost.example.test`.
    #[serde(default)]
    pub reuse: bool,
    #[serde(default)]
    pub dns: DnsSpec,
    #[serde(default)]
    pub impair: Vec<ImpairSpec>,
    /// "Registered, then a family breaks" (SIP Outbound failover) instead
    /// of dial rows; see [`crate::bench::outbound`].
    pub outbound: Option<OutboundSpec>,
}

/// Which timeline a scenario runs (see `crate::bench::timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimelineKind {
    V6Repaired,
    NetworkChange,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Oracle {
    pub family: Family,
    #[serde(default)]
    pub server: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Records {
    #[default]
    NaptrSrv,
    Srv,
    Addresses,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    #[serde(default)]
    pub records: Records,
    #[serde(default = "one")]
    pub srv_targets: usize,
    #[serde(default)]
    pub faults: String,
    #[serde(default = "yes")]
    pub srv_additionals: bool,
    #[serde(default)]
    pub ttl: u32,
}

impl Default for DnsSpec {
    fn default() -> Self {
        DnsSpec {
            records: Records::NaptrSrv,
            srv_targets: 1,
            faults: String::new(),
            srv_additionals: true,
            ttl: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Blackhole,
    Reject,
    Delay,
    Loss,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairSpec {
    pub family: Family,
    pub server: Option<usize>,
    pub fault: FaultKind,
    pub ms: Option<u32>,
    #[serde(default)]
    pub jitter_ms: u32,
    pub pct: Option<f64>,
    #[serde(default)]
    pub direction: Direction,
}

fn default_transports() -> Vec<Transport> {
    vec![Transport::Udp]
}
fn default_dials() -> usize {
    20
}
fn default_quick_dials() -> usize {
    5
}
fn default_time_bound() -> u64 {
    90
}
fn default_repair_after() -> u64 {
    35
}
fn default_interval() -> u64 {
    1000
}
fn default_client_dials() -> usize {
    3
}
fn default_client_bound() -> u64 {
    5
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// Number of server addresses per family in the lab.
const SERVERS: usize = 3;

impl Scenario {
    /// How the rest of an `[outbound]` scenario must look: no dial
    /// features, UDP or TCP (what the lab registrar serves), and one break
    /// (blackhole or reject of one family, client → server, at server 0
    /// where the registrar runs).
    fn check_outbound_fit(&self) -> Result<(), String> {
        if self.timeline.is_some() || self.sweep.is_some() || self.reuse {
            return Err("an [outbound] scenario has no timeline, sweep or reuse".into());
        }
        if let Some(t) = self
            .transports
            .iter()
            .find(|t| !matches!(t, Transport::Udp | Transport::Tcp))
        {
            return Err(format!(
                "outbound: transport {t} (the lab registrar has UDP and TCP)"
            ));
        }
        let Some(first) = self.impair.first() else {
            return Err("an [outbound] scenario needs an [[impair]]: the break".into());
        };
        if self.impair.iter().any(|i| {
            i.family != first.family
                || !matches!(i.fault, FaultKind::Blackhole | FaultKind::Reject)
                || i.server.is_some_and(|s| s != 0)
                || i.direction != Direction::default()
        }) {
            return Err(
                "outbound: the break is blackhole or reject of one family, client → server, \
                 at server 0 (the registrar's)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Parses and checks one scenario file's text.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        s.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(format!("name {:?}: use [a-z0-9-]", self.name));
        }
        if self.transports.is_empty() {
            return Err("transports is empty".into());
        }
        if let Some(q) = &self.quick_transports {
            if q.is_empty() || q.iter().any(|t| !self.transports.contains(t)) {
                return Err("quick_transports must be a non-empty subset of transports".into());
            }
        }
        if let Some(t) = self.transports.iter().find(|t| **t == Transport::Sctp) {
            return Err(format!("transport {t}: the lab kernel has no SCTP"));
        }
        if self.dials == 0 || self.quick_dials == 0 || self.concurrency == 0 {
            return Err("dials, quick_dials and concurrency must be at least 1".into());
        }
        if self.clients && (self.client_dials == 0 || self.client_bound_s == 0) {
            return Err("client_dials and client_bound_s must be at least 1".into());
        }
        if self.dials > 10_000 || self.concurrency > 1000 {
            return Err("dials is capped at 10000 and concurrency at 1000".into());
        }
        if self.repair_after_s > 600 || !(100..=60_000).contains(&self.interval_ms) {
            return Err("repair_after_s is capped at 600 and interval_ms must be 100-60000".into());
        }
        if let Some(sweep) = &self.sweep {
            sweep.check()?;
            if !matches!(self.impair.as_slice(), [one] if one.fault == FaultKind::Delay) {
                return Err("a sweep needs exactly one [[impair]], a delay".into());
            }
        }
        if self.hosts == 0 || self.hosts > 100 {
            return Err("hosts must be 1-100".into());
        }
        if self.hosts > 1 && self.dns.records != Records::Addresses {
            return Err("hosts > 1 needs dns.records = \"addresses\"".into());
        }
        if !(1..=SERVERS).contains(&self.dns.srv_targets) {
            return Err(format!("dns.srv_targets must be 1-{SERVERS}"));
        }
        if self.oracle.server >= SERVERS {
            return Err(format!("oracle.server must be 0-{}", SERVERS - 1));
        }
        crate::lab::dns::parse_faults(&self.dns.faults).map_err(|e| format!("dns.faults: {e}"))?;
        if let Some(outbound) = &self.outbound {
            outbound.check_values()?;
            self.check_outbound_fit()?;
        }
        for imp in &self.impair {
            imp.fault()?;
            if imp.server.is_some_and(|s| s >= SERVERS) {
                return Err(format!("impair.server must be 0-{}", SERVERS - 1));
            }
        }
        Ok(())
    }

    /// The zone for this scenario, on the lab's addresses: for each of its
    /// transports (in order) a NAPTR record and an SRV set, unless the
    /// scenario leaves those record types out.
    pub fn zone_for_all(&self, addrs: &LabAddrs) -> String {
        let mut z = format!(
            "$ORIGIN {DOMAIN}.\n$TTL {}\n@ IN SOA ns.{DOMAIN}. admin.{DOMAIN}. 1 60 60 60 0\n\
             @ IN NS ns.{DOMAIN}.\nns IN AAAA {}\nns IN A {}\n",
            self.dns.ttl, addrs.dns_v6, addrs.dns_v4
        );
        if self.dns.records == Records::Addresses {
            // Without SRV, the domain itself carries the addresses (of server
            // 0), and so does each of the distinct host names.
            z += &format!(
                "@ IN AAAA {}\n@ IN A {}\n",
                addrs.servers_v6[0], addrs.servers_v4[0]
            );
            if self.hosts > 1 {
                for n in 1..=self.hosts {
                    z += &format!(
                        "h{n} IN AAAA {}\nh{n} IN A {}\n",
                        addrs.servers_v6[0], addrs.servers_v4[0]
                    );
                }
            }
            return z;
        }
        if self.reuse {
            // A second SIP domain served from server 0's addresses (virtual
            // hosting); the bench certificate does not cover it.
            z += &format!(
                "{VHOST} IN AAAA {}\n{VHOST} IN A {}\n",
                addrs.servers_v6[0], addrs.servers_v4[0]
            );
        }
        for i in 0..self.dns.srv_targets {
            z += &format!(
                "sip{n} IN AAAA {}\nsip{n} IN A {}\n",
                addrs.servers_v6[i],
                addrs.servers_v4[i],
                n = i + 1
            );
        }
        for (order, transport) in self.transports.iter().enumerate() {
            let (service, srv) = match transport {
                Transport::Udp => ("SIP+D2U", "_sip._udp"),
                Transport::Tcp => ("SIP+D2T", "_sip._tcp"),
                Transport::Tls => ("SIPS+D2T", "_sips._tcp"),
                Transport::Sctp => ("SIP+D2S", "_sip._sctp"),
            };
            if self.dns.records == Records::NaptrSrv {
                z += &format!(
                    "@ IN NAPTR {} 50 \"s\" \"{service}\" \"\" {srv}.{DOMAIN}.\n",
                    (order + 1) * 10
                );
            }
            for i in 0..self.dns.srv_targets {
                z += &format!(
                    "{srv} IN SRV {} 10 {} sip{}.{DOMAIN}.\n",
                    (i + 1) * 10,
                    transport.default_port(),
                    i + 1
                );
            }
        }
        z
    }

    /// The URI every strategy dials for a transport.
    pub fn target(&self, transport: Transport) -> String {
        match transport {
            Transport::Tls => format!("sips:{DOMAIN}"),
            _ => format!("sip:{DOMAIN}"),
        }
    }

    /// The URIs dials go to in turn: [`Scenario::target`], or one per
    /// distinct host name (`hosts`), with the transport given, since host
    /// names carry addresses only.
    pub fn targets(&self, transport: Transport) -> Vec<String> {
        if self.hosts == 1 {
            return vec![self.target(transport)];
        }
        let scheme = if transport == Transport::Tls {
            "sips"
        } else {
            "sip"
        };
        (1..=self.hosts)
            .map(|n| format!("{scheme}:h{n}.{DOMAIN};transport={transport}"))
            .collect()
    }

    /// What the oracle dials: the working address directly, no DNS.
    pub fn oracle_target(&self, transport: Transport, addrs: &LabAddrs) -> String {
        let i = self.oracle.server;
        let host = match self.oracle.family {
            Family::V6 => format!("[{}]", addrs.servers_v6[i]),
            Family::V4 => addrs.servers_v4[i].to_string(),
        };
        let port = transport.default_port();
        match transport {
            Transport::Tls => format!("sips:{host}:{port};transport=tls"),
            t => format!("sip:{host}:{port};transport={t}"),
        }
    }

    /// The longest a packet can spend in the shaper's delay lines, both ways.
    pub fn max_path_delay(&self) -> Duration {
        let ms: u32 = self
            .impair
            .iter()
            .filter(|i| i.fault == FaultKind::Delay)
            .map(|i| 2 * (i.ms.unwrap_or(0) + i.jitter_ms))
            .max()
            .unwrap_or(0);
        Duration::from_millis(u64::from(ms))
    }

    /// The scenario as a run sees it: `--quick` keeps only `quick_transports`.
    pub fn for_run(&self, quick: bool) -> Scenario {
        let mut s = self.clone();
        if let (true, Some(q)) = (quick, &self.quick_transports) {
            s.transports = q.clone();
        }
        s
    }

    pub fn dials(&self, quick: bool) -> usize {
        if quick {
            self.quick_dials
        } else {
            self.dials
        }
    }
}

impl ImpairSpec {
    /// The lab fault this spec applies.
    pub fn fault(&self) -> Result<Fault, String> {
        Ok(match self.fault {
            FaultKind::Blackhole => Fault::Blackhole,
            FaultKind::Reject => Fault::Reject,
            FaultKind::Delay => Fault::Delay {
                ms: self.ms.ok_or("a delay needs ms")?,
                jitter_ms: self.jitter_ms,
                direction: self.direction,
            },
            FaultKind::Loss => {
                let pct = self.pct.ok_or("a loss needs pct")?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(format!("loss pct {pct} is not within 0-100"));
                }
                Fault::Loss {
                    pct,
                    direction: self.direction,
                }
            }
        })
    }

    /// The server address this spec is limited to, if any.
    pub fn server_addr(&self, addrs: &LabAddrs) -> Option<std::net::IpAddr> {
        self.server.map(|i| match self.family {
            Family::V6 => addrs.servers_v6[i].into(),
            Family::V4 => addrs.servers_v4[i].into(),
        })
    }
}

/// Loads every `*.toml` under `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out: Vec<Scenario> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let s = Scenario::parse(&text, &f.display().to_string())?;
        if out.iter().any(|o| o.name == s.name) {
            return Err(format!(
                "{}: duplicate scenario name {:?}",
                f.display(),
                s.name
            ));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err(format!("no scenario (*.toml) in {}", dir.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-scenarios");
        let all = load_dir(&dir).unwrap();
        assert!(all.len() >= 10, "{} scenarios", all.len());
        assert!(all.iter().any(|s| s.quick));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let base = "name = \"x\"\ndescription = \"d\"\noracle = { family = \"ipv4\" }\n";
        assert!(Scenario::parse(base, "t").is_ok());
        assert!(Scenario::parse(&format!("{base}colour = 1\n"), "t")
            .unwrap_err()
            .contains("colour"));
        assert!(Scenario::parse(&format!("{base}transports = [\"sctp\"]\n"), "t").is_err());
        let bad_loss =
            format!("{base}[[impair]]\nfamily = \"ipv6\"\nfault = \"loss\"\npct = 120.0\n");
        assert!(Scenario::parse(&bad_loss, "t")
            .unwrap_err()
            .contains("0-100"));
        let no_ms = format!("{base}[[impair]]\nfamily = \"ipv6\"\nfault = \"delay\"\n");
        assert!(Scenario::parse(&no_ms, "t").unwrap_err().contains("ms"));
        let bad_dns = format!("{base}[dns]\nfaults = \"AAAA=sometimes\"\n");
        assert!(Scenario::parse(&bad_dns, "t").is_err());
    }

    #[test]
    fn zone_has_the_chain_for_the_transport() {
        let s = Scenario::parse(
            "name = \"x\"\ndescription = \"d\"\ntransports = [\"tcp\"]\noracle = { family = \"ipv4\" }\n[dns]\nsrv_targets = 2\n",
            "t",
        )
        .unwrap();
        let z = s.zone_for_all(&LabAddrs::standard());
        assert!(z.contains("\"SIP+D2T\""));
        assert!(z.contains("_sip._tcp IN SRV 10 10 5060 sip1.example.test."));
        assert!(z.contains("_sip._tcp IN SRV 20 10 5060 sip2.example.test."));
        assert!(z.contains("sip2 IN AAAA 2001:db8:5e::11"));
        assert_eq!(
            s.oracle_target(Transport::Udp, &LabAddrs::standard()),
            "sip:198.51.100.10:5060;transport=udp"
        );
        assert!(z.contains("$TTL 0\n"));
        assert_eq!(s.targets(Transport::Tcp), ["sip:example.test"]);
    }

    #[test]
    fn distinct_hosts_and_a_ttl() {
        let base = "name = \"x\"\ndescription = \"d\"\noracle = { family = \"ipv4\" }\nhosts = 3\n";
        assert!(Scenario::parse(base, "t")
            .unwrap_err()
            .contains("addresses"));
        let s = Scenario::parse(
            &format!("{base}[dns]\nrecords = \"addresses\"\nttl = 300\n"),
            "t",
        )
        .unwrap();
        let z = s.zone_for_all(&LabAddrs::standard());
        assert!(z.contains("$TTL 300\n"), "{z}");
        assert!(z.contains("h3 IN A 198.51.100.10\n"), "{z}");
        assert!(!z.contains("h4 "), "{z}");
        assert_eq!(
            s.targets(Transport::Udp),
            [
                "sip:h1.example.test;transport=udp",
                "sip:h2.example.test;transport=udp",
                "sip:h3.example.test;transport=udp"
            ]
        );
    }
}
