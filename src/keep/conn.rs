//! [`SipConnection`]: a kept stream connection as a small SIP transport.
//! One reader task per connection frames what arrives ([`StreamFramer`]):
//! responses go to the request that waits for their top-Via branch,
//! requests to a channel the caller can take, keep-alive pings get their
//! pong. When the peer closes or resets, the task marks the connection
//! dead and tells the table at once. Not a transaction layer: no
//! retransmission (the transports are reliable), no state per dialog.
//!
//! The sorting of whole messages (responses by branch, requests to the
//! owner) is the [`Mailroom`], which SIP Outbound's UDP flows use too: a
//! transport differs only in how it frames messages and what it sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::connect::ProbeResponse;
use crate::endpoint::{AttemptError, ErrorClass, Transport};
use crate::sip::{parse_request, parse_response, Frame, OptionsProbe, Request, Response};
use crate::sip::{StreamFramer, MAX_MESSAGE_SIZE};

/// Requests from the peer held for the caller before more are dropped.
pub const INBOUND_CAPACITY: usize = 64;
/// Requests waiting for their response on one connection at once.
pub const MAX_PENDING: usize = 1024;

/// Any stream a connection can run over (TCP, TLS, SCTP).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

type Writer = tokio::sync::Mutex<WriteHalf<Box<dyn Stream>>>;

/// Sorts the whole SIP messages a transport's reader receives: a response
/// goes to the request waiting for its top-Via branch, a request to a
/// channel its owner takes once ([`Mailroom::take_inbound`]). The reader
/// holds the channel's sender, so the channel ends when the reader does:
/// that is how the owner learns the transport died.
pub struct Mailroom {
    /// Requests waiting for a response, by the branch of their top Via, or
    /// `None` once closed. Every response with the branch goes to its
    /// request's queue (a 1xx, then the final; a few at most, more are
    /// dropped).
    pending: Mutex<Option<HashMap<String, mpsc::Sender<Response>>>>,
    inbound: Mutex<Option<mpsc::Receiver<Request>>>,
}

/// Why a request cannot wait for its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotExpected {
    /// The transport is closed.
    Closed,
    /// [`MAX_PENDING`] requests already wait.
    TooMany,
    /// A request with the same branch already waits (branches are unique
    /// per transaction: a second waiter would steal its responses).
    Duplicate,
}

/// A request waiting for its responses; it stops waiting when dropped.
pub struct Expected<'a> {
    mailroom: &'a Mailroom,
    branch: String,
    responses: mpsc::Receiver<Response>,
}

impl Expected<'_> {
    /// The next response with the branch; `None` once the transport closed.
    pub async fn next(&mut self) -> Option<Response> {
        self.responses.recv().await
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        // Poisoned only by a panic elsewhere; never panic in a drop.
        if let Ok(mut pending) = self.mailroom.pending.lock() {
            if let Some(pending) = pending.as_mut() {
                pending.remove(&self.branch);
            }
        }
    }
}

impl Mailroom {
    /// An open mailroom, and the sender of its inbound requests for the
    /// reader to hold.
    pub fn new() -> (Mailroom, mpsc::Sender<Request>) {
        let (requests, inbound) = mpsc::channel(INBOUND_CAPACITY);
        let mailroom = Mailroom {
            pending: Mutex::new(Some(HashMap::new())),
            inbound: Mutex::new(Some(inbound)),
        };
        (mailroom, requests)
    }

    /// Waits for the responses with `branch` (register before sending).
    pub fn expect(&self, branch: &str) -> Result<Expected<'_>, NotExpected> {
        let (tx, responses) = mpsc::channel(4);
        let mut pending = self.pending.lock().expect("pending lock");
        let pending = pending.as_mut().ok_or(NotExpected::Closed)?;
        if pending.len() >= MAX_PENDING {
            return Err(NotExpected::TooMany);
        }
        if pending.contains_key(branch) {
            return Err(NotExpected::Duplicate);
        }
        pending.insert(branch.to_string(), tx);
        Ok(Expected {
            mailroom: self,
            branch: branch.to_string(),
            responses,
        })
    }

    /// Sorts one whole message from `peer`: a response to its waiting
    /// request, a request into `requests` (dropped when the owner does not
    /// read, or the queue is full). Unparsable or unexpected ones are
    /// logged and dropped.
    pub fn deliver(&self, message: &[u8], requests: &mpsc::Sender<Request>, peer: SocketAddr) {
        if message.starts_with(b"SIP/") {
            match parse_response(message) {
                Ok(resp) => {
                    let waiting = resp.branch.as_ref().and_then(|b| {
                        let pending = self.pending.lock().expect("pending lock");
                        pending.as_ref()?.get(b).cloned()
                    });
                    match waiting {
                        // A full queue means a peer repeating itself.
                        Some(tx) => drop(tx.try_send(resp)),
                        None => {
                            tracing::debug!(%peer, status = resp.status, "a response no request waits for")
                        }
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "ignoring an unparsable response"),
            }
        } else {
            match parse_request(message) {
                Ok(req) => {
                    if requests.try_send(req).is_err() {
                        tracing::debug!(%peer, "inbound request dropped: nobody reads, or the queue is full");
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "ignoring an unparsable request"),
            }
        }
    }

    /// The requests that arrive (only the first call gets them).
    pub fn take_inbound(&self) -> Option<mpsc::Receiver<Request>> {
        self.inbound.lock().expect("inbound lock").take()
    }

    /// Closes it: waiting requests see the end at once, new ones are refused.
    pub fn close(&self) {
        // Poisoned only by a panic elsewhere; closing must still work.
        if let Ok(mut pending) = self.pending.lock() {
            *pending = None;
        }
    }
}

/// What the reader task shares with the handles.
struct Inbox {
    mailroom: Mailroom,
    /// Set once the peer closed or reset the connection, or it was closed.
    dead: AtomicBool,
    /// Set when the peer ended the connection in a way that proves the
    /// path carried its packets to the end (a FIN or TLS close_notify, or
    /// a message we could not frame), as opposed to a reset or an error.
    ended_by_peer: AtomicBool,
    /// Set, then woken, when the reader has stopped (the table entry is
    /// gone by then).
    reader_ended: AtomicBool,
    ended: tokio::sync::Notify,
    /// How many keep-alive pongs arrived (RFC 5626 §4.4.1; watched by
    /// whoever pings, e.g. an Outbound flow).
    pongs: tokio::sync::watch::Sender<u64>,
    /// Our pings not answered yet: only while some are out is a lone CRLF
    /// taken as a pong (a peer's own ping stays a ping to answer).
    pings_out: std::sync::atomic::AtomicU64,
}

/// Called once by the reader task when the connection dies (the table
/// removes its entry).
pub type OnDeath = Box<dyn FnOnce() + Send>;

struct Shared {
    id: u64,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    opened_at: Instant,
    writer: Arc<Writer>,
    inbox: Arc<Inbox>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: nobody can use the connection any more.
        self.reader.abort();
    }
}

/// A kept connection. Clones share it; it closes when the table has let
/// it go and the last clone is dropped (or at once with [`close`](Self::close)).
#[derive(Clone)]
pub struct SipConnection(Arc<Shared>);

impl std::fmt::Debug for SipConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipConnection")
            .field("id", &self.0.id)
            .field("transport", &self.0.transport)
            .field("peer", &self.0.peer)
            .field("local", &self.0.local)
            .field("dead", &self.is_dead())
            .finish()
    }
}

impl SipConnection {
    /// Takes over `stream` (`transport` from `local` to `peer`), starting
    /// its reader task; `on_death` runs when the peer closes or resets it.
    /// Must be called inside a tokio runtime.
    pub fn start<S: Stream>(
        id: u64,
        transport: Transport,
        stream: S,
        local: SocketAddr,
        peer: SocketAddr,
        on_death: OnDeath,
    ) -> SipConnection {
        let boxed: Box<dyn Stream> = Box::new(stream);
        let (read, write) = tokio::io::split(boxed);
        let (mailroom, requests) = Mailroom::new();
        let inbox = Arc::new(Inbox {
            mailroom,
            dead: AtomicBool::new(false),
            ended_by_peer: AtomicBool::new(false),
            reader_ended: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
            pongs: tokio::sync::watch::Sender::new(0),
            pings_out: std::sync::atomic::AtomicU64::new(0),
        });
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let task = tokio::spawn(read_loop(
            read,
            inbox.clone(),
            requests,
            Arc::downgrade(&writer),
            peer,
            on_death,
        ));
        SipConnection(Arc::new(Shared {
            id,
            transport,
            peer,
            local,
            opened_at: Instant::now(),
            writer,
            inbox,
            reader: task.abort_handle(),
        }))
    }

    /// Its number in the table (1, 2...).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// TCP, TLS or SCTP.
    pub fn transport(&self) -> Transport {
        self.0.transport
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.0.peer
    }

    /// Our address on it.
    pub fn local(&self) -> SocketAddr {
        self.0.local
    }

    /// When it was opened (taken into the table).
    pub fn opened_at(&self) -> Instant {
        self.0.opened_at
    }

    /// Whether the peer closed or reset it (or it was closed here).
    pub fn is_dead(&self) -> bool {
        self.0.inbox.dead.load(Ordering::Acquire)
    }

    /// Waits until the connection is dead: the peer closed or reset it (the
    /// table has then already dropped it), or it was closed here.
    pub async fn closed(&self) {
        loop {
            let ended = self.0.inbox.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.0.inbox.reader_ended.load(Ordering::Acquire) {
                return;
            }
            ended.await;
        }
    }

    /// The requests the peer sends on this connection (RFC 5923: a server
    /// that honours our alias sends its requests to us here). Only the
    /// first call gets the channel; at most [`INBOUND_CAPACITY`] wait in
    /// it, later ones are dropped until the caller reads.
    pub fn take_inbound(&self) -> Option<mpsc::Receiver<Request>> {
        self.0.inbox.mailroom.take_inbound()
    }

    /// Sends a keep-alive ping (RFC 5626 §3.5.1: a double CRLF); its pong
    /// shows in [`pongs`](Self::pongs).
    pub async fn ping(&self) -> Result<(), AttemptError> {
        self.0.inbox.pings_out.fetch_add(1, Ordering::AcqRel);
        self.send(b"\r\n\r\n").await
    }

    /// The count of keep-alive pongs received so far, to watch for the
    /// answer to a [`ping`](Self::ping).
    pub fn pongs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.inbox.pongs.subscribe()
    }

    /// Sends `request` (a whole SIP request whose top Via has `branch`)
    /// and waits up to `timeout` for the response with that branch; a
    /// provisional response (1xx) is returned as it is.
    pub async fn request(
        &self,
        request: &[u8],
        branch: &str,
        timeout: Duration,
    ) -> Result<Response, AttemptError> {
        self.exchange(request, branch, timeout, false).await
    }

    /// [`request`](Self::request), but waits past provisional responses for
    /// the final one (RFC 3261 §17.1.2: over a stream nothing is resent).
    pub async fn request_final(
        &self,
        request: &[u8],
        branch: &str,
        timeout: Duration,
    ) -> Result<Response, AttemptError> {
        self.exchange(request, branch, timeout, true).await
    }

    async fn exchange(
        &self,
        request: &[u8],
        branch: &str,
        timeout: Duration,
        final_only: bool,
    ) -> Result<Response, AttemptError> {
        let peer = self.0.peer;
        if self.is_dead() {
            return Err(dead(peer));
        }
        let mut expected = match self.0.inbox.mailroom.expect(branch) {
            Ok(expected) => expected,
            Err(NotExpected::Closed) => return Err(dead(peer)),
            Err(NotExpected::Duplicate) => {
                return Err(AttemptError::new(
                    ErrorClass::Local,
                    format!("{peer}: a request with this branch already waits"),
                ))
            }
            Err(NotExpected::TooMany) => {
                return Err(AttemptError::new(
                    ErrorClass::Local,
                    format!("{peer}: {MAX_PENDING} requests already wait on this connection"),
                ))
            }
        };
        let exchange = async {
            self.send(request).await?;
            loop {
                let response = expected.next().await.ok_or_else(|| dead(peer))?;
                if !final_only || response.status >= 200 {
                    return Ok(response);
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::new(
                ErrorClass::Timeout,
                format!("{peer}: no response in {timeout:?}"),
            )),
        }
    }

    /// Sends `probe` and waits up to `timeout` for its response, which must
    /// match it (branch, Call-ID, CSeq).
    pub async fn options(
        &self,
        probe: &OptionsProbe,
        timeout: Duration,
    ) -> Result<ProbeResponse, AttemptError> {
        let sent_at = tokio::time::Instant::now();
        let response = self
            .request(&probe.to_bytes(), probe.branch(), timeout)
            .await?;
        if !response.matches(probe) {
            return Err(AttemptError::new(
                ErrorClass::InvalidResponse,
                format!(
                    "{}: a response with the OPTIONS' branch but not its Call-ID or CSeq",
                    self.0.peer
                ),
            ));
        }
        Ok(ProbeResponse {
            status: response.status,
            reason: response.reason,
            rtt: sent_at.elapsed(),
        })
    }

    /// Writes `bytes` (whole messages, e.g. a response to an inbound
    /// request) to the connection.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), AttemptError> {
        if self.is_dead() {
            return Err(dead(self.0.peer));
        }
        let mut writer = self.0.writer.lock().await;
        let written = async {
            writer.write_all(bytes).await?;
            writer.flush().await
        };
        written.await.map_err(|e| {
            self.0.inbox.dead.store(true, Ordering::Release);
            AttemptError::io(&format!("send to {}", self.0.peer), &e)
        })
    }

    /// True once the peer ended it in a way that proves the path worked to
    /// the end: a FIN (or TLS close_notify), or a message that broke the
    /// framing. False while it lives, and after a reset, a read error or
    /// our own close.
    pub fn ended_by_peer(&self) -> bool {
        self.0.inbox.ended_by_peer.load(Ordering::Acquire)
    }

    /// Gives it up at once, without waiting: it is dead from now on (no
    /// table hands it out again), the reader stops and waiting requests
    /// fail. The stream itself is shut down by [`close`](Self::close), or
    /// when the last handle goes.
    pub fn abandon(&self) {
        self.0.inbox.dead.store(true, Ordering::Release);
        self.0.reader.abort();
        self.0.inbox.mailroom.close();
    }

    /// Closes it now: the reader stops, waiting requests fail, the stream
    /// is shut down (for TLS with a close_notify).
    pub async fn close(&self) {
        self.abandon();
        // A writer stuck on a peer that stopped reading holds the lock:
        // then the stream just goes with the last handle.
        if let Ok(mut writer) =
            tokio::time::timeout(Duration::from_secs(1), self.0.writer.lock()).await
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
        }
    }
}

fn dead(peer: SocketAddr) -> AttemptError {
    AttemptError::new(
        ErrorClass::Reset,
        format!("{peer}: the connection is closed"),
    )
}

/// The reader task: frames what arrives until the peer closes, resets or
/// breaks the framing, then marks the connection dead and calls `on_death`.
async fn read_loop(
    mut read: ReadHalf<Box<dyn Stream>>,
    inbox: Arc<Inbox>,
    requests: mpsc::Sender<Request>,
    writer: std::sync::Weak<Writer>,
    peer: SocketAddr,
    on_death: OnDeath,
) {
    // Set to dead and the table told however the loop ends, abort included.
    struct Death(Arc<Inbox>, Option<OnDeath>);
    impl Drop for Death {
        fn drop(&mut self) {
            self.0.dead.store(true, Ordering::Release);
            // Waiting requests see the closed channel at once.
            self.0.mailroom.close();
            if let Some(f) = self.1.take() {
                f();
            }
            self.0.reader_ended.store(true, Ordering::Release);
            self.0.ended.notify_waiters();
        }
    }
    let _death = Death(inbox.clone(), Some(on_death));
    let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => {
                tracing::debug!(%peer, "kept connection closed by the peer");
                inbox.ended_by_peer.store(true, Ordering::Release);
                return;
            }
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "kept connection reset");
                return;
            }
        };
        framer.push(&buf[..n]);
        loop {
            let out = inbox.pings_out.load(Ordering::Acquire);
            if out > 0 {
                let pongs = framer.take_pongs(out as usize) as u64;
                if pongs > 0 {
                    inbox.pings_out.fetch_sub(pongs, Ordering::AcqRel);
                    inbox.pongs.send_modify(|count| *count += pongs);
                }
            }
            let frame = match framer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "unframable message: closing the kept connection");
                    inbox.ended_by_peer.store(true, Ordering::Release);
                    return;
                }
            };
            match frame {
                Frame::KeepAlive => {
                    // RFC 5626 §3.5.1: a double CRLF ping gets a single CRLF pong.
                    if let Some(writer) = writer.upgrade() {
                        let mut w = writer.lock().await;
                        if w.write_all(b"\r\n").await.is_err() {
                            return;
                        }
                    }
                }
                Frame::Message(msg) => inbox.mailroom.deliver(&msg, &requests, peer),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A connection over an in-memory stream, and the peer's end.
    fn pair() -> (SipConnection, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let conn = SipConnection::start(
            1,
            Transport::Tcp,
            ours,
            addr("[::1]:40000"),
            addr("[::1]:5060"),
            Box::new(|| {}),
        );
        (conn, theirs)
    }

    fn response(status: u16, branch: &str) -> String {
        format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/TCP [::1]:40000;branch={branch}\r\n\
             From: <sip:a@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\n\
             Call-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[tokio::test]
    async fn the_mailroom_sorts_responses_by_branch_and_requests_to_the_owner() {
        let (mailroom, requests) = Mailroom::new();
        let peer = addr("[::1]:5060");
        let mut a = mailroom.expect("z9hG4bKa").unwrap();
        let mut b = mailroom.expect("z9hG4bKb").unwrap();
        mailroom.deliver(response(180, "z9hG4bKb").as_bytes(), &requests, peer);
        mailroom.deliver(response(200, "z9hG4bKa").as_bytes(), &requests, peer);
        // Nobody waits for this one: dropped.
        mailroom.deliver(response(200, "z9hG4bKc").as_bytes(), &requests, peer);
        assert_eq!(a.next().await.unwrap().status, 200);
        assert_eq!(b.next().await.unwrap().status, 180);
        let options =
            "OPTIONS sip:a@example.test SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKo\r\n\
             From: <sip:b@example.test>;tag=2\r\nTo: <sip:a@example.test>\r\nCall-ID: o\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        mailroom.deliver(options.as_bytes(), &requests, peer);
        let mut inbound = mailroom.take_inbound().expect("the first take gets it");
        assert!(mailroom.take_inbound().is_none());
        assert_eq!(inbound.recv().await.unwrap().method, "OPTIONS");
        // A request that stopped waiting (dropped) no longer gets responses.
        drop(a);
        mailroom.deliver(response(200, "z9hG4bKa").as_bytes(), &requests, peer);
        // Closing ends the waiting ones and refuses new ones; the reader's
        // end (its sender dropped) ends the channel of requests.
        mailroom.close();
        assert!(b.next().await.is_none());
        assert_eq!(mailroom.expect("z9hG4bKd").err(), Some(NotExpected::Closed));
        drop(requests);
        assert!(inbound.recv().await.is_none());
    }

    #[test]
    fn the_mailroom_bounds_the_requests_waiting() {
        let (mailroom, _requests) = Mailroom::new();
        let waiting: Vec<_> = (0..MAX_PENDING)
            .map(|i| mailroom.expect(&format!("z9hG4bK{i}")).unwrap())
            .collect();
        assert_eq!(
            mailroom.expect("z9hG4bKx").err(),
            Some(NotExpected::TooMany)
        );
        drop(waiting);
        assert!(mailroom.expect("z9hG4bKx").is_ok());
    }

    #[tokio::test]
    async fn a_final_request_waits_past_provisionals_and_is_sent_once() {
        let (conn, peer) = pair();
        let (read, mut write) = tokio::io::split(peer);
        let peer_task = tokio::spawn(async move {
            // Read the one request (up to its blank line), then answer
            // 100, 100, 200; count the request lines seen.
            let mut lines = BufReader::new(read).lines();
            let mut requests = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("REGISTER ") {
                    requests += 1;
                }
                if line.is_empty() {
                    break;
                }
            }
            for status in [100, 100, 200] {
                write
                    .write_all(response(status, "z9hG4bKb1").as_bytes())
                    .await
                    .unwrap();
            }
            (requests, lines)
        });
        let request = "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP [::1]:40000;branch=z9hG4bKb1\r\n\r\n";
        let r = conn
            .request_final(request.as_bytes(), "z9hG4bKb1", Duration::from_secs(10))
            .await
            .expect("the final response");
        assert_eq!(r.status, 200);
        let (requests, _) = peer_task.await.unwrap();
        assert_eq!(requests, 1, "nothing is resent over a stream");
    }

    #[tokio::test]
    async fn only_a_crlf_after_our_ping_is_a_pong_and_a_peer_ping_is_answered() {
        let (conn, mut peer) = pair();
        let mut pongs = conn.pongs();
        // The peer pings first: answered with one CRLF, not counted.
        peer.write_all(b"\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 8];
        let n = peer.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\r\n");
        assert_eq!(*pongs.borrow(), 0);
        // Our ping, the peer's pong: counted once.
        conn.ping().await.unwrap();
        let n = peer.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\r\n\r\n");
        peer.write_all(b"\r\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), pongs.changed())
            .await
            .expect("the pong is seen")
            .unwrap();
        assert_eq!(*pongs.borrow(), 1);
    }
}
