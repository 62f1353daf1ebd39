//! The scenario family "registered, then a family breaks" (issue #11 §3):
//! SIP Outbound (RFC 5626) failover, measured. A scenario with an
//! `[outbound]` section runs this instead of the dial rows:
//!
//! ```toml
//! [outbound]
//! uas = ["siprace-flows-2", "siprace-flows-1", "baresip"]  # the UAs, side by side
//! flow_timer_s = 5        # the registrar's Flow-Timer (keep-alives every 80-100 % of it)
//! observe_s = 30          # the longest the break is watched
//! interval_ms = 200       # one OPTIONS to each UA's AOR this often
//! ```
//!
//! Per transport (a case): Kamailio as the Outbound registrar in the server
//! namespace ([`crate::lab::servers::start_outbound_registrar`], on server
//! 0's addresses, port 5080); the UAs in the client namespace, each with an
//! AOR of its own (`sip:<ua>@example.test`, digest user alice); one sender
//! per UA in the server namespace that sends an OPTIONS with a sequence
//! number (its CSeq) to the AOR through Kamailio every `interval_ms` and
//! logs its final response and when. Once every UA's flows are registered
//! and a few requests have reached each, the scenario's `[[impair]]`
//! (blackhole or reject, one family) is applied at the router; the senders
//! keep going until every UA that had a flow over the broken family has
//! re-registered it and [`SETTLE`] has passed (at most `observe_s`). The
//! figures ([`analysis`]) come from the UAs' events and the senders' logs.

pub mod analysis;
pub mod report;
pub mod spec;

pub use spec::{OutboundSpec, UaKind};

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::bench::runner::{run_in, NsService};
use crate::bench::scenario::{Scenario, DOMAIN};
use crate::endpoint::{Family, Transport};
use crate::lab::dns::{DnsServer, DnsServerConfig};
use crate::lab::impair::{self, Fault};
use crate::lab::servers::{self, REGISTRAR_PORT};
use crate::lab::sys;
use crate::lab::topology::{self, Lab, Role};
use analysis::{Answer, FlowFigures, InboundFigures, SentRequest, UaEvent};

/// The digest user and password of lab/kamailio-registrar.cfg.
const USER: &str = "alice";
const PASSWORD: &str = "siprace-lab-secret";
/// A 2xx later than this after sending counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(1000);
/// How long a sender waits for a request's final response: longer than
/// Kamailio's failover over two flows (fr_timer 3 s each).
const ANSWER_BOUND: Duration = Duration::from_secs(8);
/// After the last affected UA re-registered, the senders go on this long.
pub const SETTLE: Duration = Duration::from_secs(spec::SETTLE_S);
/// The most a UA may take to register all its flows.
const REGISTER_BOUND: Duration = Duration::from_secs(20);
/// Requests each UA must have answered 2xx before the break.
const INBOUND_BEFORE_BREAK: usize = 3;
const INBOUND_BOUND: Duration = Duration::from_secs(10);
/// How often the orchestration looks at the UAs' events.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// One UA's part of a case.
#[derive(Debug, Clone, Serialize)]
pub struct UaResult {
    pub ua: String,
    /// The UA reports each inbound request (baresip does not: its "lost,
    /// seen by the UA" is unknown).
    pub reports_inbound: bool,
    pub flows: FlowFigures,
    pub inbound: InboundFigures,
    /// Whatever kept the UA from being measured fully.
    pub error: Option<String>,
    pub events: Vec<UaEvent>,
    pub requests: Vec<SentRequest>,
}

/// One scenario over one transport.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundCase {
    pub scenario: String,
    pub transport: Transport,
    pub description: String,
    pub broken_family: Family,
    /// blackhole or reject.
    pub fault: String,
    pub flow_timer_s: u64,
    pub interval_ms: u64,
    pub late_after_ms: u64,
    /// When the family broke and when the senders stopped, ms since the start.
    pub break_ms: f64,
    pub end_ms: f64,
    pub uas: Vec<UaResult>,
}

impl OutboundCase {
    pub fn key(&self) -> String {
        format!("{}/{}", self.scenario, self.transport)
    }
}

/// Kills processes of ours when dropped (on success, error or panic).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        sys::kill_all(&self.0, Duration::from_secs(5));
    }
}

/// Runs an `[outbound]` scenario over each of its transports.
pub async fn run_scenario(
    lab: &Lab,
    scenario: &Scenario,
    spec: &OutboundSpec,
    quick: bool,
) -> Result<Vec<OutboundCase>, String> {
    // The domain's AAAA and A: server 0, where the registrar listens.
    let mut zone_spec = scenario.clone();
    zone_spec.dns.records = crate::bench::scenario::Records::Addresses;
    let zone = zone_spec.zone_for_all(&lab.addrs);
    let dns_cfg =
        DnsServerConfig::parse(&zone, &scenario.dns.faults).map_err(|e| format!("zone: {e}"))?;
    let binds = vec![
        SocketAddr::new(lab.addrs.dns_v6.into(), 53),
        SocketAddr::new(lab.addrs.dns_v4.into(), 53),
    ];
    let mut dns = NsService::start(lab, Role::Dns, move || async move {
        DnsServer::start(dns_cfg, &binds)
            .await
            .map_err(|e| format!("lab dns: {e}"))
    })?;
    let mut cases = Vec::new();
    let mut result = Ok(());
    for &transport in &scenario.transports {
        match run_case(lab, scenario, spec, quick, transport).await {
            Ok(case) => cases.push(case),
            Err(e) => {
                result = Err(format!("{}/{transport}: {e}", scenario.name));
                break;
            }
        }
    }
    if let Some(d) = dns.take() {
        d.shutdown().await;
    }
    dns.stop();
    result.map(|()| cases)
}

/// A UA process in the client namespace, its events read line by line.
struct Ua {
    kind: UaKind,
    child: Child,
    lines: mpsc::Receiver<(Instant, Stream, String)>,
    events: Vec<UaEvent>,
    /// Lines on stdout that were not events (reported once).
    garbled: usize,
    /// siprace's last diagnostic line (stderr), for the error of a UA
    /// that failed; not an event, not garbled.
    last_diagnostic: Option<String>,
}

impl Ua {
    fn spawn(lab: &Lab, kind: UaKind, transport: Transport, bound: Duration) -> Result<Ua, String> {
        let mut cmd = match kind {
            UaKind::Baresip => baresip_command(lab, transport, bound)?,
            _ => siprace_command(lab, kind, transport, bound)?,
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.label()))?;
        let (tx, lines) = mpsc::channel();
        // Both streams, line by line (baresip prints its errors on stderr).
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        forward_lines(stdout, Stream::Stdout, tx.clone());
        forward_lines(stderr, Stream::Stderr, tx);
        Ok(Ua {
            kind,
            child,
            lines,
            events: Vec::new(),
            garbled: 0,
            last_diagnostic: None,
        })
    }

    /// Takes in the events that arrived, timed since `t0`.
    fn read(&mut self, t0: Instant) {
        while let Ok((at, stream, line)) = self.lines.try_recv() {
            let at = at.saturating_duration_since(t0);
            match (self.kind, stream) {
                // baresip prints much else besides, on both streams: only
                // its lines about registrations are events.
                (UaKind::Baresip, _) => self.events.extend(parse_baresip_line(&line, at)),
                // siprace's events are on stdout, its diagnostics on stderr.
                (_, Stream::Stderr) => {
                    self.last_diagnostic = Some(crate::report::terminal_safe(&line).into_owned())
                }
                (_, Stream::Stdout) => match parse_event(&line, at) {
                    Some(e) => self.events.push(e),
                    None => self.garbled += 1,
                },
            }
        }
    }

    fn count(&self, event: &str) -> usize {
        self.events.iter().filter(|e| e.event == event).count()
    }
}

impl Drop for Ua {
    fn drop(&mut self) {
        sys::kill_all(&[self.child.id()], Duration::from_secs(5));
        let _ = self.child.wait();
    }
}

/// Sends each line `from` gives to `to`, with the time it arrived.
fn forward_lines(
    from: impl std::io::Read + Send + 'static,
    stream: Stream,
    to: mpsc::Sender<(Instant, Stream, String)>,
) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if to.send((Instant::now(), stream, line)).is_err() {
                break;
            }
        }
    });
}

/// Which output stream of a UA a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// `siprace register` for the AOR of `kind`, through the lab registrar.
fn siprace_command(
    lab: &Lab,
    kind: UaKind,
    transport: Transport,
    bound: Duration,
) -> Result<std::process::Command, String> {
    let bin =
        topology::find_siprace_binary().ok_or("cannot find the siprace binary: set SIPRACE_BIN")?;
    let registrar = format!("sip:{DOMAIN}:{REGISTRAR_PORT};transport={transport}");
    let aor = format!("sip:{}@{DOMAIN}", kind.user());
    let dns = format!("{}:53", lab.addrs.dns_v4);
    let mut cmd = lab.command(Role::Client, &bin);
    // Its log level is its own, whatever the bench was run with.
    cmd.env_remove("RUST_LOG");
    cmd.args(["register", &aor, "--registrar", &registrar, "--dns", &dns])
        .args(["--user", USER, "--password", PASSWORD, "--json"])
        .args(["--flows", &kind.flows().to_string()])
        .args(["--transports", transport.as_str()])
        // Its own bound, should this process die before stopping it.
        .args(["--for", &format!("{}s", bound.as_secs())]);
    Ok(cmd)
}

/// baresip with SIP Outbound (`sipnat=outbound`): libre does not race
/// families, so its two flows are its two outbound proxies, one per
/// family (`outbound` over IPv6, `outbound2` over IPv4, both the lab
/// registrar), each flow pinned to its address. Its configuration
/// directory is written into the lab's state directory.
fn baresip_command(
    lab: &Lab,
    transport: Transport,
    bound: Duration,
) -> Result<std::process::Command, String> {
    let dir = lab.state_dir.join(format!("baresip-outbound-{transport}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (v6, v4) = (lab.addrs.servers_v6[0], lab.addrs.servers_v4[0]);
    let config = format!(
        "poll_method\t\tepoll\nmodule_path\t\t/usr/lib/baresip/modules\n\
         module\t\t\tuuid.so\nmodule_app\t\taccount.so\n\
         sip_trans_def\t\t{transport}\ndns_server\t\t{}:53\n",
        lab.addrs.dns_v4
    );
    let account = format!(
        "<sip:{user}@{DOMAIN};transport={transport}>;auth_user={USER};auth_pass={PASSWORD};\
         outbound=\"sip:[{v6}]:{REGISTRAR_PORT};transport={transport}\";\
         outbound2=\"sip:{v4}:{REGISTRAR_PORT};transport={transport}\";\
         sipnat=outbound;regint=600\n",
        user = UaKind::Baresip.user()
    );
    for (file, text) in [
        ("config", config.as_str()),
        ("accounts", &account),
        ("contacts", ""),
    ] {
        std::fs::write(dir.join(file), text)
            .map_err(|e| format!("writing {}: {e}", dir.join(file).display()))?;
    }
    let mut cmd = lab.command(Role::Client, "baresip");
    cmd.arg("-f")
        .arg(&dir)
        .args(["-t", &bound.as_secs().to_string()]);
    Ok(cmd)
}

/// An event from one line of baresip's output: `... {2/TCP/v4} 200 OK
/// (...)` is flow 2 registered over IPv4 (another final status: failed);
/// `reg: ...: Register: <error>` is a failure that names no flow (flow 0).
fn parse_baresip_line(line: &str, at: Duration) -> Option<UaEvent> {
    let at_ms = at.as_secs_f64() * 1000.0;
    if line.contains("reg: ") && line.contains("Register: ") {
        return Some(UaEvent {
            at_ms,
            flow: 0,
            event: "failed".into(),
            family: None,
            cseq: None,
        });
    }
    let (_, rest) = line.split_once('{')?;
    let (flow_path, after) = rest.split_once('}')?;
    let mut parts = flow_path.split('/');
    let flow: u32 = parts.next()?.parse().ok()?;
    let family = match parts.nth(1)? {
        "v6" => "ipv6",
        "v4" => "ipv4",
        _ => return None,
    };
    let status: u16 = after.split_whitespace().next()?.parse().ok()?;
    let event = match status {
        200..=299 => "registered",
        300..=699 => "failed",
        _ => return None,
    };
    Some(UaEvent {
        at_ms,
        flow,
        event: event.into(),
        family: Some(family.into()),
        cseq: None,
    })
}

/// One JSON line of `siprace register --json`.
fn parse_event(line: &str, at: Duration) -> Option<UaEvent> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(UaEvent {
        at_ms: at.as_secs_f64() * 1000.0,
        flow: v["flow"].as_u64()? as u32,
        event: v["event"].as_str()?.to_string(),
        family: v["family"].as_str().map(str::to_string),
        cseq: v["cseq"].as_u64().map(|c| c as u32),
    })
}

/// Looks at the UAs' events every [`LOOK_EVERY`] until `done` holds
/// (true) or `bound` has passed (false).
async fn watch_until(
    uas: &mut [Ua],
    t0: Instant,
    bound: Duration,
    mut done: impl FnMut(&[Ua]) -> bool,
) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        for ua in uas.iter_mut() {
            ua.read(t0);
        }
        if done(uas) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

async fn run_case(
    lab: &Lab,
    scenario: &Scenario,
    spec: &OutboundSpec,
    quick: bool,
    transport: Transport,
) -> Result<OutboundCase, String> {
    let broken = scenario.impair[0].family;
    let broken_name = broken.as_str();
    let (lab_for_start, flow_timer) = (lab.clone(), spec.flow_timer_s);
    let registrar = tokio::task::spawn_blocking(move || {
        servers::start_outbound_registrar(&lab_for_start, flow_timer, Duration::from_secs(30))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let _registrar = KillOnDrop(vec![registrar]);

    let kinds = spec.uas(quick);
    let observe = Duration::from_secs(spec.observe_s);
    let ua_bound = REGISTER_BOUND + INBOUND_BOUND + observe + ANSWER_BOUND + SETTLE;
    let t0 = Instant::now();
    let mut uas = Vec::new();
    for &kind in &kinds {
        uas.push(Ua::spawn(lab, kind, transport, ua_bound)?);
    }
    let mut errors: Vec<Option<String>> = vec![None; uas.len()];

    let registered = watch_until(&mut uas, t0, REGISTER_BOUND, |uas| {
        uas.iter().all(|u| u.count("registered") >= u.kind.flows())
    })
    .await;
    if !registered {
        for (ua, err) in uas.iter().zip(errors.iter_mut()) {
            if ua.count("registered") < ua.kind.flows() {
                *err = Some(format!(
                    "{} of {} flows registered within {} s",
                    ua.count("registered"),
                    ua.kind.flows(),
                    REGISTER_BOUND.as_secs()
                ));
            }
        }
    }

    // The senders, one per UA, on a thread in the server namespace.
    let (stop_tx, stop_rx) = watch::channel(false);
    let interval = Duration::from_millis(spec.interval_ms);
    let local = SocketAddr::new(lab.addrs.servers_v4[0].into(), 0);
    let to = SocketAddr::new(lab.addrs.servers_v4[0].into(), REGISTRAR_PORT);
    let users: Vec<&'static str> = kinds.iter().map(|k| k.user()).collect();
    // Each sender's count of 2xx so far: what reached each UA, also for a
    // UA that does not report its inbound requests (baresip).
    let answered: Vec<Arc<AtomicUsize>> = kinds.iter().map(|_| Arc::default()).collect();
    let answered_by_senders = answered.clone();
    let lab_for_senders = lab.clone();
    let senders = tokio::spawn(async move {
        run_in(&lab_for_senders, Role::Server, move || async move {
            let runs: Vec<_> = users
                .into_iter()
                .zip(answered_by_senders)
                .map(|(user, answered)| {
                    let stop = stop_rx.clone();
                    tokio::spawn(send_messages(local, to, user, interval, t0, stop, answered))
                })
                .collect();
            let mut logs = Vec::new();
            for run in runs {
                logs.push(run.await.map_err(|e| format!("sender: {e}"))??);
            }
            Ok(logs)
        })
        .await
    });

    let answered_so_far = |i: usize| answered[i].load(Ordering::Relaxed);
    let reached = watch_until(&mut uas, t0, INBOUND_BOUND, |uas| {
        (0..uas.len()).all(|i| answered_so_far(i) >= INBOUND_BEFORE_BREAK)
    })
    .await;
    if !reached {
        for (i, err) in errors.iter_mut().enumerate() {
            if err.is_none() && answered_so_far(i) < INBOUND_BEFORE_BREAK {
                *err = Some(format!(
                    "{} requests answered 2xx before the break (wanted {INBOUND_BEFORE_BREAK})",
                    answered_so_far(i)
                ));
            }
        }
    }

    // The break: it counts from when the rules are in place.
    let applied = (|| {
        for imp in &scenario.impair {
            let server = imp.server_addr(&lab.addrs);
            impair::impair(&lab.name, Some(imp.family), server, imp.fault()?)
                .map_err(|e| format!("impair: {e}"))?;
        }
        Ok::<(), String>(())
    })();
    let break_at = Instant::now();
    let break_ms = break_at.duration_since(t0).as_secs_f64() * 1000.0;
    let mut settled_since: Option<Instant> = None;
    if applied.is_ok() {
        watch_until(&mut uas, t0, observe, |uas| {
            let all_back = uas.iter().all(|u| {
                let f = analysis::flow_figures(&u.events, break_ms, broken_name);
                // baresip's events are not read live: it is watched to the bound.
                u.kind != UaKind::Baresip && (!f.affected || f.reregistered_ms.is_some())
            });
            if !all_back {
                return false;
            }
            let since = *settled_since.get_or_insert_with(Instant::now);
            since.elapsed() >= SETTLE
        })
        .await;
    }
    let end_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let _ = stop_tx.send(true);
    let logs = senders.await.map_err(|e| e.to_string()).and_then(|r| r);
    let cleared = impair::impair(&lab.name, None, None, Fault::Clear)
        .map_err(|e| format!("clearing faults: {e}"));
    applied?;
    cleared?;
    let logs = logs?;
    for ua in uas.iter_mut() {
        ua.read(t0);
    }

    let mut results = Vec::new();
    for ((ua, requests), error) in uas.iter().zip(logs).zip(errors) {
        let seen: Vec<u32> = ua
            .events
            .iter()
            .filter(|e| e.event == "inbound")
            .filter_map(|e| e.cseq)
            .collect();
        let error = match (error, ua.garbled) {
            (e, 0) => e,
            (None, n) => Some(format!("{n} output lines were not events")),
            (Some(e), n) => Some(format!("{e}; {n} output lines were not events")),
        }
        .map(|e| match &ua.last_diagnostic {
            Some(last) => format!("{e} (its last diagnostic: {last})"),
            None => e,
        });
        results.push(UaResult {
            ua: ua.kind.label().to_string(),
            reports_inbound: ua.kind != UaKind::Baresip,
            flows: analysis::flow_figures(&ua.events, break_ms, broken_name),
            inbound: analysis::inbound_figures(
                &requests,
                &seen,
                spec.interval_ms as f64,
                LATE_AFTER.as_secs_f64() * 1000.0,
            ),
            error,
            events: ua.events.clone(),
            requests,
        });
    }
    Ok(OutboundCase {
        scenario: scenario.name.clone(),
        transport,
        description: scenario.description.clone(),
        broken_family: broken,
        fault: format!("{:?}", scenario.impair[0].fault).to_lowercase(),
        flow_timer_s: spec.flow_timer_s,
        interval_ms: spec.interval_ms,
        late_after_ms: LATE_AFTER.as_millis() as u64,
        break_ms,
        end_ms,
        uas: results,
    })
}

/// Sends OPTIONS 1, 2, ... to `sip:<user>@example.test` through the
/// registrar at `to` every `interval` until `stop`, then waits for the
/// outstanding final responses (at most [`ANSWER_BOUND`]); the log, times
/// since `t0`.
async fn send_messages(
    local: SocketAddr,
    to: SocketAddr,
    user: &str,
    interval: Duration,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
    answered_2xx: Arc<AtomicUsize>,
) -> Result<Vec<SentRequest>, String> {
    /// However long the case, a sender stops by itself after this many.
    const MAX_REQUESTS: u32 = 5_000;
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("sender socket: {e}"))?;
    socket
        .connect(to)
        .await
        .map_err(|e| format!("sender socket: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    let tag: u32 = rand::random();
    let call_id = |seq: u32| format!("m{seq}-{tag:08x}-{user}@sender");
    let mut log: Vec<SentRequest> = Vec::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; crate::sip::MAX_MESSAGE_SIZE];
    let mut answers_until: Option<tokio::time::Instant> = None;
    loop {
        let outstanding = log.iter().any(|r| r.answer.is_none());
        if answers_until.is_some() && !outstanding {
            break;
        }
        let until = answers_until.unwrap_or_else(|| tokio::time::Instant::now() + ANSWER_BOUND);
        tokio::select! {
            _ = ticks.tick(), if answers_until.is_none() => {
                let seq = log.len() as u32 + 1;
                if seq > MAX_REQUESTS {
                    answers_until = Some(tokio::time::Instant::now() + ANSWER_BOUND);
                    continue;
                }
                let text = request(local, user, seq, &call_id(seq));
                socket.send(text.as_bytes()).await.map_err(|e| format!("sending: {e}"))?;
                log.push(SentRequest { seq, sent_ms: ms(Instant::now()), answer: None });
            }
            got = socket.recv(&mut buf) => {
                let n = got.map_err(|e| format!("receiving: {e}"))?;
                let Ok(r) = crate::sip::parse_response(&buf[..n]) else { continue };
                if r.status < 200 {
                    continue;
                }
                let entry = log.iter_mut().find(|q| q.answer.is_none() && call_id(q.seq) == r.call_id);
                // An answer later than the bound counts as none (lost), as
                // for the requests still out when the senders stop.
                let now_ms = ms(Instant::now());
                let in_time = |q: &SentRequest| now_ms - q.sent_ms <= ANSWER_BOUND.as_secs_f64() * 1000.0;
                if let Some(q) = entry.filter(|q| in_time(q)) {
                    if (200..300).contains(&r.status) {
                        answered_2xx.fetch_add(1, Ordering::Relaxed);
                    }
                    q.answer = Some(Answer { status: r.status, at_ms: now_ms });
                }
            }
            _ = stop.changed(), if answers_until.is_none() => {
                answers_until = Some(tokio::time::Instant::now() + ANSWER_BOUND);
            }
            _ = tokio::time::sleep_until(until), if answers_until.is_some() => break,
        }
    }
    Ok(log)
}

/// OPTIONS number `seq` to `sip:<user>@example.test` (an OPTIONS, not a
/// MESSAGE: baresip answers MESSAGE with 501 unless a module takes
/// messages; every UA answers OPTIONS).
fn request(local: SocketAddr, user: &str, seq: u32, call_id: &str) -> String {
    format!(
        "OPTIONS sip:{user}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id_hash:x};rport\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         From: <sip:sender@{DOMAIN}>;tag=s{seq}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {seq} OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        call_id_hash = rand::random::<u64>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Duration = Duration::from_millis(1500);

    #[test]
    fn siprace_json_lines_become_events() {
        let e = parse_event(
            r#"{"t_ms":12.5,"flow":2,"event":"registered","family":"ipv4","transport":"tcp"}"#,
            AT,
        )
        .unwrap();
        assert_eq!(
            (e.at_ms, e.flow, e.event.as_str(), e.family.as_deref()),
            (1500.0, 2, "registered", Some("ipv4"))
        );
        let e = parse_event(
            r#"{"t_ms":1.0,"flow":1,"event":"inbound","method":"OPTIONS","status":200,"cseq":42}"#,
            AT,
        )
        .unwrap();
        assert_eq!((e.event.as_str(), e.cseq), ("inbound", Some(42)));
        assert_eq!(parse_event("not json", AT), None);
        assert_eq!(parse_event(r#"{"flow":1}"#, AT), None);
    }

    #[test]
    fn baresip_lines_about_registrations_become_events() {
        let e = parse_baresip_line(
            "baresip@example.test: {2/TCP/v4} 200 OK (kamailio (5.6.3 (x86_64/linux))) [2 bindings]",
            AT,
        )
        .unwrap();
        assert_eq!(
            (e.flow, e.event.as_str(), e.family.as_deref()),
            (2, "registered", Some("ipv4"))
        );
        let e =
            parse_baresip_line("baresip@example.test: {1/UDP/v6} 408 Request Timeout", AT).unwrap();
        assert_eq!((e.flow, e.event.as_str()), (1, "failed"));
        // Its error line names no flow.
        let e = parse_baresip_line(
            "\u{1b}[31mreg: sip:baresip@example.test: Register: Connection timed out",
            AT,
        )
        .unwrap();
        assert_eq!((e.flow, e.event.as_str(), e.family), (0, "failed", None));
        for other in [
            "baresip is ready.",
            "Populated 1 account",
            "{x/TCP/v6} 200 OK",
            "{1/TCP/v9} 200 OK",
            "{1/TCP/v6} 100 Trying",
        ] {
            assert_eq!(parse_baresip_line(other, AT), None, "{other}");
        }
    }

    #[test]
    fn an_outbound_scenario_needs_one_family_broken_by_blackhole_or_reject() {
        let base = "name = \"r\"\ndescription = \"d\"\ntransports = [\"tcp\"]\n\
                    oracle = { family = \"ipv4\" }\n[outbound]\nflow_timer_s = 5\n";
        let with = |imp: &str| Scenario::parse(&format!("{base}{imp}"), "t");
        let blackhole = "[[impair]]\nfamily = \"ipv6\"\nfault = \"blackhole\"\n";
        assert!(with(blackhole).is_ok());
        assert!(with("").unwrap_err().contains("the break"));
        let delay = "[[impair]]\nfamily = \"ipv6\"\nfault = \"delay\"\nms = 50\n";
        assert!(with(delay).unwrap_err().contains("blackhole or reject"));
        let two = format!("{blackhole}[[impair]]\nfamily = \"ipv4\"\nfault = \"reject\"\n");
        assert!(with(&two).unwrap_err().contains("one family"));
        let tls = base.replace("[\"tcp\"]", "[\"tls\"]");
        assert!(Scenario::parse(&format!("{tls}{blackhole}"), "t")
            .unwrap_err()
            .contains("tls"));
        let repeated = base.replace(
            "[outbound]\n",
            "[outbound]\nuas = [\"baresip\", \"baresip\"]\n",
        );
        assert!(Scenario::parse(&format!("{repeated}{blackhole}"), "t")
            .unwrap_err()
            .contains("repeats"));
    }

    #[test]
    fn quick_runs_leave_baresip_out_unless_told() {
        let spec = OutboundSpec {
            uas: vec![
                UaKind::SipraceFlows2,
                UaKind::SipraceFlows1,
                UaKind::Baresip,
            ],
            quick_uas: None,
            flow_timer_s: 5,
            observe_s: 30,
            interval_ms: 200,
        };
        assert_eq!(spec.uas(false).len(), 3);
        assert_eq!(
            spec.uas(true),
            [UaKind::SipraceFlows2, UaKind::SipraceFlows1]
        );
    }
}
