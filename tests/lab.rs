//! Lab tests: need root, `ip` and `nft`; otherwise each test prints why it is skipped.
//! They build real labs (namespaces `sr-t<...>-*`) and always tear them down.
#![cfg(feature = "tools")]

use std::ffi::OsString;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siprace::lab::{self, Direction, Fault, Lab, LabConfig, Role, ShaperLaunch};
use siprace::Family;

const PORT: u16 = 5060;

/// The shaper of the labs built by these tests runs in a child process: this test
/// binary, filtered to this (ignored) test, with SIPRACE_LAB_NAME set by the lab.
#[test]
#[ignore = "entry point of the shaper child process, started by the other tests"]
fn shaper_host() {
    if std::env::var_os("SIPRACE_LAB_NAME").is_none() {
        return;
    }
    if let Err(e) = lab::shaper::run_from_env(None) {
        eprintln!("shaper: {e}");
        std::process::exit(1);
    }
}

fn skip() -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root")
    } else if lab::sys::which("ip").is_none() {
        Some("`ip` (iproute2) missing")
    } else if lab::sys::which("nft").is_none() {
        Some("`nft` (nftables) missing")
    } else if lab::sys::which("sysctl").is_none() {
        Some("`sysctl` (procps) missing")
    } else {
        None
    };
    if let Some(r) = reason {
        eprintln!("SKIPPED: lab test needs root, ip, nft and sysctl: {r}");
        true
    } else {
        false
    }
}

fn config(name: &str) -> LabConfig {
    LabConfig {
        name: name.to_string(),
        shaper: ShaperLaunch::Command {
            program: std::env::current_exe().unwrap(),
            args: [
                "shaper_host",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]
            .map(OsString::from)
            .to_vec(),
        },
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

/// A lab name of this process's own: the full PID, so that two test processes alive
/// at once (other checkouts' `cargo test`, CI) never share a lab, and the `down` of
/// leftovers in [`start`] only ever removes a crashed run's lab.
fn unique(base: &str) -> String {
    format!("t{base}{}", std::process::id())
}

fn start(base: &str) -> (Lab, Guard) {
    let name = unique(base);
    let _ = lab::down(&name); // leftovers of an earlier crashed run
    let lab = lab::up(&config(&name)).expect("lab up");
    (lab, Guard(name))
}

fn assert_gone(name: &str) {
    for r in Role::ALL {
        let ns = lab::topology::ns_name(name, r);
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "namespace {ns} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(&ns).exists(),
            "/etc/netns/{ns} left behind"
        );
    }
    assert!(
        !lab::topology::state_dir(name).exists(),
        "state dir left behind"
    );
}

/// UDP echo on every server address (one socket each, so replies come from the
/// address asked) and a listening TCP socket on each. Stops when `stop` is set.
fn servers(lab: &Lab, stop: Arc<AtomicBool>) -> Vec<TcpListener> {
    let addrs = lab.addrs.servers();
    let (udps, tcps) = lab
        .in_ns(Role::Server, move || {
            let mut u = Vec::new();
            let mut t = Vec::new();
            for a in addrs {
                let sa = SocketAddr::new(a, PORT);
                u.push(UdpSocket::bind(sa).expect("udp bind"));
                t.push(TcpListener::bind(sa).expect("tcp bind"));
            }
            (u, t)
        })
        .unwrap();
    for s in udps {
        let stop = stop.clone();
        std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
    }
    tcps
}

fn client_udp(lab: &Lab, to: IpAddr) -> UdpSocket {
    lab.in_ns(Role::Client, move || {
        let bind: SocketAddr = if to.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).unwrap();
        s.connect(SocketAddr::new(to, PORT)).unwrap();
        s
    })
    .unwrap()
}

/// One UDP round trip; the RTT, or the error (`TimedOut`, `ConnectionRefused`).
/// Echoes of other sequence numbers (late ones of earlier probes) are skipped.
fn udp_rtt(s: &UdpSocket, seq: u32, timeout: Duration) -> Result<Duration, std::io::Error> {
    let t = Instant::now();
    let deadline = t + timeout;
    s.send(&seq.to_be_bytes())?;
    let mut buf = [0u8; 64];
    // Bounded by the deadline: read_with_deadline gives TimedOut once it has passed.
    loop {
        let n = lab::sys::read_with_deadline(s, deadline, |s| s.recv(&mut buf))?;
        if n == 4 && buf[..4] == seq.to_be_bytes() {
            return Ok(t.elapsed());
        }
    }
}

fn tcp_connect(lab: &Lab, to: IpAddr, timeout: Duration) -> (Result<(), std::io::Error>, Duration) {
    lab.in_ns(Role::Client, move || {
        let t = Instant::now();
        let r = TcpStream::connect_timeout(&SocketAddr::new(to, PORT), timeout).map(|_| ());
        (r, t.elapsed())
    })
    .unwrap()
}

fn s6(i: usize) -> IpAddr {
    IpAddr::V6(lab::LabAddrs::standard().servers_v6[i])
}
fn s4(i: usize) -> IpAddr {
    IpAddr::V4(lab::LabAddrs::standard().servers_v4[i])
}

/// After `impair()` returned: the shaper has acknowledged the current config.
fn assert_applied(lab: &Lab) {
    let cfg = lab::impair::read_shaper_config(&lab.name).expect("shaper.json");
    let ack = lab::impair::read_shaper_ack(&lab.name).expect("shaper.applied");
    assert!(
        ack.generation >= cfg.generation && ack.error.is_none(),
        "config {cfg:?}, ack {ack:?}"
    );
    assert_eq!(ack.rules, cfg.rules.len(), "{ack:?}");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rtts(lab: &Lab, to: IpAddr, n: u32) -> Vec<Duration> {
    let s = client_udp(lab, to);
    (0..n)
        .map(|i| udp_rtt(&s, i, Duration::from_secs(2)).expect("echo"))
        .collect()
}

#[test]
fn up_down_leaves_nothing() {
    if skip() {
        return;
    }
    let name = unique("ud");
    let _ = lab::down(&name);
    let t = Instant::now();
    let l = lab::up(&config(&name)).expect("up");
    let t_up = t.elapsed();
    let guard = Guard(name.clone());
    // refuses to clobber
    assert!(matches!(
        lab::up(&config(&name)),
        Err(lab::LabError::Exists(_))
    ));
    let st = lab::status(&name).unwrap();
    assert!(st.up && st.shaper_alive, "{st:?}");
    // both families reach every server address
    let stop = Arc::new(AtomicBool::new(false));
    let _tcp = servers(&l, stop.clone());
    for to in lab::LabAddrs::standard().servers() {
        let r = rtts(&l, to, 1);
        eprintln!("MEASURED unimpaired RTT to {to}: {:?}", r[0]);
    }
    stop.store(true, Ordering::Relaxed);
    let t2 = Instant::now();
    lab::down(&name).expect("down");
    let t_down = t2.elapsed();
    drop(guard);
    assert_gone(&name);
    assert!(lab::down(&name).unwrap().is_empty(), "down is idempotent");
    eprintln!(
        "MEASURED up {t_up:?}, down {t_down:?}, total {:?}",
        t_up + t_down
    );
    // How long up and down take is printed, not asserted: it is the time of ~70 `ip`
    // and `sysctl` processes, ~0.2 s on an idle 2-core machine and several times that
    // on a loaded one, so a bound would test the machine, not the lab.
}

#[test]
fn down_after_sigkill() {
    if skip() {
        return;
    }
    let (l, guard) = start("kill");
    let sleeper = lab::spawn_in(
        &l.name,
        Role::Server,
        "sleeper",
        Path::new("/bin/sleep"),
        &[OsString::from("300")],
    )
    .unwrap();
    let shaper = l.shaper_pid.unwrap();
    for p in [shaper, sleeper] {
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    // Not our children (reparented to init): poll /proc until both are gone (bounded:
    // 2000 × 5 ms, generous for a loaded machine; it ends as soon as they are gone).
    let gone = lab::sys::poll(2000, Duration::from_millis(5), || {
        (!lab::sys::alive(shaper) && !lab::sys::alive(sleeper)).then_some(())
    });
    assert!(gone.is_some(), "SIGKILLed shaper/sleeper still alive");
    let st = lab::status(&l.name).unwrap();
    assert!(!st.shaper_alive);
    // a delay needs the shaper: refused, naming it
    let e = lab::impair(
        &l.name,
        Some(Family::V6),
        None,
        Fault::Delay {
            ms: 10,
            jitter_ms: 0,
            direction: Direction::ToServer,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("shaper"), "{e}");
    // the wait for the shaper's acknowledgement: a dead shaper is named at once ...
    let e = lab::impair::wait_shaper_applied(&l.name, Some(shaper), u64::MAX)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not running"), "{e}");
    // ... a live process that never acknowledges after the bounded wait (3 s)
    let t = Instant::now();
    let e = lab::impair::wait_shaper_applied(&l.name, Some(std::process::id()), u64::MAX)
        .unwrap_err()
        .to_string();
    eprintln!(
        "MEASURED no acknowledgement reported after {:?}: {e}",
        t.elapsed()
    );
    assert!(e.contains("did not apply"), "{e}");
    assert!(t.elapsed() >= lab::impair::ACK_POLL * (lab::impair::ACK_TRIES - 1));
    // a process that outlived its starter, not recorded anywhere: down finds it by namespace
    let mut stray = l.command(Role::Client, "sleep").arg("300").spawn().unwrap();
    // `ip netns exec` enters the namespace, then execs sleep (same pid): wait until it is in there.
    let ns = l.ns(Role::Client);
    let inside = lab::sys::poll(2000, Duration::from_millis(5), || {
        lab::sys::netns_pids(&ns)
            .contains(&stray.id())
            .then_some(())
    });
    assert!(inside.is_some(), "stray sleep never appeared in {ns}");
    lab::down(&l.name).expect("down");
    assert_gone(&l.name);
    let waited = stray.wait().unwrap();
    assert!(!waited.success(), "stray process was killed");
    assert!(!lab::sys::alive(sleeper));
    drop(guard);
}

#[test]
fn blackhole_v6_only() {
    if skip() {
        return;
    }
    let (l, _guard) = start("bh");
    let stop = Arc::new(AtomicBool::new(false));
    let _tcp = servers(&l, stop.clone());
    lab::impair(&l.name, Some(Family::V6), None, Fault::Blackhole).unwrap();
    let u6 = client_udp(&l, s6(0));
    let e = udp_rtt(&u6, 1, Duration::from_millis(500)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    let (r, took) = tcp_connect(&l, s6(0), Duration::from_millis(700));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
    eprintln!("MEASURED blackhole v6: tcp connect gave up after {took:?}");
    // v4 unaffected
    let u4 = client_udp(&l, s4(0));
    udp_rtt(&u4, 1, Duration::from_secs(2)).unwrap();
    tcp_connect(&l, s4(0), Duration::from_secs(2)).0.unwrap();
    // clear restores v6 (in force when impair returns)
    lab::impair(&l.name, Some(Family::V6), None, Fault::Clear).unwrap();
    udp_rtt(&u6, 2, Duration::from_secs(2)).unwrap();
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn reject_and_per_server() {
    if skip() {
        return;
    }
    let (l, _guard) = start("rj");
    let stop = Arc::new(AtomicBool::new(false));
    let _tcp = servers(&l, stop.clone());
    // reject only the first v6 server address
    lab::impair(&l.name, Some(Family::V6), Some(s6(0)), Fault::Reject).unwrap();
    // refused (RST), not timed out: the error kind tells, no wall-clock bound needed
    let (r, took) = tcp_connect(&l, s6(0), Duration::from_secs(2));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    let u = client_udp(&l, s6(0));
    let e = udp_rtt(&u, 1, Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e:?}");
    eprintln!("MEASURED reject v6: tcp refused after {took:?}");
    // the second v6 address and v4 still work
    tcp_connect(&l, s6(1), Duration::from_secs(2)).0.unwrap();
    tcp_connect(&l, s4(0), Duration::from_secs(2)).0.unwrap();
    // family-wide reject on v4
    lab::impair(&l.name, Some(Family::V4), None, Fault::Reject).unwrap();
    let (r, _) = tcp_connect(&l, s4(2), Duration::from_secs(2));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    let u4 = client_udp(&l, s4(1));
    assert_eq!(
        udp_rtt(&u4, 1, Duration::from_secs(1)).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    lab::impair(&l.name, None, None, Fault::Clear).unwrap();
    tcp_connect(&l, s6(0), Duration::from_secs(2)).0.unwrap();
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn delay_v6_200ms() {
    if skip() {
        return;
    }
    let (l, _guard) = start("dl");
    let stop = Arc::new(AtomicBool::new(false));
    let _tcp = servers(&l, stop.clone());
    let base6 = median(rtts(&l, s6(0), 10));
    let base4 = median(rtts(&l, s4(0), 10));
    let t = Instant::now();
    lab::impair(
        &l.name,
        Some(Family::V6),
        None,
        Fault::Delay {
            ms: 200,
            jitter_ms: 0,
            direction: Direction::ToServer,
        },
    )
    .unwrap();
    // No sleep: impair returns once the shaper has acknowledged the config.
    eprintln!(
        "MEASURED impair(delay) returned, acknowledged by the shaper, after {:?}",
        t.elapsed()
    );
    assert_applied(&l);
    let d6 = rtts(&l, s6(0), 10);
    let d4 = rtts(&l, s4(0), 10);
    let (r, tcp6) = tcp_connect(&l, s6(1), Duration::from_secs(2));
    r.unwrap();
    let (min6, min4) = (*d6.iter().min().unwrap(), *d4.iter().min().unwrap());
    eprintln!(
        "MEASURED delay 200ms v6: v6 RTT median {:?} (min {min6:?}, max {:?}), was {base6:?}; v4 RTT median {:?} (min {min4:?}), was {base4:?}; tcp connect v6 {tcp6:?}",
        median(d6.clone()),
        d6.iter().max().unwrap(),
        median(d4.clone()),
    );
    // Every probe, the first one sent right after impair() returned included, is delayed.
    assert!(
        d6.iter().all(|d| *d >= Duration::from_millis(200)),
        "{d6:?}"
    );
    // No upper bound on the machine's speed, only against what a broken shaper does to
    // every probe: a delay applied twice (or both ways) holds each v6 RTT ≥ 400 ms, a
    // delay leaking onto IPv4 holds each v4 RTT ≥ 200 ms. One probe below that proves
    // neither happened; load only adds time, so it never fakes one.
    assert!(
        min6 < Duration::from_millis(400),
        "delay applied twice? {d6:?}"
    );
    assert!(
        min4 < Duration::from_millis(200),
        "the v6 delay leaked onto v4: {d4:?}"
    );
    assert!(tcp6 >= Duration::from_millis(200), "{tcp6:?}");
    // both directions: +400 ms, with jitter within bounds
    lab::impair(
        &l.name,
        Some(Family::V6),
        None,
        Fault::Delay {
            ms: 100,
            jitter_ms: 20,
            direction: Direction::Both,
        },
    )
    .unwrap();
    assert_applied(&l);
    let j = rtts(&l, s6(2), 10);
    eprintln!(
        "MEASURED delay 100±20ms both ways v6: median {:?}, RTTs {j:?}",
        median(j.clone())
    );
    // The lower bound is hard (2·(100-20)); the median of 10 is ≥ 170 ms unless the
    // jitter is broken (P(one RTT < 170 ms) = 1/32; load only adds time). No wall-clock
    // upper bound: a doubled delay would hold every RTT ≥ 2·2·(100-20) = 320 ms, so
    // one RTT below that shows it is not doubled.
    assert!(j.iter().all(|d| *d >= Duration::from_millis(160)), "{j:?}");
    assert!(median(j.clone()) >= Duration::from_millis(170), "{j:?}");
    assert!(
        j.iter().any(|d| *d < Duration::from_millis(320)),
        "delay applied twice? {j:?}"
    );
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn loss_v4_50pct() {
    if skip() {
        return;
    }
    let (l, _guard) = start("ls");
    let stop = Arc::new(AtomicBool::new(false));
    let _tcp = servers(&l, stop.clone());
    lab::impair(
        &l.name,
        Some(Family::V4),
        Some(s4(1)),
        Fault::Loss {
            pct: 50.0,
            direction: Direction::ToServer,
        },
    )
    .unwrap();
    assert_applied(&l);
    // Probes 0..PROBES to `to`, 5 ms apart; how many never came back. No step waits on
    // the clock: a path that must lose nothing is read until every echo is in (the 10 s
    // bound only ends a failing test); on the lossy path fences follow the probes until
    // one is echoed, and since the shaper and the echo server keep the order, every probe
    // that got through has been echoed by then.
    const PROBES: u32 = 200;
    const FENCE: u32 = 1_000_000;
    let count = |to: IpAddr, lossless: bool| -> u32 {
        let s = client_udp(&l, to);
        let mut got = std::collections::HashSet::new();
        let mut buf = [0u8; 64];
        let id = |buf: &[u8]| u32::from_be_bytes(buf[..4].try_into().unwrap());
        s.set_nonblocking(true).unwrap();
        for i in 0..PROBES {
            s.send(&i.to_be_bytes()).unwrap();
            // Pacing, not waiting for anything; then take what is back already, so
            // that the socket's buffer never overflows.
            std::thread::sleep(Duration::from_millis(5));
            loop {
                match s.recv(&mut buf) {
                    Ok(4) => {
                        got.insert(id(&buf));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("echo from {to}: {e}"),
                }
            }
        }
        s.set_nonblocking(false).unwrap();
        if lossless {
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.len() < PROBES as usize {
                match lab::sys::read_with_deadline(&s, deadline, |s| s.recv(&mut buf)) {
                    Ok(4) => {
                        got.insert(id(&buf));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::TimedOut => break,
                    Err(e) => panic!("echo from {to}: {e}"),
                }
            }
        } else {
            // A fence can be lost too: up to 50 of them (all lost: 2^-50), each given
            // 2 s before the next goes (a late echo of an earlier one counts as well).
            let fenced = (FENCE..FENCE + 50).any(|fence| {
                s.send(&fence.to_be_bytes()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    match lab::sys::read_with_deadline(&s, deadline, |s| s.recv(&mut buf)) {
                        Ok(4) if id(&buf) >= FENCE => return true,
                        Ok(4) => {
                            got.insert(id(&buf));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::TimedOut => return false,
                        Err(e) => panic!("echo from {to}: {e}"),
                    }
                }
            });
            assert!(fenced, "no fence came back from {to}");
        }
        PROBES - got.len() as u32
    };
    let lost = count(s4(1), false);
    let lost_other = count(s4(0), true);
    let lost_v6 = count(s6(1), true);
    eprintln!("MEASURED loss 50% on {}: {lost}/200 lost; other v4 address {lost_other}/200; v6 {lost_v6}/200", s4(1));
    assert!((70..=130).contains(&lost), "{lost}/200");
    assert_eq!(lost_other, 0);
    assert_eq!(lost_v6, 0);
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(l.state_dir.join("shaper.stats.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    eprintln!("shaper stats: {st}");
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn refuses_bad_input() {
    if skip() {
        return;
    }
    assert!(matches!(
        lab::up(&LabConfig::new("Bad Name")),
        Err(lab::LabError::InvalidName(_))
    ));
    assert!(matches!(
        lab::impair("tnolab", Some(Family::V6), None, Fault::Blackhole),
        Err(lab::LabError::NotUp(_))
    ));
    let _ = (Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
}
