//! Kamailio in the lab over TLS with client-certificate verification
//! (lab/kamailio.cfg, lab/kamailio-tls.cfg; certificates made by the lab
//! with rcgen): two SIP domains on one address, each with a certificate of
//! its own, chosen by SNI; Kamailio's connection counter and open TLS
//! connections read over its ctl socket ([`servers::kamailio_connections`]).
//!
//! Each `siprace dial` process opens its own connection (no reuse across
//! processes), so N dials to domain A show as N connections accepted, and a
//! dial to domain B as one more; a dial without a client certificate is
//! refused by Kamailio.
//!
//! Needs root, `ip`, `nft`, `kamailio`, `kamcmd` (kamailio) and the TLS
//! module (kamailio-tls-modules); without them it prints `SKIPPED: ...` and
//! passes. The lab is torn down by a guard, also when the test fails.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use siprace::connect::tls::{CertIdentities, PemSource};
use siprace::lab::servers::{self, DnsOpts, KamailioTls, ServerOpts, DNS_PORT, KAMAILIO_TLS_PORT};
use siprace::lab::{self, Lab, LabConfig, Role, ShaperLaunch};
use siprace::sip::{parse_request, parse_response, Frame, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn siprace_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_siprace"))
}

fn skip() -> bool {
    let tools = [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("kamailio", "kamailio"),
        ("kamcmd", "kamailio"),
    ];
    // Debian's multiarch module directory, or the plain one.
    let tls_module = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|lib| std::path::Path::new(lib).join("kamailio/modules/tls.so"))
    .find(|p| p.exists());
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root".to_string())
    } else if let Some((t, p)) = tools.iter().find(|(t, _)| lab::sys::which(t).is_none()) {
        Some(format!("`{t}` ({p}) missing"))
    } else if tls_module.is_none() {
        Some("the Kamailio TLS module (kamailio-tls-modules) is missing".to_string())
    } else {
        None
    };
    match reason {
        Some(r) => {
            eprintln!("SKIPPED: Kamailio TLS lab test: {r}");
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

/// A lab with the DNS server (example zone) and Kamailio; `base` keeps the
/// names of two tests running at once apart.
fn kamailio_lab(base: &str) -> (Lab, Guard) {
    let name = format!("{base}{}", std::process::id());
    let _ = lab::down(&name); // leftovers of an earlier crashed run
    let lab = lab::up(&LabConfig {
        name: name.clone(),
        shaper: ShaperLaunch::Disabled,
    })
    .expect("lab up");
    let guard = Guard(name);
    let opts = ServerOpts {
        dns: Some(DnsOpts {
            zone: Some(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/zones/example.test.zone"),
            ),
            ..DnsOpts::default()
        }),
        kamailio: true,
        siprace_bin: Some(siprace_bin()),
        ..ServerOpts::default()
    };
    servers::start_servers(&lab, &opts).unwrap_or_else(|e| panic!("servers: {e}"));
    (lab, guard)
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
    .expect("in the client namespace")
}

/// `siprace dial --json --probe --max-concurrent 1 URI` from the client
/// namespace, with the lab CA and (if `client_cert`) the lab client's
/// certificate. One attempt at a time: on a loaded machine a slow IPv6
/// handshake would otherwise start the IPv4 attempt too (Happy Eyeballs),
/// a second connection for the same dial.
fn dial(lab: &Lab, uri: &str, client_cert: bool) -> serde_json::Value {
    let files = KamailioTls::of(lab);
    let dns = SocketAddr::new(lab.addrs.dns_v4.into(), DNS_PORT).to_string();
    let mut cmd = lab.command(Role::Client, siprace_bin());
    cmd.args([
        "dial",
        "--json",
        "--probe",
        "--max-concurrent",
        "1",
        "--dns",
        &dns,
        "--ca",
    ])
    .arg(&files.ca);
    if client_cert {
        // --ca again, then --cert and --key.
        cmd.args(files.dial_args());
    }
    let out = cmd.arg(uri).output().expect("run siprace dial");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "siprace dial {uri}: no JSON ({e}), status {}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn accepted(lab: &Lab) -> u64 {
    servers::kamailio_connections(lab)
        .expect("Kamailio's counters")
        .accepted_total
}

/// Asserts that a dial connected over TLS to Kamailio's TLS port with a 200,
/// in one attempt.
fn assert_connected(r: &serde_json::Value, uri: &str) {
    assert_won_at_kamailio(r, uri);
    assert_eq!(
        r["attempts"].as_array().map(Vec::len),
        Some(1),
        "{uri}: one attempt, one connection: {r:#}"
    );
}

/// Asserts that a dial's winner is Kamailio's TLS port, answering 200.
fn assert_won_at_kamailio(r: &serde_json::Value, uri: &str) {
    assert_eq!(r["result"], "connected", "{uri}: {r:#}");
    let won = r["attempts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["outcome"] == "won"))
        .unwrap_or_else(|| panic!("{uri}: no winner: {r:#}"));
    assert_eq!(won["transport"], "tls", "{uri}: {r:#}");
    let addr: SocketAddr = won["addr"].as_str().unwrap().parse().unwrap();
    assert_eq!(addr.port(), KAMAILIO_TLS_PORT, "{uri}: {r:#}");
    assert_eq!(won["response"]["status"], 200, "{uri}: {r:#}");
}

#[test]
fn kamailio_counts_a_connection_per_dial_process_and_hosts_b_on_its_own_certificate() {
    if skip() {
        return;
    }
    let (lab, guard) = kamailio_lab("ktls");
    let a = format!("sips:{}", KamailioTls::DOMAIN_A);
    let b = format!("sips:{}", KamailioTls::DOMAIN_B);

    // N separate processes to A: N connections (no reuse across processes).
    const N: u64 = 3;
    let before = accepted(&lab);
    for _ in 0..N {
        assert_connected(&dial(&lab, &a, true), &a);
    }
    let after_a = accepted(&lab);
    println!("Kamailio connections accepted: {before} before, {after_a} after {N} dials to {a}");
    assert_eq!(after_a - before, N, "one connection per dial process");

    // B, on the same address and port, with its own certificate.
    assert_connected(&dial(&lab, &b, true), &b);
    let after_b = accepted(&lab);
    println!("Kamailio connections accepted: {after_b} after one dial to {b}");
    assert_eq!(after_b - after_a, 1);

    // The lab domain: its _sips._tcp SRV lists the responder and SIPp first
    // (no TLS there: refused at once), then Kamailio, whose certificate for
    // A also covers example.test. One connection at Kamailio.
    let lab_domain = format!("sips:{}", KamailioTls::LAB_DOMAIN);
    assert_won_at_kamailio(&dial(&lab, &lab_domain, true), &lab_domain);
    let after_lab_domain = accepted(&lab);
    println!("Kamailio connections accepted: {after_lab_domain} after one dial to {lab_domain}");
    assert_eq!(after_lab_domain - after_b, 1);

    // Without a client certificate, Kamailio refuses the handshake.
    let r = dial(&lab, &a, false);
    assert_ne!(r["result"], "connected", "no client certificate: {r:#}");
    let text = r.to_string();
    assert!(
        text.contains("client certificate"),
        "the error names the missing client certificate: {r:#}"
    );

    // A connection held open shows in Kamailio's live TLS list, and the
    // certificate it got for each SNI covers that domain only.
    let files = KamailioTls::of(&lab);
    let server = SocketAddr::new(lab.addrs.servers_v4[2].into(), KAMAILIO_TLS_PORT);
    let lab2 = lab.clone();
    let seen = in_client(&lab, move || async move {
        let mut seen = Vec::new();
        for domain in [KamailioTls::DOMAIN_A, KamailioTls::DOMAIN_B] {
            let tls = handshake(&files, server, domain).await;
            let local = tls.get_ref().0.local_addr().unwrap();
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let ids = CertIdentities::from_der(leaf.as_ref()).unwrap();
            let live = servers::kamailio_connections(&lab2).expect("tls.list");
            assert!(live.open_tls >= 1 && live.open >= live.open_tls, "{live:?}");
            seen.push((domain, local, ids, live.tls_open));
        }
        seen
    });
    for (domain, local, ids, open) in seen {
        assert!(
            ids.check(domain).is_ok(),
            "SNI {domain}: {}",
            ids.describe()
        );
        let other = if domain == KamailioTls::DOMAIN_A {
            KamailioTls::DOMAIN_B
        } else {
            KamailioTls::DOMAIN_A
        };
        assert!(
            ids.check(other).is_err(),
            "the certificate for {domain} must not cover {other}: {}",
            ids.describe()
        );
        assert!(
            open.iter().any(|c| c.client == local && c.server == server),
            "Kamailio lists the connection from {local}: {open:?}"
        );
        println!(
            "SNI {domain}: certificate {}; Kamailio's open TLS connections: {}",
            ids.describe(),
            open.len()
        );
    }
    drop(guard);
}

/// A TLS handshake to Kamailio from the calling thread's namespace, with the
/// lab client's certificate and SNI `domain` (the chain checked against the
/// lab CA; the SIP identities are the caller's to check).
async fn handshake(
    files: &KamailioTls,
    server: SocketAddr,
    domain: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in PemSource::File(files.ca.clone()).certificates().unwrap() {
        roots.add(c).unwrap();
    }
    let chain = PemSource::File(files.client_cert.clone())
        .certificates()
        .unwrap();
    let key = PemSource::File(files.client_key.clone())
        .private_key()
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    let name = ServerName::try_from(domain.to_string()).unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("the handshake ends")
    .expect("the handshake succeeds")
}

type ClientTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The next SIP message on `tls`, bounded.
async fn next_message(tls: &mut ClientTls, framer: &mut StreamFramer) -> Vec<u8> {
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match framer.next_frame().expect("well-framed SIP from Kamailio") {
                Some(Frame::Message(m)) => return m,
                Some(Frame::KeepAlive) => continue,
                None => {}
            }
            let n = tls.read(&mut buf).await.expect("read");
            assert!(n > 0, "Kamailio closed the connection");
            framer.push(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("a message from Kamailio")
}

/// An OPTIONS from `sent_by` (Via port `via_port`, `;alias` if asked),
/// asking Kamailio (lab/kamailio.cfg) for an OPTIONS back to `call_back`.
fn options(
    branch: &str,
    sent_by: &str,
    via_port: u16,
    alias: bool,
    call_back: Option<&str>,
) -> Vec<u8> {
    let alias = if alias { ";alias" } else { "" };
    let call_back = call_back
        .map(|uri| format!("X-Siprace-Call-Back: {uri}\r\n"))
        .unwrap_or_default();
    format!(
        "OPTIONS sip:{a} SIP/2.0\r\n\
         Via: SIP/2.0/TLS {sent_by}:{via_port};branch={branch}{alias}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{sent_by}>;tag=k1\r\n\
         To: <sip:{a}>\r\n\
         Call-ID: {branch}@{sent_by}\r\n\
         CSeq: 1 OPTIONS\r\n\
         {call_back}\
         Content-Length: 0\r\n\r\n",
        a = KamailioTls::DOMAIN_A,
    )
    .into_bytes()
}

/// What arrived after asking Kamailio for a call-back on one connection.
#[derive(Debug)]
enum CallBack {
    /// Kamailio's OPTIONS came over the client's own connection, to this URI.
    OverTheConnection(String),
    /// The next message was the answer to the follow-up request: nothing
    /// came over the connection.
    NotOverTheConnection,
}

/// On a fresh mutual-TLS connection to Kamailio (domain A), sends an OPTIONS
/// (sent-by `sent_by`, Via port `via_port`, `;alias` if asked) asking for a
/// call-back to this client's IP and `via_port`, then a plain OPTIONS; says
/// whether Kamailio's call-back came over this connection before the
/// answer to the second (it would be written first: one Kamailio process
/// serves the connection's requests in order).
async fn ask_for_call_back(
    files: &KamailioTls,
    server: SocketAddr,
    sent_by: &str,
    via_port: u16,
    alias: bool,
) -> CallBack {
    let mut tls = handshake(files, server, KamailioTls::DOMAIN_A).await;
    let ip = tls.get_ref().0.local_addr().unwrap().ip();
    let uri = format!(
        "sip:{}:{via_port};transport=tls",
        SocketAddr::new(ip, via_port)
            .to_string()
            .rsplit_once(':')
            .unwrap()
            .0
    );
    let mut framer = StreamFramer::new(65_536);
    tls.write_all(&options(
        "z9hG4bK-ask",
        sent_by,
        via_port,
        alias,
        Some(&uri),
    ))
    .await
    .unwrap();
    let answer = parse_response(&next_message(&mut tls, &mut framer).await).unwrap();
    assert_eq!(
        (answer.status, answer.branch.as_deref()),
        (200, Some("z9hG4bK-ask"))
    );
    tls.write_all(&options("z9hG4bK-next", sent_by, via_port, false, None))
        .await
        .unwrap();
    let msg = next_message(&mut tls, &mut framer).await;
    if let Ok(answer) = parse_response(&msg) {
        assert_eq!(answer.branch.as_deref(), Some("z9hG4bK-next"));
        return CallBack::NotOverTheConnection;
    }
    let req = parse_request(&msg).expect("a request from Kamailio");
    assert_eq!(req.method, "OPTIONS");
    // Answer it, so that Kamailio's transaction ends.
    let reply = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=c1\r\nCall-ID: {}\r\nCSeq: {} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        req.vias.join(", "),
        req.from,
        req.to,
        req.call_id,
        req.cseq.seq
    );
    tls.write_all(reply.as_bytes()).await.unwrap();
    CallBack::OverTheConnection(req.uri)
}

#[test]
fn kamailio_sends_its_request_over_the_aliased_connection() {
    if skip() {
        return;
    }
    let (lab, guard) = kamailio_lab("kali");
    let files = KamailioTls::of(&lab);
    let server = SocketAddr::new(lab.addrs.servers_v4[2].into(), KAMAILIO_TLS_PORT);
    let client = KamailioTls::CLIENT_NAME;
    let results = in_client(&lab, move || async move {
        // Each on its own connection and Via port, so no alias
        // from one case can serve another.
        let aliased = ask_for_call_back(&files, server, client, 5071, true).await;
        let plain = ask_for_call_back(&files, server, client, 5072, false).await;
        let uncovered = ask_for_call_back(&files, server, "mallory.example.test", 5073, true).await;
        (aliased, plain, uncovered)
    });
    let (aliased, plain, uncovered) = results;
    println!("alias, certificate covers the sent-by: {aliased:?}");
    println!("no alias: {plain:?}");
    println!("alias, certificate for {client} but sent-by mallory.example.test: {uncovered:?}");
    // tcp_accept_aliases: the request for (client IP, Via port) reuses the
    // connection the alias came on.
    match aliased {
        CallBack::OverTheConnection(uri) => assert!(uri.ends_with(":5071;transport=tls"), "{uri}"),
        other => panic!("with ;alias, Kamailio's request must come over the connection: {other:?}"),
    }
    // Without the alias Kamailio does not use the connection (it tries a
    // new one to the client's port 5072, where nothing listens).
    assert!(matches!(plain, CallBack::NotOverTheConnection), "{plain:?}");
    // Kamailio 5.6 does not do RFC 5923 §5.1's check: it aliases whatever
    // the Via sent-by, as long as the client certificate is from a trusted
    // CA. If this fails, Kamailio now checks: update lab/kamailio.cfg's notes.
    assert!(
        matches!(uncovered, CallBack::OverTheConnection(_)),
        "{uncovered:?}"
    );
    drop(guard);
}

/// Issue #10's proof with a third party: one siprace process, N dials to
/// domain A, one TLS connection at Kamailio (`dial --count`); then, in one
/// dialer, domain B on the same address: the certificate of A's connection
/// does not cover B, so B gets a connection of its own and the report says
/// why (the opensips#1651 case).
#[test]
fn one_process_opens_one_connection_for_n_dials_and_a_second_for_a_domain_not_covered() {
    if skip() {
        return;
    }
    let (lab, guard) = kamailio_lab("kreuse");
    let a = format!("sips:{}", KamailioTls::DOMAIN_A);
    let b = format!("sips:{}", KamailioTls::DOMAIN_B);
    let files = KamailioTls::of(&lab);
    let dns = SocketAddr::new(lab.addrs.dns_v4.into(), DNS_PORT);

    // `siprace dial --count 10`: one connection for ten dials.
    const N: u64 = 10;
    let before = accepted(&lab);
    let mut cmd = lab.command(Role::Client, siprace_bin());
    cmd.args([
        "dial",
        "--json",
        "--probe",
        "--max-concurrent",
        "1",
        "--count",
    ])
    .arg(N.to_string())
    .args(["--interval", "0", "--dns"])
    .arg(dns.to_string())
    .args(files.dial_args())
    .arg(&a);
    let out = cmd.output().expect("run siprace dial --count");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let summary = &lines.last().expect("a summary line")["summary"];
    let after = accepted(&lab);
    println!(
        "siprace dial --count {N} {a}: {summary}; Kamailio connections accepted {before} -> {after}"
    );
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(summary["connected"], N, "{summary}");
    assert_eq!(summary["connections_opened"], 1, "{summary}");
    assert_eq!(summary["tls_handshakes"], 1, "{summary}");
    assert_eq!(
        after - before,
        1,
        "Kamailio saw one connection for {N} dials"
    );
    for report in &lines[1..lines.len() - 1] {
        assert_eq!(report["reuse"]["connection"], "reused", "{report}");
    }

    // One dialer, A then B: B is not carried by A's connection.
    let before = accepted(&lab);
    let (ca, cert, key) = (
        files.ca.clone(),
        files.client_cert.clone(),
        files.client_key.clone(),
    );
    let (a2, b2) = (a.clone(), b.clone());
    let (first, second, reuse_b) = in_client(&lab, move || async move {
        let mut cfg = siprace::DialerConfig::default();
        cfg.locate.dns_server = Some(dns);
        cfg.race.max_concurrent = 1;
        cfg.connect.probe_streams = true;
        cfg.connect.tls.ca.push(PemSource::File(ca));
        cfg.connect.tls.client_cert = Some(PemSource::File(cert));
        cfg.connect.tls.client_key = Some(PemSource::File(key));
        cfg.keep = Some(siprace::keep::KeepConfig::default());
        let dialer = siprace::Dialer::new(cfg).expect("a valid configuration");
        let first = dialer.dial(&a2).await.expect("A connects");
        let second = dialer.dial(&a2).await.expect("A again");
        let third = dialer.dial(&b2).await.expect("B connects");
        let reuse = |d: &siprace::Dial| serde_json::to_value(&d.report.reuse).unwrap();
        (reuse(&first), reuse(&second), reuse(&third))
    });
    let after = accepted(&lab);
    println!(
        "one dialer: A {first}; A {second}; B {reuse_b}; Kamailio accepted {before} -> {after}"
    );
    assert_eq!(first["connection"], "new");
    assert_eq!(second["connection"], "reused");
    assert_eq!(reuse_b["connection"], "new", "B needs its own connection");
    assert!(
        reuse_b["why_not"]
            .as_str()
            .is_some_and(|w| w.contains("does not cover") && w.contains(KamailioTls::DOMAIN_B)),
        "{reuse_b}"
    );
    assert_eq!(after - before, 2, "A's connection, then B's");
    drop(guard);
}
