//! SIP Outbound's wire pieces against a real registrar: Kamailio with its
//! outbound, registrar, usrloc, auth and stun modules (lab/kamailio-registrar.cfg),
//! in a network namespace of the test's own (loopback only).
//!
//! Two flows of one instance — TCP over IPv6 (reg-id 1) and UDP over IPv4
//! (reg-id 2) — register with digest authentication (SHA-256, and MD5),
//! get a Flow-Timer and `Require: outbound`, keep alive with a CRLF ping
//! (TCP) and a STUN Binding request (UDP), and unregister one flow.
//!
//! Needs root, `ip` and `kamailio` (+ kamailio-outbound-modules); without
//! them each test prints `SKIPPED: ...` and passes (scripts/test.sh installs
//! them). The namespace and Kamailio are removed by a guard, also on failure.
#![cfg(feature = "tools")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use siprace::lab::sys;
use siprace::outbound::digest::{Algorithm, Challenge, Credentials};
use siprace::outbound::register::{self, RegisterOutcome, RegisterRequest, Registration};
use siprace::outbound::stun::{self, BindingResponse};
use siprace::responder::ThrowawayCa;
use siprace::sip::{self, Frame, Response, StreamFramer};
use siprace::Transport;

const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-000a95a0e128";
/// What the configuration challenges with and the Flow-Timer it sends.
const PASSWORD: &str = "siprace-lab-secret";
const FLOW_TIMER: Duration = Duration::from_secs(25);
/// How long Kamailio may take to answer one request (a loaded machine).
const ANSWER: Duration = Duration::from_secs(10);

fn skip() -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root".to_string())
    } else {
        [("ip", "iproute2"), ("kamailio", "kamailio")]
            .iter()
            .find(|(t, _)| sys::which(t).is_none())
            .map(|(t, p)| format!("`{t}` ({p}) missing"))
            .or_else(|| {
                (!kamailio_module_installed("outbound.so")).then(|| {
                    "Kamailio's outbound module (kamailio-outbound-modules) missing".into()
                })
            })
    };
    match reason {
        Some(r) => {
            eprintln!("SKIPPED: Outbound test with Kamailio: {r}");
            true
        }
        None => false,
    }
}

/// True if Kamailio's module `file` is installed (/usr/lib/<arch>/kamailio/modules).
fn kamailio_module_installed(file: &str) -> bool {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|arch| arch.path().join("kamailio/modules").join(file).exists())
}

/// Kamailio as an Outbound registrar in a namespace of its own, listening
/// on port 5060 of `::1` and `127.0.0.1` (the namespace is new, so the port
/// is free). Dropping it stops Kamailio and removes the namespace.
struct Registrar {
    ns: String,
    child: Option<Child>,
    /// The lab DNS server, when started ([`Registrar::start_dns`]).
    dns: Option<Child>,
    dir: PathBuf,
}

impl Registrar {
    fn start(defines: &[&str]) -> Registrar {
        Registrar::start_with(defines, false)
    }

    /// With `tls`, also TLS on port 5061 with a certificate for
    /// registrar.example.test from a CA of the test's own (`ca.pem` in
    /// [`Registrar::dir`]).
    fn start_with(defines: &[&str], tls: bool) -> Registrar {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "sr-outbound-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&ns);
        let mut registrar = Registrar {
            ns: ns.clone(),
            child: None,
            dns: None,
            dir: dir.clone(),
        };
        sys::ip(["netns", "add", ns.as_str()]).expect("a namespace of our own");
        sys::ipn(&ns, "link set lo up").expect("its loopback up");
        std::fs::create_dir_all(&dir).unwrap();
        // A copy beside the TLS files it names (relative to its directory).
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/kamailio-registrar.cfg");
        let cfg = dir.join("kamailio-registrar.cfg");
        std::fs::copy(&source, &cfg).unwrap();
        let mut cmd = sys::netns_command(&ns, "kamailio");
        cmd.args(["-DD", "-E", "-f"]).arg(&cfg).arg("-Y").arg(&dir);
        for listen in [
            "udp:[::1]:5060",
            "tcp:[::1]:5060",
            "udp:127.0.0.1:5060",
            "tcp:127.0.0.1:5060",
        ] {
            cmd.args(["-l", listen]);
        }
        for define in defines {
            cmd.args(["-A", define]);
        }
        if tls {
            let ca = ThrowawayCa::new("siprace outbound test CA").unwrap();
            let (cert, key) = ca.leaf("registrar.example.test").unwrap();
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.join("registrar.pem"), cert).unwrap();
            std::fs::write(dir.join("registrar.key"), key).unwrap();
            std::fs::write(
                dir.join("registrar-tls.cfg"),
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                 require_certificate = no\ncertificate = registrar.pem\n\
                 private_key = registrar.key\n\n[client:default]\nmethod = TLSv1.2+\n\
                 verify_certificate = no\nrequire_certificate = no\n",
            )
            .unwrap();
            cmd.args([
                "-A",
                "WITH_TLS",
                "-l",
                "tls:[::1]:5061",
                "-l",
                "tls:127.0.0.1:5061",
            ]);
        }
        let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        registrar.child = Some(cmd.spawn().expect("kamailio starts"));
        // Ready once the TCP listener on ::1 accepts (bounded: 30 s).
        let ready = sys::poll(300, Duration::from_millis(100), || {
            registrar
                .in_ns(|| TcpStream::connect_timeout(&"[::1]:5060".parse().unwrap(), ANSWER))
                .ok()
        });
        assert!(
            ready.is_some(),
            "Kamailio did not listen: {}",
            registrar.log()
        );
        registrar
    }

    /// The lab DNS server on 127.0.0.1:53 of the namespace, serving
    /// registrar.example.test at ::1 and 127.0.0.1 (both families).
    fn start_dns(&mut self) {
        let zone = self.dir.join("example.test.zone");
        std::fs::write(
            &zone,
            "$ORIGIN example.test.\n$TTL 0\n\
             @ IN SOA ns.example.test. admin.example.test. 1 60 60 60 0\n\
             @ IN NS ns.example.test.\nns IN A 127.0.0.1\n\
             registrar IN AAAA ::1\nregistrar IN A 127.0.0.1\n",
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("dns.log")).unwrap();
        let mut cmd = sys::netns_command(&self.ns, env!("CARGO_BIN_EXE_siprace"));
        cmd.args(["lab", "dns", "--listen", "127.0.0.1:53", "--zone"])
            .arg(&zone)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.dns = Some(cmd.spawn().expect("the lab DNS server starts"));
        // Ready once it answers over TCP (bounded: 30 s).
        let ready = sys::poll(300, Duration::from_millis(100), || {
            self.in_ns(|| TcpStream::connect_timeout(&"127.0.0.1:53".parse().unwrap(), ANSWER))
                .ok()
        });
        assert!(ready.is_some(), "the DNS server did not listen");
    }

    fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        sys::in_netns(&self.ns, f).expect("entering the namespace")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        // Every process in the namespace is ours: it is the test's own.
        sys::kill_all(&sys::netns_pids(&self.ns), Duration::from_secs(5));
        for mut child in [self.child.take(), self.dns.take()].into_iter().flatten() {
            let _ = child.wait();
        }
        let _ = sys::ip(["netns", "del", self.ns.as_str()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One flow's connection: sends bytes, returns the next SIP message.
enum Conn {
    Tcp(TcpStream, StreamFramer),
    Udp(UdpSocket),
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Tcp(s, _) => s.write_all(bytes).unwrap(),
            Conn::Udp(s) => assert_eq!(s.send(bytes).unwrap(), bytes.len()),
        }
    }

    /// The next response (CRLF pongs on TCP are skipped by the framer).
    fn response(&mut self) -> Response {
        sip::parse_response(&self.message(ANSWER).expect("Kamailio answers"))
            .expect("a valid SIP response")
    }

    /// The next SIP message within `wait` (`None` if none came).
    fn message(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; sip::MAX_MESSAGE_SIZE];
        loop {
            let bytes = match self {
                Conn::Tcp(s, framer) => {
                    if let Some(Frame::Message(m)) = framer.next_frame().unwrap() {
                        m
                    } else {
                        let n = sys::read_with_deadline(&*s, deadline, |mut s| s.read(&mut buf))
                            .ok()?;
                        assert!(n > 0, "Kamailio closed the connection");
                        framer.push(&buf[..n]);
                        continue;
                    }
                }
                Conn::Udp(s) => {
                    let n = sys::read_with_deadline(&*s, deadline, |s| s.recv(&mut buf)).ok()?;
                    buf[..n].to_vec()
                }
            };
            return Some(bytes);
        }
    }
}

struct Flow {
    conn: Conn,
    reg_id: u32,
    transport: Transport,
    local: SocketAddr,
    call_id: String,
    cseq: u32,
    /// The algorithm of the last challenge answered.
    algorithm: Option<Algorithm>,
}

impl Flow {
    fn tcp(registrar: &Registrar, remote: &str, reg_id: u32) -> Flow {
        let remote: SocketAddr = remote.parse().unwrap();
        let stream = registrar
            .in_ns(move || TcpStream::connect_timeout(&remote, ANSWER))
            .expect("connects to Kamailio");
        let local = stream.local_addr().unwrap();
        Flow::new(
            Conn::Tcp(stream, StreamFramer::default()),
            Transport::Tcp,
            local,
            reg_id,
        )
    }

    fn udp(registrar: &Registrar, remote: &str, reg_id: u32) -> Flow {
        let remote: SocketAddr = remote.parse().unwrap();
        let socket = registrar
            .in_ns(move || {
                let s = UdpSocket::bind(SocketAddr::new(remote.ip(), 0))?;
                s.connect(remote)?;
                Ok::<_, std::io::Error>(s)
            })
            .expect("a UDP socket towards Kamailio");
        let local = socket.local_addr().unwrap();
        Flow::new(Conn::Udp(socket), Transport::Udp, local, reg_id)
    }

    fn new(conn: Conn, transport: Transport, local: SocketAddr, reg_id: u32) -> Flow {
        Flow {
            conn,
            reg_id,
            transport,
            local,
            call_id: format!("{}@siprace-test", sip::random_token(16)),
            cseq: 1,
            algorithm: None,
        }
    }

    /// REGISTERs (or unregisters) this flow, answering the digest
    /// challenge; returns the final outcome and response.
    fn register(&mut self, reg: &Registration, unregister: bool) -> (RegisterOutcome, Response) {
        let creds = Credentials {
            user: "alice".into(),
            password: PASSWORD.into(),
        };
        let mut authorization = None;
        for _ in 0..2 {
            let req = RegisterRequest {
                registration: reg,
                reg_id: self.reg_id,
                transport: self.transport,
                local_host: sip::uri_host(self.local.ip()),
                local_port: self.local.port(),
                call_id: self.call_id.clone(),
                cseq: self.cseq,
                branch: RegisterRequest::new_branch(),
                unregister,
                authorization: authorization.take(),
            };
            self.cseq += 1;
            self.conn.send(&req.to_bytes());
            let response = loop {
                let r = self.conn.response();
                if r.status >= 200 {
                    break r;
                }
            };
            assert_eq!(response.branch.as_deref(), Some(req.branch.as_str()));
            match register::outcome(&response, &req).expect("a final response") {
                RegisterOutcome::Challenged {
                    answer_header,
                    challenges,
                } => {
                    let challenge = Challenge::choose(challenges.iter().map(String::as_str))
                        .expect("a challenge we can answer");
                    self.algorithm = Some(challenge.algorithm);
                    let answer = challenge.answer(
                        &creds,
                        "REGISTER",
                        &reg.registrar,
                        &sip::random_token(12),
                        1,
                    );
                    authorization = Some((answer_header, answer));
                }
                outcome => return (outcome, response),
            }
        }
        panic!("challenged again after answering the challenge: wrong digest");
    }
}

fn registration() -> Registration {
    Registration {
        aor: "sip:alice@example.test".into(),
        registrar: "sip:example.test".into(),
        instance: INSTANCE.into(),
        from_tag: sip::random_token(10),
        expires: Duration::from_secs(600),
    }
}

/// The reg-ids of our instance's bindings a 200 lists.
fn bound_reg_ids(response: &Response) -> Vec<u32> {
    let mut ids: Vec<u32> = response
        .headers
        .get_all("Contact")
        .flat_map(sip::split_comma_list)
        .filter(|c| c.contains(INSTANCE))
        .filter_map(|c| {
            c.split(';')
                .find_map(|p| p.trim().strip_prefix("reg-id="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn two_flows_register_keep_alive_and_unregister_with_kamailio() {
    if skip() {
        return;
    }
    let registrar = Registrar::start(&[]);
    let reg = registration();

    // Flow 1: TCP over IPv6. SHA-256 digest (RFC 8760), then Outbound's 200.
    let mut flow1 = Flow::tcp(&registrar, "[::1]:5060", 1);
    let (outcome, response) = flow1.register(&reg, false);
    assert_eq!(
        outcome,
        RegisterOutcome::Registered {
            expires: Duration::from_secs(600),
            flow_timer: Some(FLOW_TIMER),
            outbound: true,
        },
        "{}",
        registrar.log()
    );
    assert_eq!(bound_reg_ids(&response), vec![1]);
    assert_eq!(flow1.algorithm, Some(Algorithm::Sha256));

    // Flow 2: UDP over IPv4, same instance, its own reg-id: two bindings.
    let mut flow2 = Flow::udp(&registrar, "127.0.0.1:5060", 2);
    let (outcome, response) = flow2.register(&reg, false);
    assert!(
        matches!(outcome, RegisterOutcome::Registered { outbound: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(bound_reg_ids(&response), vec![1, 2]);

    // Keep-alives: a CRLF ping on TCP gets one CRLF (RFC 5626 §3.5.1)...
    let Conn::Tcp(stream, _) = &mut flow1.conn else {
        unreachable!()
    };
    stream.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 8];
    let n = sys::read_with_deadline(&*stream, Instant::now() + ANSWER, |mut s| s.read(&mut pong))
        .expect("a pong");
    assert_eq!(&pong[..n], b"\r\n");

    // ...and a STUN Binding request on the UDP 5-tuple gets our address.
    let Conn::Udp(socket) = &flow2.conn else {
        unreachable!()
    };
    let id = stun::new_transaction_id();
    socket.send(&stun::binding_request(&id)).unwrap();
    let mut buf = [0u8; 512];
    let n = sys::read_with_deadline(socket, Instant::now() + ANSWER, |s| s.recv(&mut buf))
        .expect("a STUN answer");
    assert!(stun::is_stun(&buf[..n]));
    assert_eq!(
        stun::parse_binding_response(&buf[..n], &id),
        Ok(BindingResponse::Mapped(flow2.local))
    );

    // Unregistering flow 1 leaves flow 2's binding.
    let (outcome, response) = flow1.register(&reg, true);
    assert!(
        matches!(outcome, RegisterOutcome::Registered { .. }),
        "{outcome:?}"
    );
    assert_eq!(bound_reg_ids(&response), vec![2]);
}

#[test]
fn md5_challenges_are_answered_too() {
    if skip() {
        return;
    }
    let registrar = Registrar::start(&["WITH_MD5"]);
    let mut flow = Flow::udp(&registrar, "[::1]:5060", 1);
    let (outcome, _) = flow.register(&registration(), false);
    assert!(
        matches!(outcome, RegisterOutcome::Registered { outbound: true, .. }),
        "{outcome:?}: {}",
        registrar.log()
    );
    assert_eq!(flow.algorithm, Some(Algorithm::Md5));
}

/// A MESSAGE for the AOR, sent to the registrar from a socket of its own.
struct Sender {
    socket: UdpSocket,
    local: SocketAddr,
}

impl Sender {
    fn new(registrar: &Registrar) -> Sender {
        let socket = registrar
            .in_ns(|| {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.connect("127.0.0.1:5060")?;
                Ok::<_, std::io::Error>(s)
            })
            .expect("a sender socket");
        let local = socket.local_addr().unwrap();
        Sender { socket, local }
    }

    /// Sends MESSAGE number `n` (its CSeq); returns its branch.
    fn send(&self, n: u32) -> String {
        let branch = RegisterRequest::new_branch();
        let text = format!(
            "MESSAGE sip:alice@example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:alice@example.test>\r\n\
             From: <sip:bob@example.test>;tag=b{n}\r\n\
             Call-ID: m{n}-{branch}@sender\r\n\
             CSeq: {n} MESSAGE\r\n\
             Content-Type: text/plain\r\n\
             Content-Length: 2\r\n\r\nhi",
            local = self.local,
        );
        self.socket.send(text.as_bytes()).unwrap();
        branch
    }

    /// The final status Kamailio answered for `branch`.
    fn final_status(&self, branch: &str, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; sip::MAX_MESSAGE_SIZE];
        loop {
            let n = sys::read_with_deadline(&self.socket, deadline, |s| s.recv(&mut buf)).ok()?;
            let r = sip::parse_response(&buf[..n]).ok()?;
            if r.branch.as_deref() == Some(branch) && r.status >= 200 {
                return Some(r.status);
            }
        }
    }
}

/// Waits (bounded by `wait`) for MESSAGE number `n` on any of `flows`,
/// answering every request that arrives (a retransmission of an earlier
/// one too) with 200; the index of the flow it came over.
fn deliver(flows: &mut [&mut Flow], n: u32, wait: Duration) -> Option<usize> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        for (i, flow) in flows.iter_mut().enumerate() {
            let Some(bytes) = flow.conn.message(Duration::from_millis(50)) else {
                continue;
            };
            let request = sip::parse_request(&bytes).expect("a valid request from Kamailio");
            flow.conn.send(&request.response(200).build());
            if request.method == "MESSAGE" && request.cseq.seq == n {
                return Some(i);
            }
        }
    }
    None
}

#[test]
fn inbound_requests_reach_the_aor_over_a_flow_and_over_the_other_when_it_closes() {
    if skip() {
        return;
    }
    let registrar = Registrar::start(&[]);
    let reg = registration();
    // UDP over IPv4 first, then TCP over IPv6: Kamailio tries the
    // instance's most recent flow first, one flow at a time (RFC 5626 §5.3).
    let mut udp = Flow::udp(&registrar, "127.0.0.1:5060", 2);
    let mut tcp = Flow::tcp(&registrar, "[::1]:5060", 1);
    for flow in [&mut udp, &mut tcp] {
        let (outcome, _) = flow.register(&reg, false);
        assert!(
            matches!(outcome, RegisterOutcome::Registered { .. }),
            "{outcome:?}"
        );
    }
    let sender = Sender::new(&registrar);
    let branch = sender.send(1);
    let first = deliver(&mut [&mut tcp, &mut udp], 1, ANSWER);
    assert_eq!(
        first,
        Some(0),
        "MESSAGE 1 over the TCP flow: {}",
        registrar.log()
    );
    assert_eq!(sender.final_status(&branch, ANSWER), Some(200));
    // The TCP flow closes: Kamailio does not open a connection towards an
    // Outbound contact, so the branch fails (handled when its fr_timer,
    // 3 s in the configuration, fires) and the MESSAGE goes over the UDP flow.
    drop(tcp);
    let t0 = Instant::now();
    let branch = sender.send(2);
    let got = deliver(&mut [&mut udp], 2, ANSWER);
    let status = sender.final_status(&branch, ANSWER);
    eprintln!("MESSAGE 2: over the UDP flow after {:?}", t0.elapsed());
    assert_eq!(got, Some(0), "{}", registrar.log());
    assert_eq!(status, Some(200));
}

/// `siprace register` running in the registrar's namespace, its JSON
/// events read line by line.
struct Ua {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Ua {
    /// Registers over `transport` (udp, tcp or tls).
    fn spawn(registrar: &Registrar, transport: &str) -> Ua {
        let target = format!("sip:registrar.example.test;transport={transport}");
        let mut cmd = sys::netns_command(&registrar.ns, env!("CARGO_BIN_EXE_siprace"));
        cmd.args([
            "register",
            "sip:alice@example.test",
            "--registrar",
            target.as_str(),
            "--dns",
            "127.0.0.1:53",
            "--user",
            "alice",
            "--password",
            PASSWORD,
            "--json",
            // A displaced flow tries its home family after 0.5–1 s.
            "--rehome-after",
            "1",
        ]);
        if transport == "tls" {
            cmd.arg("--ca").arg(registrar.dir.join("ca.pem"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("siprace register starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ua {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads events until one satisfies `want` (bounded by `wait`).
    fn wait_for(
        &mut self,
        what: &str,
        wait: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} within {wait:?}; events: {:#?}", self.seen));
            let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON event line");
            self.seen.push(event.clone());
            if want(&event) {
                return event;
            }
        }
    }

    /// SIGINT, then the exit code and the rest of the events.
    fn interrupt(mut self) -> (Option<i32>, Vec<serde_json::Value>) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen
                .push(serde_json::from_str(&line).expect("a JSON event line"));
        }
        let status = self.child.wait().expect("siprace register ends");
        (status.code(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Ua {
    fn drop(&mut self) {
        sys::kill_all(&[self.child.id()], Duration::from_secs(5));
        let _ = self.child.try_wait();
    }
}

fn is(event: &serde_json::Value, name: &str, flow: u64) -> bool {
    event["event"] == name && event["flow"] == flow
}

#[test]
fn siprace_register_over_tcp_keeps_a_flow_per_family_and_recovers_when_ipv6_breaks() {
    register_and_recover("tcp", "tcp");
}

#[test]
fn siprace_register_over_tls_keeps_a_flow_per_family_and_recovers_when_ipv6_breaks() {
    register_and_recover("tls", "tls");
}

#[test]
fn siprace_register_over_udp_keeps_a_flow_per_family_and_recovers_when_ipv6_breaks() {
    register_and_recover("udp", "udp");
}

/// `siprace register` over `transport`: two flows (one per family), a
/// MESSAGE delivered, IPv6 blackholed, the IPv6 flow's keep-alive (CRLF on
/// streams, STUN on UDP) unanswered, the flow re-raced onto IPv4, the AOR
/// still reachable; IPv6 back, the flow moved home to IPv6, the AOR still
/// reachable; Ctrl-C unregistering both.
fn register_and_recover(transport: &str, expect_transport: &str) {
    if skip() {
        return;
    }
    if sys::which("nft").is_none() {
        eprintln!("SKIPPED: Outbound failover test: `nft` (nftables) missing");
        return;
    }
    // A 3 s Flow-Timer: keep-alives every 2.4–3 s.
    let mut registrar = Registrar::start_with(&["FLOW_TIMER=3"], transport == "tls");
    registrar.start_dns();
    let mut ua = Ua::spawn(&registrar, transport);

    // One flow per family, both registered.
    let first = ua.wait_for("flow 1 registered", ANSWER, |e| is(e, "registered", 1));
    let second = ua.wait_for("flow 2 registered", ANSWER, |e| is(e, "registered", 2));
    assert_eq!(first["transport"], expect_transport);
    assert_eq!(second["transport"], expect_transport);
    let mut families = [first["family"].clone(), second["family"].clone()];
    families.sort_by_key(|f| f.to_string());
    assert_eq!(families, ["ipv4", "ipv6"]);
    let v6_flow = if first["family"] == "ipv6" { 1 } else { 2 };

    // Reachable: a MESSAGE to the AOR is delivered over a flow and answered.
    let sender = Sender::new(&registrar);
    let branch = sender.send(1);
    assert_eq!(sender.final_status(&branch, ANSWER), Some(200));
    ua.wait_for("the inbound MESSAGE", ANSWER, |e| {
        e["event"] == "inbound" && e["method"] == "MESSAGE" && e["status"] == 200
    });

    // IPv6 breaks (silently: every IPv6 packet of the namespace dropped).
    let nft = |args: &str| {
        let mut cmd = sys::netns_command(&registrar.ns, "nft");
        cmd.args(args.split_whitespace());
        sys::run(&mut cmd).expect("nft in the test's namespace");
    };
    nft("add table inet sr_outbound");
    nft("add chain inet sr_outbound out { type filter hook output priority 0 ; }");
    nft("add rule inet sr_outbound out meta nfproto ipv6 drop");
    let t0 = Instant::now();

    // The IPv6 flow's keep-alive goes unanswered: it fails, is raced again
    // at once and comes back over IPv4.
    let failed = ua.wait_for("the IPv6 flow failing", Duration::from_secs(30), |e| {
        is(e, "failed", v6_flow)
    });
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("keep-alive unanswered"),
        "{failed}"
    );
    let recovered = ua.wait_for("the flow recovered", Duration::from_secs(30), |e| {
        is(e, "recovered", v6_flow)
    });
    eprintln!(
        "{transport}: IPv6 blackholed; flow {v6_flow} failed at {} ms and recovered at {} ms (over {}) — {:.1} s after the break",
        failed["t_ms"], recovered["t_ms"], recovered["family"], t0.elapsed().as_secs_f64()
    );
    eprintln!("{transport}: {failed}\n{transport}: {recovered}");
    assert_eq!(recovered["family"], "ipv4");
    // Its race tried IPv4 first: the shared history had recorded the IPv6
    // flow's failure (without it IPv6 goes first and times out).
    assert_eq!(recovered["first_family"], "ipv4", "{recovered}");
    assert!(
        recovered["history"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("ipv6/{expect_transport} "))),
        "{recovered}"
    );
    assert_eq!(recovered["outbound"], true, "{recovered}");
    // Its keep-alives are answered over IPv4 (a STUN mapped address on UDP).
    ua.wait_for("a keep-alive on the recovered flow", ANSWER, |e| {
        is(e, "keepalive_ok", v6_flow)
    });

    // Still reachable.
    let branch = sender.send(2);
    assert_eq!(
        sender.final_status(&branch, ANSWER),
        Some(200),
        "{}",
        registrar.log()
    );

    // IPv6 comes back: the displaced flow goes home (its attempts while
    // IPv6 was blackholed failed or are still waiting for an answer), and
    // the AOR stays reachable; Ctrl-C unregisters both flows.
    nft("delete table inet sr_outbound");
    let healed = Instant::now();
    let rehomed = ua.wait_for("the flow back on IPv6", Duration::from_secs(60), |e| {
        is(e, "rehomed", v6_flow)
    });
    eprintln!(
        "{transport}: IPv6 back; {rehomed} — {:.1} s after",
        healed.elapsed().as_secs_f64()
    );
    assert_eq!(rehomed["family"], "ipv6", "{rehomed}");
    assert_eq!(rehomed["transport"], expect_transport, "{rehomed}");
    assert_eq!(rehomed["outbound"], true, "{rehomed}");
    let branch = sender.send(3);
    assert_eq!(
        sender.final_status(&branch, ANSWER),
        Some(200),
        "{}",
        registrar.log()
    );
    let delivered = ua.wait_for("the MESSAGE after the move", ANSWER, |e| {
        e["event"] == "inbound" && e["method"] == "MESSAGE" && e["cseq"] == 3
    });
    eprintln!("{transport}: after the move: {delivered}");
    let (code, events) = ua.interrupt();
    assert_eq!(code, Some(130));
    for flow in [1, 2] {
        assert!(
            events.iter().any(|e| is(e, "unregistered", flow)),
            "flow {flow} unregistered: {events:#?}"
        );
    }
}
