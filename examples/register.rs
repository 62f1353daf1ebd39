//! Embedding the dialer: race a SIP target's addresses, then send a
//! REGISTER over the winning connection and read the registrar's answer.
//!
//! `cargo run --example register` starts siprace's own responder on
//! `[::1]` and `127.0.0.1` (TCP, ephemeral ports) and registers with it;
//! `cargo run --example register -- 'sip:registrar.example;transport=tcp'`
//! dials the target you give instead. Only UDP, TCP and TLS winners are
//! shown here; any other is reported and closed.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use siprace::connect::Connection;
use siprace::endpoint::Family;
use siprace::responder::{self, ListenerConfig, ResponderConfig};
use siprace::sip::{self, Frame, StreamFramer};
use siprace::{Dialer, DialerConfig, Transport};

/// How long the registrar may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Without an argument: a registrar of our own on both loopbacks.
    let (target, local_registrar) = match std::env::args().nth(1) {
        Some(target) => (target, None),
        None => {
            let listeners = ["[::1]:0", "127.0.0.1:0"]
                .iter()
                .map(|addr| ListenerConfig {
                    transport: Transport::Tcp,
                    addr: addr.parse().expect("a socket address"),
                    silent: false,
                })
                .collect();
            let registrar = responder::start(ResponderConfig {
                listeners,
                ..ResponderConfig::default()
            })
            .await?;
            let addr = registrar
                .addr(Transport::Tcp, Family::V6)
                .ok_or("the responder has no IPv6 TCP listener")?;
            (format!("sip:{addr};transport=tcp"), Some(registrar))
        }
    };

    // The race: every loser is closed before `dial` returns.
    let dialer = Dialer::new(DialerConfig::default())?;
    let dial = dialer.dial(&target).await?;
    let peer = dial.endpoint.addr;
    println!(
        "connected to {peer} over {} in {:.1} ms",
        dial.endpoint.transport, dial.report.total_ms
    );

    // The winner is an ordinary socket (or TLS session) to use as it is.
    let Some(connection) = dial.connection else {
        return Err("the dialer kept the connection: this example turns the table off".into());
    };
    let answer = match connection {
        Connection::Tcp(mut stream) => {
            let local = stream.local_addr()?;
            let request = register(&target, Transport::Tcp, local, peer);
            exchange_on_stream(&mut stream, &request).await?
        }
        Connection::Tls(mut stream) => {
            let local = stream.get_ref().0.local_addr()?;
            let request = register(&target, Transport::Tls, local, peer);
            exchange_on_stream(&mut *stream, &request).await?
        }
        Connection::Udp(socket) => {
            let local = socket.local_addr()?;
            socket
                .send(&register(&target, Transport::Udp, local, peer))
                .await?;
            let mut buf = vec![0u8; sip::MAX_MESSAGE_SIZE];
            let n = tokio::time::timeout(ANSWER_TIMEOUT, socket.recv(&mut buf)).await??;
            buf.truncate(n);
            buf
        }
        other => {
            println!("this example does not speak over {other:?}; closing it");
            return Ok(());
        }
    };
    let response = sip::parse_response(&answer)?;
    println!(
        "REGISTER answered: {} {}",
        response.status,
        siprace::report::terminal_safe(&response.reason)
    );
    if let Some(registrar) = local_registrar {
        let stats = registrar.shutdown().await;
        println!(
            "the registrar counted {} request(s) over TCP/IPv6",
            stats.tcp.ipv6.requests
        );
    }
    Ok(())
}

/// A REGISTER of `sip:example@<target's host>` binding this connection's
/// local address, sent over `transport` from `local` to `peer`.
fn register(target: &str, transport: Transport, local: SocketAddr, peer: SocketAddr) -> Vec<u8> {
    let request_uri = format!("sip:{}", sip::uri_host(peer.ip()));
    let via_transport = transport.as_str().to_uppercase();
    let sent_by = SocketAddr::new(local.ip(), local.port());
    let branch = format!("{}{}", sip::BRANCH_MAGIC, sip::random_token(16));
    let tag = sip::random_token(8);
    let call_id = sip::random_token(20);
    let aor = format!("sip:example@{}", sip::uri_host(peer.ip()));
    let contact = format!("<sip:example@{sent_by};transport={transport}>");
    format!(
        "REGISTER {request_uri} SIP/2.0\r\n\
         Via: SIP/2.0/{via_transport} {sent_by};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <{aor}>;tag={tag}\r\n\
         To: <{aor}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: {contact}\r\n\
         Expires: 60\r\n\
         User-Agent: {} (example register, dialed {target})\r\n\
         Content-Length: 0\r\n\r\n",
        sip::user_agent()
    )
    .into_bytes()
}

/// Writes `request` on a stream and reads one whole SIP message back.
async fn exchange_on_stream<S>(stream: &mut S, request: &[u8]) -> Result<Vec<u8>, Box<dyn Error>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut framer = StreamFramer::new(sip::MAX_MESSAGE_SIZE);
    let mut buf = [0u8; 4096];
    let read_answer = async {
        loop {
            if let Some(Frame::Message(message)) = framer.next_frame()? {
                return Ok::<_, Box<dyn Error>>(message);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err("the registrar closed the connection".into());
            }
            framer.push(&buf[..n]);
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, read_answer).await?
}
