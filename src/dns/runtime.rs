//! The resolver's sockets: hickory's tokio runtime with two changes, so that
//! a DNS failure is reported as what it is.
//!
//! * UDP sockets are `connect()`ed to the server. Linux reports an ICMP port
//!   unreachable only to a connected UDP socket; on hickory's unconnected
//!   ones a refused query looked like silence and ended as a timeout, once
//!   per DNS stage. Connected, it fails at once with `ECONNREFUSED`. (hickory
//!   already drops answers from any other address, so connecting filters
//!   nothing it would have kept.) The error arrives as `EPOLLERR` without
//!   `EPOLLIN`, which does not wake a tokio receive, so a receive also waits
//!   for the socket's error readiness.
//! * Every socket error is recorded, with the server it concerned: hickory's
//!   server pool replaces I/O errors with "no connections available", so
//!   [`DnsResolver::lookup`] puts the recorded cause back (refused, too many
//!   open files...).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use std::time::{Duration, Instant};
use tokio::io::{Interest, Ready};

use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::{
    DnsUdpSocket, RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{IntoName, RecordType};
use hickory_resolver::Resolver;

/// The resolver location uses: hickory's, on this module's sockets.
#[derive(Clone)]
pub struct DnsResolver {
    resolver: Resolver<DnsRuntime>,
    faults: Faults,
}

impl DnsResolver {
    pub(crate) fn new(resolver: Resolver<DnsRuntime>, faults: Faults) -> DnsResolver {
        DnsResolver { resolver, faults }
    }

    /// hickory's `lookup`, except that a failure its sockets caused says
    /// what happened (e.g. "DNS server 127.0.0.1:53 refused the query (port
    /// unreachable)") instead of "no connections available".
    pub async fn lookup(
        &self,
        name: impl IntoName,
        record_type: RecordType,
    ) -> Result<Lookup, NetError> {
        let started = Instant::now();
        match self.resolver.lookup(name, record_type).await {
            Err(err @ (NetError::NoConnections | NetError::Io(_))) => {
                Err(match self.faults.since(started) {
                    Some(fault) => NetError::Msg(fault.to_string()),
                    None => err,
                })
            }
            other => other,
        }
    }
}

/// The last socket error seen by a resolver's sockets.
#[derive(Clone, Default)]
pub(crate) struct Faults(Arc<Mutex<Option<Fault>>>);

impl Faults {
    /// Records `err` unless it is one hickory retries by itself (a random
    /// source port that is taken or forbidden).
    fn record(&self, server: SocketAddr, step: Step, err: &io::Error) {
        if matches!(
            err.kind(),
            io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
        ) && step == Step::Bind
        {
            return;
        }
        let fault = Fault {
            server,
            step,
            kind: err.kind(),
            os_error: err.raw_os_error(),
            text: err.to_string(),
            at: Instant::now(),
        };
        tracing::debug!(%fault, "DNS socket error");
        *self.0.lock().expect("dns faults") = Some(fault);
    }

    /// The last fault, if it happened at or after `t`.
    fn since(&self, t: Instant) -> Option<Fault> {
        self.0
            .lock()
            .expect("dns faults")
            .clone()
            .filter(|f| f.at >= t)
    }
}

/// What a socket was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Bind,
    Connect,
    Send,
    Receive,
    TcpConnect,
}

#[derive(Debug, Clone)]
struct Fault {
    server: SocketAddr,
    step: Step,
    kind: io::ErrorKind,
    os_error: Option<i32>,
    text: String,
    at: Instant,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server = self.server;
        match (self.kind, self.os_error, self.step) {
            (io::ErrorKind::ConnectionRefused, _, Step::TcpConnect) => {
                write!(f, "DNS server {server} refused the TCP connection")
            }
            (io::ErrorKind::ConnectionRefused, _, _) => {
                write!(f, "DNS server {server} refused the query (port unreachable)")
            }
            (_, Some(libc::EMFILE), _) => write!(
                f,
                "no socket for DNS server {server}: too many open files (EMFILE, the process's limit)"
            ),
            (_, Some(libc::ENFILE), _) => write!(
                f,
                "no socket for DNS server {server}: too many open files (ENFILE, the system's limit)"
            ),
            (io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable, _, _) => {
                write!(f, "DNS server {server} is unreachable: {}", self.text)
            }
            (_, _, step) => {
                let step = match step {
                    Step::Bind => "bind",
                    Step::Connect => "connect",
                    Step::Send => "send",
                    Step::Receive => "receive",
                    Step::TcpConnect => "TCP connect",
                };
                write!(f, "DNS server {server}: {step}: {}", self.text)
            }
        }
    }
}

/// hickory's tokio runtime with connected, fault-recording UDP sockets and
/// fault-recording TCP connects (see the module docs).
#[derive(Clone, Default)]
pub(crate) struct DnsRuntime {
    tokio: TokioRuntimeProvider,
    faults: Faults,
}

impl DnsRuntime {
    pub(crate) fn new(faults: Faults) -> DnsRuntime {
        DnsRuntime {
            tokio: TokioRuntimeProvider::default(),
            faults,
        }
    }
}

type Boxed<T> = Pin<Box<dyn Send + Future<Output = io::Result<T>>>>;

impl RuntimeProvider for DnsRuntime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = ConnectedUdp;
    type Tcp = <TokioRuntimeProvider as RuntimeProvider>::Tcp;

    fn create_handle(&self) -> Self::Handle {
        self.tokio.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Boxed<Self::Tcp> {
        let connect = self.tokio.connect_tcp(server_addr, bind_addr, timeout);
        let faults = self.faults.clone();
        Box::pin(async move {
            connect
                .await
                .inspect_err(|e| faults.record(server_addr, Step::TcpConnect, e))
        })
    }

    fn bind_udp(&self, local_addr: SocketAddr, server_addr: SocketAddr) -> Boxed<Self::Udp> {
        let faults = self.faults.clone();
        Box::pin(async move {
            let socket = tokio::net::UdpSocket::bind(local_addr)
                .await
                .inspect_err(|e| faults.record(server_addr, Step::Bind, e))?;
            socket
                .connect(server_addr)
                .await
                .inspect_err(|e| faults.record(server_addr, Step::Connect, e))?;
            Ok(ConnectedUdp {
                socket: Arc::new(socket),
                server: server_addr,
                faults,
                error_ready: Mutex::new(None),
            })
        })
    }
}

/// A wait for a socket's error readiness.
type ErrorReady = Pin<Box<dyn Future<Output = io::Result<Ready>> + Send>>;

/// A UDP socket connected to one DNS server that records its errors.
pub(crate) struct ConnectedUdp {
    socket: Arc<tokio::net::UdpSocket>,
    server: SocketAddr,
    faults: Faults,
    /// The pending wait for an error (an ICMP error sets `EPOLLERR` only,
    /// which wakes no receive).
    error_ready: Mutex<Option<ErrorReady>>,
}

impl ConnectedUdp {
    /// The socket's pending error, if its error readiness fired: `Ready`
    /// with the error, or `Pending` with the waker registered for the next.
    fn poll_error(&self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let mut slot = self.error_ready.lock().expect("udp error wait");
        // Twice at most: a readiness without an error is cleared, then the
        // wait is armed again.
        for _ in 0..2 {
            let wait = slot.get_or_insert_with(|| {
                let socket = self.socket.clone();
                Box::pin(async move { socket.ready(Interest::ERROR).await })
            });
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *slot = None;
            // WouldBlock clears tokio's error readiness.
            let taken = self
                .socket
                .try_io(Interest::ERROR, || match self.socket.take_error() {
                    Ok(Some(e)) | Err(e) => Ok(e),
                    Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                });
            if let Ok(err) = taken {
                return Poll::Ready(err);
            }
        }
        // Ready twice without an error: look again on the next turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl DnsUdpSocket for ConnectedUdp {
    type Time = TokioTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        let result = match self.socket.poll_recv_from(cx, &mut buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(ready!(self.poll_error(cx))),
        };
        let from = result.inspect_err(|e| self.faults.record(self.server, Step::Receive, e))?;
        Poll::Ready(Ok((buf.filled().len(), from)))
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        // Connected: only the server is ever a target here.
        self.socket.poll_send_to(cx, buf, target).map_err(|e| {
            self.faults.record(self.server, Step::Send, &e);
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(step: Step, err: io::Error) -> String {
        let faults = Faults::default();
        let t = Instant::now();
        faults.record("127.0.0.1:53".parse().unwrap(), step, &err);
        faults.since(t).expect("recorded").to_string()
    }

    #[test]
    fn faults_name_their_cause() {
        let refused = || io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            fault(Step::Receive, refused()),
            "DNS server 127.0.0.1:53 refused the query (port unreachable)"
        );
        assert_eq!(
            fault(Step::TcpConnect, refused()),
            "DNS server 127.0.0.1:53 refused the TCP connection"
        );
        let emfile = fault(Step::Bind, io::Error::from_raw_os_error(libc::EMFILE));
        assert!(emfile.contains("too many open files (EMFILE"), "{emfile}");
        let other = fault(Step::Send, io::Error::from_raw_os_error(libc::EINVAL));
        assert!(
            other.starts_with("DNS server 127.0.0.1:53: send: "),
            "{other}"
        );
    }

    #[test]
    fn retried_binds_and_older_faults_do_not_count() {
        let faults = Faults::default();
        let server = "127.0.0.1:53".parse().unwrap();
        let t = Instant::now();
        faults.record(
            server,
            Step::Bind,
            &io::Error::from(io::ErrorKind::AddrInUse),
        );
        assert!(faults.since(t).is_none(), "hickory retries another port");
        faults.record(
            server,
            Step::Receive,
            &io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert!(faults.since(t).is_some());
        assert!(faults
            .since(Instant::now() + Duration::from_secs(1))
            .is_none());
    }
}
