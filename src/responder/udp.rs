//! The UDP listener: one datagram, one answer (CRLF keep-alives are
//! counted and not answered).

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::counters::bump;
use super::Ctx;
use crate::endpoint::Transport;

/// Serves one UDP socket until `stop` changes.
pub(super) async fn serve_udp(socket: UdpSocket, ctx: Ctx, mut stop: watch::Receiver<bool>) {
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
                if bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    bump(&ctx.stats.cell(Transport::Udp, &peer).keepalives);
                    ctx.stats.touched();
                    continue;
                }
                if let Some(reply) = ctx.handle(Transport::Udp, peer, bytes) {
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        tracing::debug!(%peer, "udp send: {e}");
                    }
                }
            }
        }
    }
}
