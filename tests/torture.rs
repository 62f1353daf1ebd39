//! The SIP torture messages of RFC 4475 (49) and RFC 5118 (12, IPv6), fed
//! to the parsers and to a running responder over UDP and TCP.
//!
//! The messages are in `tests/corpora/` (see its README for provenance).
//! [`CASES`] holds the verdict for each: what the RFC says, what our parsers
//! make of it, and what the responder answers. The tests check that every
//! row holds, that the verdicts agree with the RFC's grouping (valid ones
//! parse; invalid ones are refused unless the RFC allows accepting them),
//! that nothing panics or hangs, and that the responder keeps answering
//! OPTIONS after every message.
//!
//! Summary of the verdicts (61 messages):
//! - RFC 4475 §3.1.1, 13 valid: all parsed (11 requests, 2 responses).
//! - RFC 4475 §3.1.2, 19 invalid: 18 refused (16 requests answered 400 or
//!   505, 2 responses dropped); 1 accepted as the RFC allows (baddate:
//!   a non-GMT Date the responder does not read).
//! - RFC 4475 §3.2 and §3.4, 2 messages: parsed (badbranch: a stateless
//!   UAS has no use for the branch, the RFC allows falling back; inv2543).
//! - RFC 4475 §3.3, 15 well-formed messages whose semantics decide: 11
//!   parsed and answered as the RFC asks (416, 420, 415, 400 for a non-SIP
//!   AOR, 200, 486), 1 response dropped, 3 refused with the 400 the RFC asks
//!   for (missing or repeated single-value headers). sdp01 gets 486 without a
//!   body where the RFC suggests 406 or 400 (see its row).
//! - RFC 5118, 12 IPv6 messages: 11 parsed, 1 refused (ipv6-bad, 400).
//!
//! Content-Length quirk: three RFC 5118 messages with an SDP body
//! (ipv6-in-sdp, mult-ip-in-sdp, ipv4-mapped-ipv6) declare a Content-Length
//! 10, 8 and 9 bytes short of their CRLF body (the RFC counted LF line ends).
//! Over UDP the extra bytes are discarded as RFC 3261 §18.3 requires, so the
//! body is the declared length; over TCP they start a next message that never
//! completes, and the connection is closed at end of stream or by the
//! request deadline. A parser never reads past what it was given: a
//! Content-Length larger than the bytes is an error (clerr).
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use siprace::connect::{attempt, ConnectConfig};
use siprace::responder::{start, ListenerConfig, ResponderConfig, ResponderHandle};
use siprace::sip::{
    parse_request, parse_response, reject_invalid_request, Frame, OptionsProbe, StreamFramer,
};
use siprace::{Endpoint, Family, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Bound on every wait: generous, only hit when something is broken.
const LIMIT: Duration = Duration::from_secs(10);

/// The RFC's grouping of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// RFC 4475 §3.1.1 and RFC 5118's valid messages: must be accepted.
    Valid,
    /// RFC 4475 §3.1.2 and RFC 5118 §4.2: must be rejected, or handled as
    /// the RFC's text allows.
    Invalid,
    /// RFC 4475 §3.2: well-formed; the transaction layer decides.
    Transaction,
    /// RFC 4475 §3.3: well-formed syntax; the application's semantics decide.
    Application,
    /// RFC 4475 §3.4: RFC 2543 syntax a compatible element accepts.
    Compat,
}

/// What our parsers make of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    /// `parse_request` accepts it.
    Request,
    /// `parse_response` accepts it.
    Response,
    /// Both refuse it.
    Refused,
    /// `parse_request` accepts a message the RFC calls invalid, which its
    /// text explicitly allows.
    Liberal,
}

/// One torture message and its verdict.
struct Case {
    /// Under `tests/corpora/`.
    file: &'static str,
    section: &'static str,
    group: Group,
    parse: Parse,
    /// The status of each answer over UDP, in order (none for responses,
    /// ACK, garbage).
    udp: &'static [u16],
    /// The same on a TCP connection the client half-closes after writing.
    tcp: &'static [u16],
    /// Why, where the answer is not plain.
    why: &'static str,
}

use Group::*;
use Parse::*;

const fn case(
    file: &'static str,
    section: &'static str,
    group: Group,
    parse: Parse,
    udp: &'static [u16],
    why: &'static str,
) -> Case {
    Case {
        file,
        section,
        group,
        parse,
        udp,
        tcp: udp,
        why,
    }
}

/// The verdicts. "RFC" means the section's text.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // RFC 4475 §3.1.1: valid messages.
    case("rfc4475/wsinv.dat", "4475 §3.1.1.1", Valid, Request, &[486], "LWS around Via '/' and params, folding, odd case: an INVITE, declined"),
    case("rfc4475/intmeth.dat", "4475 §3.1.1.2", Valid, Request, &[501], "unknown method of unusual token characters; NUL/BEL/DEL as quoted-pairs"),
    case("rfc4475/esc01.dat", "4475 §3.1.1.3", Valid, Request, &[486], ""),
    case("rfc4475/escnull.dat", "4475 §3.1.1.4", Valid, Request, &[200], "REGISTER; %00 stays escaped"),
    case("rfc4475/esc02.dat", "4475 §3.1.1.5", Valid, Request, &[501], "RE%47IST%45R is not REGISTER: an unknown method"),
    case("rfc4475/lwsdisp.dat", "4475 §3.1.1.6", Valid, Request, &[200], ""),
    case("rfc4475/longreq.dat", "4475 §3.1.1.7", Valid, Request, &[486], ""),
    Case { file: "rfc4475/dblreq.dat", section: "4475 §3.1.1.8", group: Valid, parse: Request, udp: &[200], tcp: &[200, 486],
        why: "UDP: the INVITE after the REGISTER's end is discarded (RFC 3261 §18.3); on a stream it is the next message" },
    case("rfc4475/semiuri.dat", "4475 §3.1.1.9", Valid, Request, &[200], ""),
    case("rfc4475/transports.dat", "4475 §3.1.1.10", Valid, Request, &[200], ""),
    case("rfc4475/mpart01.dat", "4475 §3.1.1.11", Valid, Request, &[405], "MESSAGE is known, not implemented"),
    case("rfc4475/unreason.dat", "4475 §3.1.1.12", Valid, Response, &[], "a stray response: dropped"),
    case("rfc4475/noreason.dat", "4475 §3.1.1.13", Valid, Response, &[], "a stray response: dropped"),
    // RFC 4475 §3.1.2: invalid messages.
    case("rfc4475/badinv01.dat", "4475 §3.1.2.1", Invalid, Refused, &[400], "';;,;,,' in Via, ';;;;' in Contact"),
    Case { file: "rfc4475/clerr.dat", section: "4475 §3.1.2.2", group: Invalid, parse: Refused, udp: &[400], tcp: &[],
        why: "Content-Length past the datagram: 400; on a stream the rest may still come (closed at end of stream or by the request deadline)" },
    case("rfc4475/ncl.dat", "4475 §3.1.2.3", Invalid, Refused, &[400], "negative Content-Length; on a stream a framing error: 400, then closed"),
    case("rfc4475/scalar02.dat", "4475 §3.1.2.4", Invalid, Refused, &[400], "CSeq beyond 2**31"),
    case("rfc4475/scalarlg.dat", "4475 §3.1.2.5", Invalid, Refused, &[], "a response with overlarge scalars: dropped"),
    case("rfc4475/quotbal.dat", "4475 §3.1.2.6", Invalid, Refused, &[400], "unterminated quote in To"),
    case("rfc4475/ltgtruri.dat", "4475 §3.1.2.7", Invalid, Refused, &[400], "<> around the Request-URI"),
    case("rfc4475/lwsruri.dat", "4475 §3.1.2.8", Invalid, Refused, &[400], "LWS inside the Request-URI"),
    case("rfc4475/lwsstart.dat", "4475 §3.1.2.9", Invalid, Refused, &[400], "several SP between Request-Line elements"),
    case("rfc4475/trws.dat", "4475 §3.1.2.10", Invalid, Refused, &[400], "SP after SIP/2.0"),
    case("rfc4475/escruri.dat", "4475 §3.1.2.11", Invalid, Refused, &[400], "headers in a Request-URI (RFC 3261 §19.1.1); rejecting is the RFC's first choice"),
    case("rfc4475/baddate.dat", "4475 §3.1.2.12", Invalid, Liberal, &[486], "RFC allows ignoring the non-GMT Date; the responder never reads Date"),
    case("rfc4475/regbadct.dat", "4475 §3.1.2.13", Invalid, Refused, &[400], "Contact URI with '?' outside <>"),
    case("rfc4475/badaspec.dat", "4475 §3.1.2.14", Invalid, Refused, &[400], "spaces inside <> in To"),
    case("rfc4475/baddn.dat", "4475 §3.1.2.15", Invalid, Refused, &[400], "unquoted display names with ','"),
    case("rfc4475/badvers.dat", "4475 §3.1.2.16", Invalid, Refused, &[505], "SIP/7.0"),
    case("rfc4475/mismatch01.dat", "4475 §3.1.2.17", Invalid, Refused, &[400], "CSeq method INVITE in an OPTIONS"),
    case("rfc4475/mismatch02.dat", "4475 §3.1.2.18", Invalid, Refused, &[400], "RFC prefers 501, finds 400 acceptable: the mismatch is found first"),
    case("rfc4475/bigcode.dat", "4475 §3.1.2.19", Invalid, Refused, &[], "a response with a status beyond 699: dropped"),
    // RFC 4475 §3.2: transaction layer.
    case("rfc4475/badbranch.dat", "4475 §3.2.1", Transaction, Request, &[200], "branch 'z9hG4bK' alone: RFC allows RFC 2543 fallback; the stateless responder just answers"),
    // RFC 4475 §3.3: application layer.
    case("rfc4475/insuf.dat", "4475 §3.3.1", Application, Refused, &[400], "no Call-ID, From, To: 400 with what there is (Via, CSeq)"),
    case("rfc4475/unkscm.dat", "4475 §3.3.2", Application, Request, &[416], ""),
    case("rfc4475/novelsc.dat", "4475 §3.3.3", Application, Request, &[416], "soap.beep: never meaningful here, so unsupported"),
    case("rfc4475/unksm2.dat", "4475 §3.3.4", Application, Request, &[400], "a registrar needs a SIP AOR in To"),
    case("rfc4475/bext01.dat", "4475 §3.3.5", Application, Request, &[420], "Unsupported lists the Require tags; Proxy-Require is not a UAS's"),
    case("rfc4475/invut.dat", "4475 §3.3.6", Application, Request, &[415], "Accept: application/sdp"),
    case("rfc4475/regaut01.dat", "4475 §3.3.7", Application, Request, &[200], "a registrar without authentication ignores Authorization"),
    case("rfc4475/multi01.dat", "4475 §3.3.8", Application, Refused, &[400], "repeated Call-ID, CSeq, To, From, Max-Forwards"),
    case("rfc4475/mcl01.dat", "4475 §3.3.9", Application, Refused, &[400], "two Content-Lengths; on a stream a framing error: 400, then closed"),
    case("rfc4475/bcast.dat", "4475 §3.3.10", Application, Response, &[], "a stray response: dropped"),
    case("rfc4475/zeromf.dat", "4475 §3.3.11", Application, Request, &[200], "an endpoint processes Max-Forwards 0"),
    case("rfc4475/cparam01.dat", "4475 §3.3.12", Application, Request, &[200], "Contact echoed with its contact-param"),
    case("rfc4475/cparam02.dat", "4475 §3.3.13", Application, Request, &[200], ""),
    case("rfc4475/regescrt.dat", "4475 §3.3.14", Application, Request, &[200], "'?' inside <> is fine"),
    case("rfc4475/sdp01.dat", "4475 §3.3.15", Application, Request, &[486], "RFC suggests 406 or 400; the INVITE is declined without a body, which honours Accept"),
    // RFC 4475 §3.4: backward compatibility.
    case("rfc4475/inv2543.dat", "4475 §3.4.1", Compat, Request, &[486], "no Content-Length: over UDP the body is the rest of the datagram; on a stream it never completes"),
    // RFC 5118 (IPv6).
    case("rfc5118/ipv6-good.dat", "5118 §4.1", Valid, Request, &[200], ""),
    case("rfc5118/ipv6-bad.dat", "5118 §4.2", Invalid, Refused, &[400], "IPv6 Request-URI host without brackets"),
    case("rfc5118/port-ambiguous.dat", "5118 §4.3", Valid, Request, &[200], "5070 is part of the address"),
    case("rfc5118/port-unambiguous.dat", "5118 §4.4", Valid, Request, &[200], ""),
    case("rfc5118/via-received-param-with-delim.dat", "5118 §4.5", Valid, Request, &[481], "received with [] accepted; BYE without dialog"),
    case("rfc5118/via-received-param-no-delim.dat", "5118 §4.5", Valid, Request, &[200], ""),
    case("rfc5118/ipv6-in-sdp.dat", "5118 §4.6", Valid, Request, &[486], "Content-Length quirk (see the module doc)"),
    case("rfc5118/mult-ip-in-header.dat", "5118 §4.7", Valid, Request, &[481], ""),
    case("rfc5118/mult-ip-in-sdp.dat", "5118 §4.8", Valid, Request, &[486], "Content-Length quirk"),
    case("rfc5118/ipv4-mapped-ipv6.dat", "5118 §4.9", Valid, Request, &[486], "Content-Length quirk"),
    case("rfc5118/ipv6-bug-abnf-3-colons.dat", "5118 §4.10", Valid, Request, &[200], "the ':::' form RFC 3261's ABNF derives is accepted, as the RFC asks"),
    case("rfc5118/ipv6-correct-abnf-2-colons.dat", "5118 §4.10", Valid, Request, &[200], ""),
];

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora")
}

fn bytes_of(case: &Case) -> Vec<u8> {
    let path = corpus_dir().join(case.file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The status code of a response's start line (answers echo what they
/// were sent, so they need not parse as well-formed responses).
fn status_of(response: &[u8]) -> u16 {
    let line = response.split(|b| *b == b'\r').next().unwrap();
    let line = std::str::from_utf8(line).unwrap();
    assert!(line.starts_with("SIP/2.0 "), "{line:?}");
    line[8..11].parse().unwrap()
}

#[test]
fn the_table_covers_the_corpus_and_follows_the_rfc_grouping() {
    let mut files: Vec<String> = ["rfc4475", "rfc5118"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(corpus_dir().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .map(|p| {
            let dir = p
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            format!("{dir}/{}", p.file_name().unwrap().to_string_lossy())
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "one row per corpus file");
    assert_eq!(
        CASES
            .iter()
            .filter(|c| c.file.starts_with("rfc4475/"))
            .count(),
        49
    );
    assert_eq!(
        CASES
            .iter()
            .filter(|c| c.file.starts_with("rfc5118/"))
            .count(),
        12
    );
    for c in CASES {
        match c.group {
            Valid | Compat | Transaction => {
                assert_ne!(c.parse, Refused, "{}: must be accepted", c.file)
            }
            Invalid => assert!(
                matches!(c.parse, Refused | Liberal),
                "{}: must be refused",
                c.file
            ),
            Application => {}
        }
        if c.parse == Liberal {
            assert!(c.why.starts_with("RFC allows"), "{}: say why", c.file);
        }
        // A refused request is answered with 400 or 505 over UDP.
        let is_response = bytes_of(c).starts_with(b"SIP/");
        if c.parse == Refused && !is_response {
            assert!(matches!(c.udp, [400] | [505]), "{}", c.file);
        }
        if is_response {
            assert!(c.udp.is_empty() && c.tcp.is_empty(), "{}", c.file);
        }
    }
}

#[test]
fn parsers_give_the_table_verdicts() {
    for c in CASES {
        let bytes = bytes_of(c);
        let as_request = parse_request(&bytes);
        let as_response = parse_response(&bytes);
        let got = match (&as_request, &as_response) {
            (Ok(_), Err(_)) if c.parse == Liberal => Liberal,
            (Ok(_), Err(_)) => Request,
            (Err(_), Ok(_)) => Response,
            (Err(_), Err(_)) => Refused,
            (Ok(_), Ok(_)) => panic!("{}: both a request and a response", c.file),
        };
        assert_eq!(
            got, c.parse,
            "{} ({}): {as_request:?} / {as_response:?}",
            c.file, c.section
        );
        // The 400/505 builder copes with every message (and answers no response).
        let rejected = reject_invalid_request(&bytes, Some("192.0.2.9:5060".parse().unwrap()));
        if let Some(r) = &rejected {
            assert!(matches!(status_of(r), 400 | 505), "{}", c.file);
        }
        if c.parse == Response {
            assert!(rejected.is_none(), "{}", c.file);
        }
        // Stream framing does not depend on how the bytes are cut.
        let whole = frames(&[&bytes]);
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frames(&chunks), whole, "{}", c.file);
    }
}

/// The frames a stream carrying `chunks` yields, and the error that ends it.
fn frames(chunks: &[&[u8]]) -> (Vec<Frame>, Option<String>) {
    let mut f = StreamFramer::default();
    let mut out = Vec::new();
    for chunk in chunks {
        f.push(chunk);
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

#[test]
fn the_rfc5118_content_length_quirk() {
    for (file, declared, body) in [
        ("rfc5118/ipv6-in-sdp.dat", 241, 251),
        ("rfc5118/mult-ip-in-sdp.dat", 181, 189),
        ("rfc5118/ipv4-mapped-ipv6.dat", 236, 245),
    ] {
        let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(bytes.len() - head_end, body, "{file}");
        // Over UDP: the body is the declared length, the rest discarded.
        let req = parse_request(&bytes).unwrap();
        assert_eq!(
            (req.content_length, req.body.len()),
            (Some(declared), declared)
        );
        // On a stream: one message, then bytes that never make another.
        let (frames, error) = frames(&[&bytes]);
        assert_eq!((frames.len(), error), (1, None), "{file}");
    }
}

async fn responder(request_timeout: Duration) -> ResponderHandle {
    let mut listeners = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            listeners.push(ListenerConfig {
                transport,
                addr: addr.parse().unwrap(),
                silent: false,
            });
        }
    }
    start(ResponderConfig {
        listeners,
        request_timeout,
        ..ResponderConfig::default()
    })
    .await
    .unwrap()
}

/// An OPTIONS probe dialed through the connect layer: the responder still serves.
async fn still_serves(addr: SocketAddr, transport: Transport) {
    let endpoint = Endpoint {
        transport,
        addr,
        host: Arc::from("localhost"),
        rank: 0,
    };
    let cfg = ConnectConfig {
        probe_streams: true,
        t1: Duration::from_secs(2),
        ..ConnectConfig::default()
    };
    let c = tokio::time::timeout(LIMIT, attempt(&endpoint, &cfg, &|_| {}))
        .await
        .expect("the probe ends")
        .expect("the responder still answers OPTIONS");
    assert_eq!(c.response.unwrap().status, 200);
}

#[tokio::test]
async fn udp_responder_answers_as_the_table_says() {
    let handle = responder(Duration::from_secs(10)).await;
    for family in [Family::V4, Family::V6] {
        let addr = handle.addr(Transport::Udp, family).unwrap();
        let sock = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
            .await
            .unwrap();
        sock.connect(addr).await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut buf = vec![0u8; 65_536];
        for c in CASES {
            let bytes = bytes_of(c);
            sock.send(&bytes).await.unwrap();
            // Then an OPTIONS: what comes back before its answer is the
            // answer to the torture message (one socket, answered in order).
            let probe = OptionsProbe::new("sip:x", Transport::Udp, local);
            sock.send(&probe.to_bytes()).await.unwrap();
            let mut answers = Vec::new();
            loop {
                let n = tokio::time::timeout(LIMIT, sock.recv(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("{}: no answer to the OPTIONS after it", c.file))
                    .unwrap();
                let datagram = &buf[..n];
                if parse_response(datagram).is_ok_and(|r| r.matches(&probe)) {
                    break;
                }
                answers.push(status_of(datagram));
                if c.parse != Refused {
                    // Answers to requests that parsed are well-formed and echo the Call-ID.
                    let req = parse_request(&bytes).unwrap();
                    assert_eq!(
                        parse_response(datagram).unwrap().call_id,
                        req.call_id,
                        "{}",
                        c.file
                    );
                }
                assert!(answers.len() <= 4, "{}: too many answers", c.file);
            }
            assert_eq!(
                answers, c.udp,
                "{} ({}) over UDP {family}",
                c.file, c.section
            );
        }
        still_serves(addr, Transport::Udp).await;
    }
    handle.shutdown().await;
}

/// Writes `bytes` on a new connection, half-closes it, and returns the
/// status of each answer read until the responder closes.
async fn over_tcp(addr: SocketAddr, bytes: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut received))
        .await
        .expect("the responder closes the connection")
        .unwrap();
    let mut framer = StreamFramer::default();
    framer.push(&received);
    let mut statuses = Vec::new();
    while let Some(frame) = framer.next_frame().unwrap() {
        let Frame::Message(m) = frame else { continue };
        statuses.push(status_of(&m));
    }
    assert_eq!(framer.buffered(), 0, "answers are whole messages");
    statuses
}

#[tokio::test]
async fn tcp_responder_answers_as_the_table_says() {
    let handle = responder(Duration::from_millis(300)).await;
    for family in [Family::V4, Family::V6] {
        let addr = handle.addr(Transport::Tcp, family).unwrap();
        for c in CASES {
            let answers = over_tcp(addr, &bytes_of(c)).await;
            assert_eq!(
                answers, c.tcp,
                "{} ({}) over TCP {family}",
                c.file, c.section
            );
        }
        still_serves(addr, Transport::Tcp).await;
    }
    // Without the half-close, a Content-Length the bytes never reach (clerr)
    // keeps the connection waiting until the request deadline closes it.
    let addr = handle.addr(Transport::Tcp, Family::V6).unwrap();
    let clerr = CASES
        .iter()
        .find(|c| c.file.ends_with("clerr.dat"))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&bytes_of(clerr)).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut received))
        .await
        .expect("closed by the request deadline")
        .unwrap();
    assert!(received.is_empty());
    let snap = tokio::time::timeout(
        LIMIT,
        handle.wait_for_stats(|s| s.tcp.ipv6.connections_request_timeout == 1),
    )
    .await
    .expect("counted as a request timeout");
    assert_eq!(snap.tcp.ipv6.connections_idle_closed, 0);
    handle.shutdown().await;
}
