//! Soak: many dials in one process against the in-process responder and lab
//! DNS server over loopback, to show that nothing accumulates. Four cases,
//! interleaved: UDP and TCP, each healthy and with IPv6 silent (a ::1
//! listener that reads every request and never answers, while 127.0.0.1
//! answers, so every dial races IPv6 first and must cancel it).
//!
//! Prints dials/s, p50/p99 per case, and the process's descriptor count and
//! RSS at 10 %, 50 % and 100 % of the dials. Exits non-zero if a healthy dial
//! failed, if a report does not have exactly one winner per successful dial
//! (none for a failed one), or if the descriptor count grew by more than a
//! small slack between the first checkpoint and the last.
//!
//! `cargo bench --bench soak` runs 100 000 dials; `SIPRACE_SOAK_DIALS=5000`
//! fewer, `SIPRACE_SOAK_CONCURRENCY` sets the dials in flight (default 32).
//! Under `cargo test` it runs a few hundred.
//!
//! Settings, so that the silent cases cost little and every dial really
//! races: attempt delay 10 ms (the HEv3 floor; the IPv4 attempt starts
//! 10 ms after the silent IPv6 one), history off (with it, the dialer would
//! learn to start with IPv4 and never touch the silent family again), and
//! TCP dials probe with OPTIONS once connected (a silent TCP listener still
//! completes the handshake; it is its missing answer that makes it silent).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siprace::dialer::{Dialer, DialerConfig};
use siprace::endpoint::{Family, Transport};
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::race::strategy::Strategy;
use siprace::responder::{self, ListenerConfig, ResponderConfig, ResponderHandle};
use tokio::task::JoinSet;

/// Descriptors the process may hold at the last checkpoint beyond those at
/// the first: the responder closes its side of a finished TCP connection
/// asynchronously, so a few may still be closing when a checkpoint is taken.
const FD_SLACK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    UdpHealthy,
    TcpHealthy,
    UdpV6Silent,
    TcpV6Silent,
}

impl Case {
    const ALL: [Case; 4] = [
        Case::UdpHealthy,
        Case::TcpHealthy,
        Case::UdpV6Silent,
        Case::TcpV6Silent,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::UdpHealthy => "udp healthy",
            Case::TcpHealthy => "tcp healthy",
            Case::UdpV6Silent => "udp ipv6-silent",
            Case::TcpV6Silent => "tcp ipv6-silent",
        }
    }

    fn transport(self) -> Transport {
        match self {
            Case::UdpHealthy | Case::UdpV6Silent => Transport::Udp,
            Case::TcpHealthy | Case::TcpV6Silent => Transport::Tcp,
        }
    }

    fn silent_v6(self) -> bool {
        matches!(self, Case::UdpV6Silent | Case::TcpV6Silent)
    }

    fn target(self) -> &'static str {
        if self.silent_v6() {
            "sip:silent6.example.test"
        } else {
            "sip:healthy.example.test"
        }
    }
}

/// What one dial showed.
struct DialOutcome {
    case: Case,
    took: Duration,
    ok: bool,
    /// The report has exactly one winner if the dial succeeded, none if not,
    /// and the winner id is that attempt's.
    winner_consistent: bool,
    /// An IPv6 attempt was started and did not win (the silent family raced).
    v6_lost: bool,
}

#[derive(Default)]
struct CaseStats {
    dials: usize,
    failed: usize,
    winner_anomalies: usize,
    v6_lost: usize,
    micros: Vec<u64>,
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn env_count(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{name}={value:?} is not a positive whole number"),
    }
}

/// The four ports, one per transport and health, each with a listener on
/// ::1 and one on 127.0.0.1 (the ::1 one silent for the silent cases).
struct Servers {
    v6: ResponderHandle,
    v4: ResponderHandle,
    dns: DnsServer,
}

async fn start_servers() -> Servers {
    let listener = |ip: &str, port: u16, transport, silent| ListenerConfig {
        transport,
        addr: SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port),
        silent,
    };
    // ::1 first on free ports; then 127.0.0.1 on the same ports, since one
    // SRV record names one port for both of its host's addresses.
    let v6 = responder::start(ResponderConfig {
        listeners: Case::ALL
            .iter()
            .map(|c| listener("::1", 0, c.transport(), c.silent_v6()))
            .collect(),
        ..ResponderConfig::default()
    })
    .await
    .expect("responder on ::1");
    let ports: Vec<u16> = v6.listeners().iter().map(|l| l.addr.port()).collect();
    let v4 = responder::start(ResponderConfig {
        listeners: Case::ALL
            .iter()
            .zip(&ports)
            .map(|(c, port)| listener("127.0.0.1", *port, c.transport(), false))
            .collect(),
        ..ResponderConfig::default()
    })
    .await
    .expect("responder on 127.0.0.1 (a port taken on IPv4 only? run again)");
    let [udp_healthy, tcp_healthy, udp_silent, tcp_silent] = ports[..] else {
        unreachable!("four listeners")
    };
    let zone = format!(
        "$ORIGIN example.test.\n$TTL 0\n@ IN SOA ns admin 1 60 60 60 0\n\
         healthy IN NAPTR 10 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.healthy.example.test.\n\
         healthy IN NAPTR 20 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.healthy.example.test.\n\
         silent6 IN NAPTR 10 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.silent6.example.test.\n\
         silent6 IN NAPTR 20 50 \"s\" \"SIP+D2T\" \"\" _sip._tcp.silent6.example.test.\n\
         _sip._udp.healthy IN SRV 0 10 {udp_healthy} h.example.test.\n\
         _sip._tcp.healthy IN SRV 0 10 {tcp_healthy} h.example.test.\n\
         _sip._udp.silent6 IN SRV 0 10 {udp_silent} s.example.test.\n\
         _sip._tcp.silent6 IN SRV 0 10 {tcp_silent} s.example.test.\n\
         h IN AAAA ::1\nh IN A 127.0.0.1\ns IN AAAA ::1\ns IN A 127.0.0.1\n"
    );
    let dns = DnsServer::start(
        DnsServerConfig::new(zone),
        &["127.0.0.1:0".parse().unwrap()],
    )
    .await
    .expect("lab DNS server");
    Servers { v6, v4, dns }
}

fn dialer(dns: SocketAddr, transport: Transport) -> Dialer {
    let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
    cfg.locate.dns_server = Some(dns);
    cfg.transports = Some(vec![transport]);
    cfg.connect.probe_streams = true;
    cfg.race.attempt_delay = Duration::from_millis(10);
    cfg.race.use_history = false;
    Dialer::new(cfg).expect("dialer configuration")
}

async fn dial(dialer: Dialer, case: Case) -> DialOutcome {
    let start = Instant::now();
    let result = dialer.dial(case.target()).await;
    let took = start.elapsed();
    let report = match &result {
        Ok(d) => Some(&d.report),
        Err(e) => e.report(),
    };
    let (winners, winner_id_ok, v6_lost) = match report {
        Some(r) => {
            let won: Vec<u32> = r
                .attempts
                .iter()
                .filter(|a| a.outcome == "won")
                .map(|a| a.id)
                .collect();
            let id_ok = r.winner == won.first().copied();
            let v6_lost = r
                .attempts
                .iter()
                .any(|a| a.family == Family::V6 && a.outcome != "won");
            (won.len(), id_ok, v6_lost)
        }
        None => (0, true, false),
    };
    let ok = result.is_ok();
    DialOutcome {
        case,
        took,
        ok,
        winner_consistent: winner_id_ok && winners == usize::from(ok),
        v6_lost,
    }
    // `result` (the winning connection) is dropped here: every dial closes
    // what it opened before the next checkpoint.
}

struct Checkpoint {
    dials: usize,
    fds: usize,
    rss_kib: u64,
    rate: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let under_test = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let total = env_count("SIPRACE_SOAK_DIALS").unwrap_or(if under_test { 200 } else { 100_000 });
    let concurrency = env_count("SIPRACE_SOAK_CONCURRENCY").unwrap_or(32);
    // Checkpoints at 10 %, 50 % and 100 % (10k, 50k and 100k of 100 000).
    let checkpoints = [total / 10, total / 2, total];

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let failed_checks = rt.block_on(async {
        let servers = start_servers().await;
        let dns = servers.dns.addrs()[0];
        let dialers: Vec<(Case, Dialer)> =
            Case::ALL.iter().map(|c| (*c, dialer(dns, c.transport()))).collect();

        // Warm-up: one round of every case, so lazily made runtime resources
        // exist before the first count.
        for (case, d) in &dialers {
            let warm = dial(d.clone(), *case).await;
            assert!(warm.ok, "warm-up dial ({}) failed", case.name());
        }
        let fds_start = open_fds();
        let rss_start = rss_kib();
        println!(
            "soak: {total} dials, {concurrency} in flight, cases interleaved: {}; after warm-up {fds_start} fds, {} MiB RSS",
            Case::ALL.map(Case::name).join(", "),
            rss_start / 1024
        );

        let mut stats: Vec<CaseStats> = Case::ALL.iter().map(|_| CaseStats::default()).collect();
        let mut marks: Vec<Checkpoint> = Vec::new();
        let mut in_flight = JoinSet::new();
        let mut started = 0;
        let mut finished = 0;
        let run_start = Instant::now();
        let mut segment_start = (Instant::now(), 0);
        for &mark in &checkpoints {
            // Keep `concurrency` dials in flight up to the checkpoint, then
            // let them all finish so the counts see no dial in progress.
            while finished < mark {
                while started < mark && in_flight.len() < concurrency {
                    let (case, d) = &dialers[started % dialers.len()];
                    in_flight.spawn(dial(d.clone(), *case));
                    started += 1;
                }
                let outcome = in_flight
                    .join_next()
                    .await
                    .expect("a dial in flight")
                    .expect("a dial task panicked");
                finished += 1;
                let s = &mut stats[Case::ALL.iter().position(|c| *c == outcome.case).unwrap()];
                s.dials += 1;
                s.failed += usize::from(!outcome.ok);
                s.winner_anomalies += usize::from(!outcome.winner_consistent);
                s.v6_lost += usize::from(outcome.v6_lost);
                s.micros.push(outcome.took.as_micros() as u64);
            }
            let elapsed = segment_start.0.elapsed().as_secs_f64();
            marks.push(Checkpoint {
                dials: finished,
                fds: open_fds(),
                rss_kib: rss_kib(),
                rate: (finished - segment_start.1) as f64 / elapsed,
            });
            segment_start = (Instant::now(), finished);
        }
        let wall = run_start.elapsed();

        println!("\n{:>9} {:>6} {:>9} {:>10}", "dials", "fds", "RSS MiB", "dials/s");
        for m in &marks {
            println!(
                "{:>9} {:>6} {:>9.1} {:>10.0}",
                m.dials,
                m.fds,
                m.rss_kib as f64 / 1024.0,
                m.rate
            );
        }
        println!(
            "\n{:<16} {:>8} {:>7} {:>15} {:>9} {:>8} {:>8}",
            "case", "dials", "failed", "winner errors", "v6 raced", "p50 ms", "p99 ms"
        );
        for (case, s) in Case::ALL.iter().zip(&mut stats) {
            s.micros.sort_unstable();
            println!(
                "{:<16} {:>8} {:>7} {:>15} {:>9} {:>8.2} {:>8.2}",
                case.name(),
                s.dials,
                s.failed,
                s.winner_anomalies,
                s.v6_lost,
                percentile(&s.micros, 0.50),
                percentile(&s.micros, 0.99)
            );
        }
        println!(
            "\nsoak: {finished} dials in {:.1} s, {:.0} dials/s overall",
            wall.as_secs_f64(),
            finished as f64 / wall.as_secs_f64()
        );

        let mut failed_checks = Vec::new();
        for (case, s) in Case::ALL.iter().zip(&stats) {
            if !case.silent_v6() && s.failed > 0 {
                failed_checks.push(format!("{} healthy dials failed ({})", s.failed, case.name()));
            }
            if s.winner_anomalies > 0 {
                failed_checks.push(format!(
                    "{} reports without exactly one winner per success ({})",
                    s.winner_anomalies,
                    case.name()
                ));
            }
            if case.silent_v6() && s.v6_lost < s.dials - s.failed {
                // Not a failure of siprace, but the case would not test what it says.
                println!(
                    "soak: note: only {} of {} {} dials raced the silent IPv6 listener",
                    s.v6_lost,
                    s.dials,
                    case.name()
                );
            }
        }
        let (first, last) = (&marks[0], &marks[marks.len() - 1]);
        if last.fds > first.fds + FD_SLACK {
            failed_checks.push(format!(
                "descriptors grew from {} to {} between {} and {} dials",
                first.fds, last.fds, first.dials, last.dials
            ));
        }

        let silent = servers.v6.stats();
        println!(
            "responder: ::1 silent listeners left {} UDP and {} TCP requests unanswered",
            silent.get(Transport::Udp, Family::V6).dropped_silent,
            silent.get(Transport::Tcp, Family::V6).dropped_silent
        );
        servers.v6.shutdown().await;
        servers.v4.shutdown().await;
        servers.dns.shutdown().await;
        failed_checks
    });
    if !failed_checks.is_empty() {
        for f in &failed_checks {
            eprintln!("soak: FAILED: {f}");
        }
        std::process::exit(1);
    }
}
