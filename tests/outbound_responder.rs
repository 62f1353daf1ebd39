//! SIP Outbound end to end without Kamailio: the real registration agent
//! (`siprace::outbound::agent::Registration`) against the responder acting
//! as a minimal Outbound registrar, in process, on loopback only.
//!
//! The registrar is `sip1.example.test`, served by the lab DNS server (in
//! process) at both `::1` and `127.0.0.1`, with the responder listening on
//! one port of both; so flow 1 is the race's winner and flow 2 is raced in
//! the other family, as siprace does against a real dual-stack registrar.
//!
//! Every wait is on an event (a registration notice, a change of the
//! registrar's bindings) and bounded; there is no sleep.

mod common;

use std::time::Duration;

use siprace::connect::tls::{PemSource, TlsSettings};
use siprace::dialer::DialerConfig;
use siprace::endpoint::{Family, Transport};
use siprace::lab::dns::DnsServer;
use siprace::outbound::agent::{Notice, RegisterConfig, Registration};
use siprace::outbound::digest::Credentials;
use siprace::outbound::flows::{EventKind, FlowConfig, FlowEvent, FlowId, NO_OUTBOUND};
use siprace::responder::{
    Binding, BindingKey, FlowChoice, FlowRequest, RegistrarConfig, ResponderConfig,
    ResponderHandle, ResponderTls,
};

const AOR: &str = "sip:alice@example.test";
const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-000a95a0e128";
/// The bound on every wait (a loaded machine, two flows, DNS and races).
const BOUND: Duration = Duration::from_secs(30);
/// How long the UA may take to answer one request sent down a flow.
const ANSWER: Duration = Duration::from_secs(10);

/// The registrar (the responder) and the DNS server naming it.
struct Bed {
    responder: ResponderHandle,
    dns: DnsServer,
    transport: Transport,
    /// Over TLS: the CA of the registrar's throwaway certificate.
    ca: Option<String>,
}

impl Bed {
    async fn start(transport: Transport, registrar: RegistrarConfig) -> Bed {
        let dns = common::serve_zone(common::SIP1_LOOPBACK, "").await;
        let (tls, ca) = match transport {
            Transport::Tls => {
                let (tls, ca) = ResponderTls::generate("sip1.example.test").unwrap();
                (Some(tls), Some(ca))
            }
            _ => (None, None),
        };
        let responder = common::responder_on_both(
            &[transport],
            ResponderConfig {
                registrar: Some(registrar),
                tls,
                ..ResponderConfig::default()
            },
        )
        .await;
        Bed {
            responder,
            dns,
            transport,
            ca,
        }
    }

    /// A registration of [`AOR`] with two flows through this registrar.
    fn register(&self, credentials: Option<Credentials>) -> Registration {
        let port = self.responder.listeners()[0].addr.port();
        let mut dialer = DialerConfig::default();
        dialer.locate.dns_server = Some(self.dns.addrs()[0]);
        if let Some(ca) = &self.ca {
            dialer.connect.tls = TlsSettings {
                ca: vec![PemSource::Pem(ca.clone())],
                system_roots: false,
                ..TlsSettings::default()
            };
        }
        let cfg = RegisterConfig {
            aor: AOR.into(),
            registrar: Some(format!(
                "sip:sip1.example.test:{port};transport={}",
                self.transport.as_str()
            )),
            instance: INSTANCE.into(),
            expires: Duration::from_secs(600),
            credentials,
            flows: FlowConfig {
                flows: 2,
                ..FlowConfig::default()
            },
        };
        Registration::start(dialer, cfg).expect("the registration starts")
    }

    /// Waits (bounded) until the registrar holds exactly `n` bindings of
    /// [`AOR`] and returns them, by reg-id.
    async fn bindings(&self, n: usize) -> Vec<Binding> {
        let wait = self.responder.wait_for_bindings(AOR, |b| b.len() == n);
        let mut found = tokio::time::timeout(BOUND, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the registrar never held {n} bindings: {:?}",
                    self.responder.bindings(AOR)
                )
            })
            .expect("a registrar");
        found.sort_by_key(|b| b.reg_id());
        found
    }
}

/// Reads notices until one satisfies `pred` (bounded by [`BOUND`]);
/// panics with the notices seen if none does.
async fn until(
    reg: &mut Registration,
    what: &str,
    mut pred: impl FnMut(&Notice) -> bool,
) -> Notice {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, reg.next()).await {
            Ok(Some((_, notice))) if pred(&notice) => return notice,
            Ok(Some((at, notice))) => seen.push((at, notice)),
            Ok(None) => panic!("the registration ended before {what}: {seen:#?}"),
            Err(_) => panic!("no {what} within {BOUND:?}: {seen:#?}"),
        }
    }
}

fn is_event(notice: &Notice, flow: FlowId, kind: fn(&EventKind) -> bool) -> bool {
    matches!(notice, Notice::Flow(FlowEvent { flow: f, kind: k, .. }) if *f == flow && kind(k))
}

/// Waits until both flows are registered (in either order).
async fn both_registered(reg: &mut Registration) {
    let mut up = [false, false];
    while up != [true, true] {
        let notice = until(reg, "both flows registered", |n| {
            is_event(n, 1, |k| *k == EventKind::Registered)
                || is_event(n, 2, |k| *k == EventKind::Registered)
        })
        .await;
        if let Notice::Flow(e) = notice {
            up[e.flow as usize - 1] = true;
        }
    }
}

/// Sends a MESSAGE down `choice` and checks that the UA got it over the
/// flow the registrar says it used; returns that flow's reg-id.
async fn deliver(bed: &Bed, reg: &mut Registration, choice: FlowChoice, text: &str) -> u32 {
    let delivery = bed
        .responder
        .send_to_aor(AOR, choice, &FlowRequest::Message(text.into()), ANSWER)
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(delivery.status, 200, "{text}: {delivery:?}");
    let notice = until(reg, text, |n| matches!(n, Notice::Inbound { .. })).await;
    let Notice::Inbound {
        flow,
        method,
        status,
        request,
    } = notice
    else {
        unreachable!()
    };
    assert_eq!((method.as_str(), status), ("MESSAGE", 200));
    assert_eq!(request.body, text.as_bytes());
    assert_eq!(
        flow, delivery.reg_id,
        "{text}: the UA got it over another flow"
    );
    delivery.reg_id
}

fn family(b: &Binding) -> Family {
    Family::of(&b.flow.peer.ip())
}

/// Ends the registration (unregistering both flows) and checks that the
/// registrar dropped both bindings.
async fn stop(bed: &Bed, mut reg: Registration) {
    reg.stop();
    bed.bindings(0).await;
    tokio::time::timeout(BOUND, reg.finished())
        .await
        .expect("the registration ends");
}

/// (a) Two TCP flows of one instance register, one per family, and the
/// registrar holds both, each with its own connection; (b) a request sent
/// down each chosen flow reaches the UA over that flow; and unregistering
/// (Expires: 0) removes both.
#[tokio::test]
async fn two_tcp_flows_register_and_each_delivers() {
    two_flows_register_and_each_delivers(Transport::Tcp).await;
}

/// The same over TLS (the registrar's throwaway certificate for
/// sip1.example.test, trusted by the UA).
#[tokio::test]
async fn two_tls_flows_register_and_each_delivers() {
    two_flows_register_and_each_delivers(Transport::Tls).await;
}

async fn two_flows_register_and_each_delivers(transport: Transport) {
    let bed = Bed::start(transport, RegistrarConfig::default()).await;
    let mut reg = bed.register(None);
    both_registered(&mut reg).await;
    let flows = bed.bindings(2).await;
    for (b, reg_id) in flows.iter().zip([1, 2]) {
        assert_eq!(
            b.key,
            BindingKey::Outbound {
                instance: format!("<{INSTANCE}>"),
                reg_id
            }
        );
        assert_eq!(b.flow.transport, transport);
        let tail = format!(";transport={};ob", transport.as_str());
        assert!(b.uri.ends_with(&tail), "{}", b.uri);
    }
    assert_ne!(flows[0].flow.connection, flows[1].flow.connection);
    assert_ne!(family(&flows[0]), family(&flows[1]), "one flow per family");
    for reg_id in [1, 2] {
        let text = format!("down flow {reg_id}");
        assert_eq!(
            deliver(&bed, &mut reg, FlowChoice::RegId(reg_id), &text).await,
            reg_id
        );
    }
    // OPTIONS too (answered 200 by the UA).
    let options = bed
        .responder
        .send_to_aor(AOR, FlowChoice::RegId(2), &FlowRequest::Options, ANSWER)
        .await
        .unwrap();
    assert_eq!((options.status, options.reg_id), (200, 2));
    // No flow 3; no such AOR.
    assert!(bed
        .responder
        .send_to_aor(AOR, FlowChoice::RegId(3), &FlowRequest::Options, ANSWER)
        .await
        .is_err());
    assert!(bed
        .responder
        .send_to_aor(
            "sip:bob@example.test",
            FlowChoice::FirstWorking,
            &FlowRequest::Options,
            ANSWER
        )
        .await
        .is_err());
    stop(&bed, reg).await;
    bed.responder.shutdown().await;
}

/// (c) Keep-alives keep the flows alive: with a Flow-Timer of 1 s the UA
/// pings every 0.8–1 s; CRLF pings get CRLF pongs over TCP, and STUN
/// Binding requests get Binding successes over UDP. Each flow reports
/// keepalive_ok, and the registrar counted the keep-alives.
#[tokio::test]
async fn keepalives_are_answered_over_tcp_and_udp() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let bed = Bed::start(
            transport,
            RegistrarConfig {
                flow_timer: Some(Duration::from_secs(1)),
                ..RegistrarConfig::default()
            },
        )
        .await;
        let mut reg = bed.register(None);
        both_registered(&mut reg).await;
        let flows = bed.bindings(2).await;
        assert!(flows.iter().all(|b| b.flow.transport == transport));
        if transport == Transport::Udp {
            // A UDP flow is the 5-tuple: no connection.
            assert!(flows.iter().all(|b| b.flow.connection.is_none()));
        }
        for flow in [1, 2] {
            until(
                &mut reg,
                &format!("{transport} keepalive_ok on flow {flow}"),
                |n| is_event(n, flow, |k| *k == EventKind::KeepaliveOk),
            )
            .await;
        }
        let keepalives = bed.responder.stats().total().keepalives;
        assert!(
            keepalives >= 2,
            "{transport}: {keepalives} keep-alives counted"
        );
        // The flows still carry requests after their keep-alives.
        deliver(
            &bed,
            &mut reg,
            FlowChoice::RegId(1),
            &format!("{transport} after pings"),
        )
        .await;
        stop(&bed, reg).await;
        bed.responder.shutdown().await;
    }
}

/// (d) The registrar resets the connection of the flow it would try
/// first: a request sent "first flow that works" at once skips the broken
/// flow and is delivered over the other; the UA sees its flow fail,
/// re-establishes it over a new connection, and the registrar's binding
/// for that reg-id follows (replaced, not added).
///
/// The "first that works" request is sent right after the reset: the
/// registrar takes its snapshot of the flows before it awaits anything, and
/// the reset flow's queue is gone from it by then, so it is skipped however
/// fast the UA re-registers.
#[tokio::test]
async fn a_reset_tcp_flow_fails_over_and_is_reestablished() {
    a_reset_flow_fails_over_and_is_reestablished(Transport::Tcp).await;
}

/// The same over TLS: the reset is a TCP RST under the TLS session.
#[tokio::test]
async fn a_reset_tls_flow_fails_over_and_is_reestablished() {
    a_reset_flow_fails_over_and_is_reestablished(Transport::Tls).await;
}

async fn a_reset_flow_fails_over_and_is_reestablished(transport: Transport) {
    let bed = Bed::start(transport, RegistrarConfig::default()).await;
    let mut reg = bed.register(None);
    both_registered(&mut reg).await;
    let before = bed.bindings(2).await;
    // The freshest flow is the one a request tries first.
    let first = before.iter().max_by_key(|b| b.registered).unwrap();
    let (broken, other) = (first.reg_id().unwrap(), 3 - first.reg_id().unwrap());
    let old_connection = first.flow.connection;
    let reset = bed.responder.reset_flow(AOR, broken).await.unwrap();
    assert_eq!(reset.connection, old_connection);
    let delivery = bed
        .responder
        .send_to_aor(
            AOR,
            FlowChoice::FirstWorking,
            &FlowRequest::Message("during the failure".into()),
            ANSWER,
        )
        .await
        .expect("delivered over the other flow");
    assert_eq!((delivery.status, delivery.reg_id), (200, other));
    assert_eq!(delivery.skipped.len(), 1, "{delivery:?}");
    assert_eq!(delivery.skipped[0].0, broken);
    // The chosen flow alone never goes down the reset connection: it fails,
    // or (if the UA re-registered meanwhile) goes down the new one.
    let alone = bed
        .responder
        .send_to_aor(
            AOR,
            FlowChoice::RegId(broken),
            &FlowRequest::Options,
            ANSWER,
        )
        .await;
    if let Ok(delivery) = &alone {
        assert_ne!(delivery.flow.connection, old_connection, "{delivery:?}");
    }
    // The UA: the MESSAGE arrives over the other flow, its broken flow
    // fails and recovers.
    let mut got_message = false;
    let mut failed = false;
    until(&mut reg, "the broken flow recovered", |n| match n {
        Notice::Inbound { flow, method, .. } if method == "MESSAGE" => {
            assert_eq!(*flow, other, "the MESSAGE came over the broken flow");
            got_message = true;
            false
        }
        n if is_event(n, broken, |k| matches!(k, EventKind::Failed(_))) => {
            failed = true;
            false
        }
        n => is_event(n, broken, |k| *k == EventKind::Recovered),
    })
    .await;
    assert!(failed, "recovered without failing first");
    assert!(
        got_message,
        "the MESSAGE sent during the failure never arrived"
    );
    // Still two bindings; the broken reg-id's now on a new connection.
    let after = bed.responder.wait_for_bindings(AOR, |b| {
        b.len() == 2
            && b.iter()
                .any(|x| x.reg_id() == Some(broken) && x.flow.connection != old_connection)
    });
    let after = tokio::time::timeout(BOUND, after)
        .await
        .expect("the binding follows the new connection")
        .unwrap();
    assert_eq!(after.len(), 2);
    let text = format!("down the re-established flow {broken}");
    assert_eq!(
        deliver(&bed, &mut reg, FlowChoice::RegId(broken), &text).await,
        broken
    );
    stop(&bed, reg).await;
    bed.responder.shutdown().await;
}

/// (e) A registrar that challenges: the UA answers the digest challenge
/// (SHA-256, the first offered) and both flows register; a UA with the
/// wrong password is refused and nothing is bound.
#[tokio::test]
async fn the_digest_challenge_is_answered() {
    let creds = |password: &str| Credentials {
        user: "alice".into(),
        password: password.into(),
    };
    let bed = Bed::start(
        Transport::Tcp,
        RegistrarConfig {
            auth: Some(creds("right")),
            ..RegistrarConfig::default()
        },
    )
    .await;
    let mut wrong = bed.register(Some(creds("wrong")));
    until(&mut wrong, "a refusal of the wrong password", |n| {
        is_event(
            n,
            1,
            |k| matches!(k, EventKind::Failed(r) if r.contains("credentials")),
        )
    })
    .await;
    assert!(bed.responder.bindings(AOR).is_empty());
    drop(wrong);
    let mut reg = bed.register(Some(creds("right")));
    both_registered(&mut reg).await;
    assert_eq!(bed.bindings(2).await.len(), 2);
    // Without credentials at all: the UA says what it lacks.
    let mut none = bed.register(None);
    until(&mut none, "a refusal without credentials", |n| {
        is_event(
            n,
            1,
            |k| matches!(k, EventKind::Failed(r) if r.contains("--user")),
        )
    })
    .await;
    drop(none);
    stop(&bed, reg).await;
    bed.responder.shutdown().await;
}

/// A registrar without Outbound support (no `Require: outbound` in its
/// 200): the UA keeps one plain registration and gives up the other flow,
/// saying why; the registrar binds the Contact by its URI.
#[tokio::test]
async fn a_registrar_without_outbound_gets_one_plain_registration() {
    let bed = Bed::start(
        Transport::Tcp,
        RegistrarConfig {
            outbound: false,
            ..RegistrarConfig::default()
        },
    )
    .await;
    let mut reg = bed.register(None);
    let mut kept = None;
    let mut dropped = None;
    until(&mut reg, "one flow registered and the other dropped", |n| {
        if let Notice::Flow(e) = n {
            match &e.kind {
                EventKind::Registered => kept = Some(e.flow),
                EventKind::Unavailable(why) => dropped = Some((e.flow, why.clone())),
                _ => {}
            }
        }
        kept.is_some() && dropped.is_some()
    })
    .await;
    let (kept, (dropped, why)) = (kept.unwrap(), dropped.unwrap());
    assert_ne!(kept, dropped);
    assert_eq!(why, NO_OUTBOUND);
    let plain = bed.responder.wait_for_bindings(AOR, |b| !b.is_empty());
    let plain = tokio::time::timeout(BOUND, plain).await.unwrap().unwrap();
    assert!(
        plain.iter().all(|b| matches!(b.key, BindingKey::Uri(_))),
        "{plain:?}"
    );
    stop(&bed, reg).await;
    bed.responder.shutdown().await;
}

/// A `siprace` command (`responder` or `register`) as a child process, its
/// stdout lines read by a thread; killed (by its own PID) if still running
/// when dropped.
struct SipraceCommand {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl SipraceCommand {
    /// Starts `siprace responder ARGS` and waits (bounded) for its
    /// `registrar:` line, printed once every listener is bound; `None` if
    /// it ended first (e.g. the port was taken meanwhile).
    async fn start(args: &[String]) -> Option<SipraceCommand> {
        let mut cmd = SipraceCommand::spawn("responder", args);
        cmd.until(|line| line.starts_with("registrar:"))
            .await
            .then_some(cmd)
    }

    /// Starts `siprace SUBCOMMAND ARGS`, its lines read as they come.
    fn spawn(subcommand: &str, args: &[String]) -> SipraceCommand {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_siprace"))
            .arg(subcommand)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("siprace responder starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        // Ends when the child closes its stdout, i.e. when it exits.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SipraceCommand {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `pred` (true) or the output ends
    /// (false); bounded by [`BOUND`].
    async fn until(&mut self, pred: impl Fn(&str) -> bool) -> bool {
        loop {
            match tokio::time::timeout(BOUND, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let found = pred(&line);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(_) => panic!(
                    "siprace responder: no expected line in {BOUND:?}: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Sends SIGTERM, waits (bounded) for the exit and returns every line
    /// printed and the exit status.
    async fn stop(mut self) -> (Vec<String>, std::process::ExitStatus) {
        // SAFETY: kill(2) on the PID of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let ended = self.until(|_| false).await;
        assert!(!ended);
        let status = self.child.wait().expect("wait for siprace responder");
        (std::mem::take(&mut self.seen), status)
    }
}

impl Drop for SipraceCommand {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `siprace responder` with the arguments `args(port)` gives, on a free
/// port (tried up to five times: another process may take a free port
/// before the responder binds it).
async fn responder_command_on_a_free_port(
    args: impl Fn(u16) -> Vec<String>,
) -> (SipraceCommand, u16) {
    for _ in 0..5 {
        let port = common::free_port_on_both();
        if let Some(cmd) = SipraceCommand::start(&args(port)).await {
            return (cmd, port);
        }
    }
    panic!("siprace responder does not start on a free port");
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Reads a result line of the command (`None` for other lines).
fn result_line(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

/// The command line: `siprace responder --registrar --send-to AOR
/// --send-every 100` sends a MESSAGE every 100 ms down the first flow that
/// works; the UA (the library agent) receives them, and the command prints
/// one JSON line per result, answered 200 once the AOR is registered.
#[tokio::test]
async fn the_responder_command_sends_to_the_aor() {
    let dns = common::serve_zone(common::SIP1_LOOPBACK, "").await;
    let (mut cmd, port) = responder_command_on_a_free_port(|port| {
        strings(&[
            "--listen",
            &format!("tcp:[::1]:{port}"),
            "--listen",
            &format!("tcp:127.0.0.1:{port}"),
            "--registrar",
            "--send-to",
            AOR,
            "--send-every",
            "100",
        ])
    })
    .await;
    let mut dialer = DialerConfig::default();
    dialer.locate.dns_server = Some(dns.addrs()[0]);
    let mut reg = Registration::start(
        dialer,
        RegisterConfig {
            aor: AOR.into(),
            registrar: Some(format!("sip:sip1.example.test:{port};transport=tcp")),
            instance: INSTANCE.into(),
            expires: Duration::from_secs(600),
            credentials: None,
            flows: FlowConfig::default(),
        },
    )
    .unwrap();
    let notice = until(
        &mut reg,
        "a MESSAGE from the command",
        |n| matches!(n, Notice::Inbound { method, .. } if method == "MESSAGE"),
    )
    .await;
    let Notice::Inbound { request, .. } = notice else {
        unreachable!()
    };
    assert!(
        request.body.starts_with(b"siprace responder at "),
        "{:?}",
        String::from_utf8_lossy(&request.body)
    );
    // The command says it was delivered (the UA keeps answering meanwhile).
    let delivered = cmd
        .until(|line| {
            result_line(line).is_some_and(|r| {
                r["status"] == 200
                    && r["aor"] == AOR
                    && r["transport"] == "tcp"
                    && (r["reg_id"] == 1 || r["reg_id"] == 2)
            })
        })
        .await;
    assert!(delivered, "no delivered MESSAGE among {:?}", cmd.seen);
    drop(reg);
    let (lines, status) = cmd.stop().await;
    assert!(status.success(), "{status:?}: {lines:?}");
    // Every result line is a delivery or says why not (before the UA
    // registered: no flow; after it went: every flow failed).
    assert!(
        lines
            .iter()
            .filter_map(|l| result_line(l))
            .all(|r| r["status"] == 200 || r["error"].is_string()),
        "{lines:?}"
    );
}

/// The CPU time (user + system, in clock ticks of 1/100 s) process `pid`
/// has used so far, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("its /proc stat");
    // The fields after the ")" that closes the command name: utime and
    // stime are the 12th and 13th of them.
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `siprace register` whose registrar stops answering sleeps while it
/// waits. The registrar (the responder command) is frozen with SIGSTOP once
/// the flow is registered: the keep-alive goes unanswered, the flow fails,
/// races again (the kernel still completes the TCP handshake) and its new
/// REGISTER waits for an answer that cannot come. In that wait the machine
/// has no deadline; the driver once kept the last, past wake-up time and
/// spun on it, over 100 % of a core (measured: 12.6 s of CPU in 10 s).
/// Idle, it uses next to nothing: less than half a second in four.
#[tokio::test]
async fn a_register_waiting_on_a_frozen_registrar_uses_no_cpu() {
    let (registrar, port) = responder_command_on_a_free_port(|port| {
        strings(&[
            "--listen",
            &format!("tcp:127.0.0.1:{port}"),
            "--registrar",
            "--flow-timer",
            "2",
        ])
    })
    .await;
    let args = strings(&[
        "sip:alice@127.0.0.1",
        "--registrar",
        &format!("sip:127.0.0.1:{port};transport=tcp"),
        "--flows",
        "1",
        "--json",
        "--for",
        "120",
    ]);
    let mut ua = SipraceCommand::spawn("register", &args);
    let event = |name: &'static str| {
        move |line: &str| result_line(line).is_some_and(|v| v["event"] == name)
    };
    assert!(ua.until(event("registered")).await, "{:?}", ua.seen);

    // SAFETY: kill(2) on the PID of our own child, not yet reaped; it is
    // killed (SIGKILL works on a stopped process) when dropped.
    unsafe { libc::kill(registrar.child.id() as libc::pid_t, libc::SIGSTOP) };
    // Flow-Timer 2 s: a keep-alive within 2 s, unanswered 10 s later.
    assert!(ua.until(event("failed")).await, "{:?}", ua.seen);
    let pid = ua.child.id();
    let before = cpu_ticks(pid);
    // A window to measure over, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = cpu_ticks(pid) - before;
    // SAFETY: as above.
    unsafe { libc::kill(registrar.child.id() as libc::pid_t, libc::SIGCONT) };
    assert!(
        used < 50,
        "siprace register used {used} ticks (1/100 s) of CPU in 4 s while waiting: {:?}",
        ua.seen
    );
}
