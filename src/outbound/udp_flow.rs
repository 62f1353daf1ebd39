//! A UDP flow (RFC 5626 §4.4.2): the connected UDP socket that won the
//! race, shared by SIP and the STUN keep-alives of the same 5-tuple. A
//! reader task sorts what arrives, one message per datagram: STUN (told
//! apart by its first byte, RFC 7983) to the waiting keep-alive, SIP to the
//! same [`Mailroom`] a kept stream connection uses (responses to the
//! request with their Via branch, requests to a channel). Requests are
//! retransmitted as RFC 3261 §17.1.2 says for non-INVITE (T1 doubling up to
//! T2; every T2 once a provisional response came) until their final answer
//! or timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::stun::{self, BindingResponse, TransactionId};
use crate::keep::{Mailroom, NotExpected};
use crate::sip::{self, Request, Response};

/// RFC 3261 Timer T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
struct Inner {
    socket: UdpSocket,
    local: SocketAddr,
    peer: SocketAddr,
    /// Where SIP messages go (responses by branch, requests to the owner).
    mailroom: Mailroom,
    /// The keep-alive waiting for its STUN answer.
    binding: Mutex<Option<(TransactionId, oneshot::Sender<BindingResponse>)>>,
    dead: AtomicBool,
}

/// A UDP flow; clones share it. The reader stops when the last clone goes.
#[derive(Clone)]
pub struct UdpFlow {
    inner: Arc<Inner>,
    /// Held for its `Drop`: the reader ends with the last handle.
    _reader: Arc<ReaderGuard>,
}

/// Aborts the reader task when the last handle is dropped.
struct ReaderGuard(tokio::task::AbortHandle);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl UdpFlow {
    /// Takes over the connected `socket`. Must be called inside a runtime.
    pub fn start(socket: UdpSocket) -> std::io::Result<UdpFlow> {
        let local = socket.local_addr()?;
        let peer = socket.peer_addr()?;
        let (mailroom, requests) = Mailroom::new();
        let inner = Arc::new(Inner {
            socket,
            local,
            peer,
            mailroom,
            binding: Mutex::new(None),
            dead: AtomicBool::new(false),
        });
        let task = tokio::spawn(read_loop(inner.clone(), requests));
        Ok(UdpFlow {
            inner,
            _reader: Arc::new(ReaderGuard(task.abort_handle())),
        })
    }

    /// Our address.
    pub fn local(&self) -> SocketAddr {
        self.inner.local
    }

    /// The registrar's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Whether an ICMP error said the registrar's port is gone.
    pub fn is_dead(&self) -> bool {
        self.inner.dead.load(Ordering::Acquire)
    }

    /// The requests that arrive over the flow (only the first call gets them).
    pub fn take_inbound(&self) -> Option<mpsc::Receiver<Request>> {
        self.inner.mailroom.take_inbound()
    }

    /// Sends one datagram (e.g. a response).
    pub async fn send(&self, bytes: &[u8]) -> Result<(), String> {
        self.inner
            .socket
            .send(bytes)
            .await
            .map(|_| ())
            .map_err(|e| format!("send to {}: {e}", self.inner.peer))
    }

    /// Sends `request` (top Via branch `branch`) and waits up to `timeout`
    /// for its final response. It is retransmitted at T1, doubling up to T2
    /// (RFC 3261 §17.1.2.2); after a provisional response only every T2.
    pub async fn request(
        &self,
        request: &[u8],
        branch: &str,
        timeout: Duration,
    ) -> Result<Response, String> {
        let peer = self.inner.peer;
        let mut expected = self.inner.mailroom.expect(branch).map_err(|e| match e {
            NotExpected::Closed => format!("{peer}: the flow is closed"),
            NotExpected::TooMany => format!("{peer}: too many requests wait on the flow"),
            NotExpected::Duplicate => format!("{peer}: a request with this branch already waits"),
        })?;
        let exchange = async {
            let mut interval = T1;
            loop {
                self.send(request).await?;
                let next_send = tokio::time::sleep(interval);
                tokio::pin!(next_send);
                loop {
                    tokio::select! {
                        r = expected.next() => {
                            let r = r.ok_or_else(|| "the flow closed".to_string())?;
                            if r.status >= 200 {
                                return Ok(r);
                            }
                            // Proceeding: retransmit only every T2.
                            interval = T2;
                        }
                        _ = &mut next_send => break,
                    }
                }
                interval = (interval * 2).min(T2);
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("{peer}: no final response in {timeout:?}")))
    }

    /// Closes the flow: the reader stops (so the channel of inbound
    /// requests ends) and waiting requests fail. The socket goes with the
    /// last handle.
    pub fn close(&self) {
        self.inner.dead.store(true, Ordering::Release);
        self._reader.0.abort();
        self.inner.mailroom.close();
    }

    /// Sends the STUN Binding request `id` (again, for a retransmission)
    /// and returns what will receive its answer (for a new `id` only).
    pub async fn binding(
        &self,
        id: TransactionId,
    ) -> Result<Option<oneshot::Receiver<BindingResponse>>, String> {
        let receiver = {
            let mut waiting = self.inner.binding.lock().expect("binding lock");
            if waiting.as_ref().is_some_and(|(w, _)| *w == id) {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                *waiting = Some((id, tx));
                Some(rx)
            }
        };
        self.send(&stun::binding_request(&id)).await?;
        Ok(receiver)
    }
}

/// Sorts the datagrams until the last handle goes (the task is aborted) or
/// the port is refused.
async fn read_loop(flow: Arc<Inner>, requests: mpsc::Sender<Request>) {
    let mut buf = vec![0u8; sip::MAX_MESSAGE_SIZE];
    // Other receive errors (e.g. ICMP host unreachable reported once) are
    // passed over, but a socket failing on every call would spin: after
    // this many in a row the flow is dead.
    const MAX_ERRORS_IN_A_ROW: u32 = 64;
    let mut errors_in_a_row = 0;
    loop {
        let received = flow.socket.recv(&mut buf).await;
        let n = match received {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    || errors_in_a_row + 1 >= MAX_ERRORS_IN_A_ROW =>
            {
                // ICMP port unreachable: the registrar is gone from this
                // address (or the socket keeps failing).
                tracing::debug!(peer = %flow.peer, error = %e, "UDP flow dead");
                flow.dead.store(true, Ordering::Release);
                flow.mailroom.close();
                return;
            }
            Err(_) => {
                errors_in_a_row += 1;
                continue;
            }
        };
        errors_in_a_row = 0;
        let datagram = &buf[..n];
        if stun::is_stun(datagram) {
            let mut waiting = flow.binding.lock().expect("binding lock");
            if let Some((id, _)) = waiting.as_ref() {
                if let Ok(answer) = stun::parse_binding_response(datagram, id) {
                    if let Some((_, tx)) = waiting.take() {
                        let _ = tx.send(answer);
                    }
                }
            }
        } else {
            flow.mailroom.deliver(datagram, &requests, flow.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow connected to a peer socket of the test's, and that socket.
    async fn pair() -> (UdpFlow, UdpSocket) {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ours = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        ours.connect(peer.local_addr().unwrap()).await.unwrap();
        peer.connect(ours.local_addr().unwrap()).await.unwrap();
        (UdpFlow::start(ours).unwrap(), peer)
    }

    #[tokio::test]
    async fn a_request_is_resent_until_answered_and_datagrams_are_sorted() {
        let (flow, peer) = pair().await;
        let mut inbound = flow.take_inbound().unwrap();
        let request = "REGISTER sip:example.test SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKu1\r\n\
            From: <sip:a@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\n\
            Call-ID: u\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let peer_task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // The first copy goes unanswered; the retransmission (T1) is answered.
            let mut copies = vec![];
            for _ in 0..2 {
                let n = peer.recv(&mut buf).await.unwrap();
                copies.push(sip::parse_request(&buf[..n]).unwrap());
            }
            assert_eq!(copies[0].method, "REGISTER");
            assert_eq!(copies[1].method, "REGISTER");
            // A stray STUN packet (no keep-alive waits) is not a SIP request;
            // then a 100, the final, and a request of the peer's own.
            peer.send(&stun::binding_request(&stun::new_transaction_id()))
                .await
                .unwrap();
            for status in [100, 200] {
                peer.send(&copies[1].response(status).build())
                    .await
                    .unwrap();
            }
            peer.send(
                b"MESSAGE sip:a@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKm\r\n\
                  From: <sip:b@example.test>;tag=2\r\nTo: <sip:a@example.test>\r\nCall-ID: m\r\n\
                  CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
            )
            .await
            .unwrap();
            peer
        });
        let answer = flow
            .request(request.as_bytes(), "z9hG4bKu1", Duration::from_secs(20))
            .await
            .expect("the final response");
        assert_eq!(answer.status, 200);
        let _peer = peer_task.await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
            .await
            .expect("the peer's request arrives")
            .unwrap();
        assert_eq!(message.method, "MESSAGE");
        // Closed: waiting is refused at once, and the channel ends.
        flow.close();
        assert!(flow
            .request(request.as_bytes(), "z9hG4bKu2", Duration::from_secs(20))
            .await
            .unwrap_err()
            .contains("closed"));
        assert!(inbound.recv().await.is_none());
    }
}
