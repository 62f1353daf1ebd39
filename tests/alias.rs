//! RFC 5923 connection reuse, server side, over real TLS on loopback: a
//! client (tokio-rustls, with or without an rcgen client certificate) sends
//! a hand-built OPTIONS whose top Via carries `;alias` and a host-name
//! sent-by; the responder honours the alias only when the client's
//! certificate covers that host (RFC 5922 §7.1), and then, with call-back
//! on, sends its own OPTIONS back over the same connection. Every refusal
//! (no client certificate, a certificate for another host, plain TCP) is
//! counted and causes no call-back.
//!
//! No sleeps: each wait is for a message or a counter, bounded by LIMIT.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use siprace::connect::tls::PemSource;
use siprace::responder::{
    start, Counters, ListenerConfig, ResponderConfig, ResponderHandle, ResponderTls, ThrowawayCa,
};
use siprace::sip::{parse_request, parse_response, Frame, StreamFramer};
use siprace::{Family, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every wait: generous, only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(10);
/// The responder's SIP domain (its certificate).
const SERVER: &str = "example.test";
/// The client's host name: its Via sent-by.
const CLIENT: &str = "client.example.test";
/// The port in the client's Via sent-by (not the socket's: RFC 5923 records
/// the advertised sent-by).
const CLIENT_PORT: u16 = 5071;

/// A test CA issuing the responder's and the clients' certificates.
struct Ca(ThrowawayCa);

impl Ca {
    fn new() -> Ca {
        Ca(ThrowawayCa::new("siprace alias test CA").unwrap())
    }

    /// A leaf (certificate PEM, key PEM) with the URI SAN `sip:<name>` and
    /// the dNSName `<name>`.
    fn leaf(&self, name: &str) -> (String, String) {
        self.0.leaf(name).unwrap()
    }

    /// A TLS client trusting this CA, presenting a certificate for
    /// `client_name` if given.
    fn client(&self, client_name: Option<&str>) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.0.pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cfg = match client_name {
            Some(name) => {
                let (cert, key) = self.leaf(name);
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .map(|c| c.unwrap())
                        .collect();
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

/// A responder on 127.0.0.1 over TLS and TCP: certificate for [`SERVER`],
/// client certificates from `ca` verified but optional, call-back on.
async fn responder(ca: &Ca) -> ResponderHandle {
    let (cert, key) = ca.leaf(SERVER);
    let listeners = [Transport::Tls, Transport::Tcp]
        .into_iter()
        .map(|transport| ListenerConfig {
            transport,
            addr: "127.0.0.1:0".parse().unwrap(),
            silent: false,
        })
        .collect();
    start(ResponderConfig {
        listeners,
        tls: Some(ResponderTls {
            cert: PemSource::Pem(cert),
            key: PemSource::Pem(key),
            client_ca: Some(PemSource::Pem(ca.0.pem().to_string())),
        }),
        client_certificate_optional: true,
        call_back: true,
        ..ResponderConfig::default()
    })
    .await
    .unwrap()
}

async fn connect_tls(
    handle: &ResponderHandle,
    ca: &Ca,
    client_name: Option<&str>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let addr = handle.addr(Transport::Tls, Family::V4).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(SERVER.to_string()).unwrap();
    tokio::time::timeout(LIMIT, ca.client(client_name).connect(name, tcp))
        .await
        .expect("the handshake ends")
        .expect("the handshake succeeds")
}

/// The client's OPTIONS: Via `SIP/2.0/<via_transport> client.example.test:5071`,
/// with `;alias` if asked.
fn options(via_transport: &str, branch: &str, alias: bool) -> Vec<u8> {
    let alias = if alias { ";alias" } else { "" };
    format!(
        "OPTIONS sip:{SERVER} SIP/2.0\r\n\
         Via: SIP/2.0/{via_transport} {CLIENT}:{CLIENT_PORT};branch={branch}{alias}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{CLIENT}>;tag=a1\r\n\
         To: <sip:{SERVER}>\r\n\
         Call-ID: {branch}@{CLIENT}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The next SIP message on `stream` (CRLF keep-alives skipped).
async fn next_message<S: AsyncRead + Unpin>(stream: &mut S, framer: &mut StreamFramer) -> Vec<u8> {
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match framer
                .next_frame()
                .expect("well-framed SIP from the responder")
            {
                Some(Frame::Message(m)) => return m,
                Some(Frame::KeepAlive) => continue,
                None => {}
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the responder closed the connection");
            framer.push(&buf[..n]);
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("a message arrives")
}

/// Sends an OPTIONS and returns the next message after the 200 that answers it.
async fn options_answered<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    framer: &mut StreamFramer,
    via_transport: &str,
    branch: &str,
    alias: bool,
) {
    stream
        .write_all(&options(via_transport, branch, alias))
        .await
        .unwrap();
    let answer = parse_response(&next_message(stream, framer).await).expect("a response");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.branch.as_deref(), Some(branch));
}

/// After a refused alias: a second request's answer is the very next
/// message (a call-back would have been written before it), and nothing
/// was called back.
async fn assert_no_call_back<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    framer: &mut StreamFramer,
    via_transport: &str,
) {
    options_answered(stream, framer, via_transport, "z9hG4bK-second", false).await;
}

async fn counters(
    handle: &ResponderHandle,
    transport: Transport,
    pred: impl Fn(&Counters) -> bool,
) -> Counters {
    let snap = tokio::time::timeout(
        LIMIT,
        handle.wait_for_stats(|s| pred(&s.get(transport, Family::V4))),
    )
    .await
    .expect("the counters reach the expected values");
    snap.get(transport, Family::V4)
}

#[tokio::test]
async fn alias_with_a_covering_client_certificate_gets_a_call_back_over_the_same_connection() {
    let ca = Ca::new();
    let handle = responder(&ca).await;
    let mut tls = connect_tls(&handle, &ca, Some(CLIENT)).await;
    let mut framer = StreamFramer::new(65_536);
    options_answered(&mut tls, &mut framer, "TLS", "z9hG4bK-first", true).await;

    // The responder's own request, over this very connection.
    let msg = next_message(&mut tls, &mut framer).await;
    let call_back = parse_request(&msg).expect("a request from the responder");
    assert_eq!(call_back.method, "OPTIONS");
    assert_eq!(
        call_back.uri,
        format!("sip:{CLIENT}:{CLIENT_PORT};transport=tls"),
        "addressed to the alias (sent-by host and port)"
    );
    let server_end = tls.get_ref().0.peer_addr().unwrap();
    let via = &call_back.vias[0];
    assert!(
        via.starts_with(&format!("SIP/2.0/TLS {server_end};branch=z9hG4bK")),
        "the responder's Via names the connection's server end: {via}"
    );
    let answer = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {}\r\nTo: {};tag=c1\r\nCall-ID: {}\r\nCSeq: {} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        call_back.from, call_back.to, call_back.call_id, call_back.cseq.seq
    );
    tls.write_all(answer.as_bytes()).await.unwrap();

    let c = counters(&handle, Transport::Tls, |c| c.callbacks_answered == 1).await;
    assert_eq!(
        (
            c.connections,
            c.connections_reused,
            c.alias_accepted,
            c.callbacks_sent,
            c.callbacks_unsent
        ),
        (1, 1, 1, 1, 0),
        "{c:?}"
    );
    assert_eq!(
        c.alias_refused_not_tls + c.alias_refused_no_client_cert + c.alias_refused_cert_mismatch,
        0
    );
    // The answer to the call-back is not taken for a bad request.
    assert_eq!((c.requests, c.responses, c.invalid), (1, 1, 0), "{c:?}");

    // The same alias again on the same connection: counted, not called back twice.
    assert_no_call_back(&mut tls, &mut framer, "TLS").await;
    tls.write_all(&options("TLS", "z9hG4bK-third", true))
        .await
        .unwrap();
    let third = parse_response(&next_message(&mut tls, &mut framer).await).unwrap();
    assert_eq!(third.branch.as_deref(), Some("z9hG4bK-third"));
    let c = counters(&handle, Transport::Tls, |c| c.alias_accepted == 2).await;
    assert_eq!(c.callbacks_sent, 1, "{c:?}");
    let snap = handle.shutdown().await;
    println!(
        "responder stats after the call-back: {}",
        serde_json::to_string(&snap.tls.ipv4).unwrap()
    );
}

/// A TLS client presenting a certificate for `client_name` (or none) sends
/// an OPTIONS with `;alias` and sent-by [`CLIENT`], then another: it gets
/// no call-back. Returns the responder's TLS counters.
async fn refused_over_tls(client_name: Option<&str>) -> Counters {
    let ca = Ca::new();
    let handle = responder(&ca).await;
    let mut tls = connect_tls(&handle, &ca, client_name).await;
    let mut framer = StreamFramer::new(65_536);
    options_answered(&mut tls, &mut framer, "TLS", "z9hG4bK-first", true).await;
    assert_no_call_back(&mut tls, &mut framer, "TLS").await;
    let c = counters(&handle, Transport::Tls, |c| c.requests == 2).await;
    assert_eq!(
        (c.alias_accepted, c.callbacks_sent, c.connections_reused),
        (0, 0, 0),
        "{c:?}"
    );
    handle.shutdown().await;
    c
}

#[tokio::test]
async fn alias_without_a_client_certificate_is_refused() {
    let c = refused_over_tls(None).await;
    assert_eq!(c.alias_refused_no_client_cert, 1, "{c:?}");
}

#[tokio::test]
async fn alias_with_a_certificate_for_another_host_is_refused() {
    // A valid certificate from the trusted CA, but for another name.
    let c = refused_over_tls(Some("mallory.example.test")).await;
    assert_eq!(c.alias_refused_cert_mismatch, 1, "{c:?}");
}

#[tokio::test]
async fn alias_over_plain_tcp_is_refused() {
    let ca = Ca::new();
    let handle = responder(&ca).await;
    let addr: SocketAddr = handle.addr(Transport::Tcp, Family::V4).unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut framer = StreamFramer::new(65_536);
    // Even claiming TLS in the Via: the connection is what counts.
    options_answered(&mut tcp, &mut framer, "TLS", "z9hG4bK-first", true).await;
    options_answered(&mut tcp, &mut framer, "TCP", "z9hG4bK-tcp", true).await;
    assert_no_call_back(&mut tcp, &mut framer, "TCP").await;
    let c = counters(&handle, Transport::Tcp, |c| c.requests == 3).await;
    assert_eq!(c.alias_refused_not_tls, 2, "{c:?}");
    assert_eq!(
        (c.alias_accepted, c.callbacks_sent, c.connections_reused),
        (0, 0, 0),
        "{c:?}"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_newer_connection_takes_over_the_alias() {
    let ca = Ca::new();
    let handle = responder(&ca).await;
    // Two live connections from the same client name: each alias is
    // recorded when it arrives and called back over its own connection.
    let mut first = connect_tls(&handle, &ca, Some(CLIENT)).await;
    let mut first_framer = StreamFramer::new(65_536);
    options_answered(&mut first, &mut first_framer, "TLS", "z9hG4bK-c1", true).await;
    let cb1 = parse_request(&next_message(&mut first, &mut first_framer).await).unwrap();
    assert_eq!(cb1.method, "OPTIONS");
    let mut second = connect_tls(&handle, &ca, Some(CLIENT)).await;
    let mut second_framer = StreamFramer::new(65_536);
    options_answered(&mut second, &mut second_framer, "TLS", "z9hG4bK-c2", true).await;
    let cb2 = parse_request(&next_message(&mut second, &mut second_framer).await).unwrap();
    assert_eq!(cb2.method, "OPTIONS");
    assert_ne!(cb1.call_id, cb2.call_id, "two call-backs");
    // Nothing more arrived on the first connection: its next message is the
    // answer to its next request.
    assert_no_call_back(&mut first, &mut first_framer, "TLS").await;
    // Neither client answers its call-back, and both close: the responder
    // drops the aliases with their connections and writes nothing more.
    drop(first);
    drop(second);
    let c = handle.shutdown().await.get(Transport::Tls, Family::V4);
    assert_eq!(
        (
            c.connections,
            c.connections_reused,
            c.alias_accepted,
            c.callbacks_sent,
            c.callbacks_answered,
            c.callbacks_unsent
        ),
        (2, 2, 2, 2, 0, 0),
        "{c:?}"
    );
}
