//! The UDP listener: one datagram, one answer. CRLF keep-alives are
//! counted and not answered; STUN Binding requests (RFC 5626 §4.4.2
//! keep-alives) are counted as keep-alives and answered with the address
//! they came from. As a registrar, it also takes the answers to the
//! requests sent down its flows.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::bindings::FlowRef;
use super::counters::bump;
use super::Ctx;
use crate::endpoint::Transport;
use crate::outbound::stun;

/// Serves one UDP socket until `stop` changes.
pub(super) async fn serve_udp(socket: Arc<UdpSocket>, ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = socket.recv_from(&mut buf) => {
                let (n, peer) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        // E.g. an ICMP error for an earlier answer: not fatal.
                        tracing::debug!("udp receive: {e}");
                        continue;
                    }
                };
                let bytes = &buf[..n];
                let stun_request = stun::is_stun(bytes).then(|| stun::parse_binding_request(bytes)).flatten();
                if stun_request.is_some() || bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    bump(&ctx.stats.cell(Transport::Udp, &peer).keepalives);
                    ctx.stats.touched();
                    if let Some(id) = stun_request.filter(|_| !ctx.silent) {
                        let success = stun::binding_success(&id, peer);
                        if let Err(e) = socket.send_to(&success, peer).await {
                            tracing::debug!(%peer, "udp send: {e}");
                        }
                    }
                    continue;
                }
                if ctx.registrar.as_ref().is_some_and(|r| r.take_response(bytes)) {
                    continue;
                }
                let flow = FlowRef { transport: Transport::Udp, local, peer, connection: None };
                if let Some(reply) = ctx.handle(flow, bytes) {
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        tracing::debug!(%peer, "udp send: {e}");
                    }
                }
            }
        }
    }
}
