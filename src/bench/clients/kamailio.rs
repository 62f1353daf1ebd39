//! Kamailio acting as a client: a forwarding proxy in the client namespace,
//! a real proxy-to-proxy hop. SIPp sends one OPTIONS to it on loopback
//! (`127.0.0.1:5070`, not on the captured link); Kamailio relays it with
//! `$du = sip:<domain>;transport=T` (tm's `t_relay`), so what the capture
//! shows is Kamailio's own server location (SRV, then A before AAAA as its
//! `dns_try_ipv6` does, DNS failover through its DNS cache) and its
//! connection attempts. Kamailio is started before every dial and stopped
//! after it, so no DNS cache entry, blocklist entry or TCP connection of an
//! earlier dial is reused: each dial is a cold start, as for the other
//! clients.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{sipp, write_file, Invocation};
use crate::endpoint::Transport;
use crate::lab::sys;
use crate::lab::topology::{Lab, Role};

/// Where Kamailio listens on loopback for the request it relays.
const LOOPBACK_PORT: u16 = 5070;
/// Bound on Kamailio's start (its sockets bound): a few hundred ms when idle.
const START: Duration = Duration::from_secs(15);

/// A process run in the client namespace around each dial.
pub(super) struct BackgroundSpec {
    program: String,
    args: Vec<String>,
    dir: PathBuf,
    /// It is ready once this UDP port on 127.0.0.1 is taken.
    ready_udp_port: u16,
}

/// A running background process; stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Background(Child);

impl BackgroundSpec {
    /// Starts it in the client namespace and waits until it has bound its
    /// loopback port (bounded by [`START`]).
    pub(super) fn start(&self, lab: &Lab) -> Result<Background, String> {
        let log = std::fs::File::create(self.dir.join("background.log"))
            .map_err(|e| format!("background log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("background log: {e}"))?;
        let child = lab
            .command(Role::Client, &self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program))?;
        let bg = Background(child);
        let pid = bg.0.id();
        let port = self.ready_udp_port;
        let until = Instant::now() + START;
        let mut ready = false;
        // Bounded by START; each round waits 10 ms. Read, not probed by
        // binding the port (which would race with its own bind).
        while Instant::now() < until && sys::alive(pid) {
            let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
            if udp_bound(&table, Ipv4Addr::LOCALHOST, port) {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if ready {
            Ok(bg)
        } else {
            let text = std::fs::read_to_string(self.dir.join("background.log")).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            Err(format!(
                "{} did not bind 127.0.0.1:{port} within {} s: {}",
                self.program,
                START.as_secs(),
                tail.join(" | ")
            ))
        }
    }
}

/// Whether a `/proc/net/udp` table lists a socket bound to `ip:port`
/// (addresses are shown as little-endian hex, ports as big-endian hex).
fn udp_bound(table: &str, ip: Ipv4Addr, port: u16) -> bool {
    let want = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

impl Drop for Background {
    fn drop(&mut self) {
        // Kamailio's main process stops its children on SIGTERM.
        sys::kill_all(&[self.0.id()], Duration::from_secs(3));
        let _ = self.0.try_wait();
    }
}

/// The configuration: listen on loopback (for SIPp) and on the client's
/// addresses (to relay), relay everything from loopback to the domain.
fn config(lab: &Lab, transport: Transport, domain: &str) -> String {
    let (v6, v4) = (lab.addrs.client_v6, lab.addrs.client_v4);
    format!(
        "#!KAMAILIO\n\
         debug=1\nlog_stderror=yes\nfork=yes\nchildren=1\ntcp_children=1\n\
         auto_aliases=no\ndns=no\nrev_dns=no\n\
         # Choose the outgoing socket by the route (else it sends from loopback).\n\
         mhomed=1\n\
         # Kamailio's defaults for server location, stated: DNS cache with failover to the next address.\n\
         use_dns_cache=on\nuse_dns_failover=on\ndns_try_ipv6=yes\n\
         listen=udp:127.0.0.1:{LOOPBACK_PORT}\n\
         listen=udp:[{v6}]:{LOOPBACK_PORT}\nlisten=udp:{v4}:{LOOPBACK_PORT}\n\
         listen=tcp:[{v6}]:{LOOPBACK_PORT}\nlisten=tcp:{v4}:{LOOPBACK_PORT}\n\
         loadmodule \"pv.so\"\nloadmodule \"sl.so\"\nloadmodule \"tm.so\"\n\
         request_route {{\n\
         \x20   if ($si == \"127.0.0.1\") {{\n\
         \x20       $du = \"sip:{domain};transport={transport}\";\n\
         \x20       t_relay();\n\
         \x20       exit;\n\
         \x20   }}\n\
         \x20   sl_send_reply(\"403\", \"Forbidden\");\n\
         }}\n"
    )
}

/// SIPp's command line (the request Kamailio relays) with Kamailio as the
/// background process; its files are written into `dir`.
pub(super) fn invocation(
    lab: &Lab,
    transport: Transport,
    domain: &str,
    self_bound: String,
    dir: &Path,
) -> Result<Invocation, String> {
    let cfg = write_file(dir, "kamailio.cfg", &config(lab, transport, domain))?;
    // The request goes to Kamailio over UDP on loopback whatever the
    // relayed transport: only Kamailio's own hop is on the captured link.
    let mut inv = sipp::options_invocation(
        dir,
        "u1",
        Some("127.0.0.1"),
        self_bound,
        &format!("127.0.0.1:{LOOPBACK_PORT}"),
    )?;
    inv.background = Some(BackgroundSpec {
        program: "kamailio".into(),
        args: vec![
            "-DD".into(),
            "-E".into(),
            "-f".into(),
            cfg.display().to_string(),
            "-Y".into(),
            dir.display().to_string(),
        ],
        dir: dir.to_path_buf(),
        ready_udp_port: LOOPBACK_PORT,
    });
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bound_udp_socket_off_proc_net_udp() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 123: 0100007F:13CE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n";
        assert!(udp_bound(table, Ipv4Addr::LOCALHOST, 5070));
        assert!(!udp_bound(table, Ipv4Addr::LOCALHOST, 5071));
        assert!(!udp_bound(table, Ipv4Addr::new(192, 0, 2, 10), 5070));
    }
}
