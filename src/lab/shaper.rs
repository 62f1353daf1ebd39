//! The userspace delay line of the router namespace (this kernel has no netem).
//!
//! nftables marks the impaired packets arriving on a veth; policy routing (`ip rule
//! fwmark` → table 105 → `default dev shp0`) hands them to the persistent TUN
//! `shp0`. This process reads them, drops the configured share, holds the rest for
//! the configured delay and writes them back into the TUN: they re-enter the router
//! on `shp0`, unmarked, and the main table forwards them to the real interface.
//! Faults come from `<state>/shaper.json` ([`ShaperConfig`], with a generation
//! number), re-read as soon as it is replaced (inotify on the state directory, plus a
//! check every [`TICK`] as a fallback); after reading one, the shaper writes
//! `<state>/shaper.applied` ([`ShaperAck`]: the generation it applied), on which
//! [`super::impair::apply`] waits.
//!
//! Bounded: at most [`QUEUE_LIMIT`] packets are held; beyond that new ones are
//! dropped. Packets it cannot parse are dropped and counted, never a panic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::error::LabError;
use super::names::state_dir;
use super::state::{Impairment, ShaperAck, ShaperConfig, SHAPER_APPLIED, SHAPER_CONFIG};
use super::topology::{LabAddrs, TUN_DEV};
use crate::endpoint::Family;

/// Most packets held at once.
pub const QUEUE_LIMIT: usize = 8192;
/// Fallback period of the config check, the stats file and the state-directory check.
pub const TICK: Duration = Duration::from_millis(200);

/// Counters, written to `<state>/shaper.stats.json`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub received: u64,
    pub forwarded: u64,
    pub lost: u64,
    pub queue_full: u64,
    pub unparsable: u64,
    pub write_errors: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    lost: AtomicU64,
    queue_full: AtomicU64,
    unparsable: AtomicU64,
    write_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            received: l(&self.received),
            forwarded: l(&self.forwarded),
            lost: l(&self.lost),
            queue_full: l(&self.queue_full),
            unparsable: l(&self.unparsable),
            write_errors: l(&self.write_errors),
        }
    }
}

/// Opens (attaches to) the existing TUN `dev` of the current namespace, without packet info.
pub fn open_tun(dev: &str) -> std::io::Result<File> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
    if dev.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: path is a valid C string.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: TUNSETIFF takes a pointer to a struct ifreq (40 bytes), which IfReq lays out.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Source and destination of an IP packet, if it looks like one.
pub fn parse(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let s: [u8; 4] = pkt[12..16].try_into().ok()?;
            let d: [u8; 4] = pkt[16..20].try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d))))
        }
        6 if pkt.len() >= 40 => {
            let s: [u8; 16] = pkt[8..24].try_into().ok()?;
            let d: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d))))
        }
        _ => None,
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Drop,
    /// Hold for this long; the key keeps FIFO order among packets of one rule and direction.
    Delay(Duration, (usize, bool)),
}

/// Decides the fate of a packet from `src` to `dst` given the faults (pure but for the dice).
pub fn decide(
    addrs: &LabAddrs,
    rules: &[Impairment],
    src: IpAddr,
    dst: IpAddr,
    rng: &mut impl Rng,
) -> Verdict {
    let family = Family::of(&src);
    let to_server = match family {
        Family::V6 => addrs.client_net_v6.contains(&src),
        Family::V4 => addrs.client_net_v4.contains(&src),
    };
    let peer = if to_server { dst } else { src };
    let idx = rules
        .iter()
        .position(|r| r.family == family && r.server == Some(peer))
        .or_else(|| {
            rules
                .iter()
                .position(|r| r.family == family && r.server.is_none())
        });
    let Some(idx) = idx else {
        return Verdict::Delay(Duration::ZERO, (usize::MAX, to_server));
    };
    let r = &rules[idx];
    if r.loss_pct > 0.0
        && r.loss_direction.covers(to_server)
        && rng.random::<f64>() * 100.0 < r.loss_pct
    {
        return Verdict::Drop;
    }
    let mut ms = 0.0f64;
    if r.delay_direction.covers(to_server) {
        ms = r.delay_ms as f64;
        if r.jitter_ms > 0 {
            let j = r.jitter_ms as f64;
            ms += rng.random_range(-j..=j);
        }
    }
    Verdict::Delay(
        Duration::from_secs_f64(ms.max(0.0) / 1000.0),
        (idx, to_server),
    )
}

struct Held {
    heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
}

/// Runs the shaper of lab `name` (blocking) in the current namespace, which must be
/// the router's. Returns when the lab's state directory disappears.
pub fn run(name: &str) -> Result<(), LabError> {
    let dir = state_dir(name);
    let tun = open_tun(TUN_DEV).map_err(LabError::io(format!("attaching to TUN {TUN_DEV}")))?;
    let tun_w = tun.try_clone().map_err(LabError::io("dup TUN fd"))?;
    std::fs::write(dir.join("shaper.ready"), std::process::id().to_string())
        .map_err(LabError::io("writing shaper.ready"))?;
    eprintln!(
        "shaper {name}: attached to {TUN_DEV}, pid {}",
        std::process::id()
    );

    let counters = Arc::new(Counters::default());
    let held = Arc::new((
        Mutex::new(Held {
            heap: BinaryHeap::new(),
        }),
        Condvar::new(),
    ));
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let (held, counters, stop) = (held.clone(), counters.clone(), stop.clone());
        std::thread::Builder::new()
            .name("shaper-writer".into())
            .spawn(move || writer_loop(tun_w, &held, &counters, &stop))
            .map_err(LabError::io("spawning the writer"))?
    };
    let res = reader_loop(tun, &dir, &held, &counters, &stop);
    stop.store(true, Ordering::Relaxed);
    held.1.notify_all();
    let _ = writer.join();
    res
}

fn writer_loop(
    mut tun: File,
    held: &(Mutex<Held>, Condvar),
    counters: &Counters,
    stop: &AtomicBool,
) {
    let (lock, cv) = held;
    let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match g.heap.peek() {
            None => {
                g = cv
                    .wait_timeout(g, TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some(Reverse((at, _, _))) if *at > now => {
                let wait = (*at - now).min(TICK);
                g = cv
                    .wait_timeout(g, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some(_) => {
                let Reverse((_, _, pkt)) = g.heap.pop().expect("peeked");
                drop(g);
                match tun.write(&pkt) {
                    // one write is one packet on a TUN: a short write is an error
                    Ok(n) if n == pkt.len() => counters.forwarded.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => counters.write_errors.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.write_errors.fetch_add(1, Ordering::Relaxed),
                };
                g = lock.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// An inotify descriptor watching `dir` for files written or moved in (non-blocking).
/// `None` if inotify is unavailable: the shaper then checks its config every [`TICK`].
fn watch_dir(dir: &Path) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: plain syscall, no pointers.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        eprintln!(
            "shaper: inotify unavailable ({}), checking the config every {TICK:?}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: valid fd and NUL-terminated path.
    let wd = unsafe {
        libc::inotify_add_watch(
            file.as_raw_fd(),
            cdir.as_ptr(),
            libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE,
        )
    };
    if wd < 0 {
        eprintln!(
            "shaper: cannot watch {} ({}), checking the config every {TICK:?}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        return None;
    }
    Some(file)
}

/// Reads `shaper.json` if its content changed since `last`; then returns the new rules
/// (`None` if it is unusable: keep the old ones) and the acknowledgement to write.
fn reload(
    cfg_path: &Path,
    last: &mut Option<Vec<u8>>,
) -> Option<(Option<Vec<Impairment>>, ShaperAck)> {
    let data = match std::fs::read(cfg_path) {
        Ok(d) => d,
        Err(e) => {
            if last.is_some() {
                eprintln!("shaper: cannot read config: {e}");
                *last = None;
            }
            return None;
        }
    };
    if last.as_deref() == Some(&data[..]) {
        return None;
    }
    let (ack, rules) = match ShaperConfig::parse(&data) {
        Ok(cfg) => {
            eprintln!(
                "shaper: config generation {}: {} rule(s): {}",
                cfg.generation,
                cfg.rules.len(),
                serde_json::to_string(&cfg.rules).unwrap_or_default()
            );
            let ack = ShaperAck {
                generation: cfg.generation,
                rules: cfg.rules.len(),
                error: None,
            };
            (ack, Some(cfg.rules))
        }
        Err(e) => {
            eprintln!("shaper: bad config, keeping the old one: {e}");
            let generation = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v.get("generation")?.as_u64())
                .unwrap_or(0);
            let ack = ShaperAck {
                generation,
                rules: 0,
                error: Some(format!("bad config, keeping the old one: {e}")),
            };
            (ack, None)
        }
    };
    *last = Some(data);
    Some((rules, ack))
}

fn reader_loop(
    mut tun: File,
    dir: &Path,
    held: &(Mutex<Held>, Condvar),
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<(), LabError> {
    let addrs = LabAddrs::standard();
    let cfg_path: PathBuf = dir.join(SHAPER_CONFIG);
    let ack_path: PathBuf = dir.join(SHAPER_APPLIED);
    let stats_path = dir.join("shaper.stats.json");
    let mut rules: Vec<Impairment> = Vec::new();
    let mut cfg_seen: Option<Vec<u8>> = None;
    let mut last_tick = Instant::now() - TICK;
    let mut last_release: HashMap<(usize, bool), Instant> = HashMap::new();
    let mut seq = 0u64;
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 65536];
    let mut last_stats = String::new();
    let mut inotify = watch_dir(dir);
    let mut check_cfg = true;

    while !stop.load(Ordering::Relaxed) {
        if check_cfg {
            check_cfg = false;
            if let Some((new, ack)) = reload(&cfg_path, &mut cfg_seen) {
                if let Some(r) = new {
                    rules = r;
                    last_release.clear();
                }
                // only now, with the rules in place, tell `impair` they are in force
                let ack = serde_json::to_vec(&ack).expect("serializes");
                if let Err(e) = super::sys::write_atomic(&ack_path, &ack) {
                    eprintln!("shaper: {e}");
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if !dir.exists() {
                eprintln!("shaper: state directory gone, exiting");
                return Ok(());
            }
            let s = serde_json::to_string(&counters.snapshot()).unwrap_or_default();
            if s != last_stats {
                let _ = super::sys::write_atomic(&stats_path, s.as_bytes());
                last_stats = s;
            }
            // the fallback check of the config (e.g. without inotify), now rather than after a poll
            check_cfg = true;
            continue;
        }
        let mut pfds = [
            libc::pollfd {
                fd: tun.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: inotify.as_ref().map_or(-1, |f| f.as_raw_fd()), // -1: ignored by poll
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, TICK.as_millis() as libc::c_int) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LabError::io("poll on TUN")(e));
        }
        if pfds[1].revents != 0 {
            // Something in the state directory was written or replaced (our own stats
            // and acks too): drain the events and compare the config's content.
            let mut ev = [0u8; 4096];
            if let Some(f) = inotify.as_mut() {
                loop {
                    match f.read(&mut ev) {
                        Ok(n) if n > 0 => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Ok(_) | Err(_) => break,
                    }
                }
            }
            if pfds[1].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                inotify = None;
            }
            check_cfg = true;
        }
        if pfds[0].revents == 0 {
            continue;
        }
        let n = match tun.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LabError::io("reading the TUN")(e)),
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        let pkt = &buf[..n];
        let Some((src, dst)) = parse(pkt) else {
            counters.unparsable.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match decide(&addrs, &rules, src, dst, &mut rng) {
            Verdict::Drop => {
                counters.lost.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Delay(d, key) => {
                let now = Instant::now();
                let mut at = now + d;
                if let Some(prev) = last_release.get(&key) {
                    at = at.max(*prev); // no reordering within one rule and direction
                }
                last_release.insert(key, at);
                let (lock, cv) = held;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                if g.heap.len() >= QUEUE_LIMIT {
                    counters.queue_full.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                seq += 1;
                g.heap.push(Reverse((at, seq, pkt.to_vec())));
                drop(g);
                cv.notify_one();
            }
        }
    }
    Ok(())
}

/// Entry point for a process started by the lab: the lab name comes from
/// `SIPRACE_LAB_NAME` unless given.
pub fn run_from_env(name: Option<&str>) -> Result<(), LabError> {
    let name = match name {
        Some(n) => n.to_string(),
        None => std::env::var("SIPRACE_LAB_NAME")
            .map_err(|_| LabError::Invalid("SIPRACE_LAB_NAME is not set".into()))?,
    };
    run(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::Direction;

    fn rule(family: Family, server: Option<IpAddr>, delay_ms: u32, loss_pct: f64) -> Impairment {
        Impairment {
            family,
            server,
            filter: None,
            delay_ms,
            jitter_ms: 0,
            delay_direction: Direction::ToServer,
            loss_pct,
            loss_direction: Direction::ToServer,
        }
    }

    #[test]
    fn odd_packets_do_not_parse() {
        for p in [
            &[][..],
            &[0x45][..],
            &[0x60; 39][..],
            &[0x00; 60][..],
            &[0xff; 100][..],
        ] {
            assert_eq!(parse(p), None);
        }
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[192, 0, 2, 10]);
        v4[16..20].copy_from_slice(&[198, 51, 100, 10]);
        assert_eq!(
            parse(&v4),
            Some((
                "192.0.2.10".parse().unwrap(),
                "198.51.100.10".parse().unwrap()
            ))
        );
    }

    #[test]
    fn decide_by_family_server_and_direction() {
        let a = LabAddrs::standard();
        let mut rng = rand::rng();
        let c6: IpAddr = a.client_v6.into();
        let s0: IpAddr = a.servers_v6[0].into();
        let s1: IpAddr = a.servers_v6[1].into();
        let rules = vec![
            rule(Family::V6, Some(s0), 100, 0.0),
            rule(Family::V6, None, 7, 0.0),
        ];
        assert!(
            matches!(decide(&a, &rules, c6, s0, &mut rng), Verdict::Delay(d, _) if d == Duration::from_millis(100))
        );
        assert!(
            matches!(decide(&a, &rules, c6, s1, &mut rng), Verdict::Delay(d, _) if d == Duration::from_millis(7))
        );
        // the way back is not delayed (ToServer)
        assert!(
            matches!(decide(&a, &rules, s0, c6, &mut rng), Verdict::Delay(d, _) if d.is_zero())
        );
        let all_lost = vec![rule(Family::V4, None, 0, 100.0)];
        assert_eq!(
            decide(
                &a,
                &all_lost,
                a.client_v4.into(),
                a.servers_v4[0].into(),
                &mut rng
            ),
            Verdict::Drop
        );
    }
}
