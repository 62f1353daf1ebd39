//! Which network this host is on, as the driver sees it, so that history
//! is partitioned by network (draft-ietf-happy-happyeyeballs-v3: history
//! "MUST NOT be used across" networks, RFC 7556 provisioning domains).
//!
//! A network is described by what a host can see of it without sending
//! anything: the default routes (gateway and interface, per family), the
//! prefixes of the interfaces those routes leave by (IPv6: the global
//! addresses' prefixes, so that a new temporary address is the same
//! network; IPv4: the connected routes), and the DNS servers in use. The
//! canonical text of all that is hashed into a [`NetworkId`] (the history
//! file holds the hash, not the addresses).
//!
//! Linux only: the routes and addresses come from `/proc/thread-self/net/`
//! (`route`, `ipv6_route`, `if_inet6`), which are those of the calling
//! thread's network namespace (`/proc/self/net` would be the process's
//! main thread's, wrong for a thread that entered a namespace, as the lab
//! does). Anything unreadable just leaves that part out of the
//! description; with nothing readable at all the network is
//! [`NetworkId::unknown`]. The parsers are plain functions of the files'
//! text, tested on their own.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::race::history::NetworkId;

/// A network as identified: its key and the text it was derived from (for
/// reports and logs; not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The key history is partitioned by: a hash of `description`, or
    /// [`NetworkId::unknown`] when nothing could be read.
    pub id: NetworkId,
    /// The canonical text the id was hashed from: default routes, interface
    /// prefixes and DNS servers.
    pub description: String,
}

/// A default route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DefaultRoute {
    /// The next hop; `None` for a route without a gateway (e.g. a
    /// point-to-point link).
    pub gateway: Option<IpAddr>,
    /// The interface the route leaves by.
    pub interface: String,
}

/// An interface's prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InterfacePrefix {
    /// The interface the prefix is on.
    pub interface: String,
    /// The network address (host bits zero).
    pub prefix: IpAddr,
    /// The prefix length, in bits.
    pub len: u8,
}

/// Where the routing files of the calling thread's namespace are.
const PROC_NET: &str = "/proc/thread-self/net";

/// Identifies the network of the calling thread's namespace, with
/// `dns_servers` the servers queries go to.
pub fn identify(dns_servers: &[SocketAddr]) -> Network {
    identify_in(Path::new(PROC_NET), dns_servers)
}

/// [`identify`] reading the route files under `dir`.
pub fn identify_in(dir: &Path, dns_servers: &[SocketAddr]) -> Network {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let v4_routes = read("route");
    let v6_routes = read("ipv6_route");
    let v6_addrs = read("if_inet6");
    if v4_routes.is_none() && v6_routes.is_none() && dns_servers.is_empty() {
        return Network {
            id: NetworkId::unknown(),
            description: "unknown (no routing information readable)".into(),
        };
    }
    let v6_default = v6_routes.as_deref().map(ipv6_defaults).unwrap_or_default();
    let v4_default = v4_routes.as_deref().map(ipv4_defaults).unwrap_or_default();
    let v6_ifs: BTreeSet<&str> = v6_default.iter().map(|r| r.interface.as_str()).collect();
    let v4_ifs: BTreeSet<&str> = v4_default.iter().map(|r| r.interface.as_str()).collect();
    let v6_prefixes: Vec<InterfacePrefix> = v6_addrs
        .as_deref()
        .map(ipv6_global_prefixes)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| v6_ifs.contains(p.interface.as_str()))
        .collect();
    let v4_prefixes: Vec<InterfacePrefix> = v4_routes
        .as_deref()
        .map(ipv4_connected)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| v4_ifs.contains(p.interface.as_str()))
        .collect();
    let description = describe(
        &v6_default,
        &v6_prefixes,
        &v4_default,
        &v4_prefixes,
        dns_servers,
    );
    Network {
        id: NetworkId::of(&description),
        description,
    }
}

/// The canonical text of a network: every part sorted, so that the same
/// network always reads the same.
pub fn describe(
    v6_default: &[DefaultRoute],
    v6_prefixes: &[InterfacePrefix],
    v4_default: &[DefaultRoute],
    v4_prefixes: &[InterfacePrefix],
    dns_servers: &[SocketAddr],
) -> String {
    let routes = |routes: &[DefaultRoute]| {
        let set: BTreeSet<String> = routes
            .iter()
            .map(|r| match r.gateway {
                Some(gw) => format!("via {gw} dev {}", r.interface),
                None => format!("dev {}", r.interface),
            })
            .collect();
        if set.is_empty() {
            "none".to_string()
        } else {
            set.into_iter().collect::<Vec<_>>().join(", ")
        }
    };
    let prefixes = |prefixes: &[InterfacePrefix]| {
        let set: BTreeSet<String> = prefixes
            .iter()
            .map(|p| format!("{}/{} dev {}", p.prefix, p.len, p.interface))
            .collect();
        set.into_iter().collect::<Vec<_>>().join(", ")
    };
    let dns: BTreeSet<String> = dns_servers.iter().map(|s| s.to_string()).collect();
    format!(
        "ipv6 default {} [{}]; ipv4 default {} [{}]; dns {}",
        routes(v6_default),
        prefixes(v6_prefixes),
        routes(v4_default),
        prefixes(v4_prefixes),
        dns.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// `/proc/net/route` flags.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
/// `/proc/net/ipv6_route` flag of a reject (unreachable) route.
const RTF_REJECT: u32 = 0x200;

/// An IPv4 address as `/proc/net/route` prints it: the network-order
/// value as a native integer in hex.
fn proc_ipv4(hex: &str) -> Option<Ipv4Addr> {
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(n.to_ne_bytes()))
}

/// The fields of `/proc/net/route`'s data lines: (interface, destination,
/// gateway, flags, mask).
fn ipv4_route_lines(text: &str) -> impl Iterator<Item = (&str, Ipv4Addr, Ipv4Addr, u32, Ipv4Addr)> {
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        let flags = u32::from_str_radix(f[3], 16).ok()?;
        Some((
            f[0],
            proc_ipv4(f[1])?,
            proc_ipv4(f[2])?,
            flags,
            proc_ipv4(f[7])?,
        ))
    })
}

/// The IPv4 default routes of `/proc/net/route`'s text.
pub fn ipv4_defaults(text: &str) -> Vec<DefaultRoute> {
    ipv4_route_lines(text)
        .filter(|(_, dest, _, flags, mask)| {
            dest.is_unspecified() && mask.is_unspecified() && flags & RTF_UP != 0
        })
        .map(|(iface, _, gw, flags, _)| DefaultRoute {
            gateway: (flags & RTF_GATEWAY != 0).then_some(IpAddr::V4(gw)),
            interface: iface.to_string(),
        })
        .collect()
}

/// The connected (gateway-less, non-default) IPv4 routes of
/// `/proc/net/route`'s text: the interfaces' subnets.
pub fn ipv4_connected(text: &str) -> Vec<InterfacePrefix> {
    ipv4_route_lines(text)
        .filter(|(_, dest, _, flags, mask)| {
            flags & RTF_UP != 0
                && flags & RTF_GATEWAY == 0
                && !(dest.is_unspecified() && mask.is_unspecified())
        })
        .map(|(iface, dest, _, _, mask)| InterfacePrefix {
            interface: iface.to_string(),
            prefix: IpAddr::V4(dest),
            len: u32::from(mask).count_ones() as u8,
        })
        .collect()
}

fn proc_ipv6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
}

/// The IPv6 default routes of `/proc/net/ipv6_route`'s text (reject routes
/// and routes over loopback are not ways out).
pub fn ipv6_defaults(text: &str) -> Vec<DefaultRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let dest = proc_ipv6(f[0])?;
            let len = u8::from_str_radix(f[1], 16).ok()?;
            let next_hop = proc_ipv6(f[4])?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            let usable = dest.is_unspecified()
                && len == 0
                && flags & RTF_UP != 0
                && flags & RTF_REJECT == 0
                && f[9] != "lo";
            usable.then(|| DefaultRoute {
                gateway: (!next_hop.is_unspecified()).then_some(IpAddr::V6(next_hop)),
                interface: f[9].to_string(),
            })
        })
        .collect()
}

/// The prefixes of the global-scope IPv6 addresses of
/// `/proc/net/if_inet6`'s text (address masked to its prefix length).
pub fn ipv6_global_prefixes(text: &str) -> Vec<InterfacePrefix> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let addr = proc_ipv6(f[0])?;
            let len = u8::from_str_radix(f[2], 16).ok()?.min(128);
            let scope = u8::from_str_radix(f[3], 16).ok()?;
            if scope != 0 {
                return None;
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            Some(InterfacePrefix {
                interface: f[5].to_string(),
                prefix: IpAddr::V6(Ipv6Addr::from(u128::from(addr) & mask)),
                len,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // As the lab's client namespace shows them (little-endian machine).
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    const IPV6_ROUTE: &str = "\
20010db800c100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db800c100000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
    const IF_INET6: &str = "\
20010db800c100000000000000000010 02 40 00 80     eth0\n\
fe80000000000000a8bbccfffe001122 02 40 20 80     eth0\n\
00000000000000000000000000000001 01 80 10 80       lo\n";

    #[test]
    fn routes_and_prefixes_are_read_from_proc_text() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                ipv4_defaults(ROUTE),
                vec![DefaultRoute {
                    gateway: Some("192.0.2.1".parse().unwrap()),
                    interface: "eth0".into()
                }]
            );
            assert_eq!(
                ipv4_connected(ROUTE),
                vec![InterfacePrefix {
                    interface: "eth0".into(),
                    prefix: "192.0.2.0".parse().unwrap(),
                    len: 24
                }]
            );
        }
        assert_eq!(
            ipv6_defaults(IPV6_ROUTE),
            vec![DefaultRoute {
                gateway: Some("2001:db8:c1::1".parse().unwrap()),
                interface: "eth0".into()
            }],
            "the unreachable default over lo is no way out"
        );
        assert_eq!(
            ipv6_global_prefixes(IF_INET6),
            vec![InterfacePrefix {
                interface: "eth0".into(),
                prefix: "2001:db8:c1::".parse().unwrap(),
                len: 64
            }],
            "link-local and loopback are not the network's prefixes"
        );
        // Garbage lines are skipped, never a panic.
        assert!(ipv4_defaults("Iface\nx y z\n\u{0}").is_empty());
        assert!(ipv6_defaults("zz 00 zz").is_empty());
        assert!(ipv6_global_prefixes("20010db8 02 ff 00 80 eth0").is_empty());
    }

    /// A directory with the three files, removed when dropped.
    struct ProcDir(std::path::PathBuf);

    impl ProcDir {
        fn new(route: &str, ipv6_route: &str, if_inet6: &str) -> ProcDir {
            let dir = std::env::temp_dir().join(format!(
                "siprace-network-{}-{:x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("route"), route).unwrap();
            std::fs::write(dir.join("ipv6_route"), ipv6_route).unwrap();
            std::fs::write(dir.join("if_inet6"), if_inet6).unwrap();
            ProcDir(dir)
        }
    }

    impl Drop for ProcDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_network_is_its_routes_prefixes_and_dns_servers() {
        let dns: Vec<SocketAddr> = vec!["[2001:db8:d5::53]:53".parse().unwrap()];
        let home = ProcDir::new(ROUTE, IPV6_ROUTE, IF_INET6);
        let a = identify_in(&home.0, &dns);
        assert!(
            a.description.starts_with(
                "ipv6 default via 2001:db8:c1::1 dev eth0 [2001:db8:c1::/64 dev eth0]"
            ),
            "{}",
            a.description
        );
        assert!(a.description.ends_with("dns [2001:db8:d5::53]:53"));
        // The same network read again, with a new temporary address in the
        // same prefix: the same id.
        let temp_addr =
            format!("20010db800c1000000000000000000aa 02 40 00 01     eth0\n{IF_INET6}");
        let same = ProcDir::new(ROUTE, IPV6_ROUTE, &temp_addr);
        assert_eq!(identify_in(&same.0, &dns).id, a.id);
        // Another uplink (prefix and gateway), or other DNS servers: another network.
        let moved = ProcDir::new(
            ROUTE,
            &IPV6_ROUTE.replace("00c1", "00c2"),
            &IF_INET6.replace("00c1", "00c2"),
        );
        assert_ne!(identify_in(&moved.0, &dns).id, a.id);
        let other_dns = vec!["203.0.113.53:53".parse().unwrap()];
        assert_ne!(identify_in(&home.0, &other_dns).id, a.id);
        // Nothing readable: the unknown network.
        let nowhere = std::env::temp_dir().join("siprace-network-does-not-exist");
        assert_eq!(identify_in(&nowhere, &[]).id, NetworkId::unknown());
    }

    #[test]
    fn this_threads_namespace_is_readable() {
        // Whatever the machine's network, identifying it works and is stable.
        let first = identify(&[]);
        assert_eq!(identify(&[]), first);
        assert_ne!(first.id, NetworkId::unknown(), "{}", first.description);
    }
}
