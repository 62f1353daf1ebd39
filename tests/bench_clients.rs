//! Third-party SIP clients (SIPp as UAC, sipsak, baresip) in the lab, timed
//! from a tshark capture in the client namespace (`siprace::bench::clients`).
//!
//! Needs root, `ip`, `nft`, `sysctl` and `tshark`; each client is skipped
//! when its program is missing (scripts/test.sh installs sip-tester, sipsak,
//! baresip and tshark). Without root or a lab tool the test prints
//! `SKIPPED: ...` and passes. The lab is torn down by a guard, also on failure.
//!
//! Asserted: healthy dials succeed with a positive latency; with IPv6
//! blackholed, SIPp (which takes getaddrinfo's first result, IPv6) fails at
//! the bound. What sipsak and baresip do then is printed, not asserted.
#![cfg(feature = "tools")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use siprace::bench::clients::{self, Client};
use siprace::bench::records::DialRecord;
use siprace::lab::servers::{self, DnsOpts, ServerOpts};
use siprace::lab::{self, Fault, LabConfig, ShaperLaunch};
use siprace::{Family, Transport};

const DOMAIN: &str = "example.test";
const BOUND: Duration = Duration::from_secs(3);
const DIALS: usize = 2;

fn skip() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("sysctl", "procps"),
        ("tshark", "tshark"),
    ]
    .iter()
    .find(|(t, _)| lab::sys::which(t).is_none())
    .map(|(t, p)| format!("`{t}` ({p}) missing"))
}

/// Tears the lab down when dropped, also when the test panics.
struct Guard(String);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0) {
            eprintln!("down {}: {e}", self.0);
        }
    }
}

/// Removes a file when dropped.
struct FileGuard(PathBuf);
impl Drop for FileGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The benchmark's zone shape (NAPTR → SRV → one target with AAAA and A, server #1).
fn zone(l: &lab::Lab) -> String {
    let a = &l.addrs;
    format!(
        "$ORIGIN {DOMAIN}.\n$TTL 0\n@ IN SOA ns.{DOMAIN}. admin.{DOMAIN}. 1 60 60 60 0\n\
         @ IN NS ns.{DOMAIN}.\nns IN AAAA {}\nns IN A {}\n\
         sip1 IN AAAA {}\nsip1 IN A {}\n\
         @ IN NAPTR 10 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.{DOMAIN}.\n\
         @ IN NAPTR 20 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.{DOMAIN}.\n\
         _sip._udp IN SRV 10 10 5060 sip1.{DOMAIN}.\n\
         _sip._tcp IN SRV 10 10 5060 sip1.{DOMAIN}.\n",
        a.dns_v6, a.dns_v4, a.servers_v6[0], a.servers_v4[0]
    )
}

fn show(what: &str, client: Client, t: Transport, recs: &[DialRecord], wall: Duration) {
    for (i, r) in recs.iter().enumerate() {
        println!(
            "{what:<16} {:<9} {t}  dial {i}: ok={} latency={:.3} ms family={} attempts={} dns_ms={:?}{}",
            client.label(),
            r.ok,
            r.latency_us as f64 / 1e3,
            r.family.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
            r.attempts,
            r.dns_ms,
            r.error
                .as_ref()
                .map(|e| format!(" error={e}"))
                .unwrap_or_default()
        );
    }
    println!(
        "{what:<16} {:<9} {t}  ({} dials in {:.2} s wall)",
        client.label(),
        recs.len(),
        wall.as_secs_f64()
    );
}

#[test]
fn third_party_clients_healthy_and_ipv6_blackholed() {
    if let Some(why) = skip() {
        eprintln!("SKIPPED: bench clients test: {why}");
        return;
    }
    let usable: Vec<Client> = Client::ALL
        .into_iter()
        .filter(|c| match clients::unavailable(*c) {
            Some(why) => {
                eprintln!("SKIPPED: {}: {why}", c.label());
                false
            }
            None => true,
        })
        .collect();
    if usable.is_empty() {
        eprintln!("SKIPPED: bench clients test: no client installed");
        return;
    }

    // The full PID: two test processes alive at once never share a lab.
    let name = format!("cl{}", std::process::id());
    let _ = lab::down(&name); // leftovers of an earlier crashed run
    let cfg = LabConfig {
        name: name.clone(),
        shaper: ShaperLaunch::Disabled, // a blackhole is nftables only
    };
    let l = lab::up(&cfg).expect("lab up");
    let _guard = Guard(name.clone());

    let zone_path = std::env::temp_dir().join(format!("siprace-{name}.zone"));
    std::fs::write(&zone_path, zone(&l)).expect("zone file");
    let _zone_guard = FileGuard(zone_path.clone());
    let opts = ServerOpts {
        dns: Some(DnsOpts {
            zone: Some(zone_path.clone()),
            ..DnsOpts::default()
        }),
        responder: true,
        siprace_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_siprace"))),
        ..ServerOpts::default()
    };
    servers::start_servers(&l, &opts).expect("lab dns and responder");
    println!("timing: {}", clients::TIMING_SOURCE);

    // Healthy: every dial answered.
    for &c in &usable {
        println!("{}: {}", c.label(), c.resolution());
        for &t in c.transports() {
            let t0 = Instant::now();
            let recs = clients::run(&l, c, t, DOMAIN, DIALS, BOUND)
                .unwrap_or_else(|e| panic!("{} {t}: {e}", c.label()));
            show("healthy", c, t, &recs, t0.elapsed());
            assert_eq!(recs.len(), DIALS);
            for r in &recs {
                assert!(r.ok, "{} {t} healthy dial failed: {:?}", c.label(), r.error);
                assert!(r.latency_us > 0);
                assert!(r.latency_us <= BOUND.as_micros() as u64);
                assert!(r.family.is_some());
                assert!(r.attempts >= 1);
            }
            if c == Client::Sipsak {
                // sipsak is IPv4-only.
                assert!(recs.iter().all(|r| r.family == Some(Family::V4)));
            }
            if c == Client::SippUac {
                // getaddrinfo puts IPv6 first (RFC 6724) and SIPp takes the first.
                assert!(recs.iter().all(|r| r.family == Some(Family::V6)));
            }
        }
    }

    // IPv6 to the servers blackholed.
    lab::impair(&name, Some(Family::V6), None, Fault::Blackhole).expect("blackhole v6");
    for &c in &usable {
        for &t in c.transports() {
            let t0 = Instant::now();
            let recs = clients::run(&l, c, t, DOMAIN, DIALS, BOUND)
                .unwrap_or_else(|e| panic!("{} {t}: {e}", c.label()));
            let wall = t0.elapsed();
            show("ipv6-blackholed", c, t, &recs, wall);
            assert_eq!(recs.len(), DIALS);
            if c == Client::SippUac {
                for r in &recs {
                    assert!(!r.ok, "SIPp {t} got an answer with IPv6 blackholed");
                    assert_eq!(r.latency_us, BOUND.as_micros() as u64);
                    let e = r.error.as_deref().unwrap_or("");
                    assert!(e.contains("no response within 3 s"), "{e}");
                }
                // Bounded (no dial waits for SIPp's own end): each dial ends at the
                // bound; on top come the capture's start-up and a marker sync per
                // dial, each bounded in clients.rs (15 s), and the SRV lookup
                // (3 s). The slack is for those on a loaded machine, not speed.
                assert!(
                    wall < BOUND * DIALS as u32 + Duration::from_secs(60),
                    "SIPp {t} took {wall:?}"
                );
            }
        }
    }
}
