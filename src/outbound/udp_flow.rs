//! A UDP flow (RFC 5626 §4.4.2): the connected UDP socket that won the
//! race, shared by SIP and the STUN keep-alives of the same 5-tuple. A
//! reader task sorts what arrives: STUN Binding responses to the waiting
//! keep-alive, SIP responses to the request with their Via branch, SIP
//! requests to a channel. Requests are retransmitted as RFC 3261 §17.1.2
//! says for non-INVITE (T1 doubling up to T2; every T2 once a provisional
//! response came) until their final answer or timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::stun::{self, BindingResponse, TransactionId};
use crate::sip::{self, Request, Response};

/// RFC 3261 Timer T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Requests from the peer held before more are dropped.
const INBOUND_CAPACITY: usize = 64;

struct Inner {
    socket: UdpSocket,
    local: SocketAddr,
    peer: SocketAddr,
    /// Requests waiting for responses, by branch: every response with the
    /// branch goes there (a 1xx, then the final), at most a few queued.
    pending: Mutex<HashMap<String, mpsc::Sender<Response>>>,
    /// The keep-alive waiting for its STUN answer.
    binding: Mutex<Option<(TransactionId, oneshot::Sender<BindingResponse>)>>,
    inbound: Mutex<Option<mpsc::Receiver<Request>>>,
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
        let (requests, inbound) = mpsc::channel(INBOUND_CAPACITY);
        let inner = Arc::new(Inner {
            socket,
            local,
            peer,
            pending: Mutex::new(HashMap::new()),
            binding: Mutex::new(None),
            inbound: Mutex::new(Some(inbound)),
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
        self.inner.inbound.lock().expect("inbound lock").take()
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
        let (tx, mut rx) = mpsc::channel(4);
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .insert(branch.to_string(), tx);
        let exchange = async {
            let mut interval = T1;
            loop {
                self.send(request).await?;
                let next_send = tokio::time::sleep(interval);
                tokio::pin!(next_send);
                loop {
                    tokio::select! {
                        r = rx.recv() => {
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
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{}: no final response in {timeout:?}",
                    self.inner.peer
                ))
            });
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .remove(branch);
        result
    }

    /// Closes the flow: the reader stops (so the channel of inbound
    /// requests ends) and waiting requests fail. The socket goes with the
    /// last handle.
    pub fn close(&self) {
        self.inner.dead.store(true, Ordering::Release);
        self._reader.0.abort();
        self.inner.pending.lock().expect("pending lock").clear();
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
    loop {
        let received = flow.socket.recv(&mut buf).await;
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // ICMP port unreachable: the registrar is gone from this address.
                flow.dead.store(true, Ordering::Release);
                flow.pending.lock().expect("pending lock").clear();
                return;
            }
            Err(_) => continue,
        };
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
        } else if datagram.starts_with(b"SIP/") {
            if let Ok(response) = sip::parse_response(datagram) {
                let tx = response
                    .branch
                    .as_ref()
                    .and_then(|b| flow.pending.lock().expect("pending lock").get(b).cloned());
                if let Some(tx) = tx {
                    // A full queue means a peer repeating itself: drop.
                    let _ = tx.try_send(response);
                }
            }
        } else if let Ok(request) = sip::parse_request(datagram) {
            let _ = requests.try_send(request);
        }
    }
}
