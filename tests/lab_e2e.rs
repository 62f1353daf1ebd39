//! End to end in the lab: the lab DNS server (example zone) and three real SIP
//! servers (siprace responder, SIPp, Kamailio), dialled with `siprace dial`
//! from the client namespace while one address family is blackholed.
//!
//! Needs root, `ip`, `nft`, `sipp` (sip-tester) and `kamailio`; without them each
//! test prints `SKIPPED: ...` and passes (scripts/test.sh installs them).
//! Every lab is torn down by a guard, also when a test fails.
//!
//! Timing figures (dial totals, attempt delays, DNS delays) are printed, not
//! asserted; the assertions are structural (who won, what was cancelled) plus
//! generous bounds.
#![cfg(feature = "tools")]

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RecordType;
use siprace::dns::build_resolver;
use siprace::lab::servers::{self, DnsOpts, ServerKind, ServerOpts};
use siprace::lab::{self, Fault, Lab, LabConfig, Role, ShaperLaunch};
use siprace::locate::LocateConfig;
use siprace::Family;

fn siprace_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_siprace"))
}

fn zone_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/zones/example.test.zone")
}

fn skip(sip_servers: bool) -> bool {
    let tools: &[(&str, &str)] = if sip_servers {
        &[
            ("ip", "iproute2"),
            ("nft", "nftables"),
            ("sysctl", "procps"),
            ("sipp", "sip-tester"),
            ("kamailio", "kamailio"),
        ]
    } else {
        &[
            ("ip", "iproute2"),
            ("nft", "nftables"),
            ("sysctl", "procps"),
        ]
    };
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root".to_string())
    } else {
        tools
            .iter()
            .find(|(t, _)| lab::sys::which(t).is_none())
            .map(|(t, p)| format!("`{t}` ({p}) missing"))
    };
    match reason {
        Some(r) => {
            eprintln!("SKIPPED: lab end-to-end test: {r}");
            true
        }
        None => false,
    }
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

fn start(base: &str) -> (Lab, Guard) {
    // The full PID: two test processes alive at once never share a lab (see tests/lab.rs).
    let name = format!("e{base}{}", std::process::id());
    let _ = lab::down(&name); // leftovers of an earlier crashed run
    let cfg = LabConfig {
        name: name.clone(),
        shaper: ShaperLaunch::Disabled, // blackholes are nftables only
    };
    let lab = lab::up(&cfg).expect("lab up");
    (lab, Guard(name))
}

fn assert_gone(name: &str, pids: &[u32]) {
    for r in Role::ALL {
        let ns = lab::topology::ns_name(name, r);
        assert!(!lab::sys::netns_exists(&ns), "{ns} still exists");
    }
    assert!(!lab::topology::state_dir(name).exists(), "state dir left");
    for p in pids {
        assert!(!lab::sys::alive(*p), "process {p} still running after down");
    }
}

fn dns_opts(faults: &str) -> ServerOpts {
    ServerOpts {
        dns: Some(DnsOpts {
            zone: Some(zone_file()),
            faults: faults.to_string(),
            no_srv_additionals: false,
        }),
        siprace_bin: Some(siprace_bin()),
        ..ServerOpts::default()
    }
}

/// Runs `f` with a current-thread runtime on a thread inside the client namespace.
fn in_client<T, F, Fut>(lab: &Lab, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    lab.in_ns(Role::Client, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .expect("in client namespace")
}

/// (records as text, sorted; time to answer)
type Answer = Result<(Vec<String>, Duration), String>;

async fn query(dns: SocketAddr, name: &str, rtype: RecordType) -> Answer {
    let cfg = LocateConfig {
        dns_server: Some(dns),
        ..LocateConfig::default()
    };
    let resolver = build_resolver(&cfg).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let lookup = resolver
        .lookup(name, rtype)
        .await
        .map_err(|e| format!("{name} {rtype}: {e}"))?;
    let took = t.elapsed();
    let mut v: Vec<String> = lookup
        .answers()
        .iter()
        .map(|r| &r.data)
        .filter(|d| d.record_type() == rtype)
        .map(|d| d.to_string())
        .collect();
    v.sort();
    Ok((v, took))
}

#[test]
fn lab_dns_answers_the_zone_and_delays_aaaa() {
    if skip(false) {
        return;
    }
    let (lab, guard) = start("dns");
    let s = servers::start_servers(&lab, &dns_opts("")).expect("lab dns");
    let d = s.dns.as_ref().expect("dns started");
    println!("lab dns ready in {:.1} ms (pid {})", d.ready_ms, d.pid);

    // A second instance, with AAAA delayed 300 ms, on port 5353: through the CLI.
    let faulted_port = 5353;
    let args: Vec<std::ffi::OsString> = [
        "lab".to_string(),
        "dns".into(),
        "--zone".into(),
        zone_file().display().to_string(),
        "--faults".into(),
        "AAAA=delay:300ms".into(),
        "--listen".into(),
        SocketAddr::new(lab.addrs.dns_v6.into(), faulted_port).to_string(),
        "--listen".into(),
        SocketAddr::new(lab.addrs.dns_v4.into(), faulted_port).to_string(),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    let pid2 =
        lab::spawn_in(&lab.name, Role::Dns, "dns-faulted", &siprace_bin(), &args).expect("spawn");
    let faulted = SocketAddr::new(lab.addrs.dns_v6.into(), faulted_port);
    let up = lab
        .in_ns(Role::Client, move || {
            // Bounded poll: until the TCP side accepts (at most 200 tries of ≤ 50 ms).
            (0..200).any(|_| {
                let ok = TcpStream::connect_timeout(&faulted, Duration::from_millis(50)).is_ok();
                if !ok {
                    std::thread::sleep(Duration::from_millis(10));
                }
                ok
            })
        })
        .unwrap();
    assert!(
        up,
        "faulted lab dns did not come up: {}",
        servers::log_tail(&lab.state_dir.join("dns-faulted.log"), 10)
    );

    let dns6 = SocketAddr::new(lab.addrs.dns_v6.into(), 53);
    let dns4 = SocketAddr::new(lab.addrs.dns_v4.into(), 53);
    let results = in_client(&lab, move || async move {
        let mut out = Vec::new();
        for (name, rtype) in [
            ("example.test.", RecordType::NAPTR),
            ("_sip._udp.example.test.", RecordType::SRV),
            ("_sip._tcp.example.test.", RecordType::SRV),
            ("_sips._tcp.example.test.", RecordType::SRV),
            ("sip1.example.test.", RecordType::AAAA),
            ("sip2.example.test.", RecordType::AAAA),
            ("sip3.example.test.", RecordType::A),
            ("responder.example.test.", RecordType::NAPTR),
            ("_sip._udp.responder.example.test.", RecordType::SRV),
            ("_sip._tcp.sipp.example.test.", RecordType::SRV),
            ("kamailio.example.test.", RecordType::AAAA),
            ("kamailio.example.test.", RecordType::A),
        ] {
            out.push((name, rtype, query(dns6, name, rtype).await));
        }
        // Over IPv4 too.
        out.push((
            "sipp.example.test.",
            RecordType::A,
            query(dns4, "sipp.example.test.", RecordType::A).await,
        ));
        out
    });
    let get = |i: usize| -> Vec<String> {
        let (n, t, r) = &results[i];
        let (v, took) = r.as_ref().unwrap_or_else(|e| panic!("{n} {t}: {e}"));
        println!("{n} {t} ({:.1} ms): {v:?}", took.as_secs_f64() * 1e3);
        v.clone()
    };
    let naptr = get(0);
    assert_eq!(naptr.len(), 3, "{naptr:?}");
    for (svc, repl) in [
        ("SIPS+D2T", "_sips._tcp.example.test."),
        ("SIP+D2T", "_sip._tcp.example.test."),
        ("SIP+D2U", "_sip._udp.example.test."),
    ] {
        assert!(
            naptr.iter().any(|r| r.contains(svc) && r.ends_with(repl)),
            "no {svc} → {repl} in {naptr:?}"
        );
    }
    for (i, port) in [(1, 5060), (2, 5060), (3, 5061)] {
        let srv = get(i);
        assert_eq!(
            srv,
            vec![
                format!("10 10 {port} sip1.example.test."),
                format!("20 10 {port} sip2.example.test."),
                format!("30 10 {port} sip3.example.test."),
            ]
        );
    }
    assert_eq!(get(4), vec!["2001:db8:5e::10"]);
    assert_eq!(get(5), vec!["2001:db8:5e::11"]);
    assert_eq!(get(6), vec!["198.51.100.12"]);
    let rn = get(7);
    assert_eq!(rn.len(), 2, "{rn:?}");
    assert!(
        rn.iter().all(|r| r.contains("responder.example.test.")),
        "{rn:?}"
    );
    assert_eq!(get(8), vec!["10 10 5060 responder.example.test."]);
    assert_eq!(get(9), vec!["10 10 5060 sipp.example.test."]);
    assert_eq!(get(10), vec!["2001:db8:5e::12"]);
    assert_eq!(get(11), vec!["198.51.100.12"]);
    assert_eq!(get(12), vec!["198.51.100.11"]);

    // The fault: AAAA delayed by 300 ms, A prompt (same instance, same name).
    let timed = in_client(&lab, move || async move {
        let mut out = Vec::new();
        for _ in 0..3 {
            let a = query(faulted, "sip1.example.test.", RecordType::A).await;
            let aaaa = query(faulted, "sip1.example.test.", RecordType::AAAA).await;
            out.push((a, aaaa));
        }
        out
    });
    let mut a_times = Vec::new();
    for (a, aaaa) in timed {
        let (a, ta) = a.expect("A");
        let (aaaa, t6) = aaaa.expect("AAAA");
        println!(
            "faulted lab dns (AAAA=delay:300ms): A {:.1} ms {a:?}, AAAA {:.1} ms {aaaa:?}",
            ta.as_secs_f64() * 1e3,
            t6.as_secs_f64() * 1e3
        );
        assert_eq!(a, vec!["198.51.100.10"]);
        assert_eq!(aaaa, vec!["2001:db8:5e::10"]);
        assert!(
            t6 >= Duration::from_millis(300),
            "AAAA came after {t6:?}, before the 300 ms delay"
        );
        a_times.push(ta);
    }
    // A leaked fault would hold every A answer ≥ 300 ms; one quick one of three proves
    // it did not leak, without betting each round on the machine's load.
    assert!(
        a_times.iter().any(|t| *t < Duration::from_millis(300)),
        "every A took ≥ 300 ms ({a_times:?}): the AAAA fault leaked onto A"
    );

    let mut pids = s.pids();
    pids.push(pid2);
    let name = lab.name.clone();
    drop(guard);
    assert_gone(&name, &pids);
}

/// `siprace dial --json` in the client namespace; the report as JSON.
fn dial(lab: &Lab, uri: &str, extra: &[&str]) -> serde_json::Value {
    let out = lab
        .command(Role::Client, siprace_bin())
        .arg("dial")
        .arg("--json")
        .args(extra)
        .arg(uri)
        .output()
        .expect("run siprace dial");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "siprace dial {uri}: no JSON ({e}), status {}, stdout {:?}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `siprace dial --attempt-delay` in these tests (the default, given explicitly).
const ATTEMPT_DELAY_MS: u64 = 250;

fn fam(a: &serde_json::Value) -> &str {
    a["family"].as_str().unwrap_or("?")
}

#[test]
fn dial_each_server_with_one_family_blackholed() {
    if skip(true) {
        return;
    }
    let t_up = Instant::now();
    let (lab, guard) = start("dial");
    let up_ms = t_up.elapsed().as_secs_f64() * 1e3;
    let t_serve = Instant::now();
    let opts = ServerOpts {
        dns: Some(DnsOpts {
            zone: Some(zone_file()),
            ..DnsOpts::default()
        }),
        responder: true,
        sipp: true,
        kamailio: true,
        siprace_bin: Some(siprace_bin()),
        ..ServerOpts::default()
    };
    let s = servers::start_servers(&lab, &opts).unwrap_or_else(|e| panic!("servers: {e}"));
    let serve_ms = t_serve.elapsed().as_secs_f64() * 1e3;
    for x in &s.sip {
        println!(
            "{} ready in {:.1} ms on {} / {} (pids {:?})",
            x.kind, x.ready_ms, x.v6, x.v4, x.pids
        );
    }

    let mut summary = Vec::new();
    for (blackholed, winner) in [(Family::V6, Family::V4), (Family::V4, Family::V6)] {
        lab::impair(&lab.name, Some(blackholed), None, Fault::Blackhole).expect("blackhole");
        for kind in ServerKind::ALL {
            for transport in ["udp", "tcp"] {
                let uri = format!("sip:{kind}.example.test;transport={transport}");
                // --probe: over TCP too, a SIP answer (not just a connect) proves the server.
                // The attempt delay is given explicitly: the IPv6 case checks it as a lower bound.
                // --resolution-delay none: the race starts once both address answers are in,
                // so IPv6 always goes first. With the default 50 ms an A answer that a loaded
                // machine handles 50 ms before the AAAA one starts IPv4 first, and the order
                // asserted below would be the scheduler's, not the race's.
                let r = dial(
                    &lab,
                    &uri,
                    &[
                        "--probe",
                        "--attempt-delay",
                        &ATTEMPT_DELAY_MS.to_string(),
                        "--resolution-delay",
                        "none",
                    ],
                );
                let attempts = r["attempts"].as_array().cloned().unwrap_or_default();
                assert_eq!(
                    r["result"], "connected",
                    "{uri} with {blackholed} blackholed: {r:#}"
                );
                let won = attempts
                    .iter()
                    .find(|a| a["outcome"] == "won")
                    .unwrap_or_else(|| panic!("no winner: {r:#}"));
                assert_eq!(fam(won), winner.as_str(), "{uri}: winner family: {r:#}");
                let server = &s.get(kind).unwrap();
                let want_ip: IpAddr = match winner {
                    Family::V6 => server.v6.into(),
                    Family::V4 => server.v4.into(),
                };
                let addr: SocketAddr = won["addr"].as_str().unwrap().parse().unwrap();
                assert_eq!(addr, SocketAddr::new(want_ip, 5060), "{uri}: {r:#}");
                assert_eq!(
                    won["response"]["status"], 200,
                    "{uri}: no 200 from {kind}: {r:#}"
                );
                // Timing is printed, not bounded above (the structure below says who won
                // and that the loser was cancelled, not timed out).
                let total = r["total_ms"].as_f64().unwrap();
                let v6 = attempts.iter().find(|a| fam(a) == "ipv6");
                let line = if blackholed == Family::V6 {
                    let v6 = v6.unwrap_or_else(|| panic!("{uri}: no IPv6 attempt: {r:#}"));
                    assert_eq!(v6["outcome"], "cancelled", "{uri}: {r:#}");
                    assert_eq!(v6["error_class"], "lost-race", "{uri}: {r:#}");
                    let delay =
                        won["started_ms"].as_f64().unwrap() - v6["started_ms"].as_f64().unwrap();
                    // The lower bound the race guarantees: IPv4 starts only after the
                    // attempt delay (timestamps are truncated to µs, hence the 0.01 ms).
                    assert!(
                        delay >= ATTEMPT_DELAY_MS as f64 - 0.01,
                        "{uri}: IPv4 started {delay} ms after IPv6: {r:#}"
                    );
                    let after = total - won["started_ms"].as_f64().unwrap();
                    format!(
                        "v6 blackholed: {kind:<9} {transport}: winner {addr}, total {total:.1} ms, attempt delay {delay:.1} ms, winner start→end {after:.1} ms"
                    )
                } else {
                    // Normally the IPv6 attempt alone; on a loaded machine it may take longer
                    // than the attempt delay, and then an IPv4 attempt starts and must lose.
                    let v6_start = won["started_ms"].as_f64().unwrap();
                    for a in attempts.iter().filter(|a| fam(a) != "ipv6") {
                        assert_ne!(a["outcome"], "won", "{uri}: {r:#}");
                        assert!(
                            a["started_ms"].as_f64().unwrap()
                                >= v6_start + ATTEMPT_DELAY_MS as f64 - 0.01,
                            "{uri}: IPv4 started before the attempt delay: {r:#}"
                        );
                    }
                    format!(
                        "v4 blackholed: {kind:<9} {transport}: winner {addr}, total {total:.1} ms, {} attempt(s)",
                        attempts.len()
                    )
                };
                println!("{line}");
                summary.push(line);
            }
        }
        lab::impair(&lab.name, Some(blackholed), None, Fault::Clear).expect("clear");
    }

    let pids = s.pids();
    let name = lab.name.clone();
    let t_down = Instant::now();
    drop(guard);
    let down_ms = t_down.elapsed().as_secs_f64() * 1e3;
    assert_gone(&name, &pids);
    println!("--- summary");
    for l in summary {
        println!("{l}");
    }
    println!(
        "lab up {up_ms:.0} ms + servers (dns, responder, sipp, kamailio) {serve_ms:.0} ms + down {down_ms:.0} ms = {:.0} ms",
        up_ms + serve_ms + down_ms
    );
}

#[test]
fn a_server_that_cannot_start_is_named_with_its_log() {
    if skip(true) {
        return;
    }
    let (lab, guard) = start("fail");
    // Take Kamailio's UDP port on its IPv6 address first: it cannot bind and exits.
    let taken = SocketAddr::new(
        lab.addrs.servers_v6[ServerKind::Kamailio.index()].into(),
        5060,
    );
    let holder = lab
        .in_ns(Role::Server, move || std::net::UdpSocket::bind(taken))
        .unwrap()
        .expect("bind kamailio's port");
    let opts = ServerOpts {
        kamailio: true,
        ready_timeout: Duration::from_secs(5),
        ..ServerOpts::default()
    };
    let t = Instant::now();
    let err = servers::start_servers(&lab, &opts)
        .expect_err("kamailio cannot bind")
        .to_string();
    println!("failed after {:.0?}: {err}", t.elapsed());
    assert!(
        err.contains("kamailio") && err.contains("did not come up"),
        "{err}"
    );
    assert!(err.contains("kamailio.log"), "no log tail: {err}");
    drop(holder);
    drop(guard);
}
