//! Test beds shared by the integration tests: zones for the lab's DNS
//! server (real hickory-server answering real queries) and the server on
//! loopback, loopback ports that are free right now, and the responder
//! serving one port on both loopback addresses.
//!
//! Each test file uses the part it needs (`mod common;`).
#![allow(dead_code)]

use std::net::SocketAddr;

use siprace::endpoint::Transport;
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::responder::{self, ListenerConfig, ResponderConfig, ResponderHandle};

/// The domain every zone serves.
pub const DOMAIN: &str = "example.test";

/// `sip1.example.test` on both loopback addresses.
pub const SIP1_LOOPBACK: &str = "sip1 IN AAAA ::1\nsip1 IN A 127.0.0.1\n";

/// A zone for [`DOMAIN`]: `body` (records relative to the origin) after
/// the origin, a TTL of 0 (so no answer is ever cached) and the SOA.
pub fn zone(body: &str) -> String {
    format!("$ORIGIN {DOMAIN}.\n$TTL 0\n@ IN SOA ns.{DOMAIN}. admin.{DOMAIN}. 1 60 60 60 0\n{body}")
}

/// A NAPTR record of the domain for `service` (e.g. `SIP+D2T`) with the
/// `s` flag, pointing at `srv` (e.g. `_sip._tcp`) in the domain.
pub fn naptr(order: u16, service: &str, srv: &str) -> String {
    format!("@ IN NAPTR {order} 50 \"s\" \"{service}\" \"\" {srv}.{DOMAIN}.\n")
}

/// An SRV record `srv` (e.g. `_sip._tcp`) giving `port` on `target.<domain>`.
pub fn srv(srv: &str, port: u16, target: &str) -> String {
    format!("{srv} IN SRV 0 10 {port} {target}.{DOMAIN}.\n")
}

/// The lab DNS server serving `config` on 127.0.0.1 (a port of its own).
pub async fn serve(config: DnsServerConfig) -> DnsServer {
    DnsServer::start(config, &["127.0.0.1:0".parse().unwrap()])
        .await
        .expect("the lab DNS server starts")
}

/// The lab DNS server serving `zone(body)` with `faults` (the lab's fault
/// spec, e.g. `"AAAA=delay:300ms"`; `""` for none).
pub async fn serve_zone(body: &str, faults: &str) -> DnsServer {
    serve(DnsServerConfig::parse(&zone(body), faults).expect("the zone parses")).await
}

/// A port free for UDP and TCP on both loopback addresses right now.
pub fn free_port_on_both() -> u16 {
    for _ in 0..50 {
        let probe = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        let ok = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("::1", port)).is_ok();
        if ok {
            return port;
        }
    }
    panic!("no free loopback port");
}

/// Listeners for each of `transports` on `port` of `::1` and of `127.0.0.1`.
pub fn on_both_loopbacks(port: u16, transports: &[Transport]) -> Vec<ListenerConfig> {
    let mut listeners = Vec::new();
    for ip in ["::1", "127.0.0.1"] {
        for &transport in transports {
            listeners.push(ListenerConfig {
                transport,
                addr: SocketAddr::new(ip.parse().unwrap(), port),
                silent: false,
            });
        }
    }
    listeners
}

/// A responder serving `transports` on one port of both loopback addresses
/// (one SRV record names one port for both families), otherwise configured
/// as `config` says (its listeners are replaced). A port found free can be
/// taken by another process before the responder binds it: then another
/// port is tried, 20 at most.
pub async fn responder_on_both(
    transports: &[Transport],
    config: ResponderConfig,
) -> ResponderHandle {
    let mut last = None;
    for _ in 0..20 {
        let port = free_port_on_both();
        let config = ResponderConfig {
            listeners: on_both_loopbacks(port, transports),
            ..config.clone()
        };
        match responder::start(config).await {
            Ok(handle) => return handle,
            Err(e) => last = Some(e),
        }
    }
    panic!("cannot start the responder: {last:?}");
}

/// Waits for `child` (a `siprace` the test spawned with piped output) at
/// most `bound`; past that, kills it by its own PID and panics naming `what`.
pub fn wait_bounded(
    child: std::process::Child,
    bound: std::time::Duration,
    what: &str,
) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            // SAFETY: kill(2) on the PID of a child this test spawned and
            // has not reaped (the waiting thread still holds it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what}: still running after {bound:?}");
        }
    }
}
