//! SCTP attempts (SIP+D2S, `_sip._sctp`, `;transport=sctp`, RFC 4168):
//! a one-to-one style socket (`SOCK_STREAM`, `IPPROTO_SCTP`) made with
//! socket2, a non-blocking connect driven by tokio's [`AsyncFd`]; success is
//! the established association (or, with `probe_streams`, the OPTIONS answer).
//!
//! Many kernels have no SCTP (module not loaded or not built). That is
//! detected once at run time ([`kernel_supported`]): SCTP candidates then
//! fail at once with [`ErrorClass::Unsupported`], so the race moves on to the
//! other transports without spending any delay on them.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::{canonical, local_error, new_socket, ConnectConfig, Connected, Connection, Progress};
use crate::endpoint::{AttemptError, Endpoint, ErrorClass};
use crate::socket::{new_socket as new_listener, Bind, Step};

/// The detail of the error SCTP candidates fail with on a kernel without SCTP.
pub const UNSUPPORTED: &str = "sctp: not supported by this kernel";

/// `IPPROTO_SCTP` and `SCTP_NODELAY` from `linux/sctp.h` (libc has no SCTP
/// socket options).
const IPPROTO_SCTP: libc::c_int = 132;
const SCTP_NODELAY: libc::c_int = 3;

/// Whether this kernel can create SCTP sockets. Only a definitive answer is
/// remembered for the rest of the process: a socket was made (yes), or
/// `EPROTONOSUPPORT`/`ESOCKTNOSUPPORT` (or `EAFNOSUPPORT` for both IPv4 and
/// IPv6) says the kernel has no SCTP (no). Any other failure (out of
/// descriptors, say) answers yes without being remembered, so the attempt
/// itself reports the real error and the next call asks the kernel again.
pub fn kernel_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    if let Some(&known) = SUPPORTED.get() {
        return known;
    }
    let probe = |domain| Socket::new(domain, Type::STREAM, Some(Protocol::SCTP)).map(drop);
    match verdict(probe(Domain::IPV4), || probe(Domain::IPV6)) {
        Verdict::Supported => *SUPPORTED.get_or_init(|| true),
        Verdict::Unsupported(e) => {
            tracing::debug!("SCTP unavailable: {e}");
            *SUPPORTED.get_or_init(|| false)
        }
        Verdict::Unknown(e) => {
            tracing::debug!("cannot tell whether SCTP is available (asking again later): {e}");
            true
        }
    }
}

/// What socket creation says about SCTP support.
#[derive(Debug)]
enum Verdict {
    Supported,
    Unsupported(io::Error),
    /// A failure that says nothing about SCTP (EMFILE, ENOBUFS...).
    Unknown(io::Error),
}

/// Reads the result of creating an IPv4 SCTP socket, and only if the kernel
/// has no IPv4 at all (`EAFNOSUPPORT`) the IPv6 one.
fn verdict(v4: io::Result<()>, v6: impl FnOnce() -> io::Result<()>) -> Verdict {
    let errno = |e: &io::Error| e.raw_os_error();
    let no_sctp = |e: &io::Error| {
        matches!(
            errno(e),
            Some(libc::EPROTONOSUPPORT) | Some(libc::ESOCKTNOSUPPORT)
        )
    };
    match v4 {
        Ok(()) => Verdict::Supported,
        Err(e) if no_sctp(&e) => Verdict::Unsupported(e),
        Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => match v6() {
            Ok(()) => Verdict::Supported,
            Err(e) if no_sctp(&e) || errno(&e) == Some(libc::EAFNOSUPPORT) => {
                Verdict::Unsupported(e)
            }
            Err(e) => Verdict::Unknown(e),
        },
        Err(e) => Verdict::Unknown(e),
    }
}

/// Hands a socket to tokio's reactor.
/// The local IP address and port of a socket.
fn ip_local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: a `Socket` owns its descriptor: it stays open, and `as_raw_fd`
    // returns the same one, until the `AsyncFd` (which owns the socket) drops it.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

fn unsupported_io() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{UNSUPPORTED} (socket(IPPROTO_SCTP) fails with EPROTONOSUPPORT)"),
    )
}

/// Sets an integer socket option that socket2 has no method for.
fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd, a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_nodelay(socket: &Socket) -> io::Result<()> {
    set_int_option(socket, IPPROTO_SCTP, SCTP_NODELAY, 1)
}

/// Turns ICMP errors about this socket's packets into errors the connect
/// sees (`on`), or back into soft errors (off). Linux SCTP, unlike TCP in
/// SYN-SENT, only records an ICMP error (port or host unreachable,
/// administratively prohibited) as a soft error, reported when the INIT
/// finally times out, unless IP_RECVERR / IPV6_RECVERR is set
/// (`sctp_v4_err_handle` in net/sctp/input.c, `sctp_v6_err` in
/// net/sctp/ipv6.c). Without it an INIT refused by a firewall's reject is
/// retransmitted until Timer F instead of failing at once. On while the
/// association is set up; off once it is, so that the association's own
/// retransmissions deal with transient errors as usual.
fn set_icmp_errors_fatal(socket: &Socket, dst: &SocketAddr, on: bool) -> io::Result<()> {
    let (level, name) = match dst {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_RECVERR),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
    };
    set_int_option(socket, level, name, libc::c_int::from(on))
}

/// An established one-to-one SCTP association, readable and writable as a
/// byte stream (SIP messages are framed as over TCP).
#[derive(Debug)]
pub struct SctpStream {
    fd: AsyncFd<Socket>,
}

impl SctpStream {
    /// Wraps a connected, non-blocking SCTP socket.
    fn new(socket: Socket) -> io::Result<SctpStream> {
        socket.set_nonblocking(true)?;
        Ok(SctpStream {
            fd: register(socket)?,
        })
    }

    /// The local address of the association's socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        ip_local_addr(self.fd.get_ref())
    }

    /// The peer's primary address (the one the association was set up to).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.fd
            .get_ref()
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }
}

impl AsyncRead for SctpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for SctpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| inner.get_ref().send_with_flags(buf, libc::MSG_NOSIGNAL)) {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.fd.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// A listening one-to-one SCTP socket (for the responder).
#[derive(Debug)]
pub struct SctpListener {
    fd: AsyncFd<Socket>,
}

impl SctpListener {
    /// Binds and listens; IPv6 sockets are V6ONLY. Fails with
    /// `ErrorKind::Unsupported` and a clear message where the kernel has no SCTP.
    pub fn bind(addr: SocketAddr) -> io::Result<SctpListener> {
        if !kernel_supported() {
            return Err(unsupported_io());
        }
        let socket =
            new_listener(addr, Type::STREAM, Protocol::SCTP, Bind::Listen).map_err(|e| {
                match (e.step, e.source.raw_os_error()) {
                    (Step::Create, Some(libc::EPROTONOSUPPORT)) => unsupported_io(),
                    _ => io::Error::from(e),
                }
            })?;
        socket.listen(1024)?;
        Ok(SctpListener {
            fd: register(socket)?,
        })
    }

    /// The address the listener is bound to (with the kernel's port if it was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        ip_local_addr(self.fd.get_ref())
    }

    /// The next association.
    pub async fn accept(&self) -> io::Result<(SctpStream, SocketAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| inner.get_ref().accept()) {
                Ok(Ok((socket, addr))) => {
                    let peer = addr
                        .as_socket()
                        .ok_or_else(|| io::Error::other("not an IP peer"))?;
                    let _ = set_nodelay(&socket);
                    return Ok((SctpStream::new(socket)?, peer));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Establishes an SCTP association, then optionally probes with OPTIONS.
pub async fn attempt(
    endpoint: &Endpoint,
    cfg: &ConnectConfig,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Connected, AttemptError> {
    if !kernel_supported() {
        return Err(AttemptError::new(ErrorClass::Unsupported, UNSUPPORTED));
    }
    let start = Instant::now();
    let dst = canonical(endpoint.addr);
    let socket = new_socket(&dst, Type::STREAM, Protocol::SCTP, cfg)?;
    set_nodelay(&socket).map_err(|e| local_error("SCTP_NODELAY", &e))?;
    set_icmp_errors_fatal(&socket, &dst, true).map_err(|e| local_error("IP_RECVERR", &e))?;
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(AttemptError::io(&format!("connect {dst}"), &e)),
    }
    // An ICMP error that came back while connect() still held the socket
    // (a nearby firewall answers within the system call) was kept as a soft
    // error whatever IP_RECVERR says; SO_ERROR hands it over.
    if let Ok(Some(e)) = socket.take_error() {
        return Err(AttemptError::io(&format!("connect {dst}"), &e));
    }
    let fd = register(socket).map_err(|e| local_error("register socket", &e))?;
    let established = async {
        let _guard = fd.writable().await?;
        match fd.get_ref().take_error()? {
            Some(e) => Err(e),
            None => fd.get_ref().peer_addr().map(|_| ()),
        }
    };
    match tokio::time::timeout(cfg.timer_f(), established).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AttemptError::io(&format!("connect {dst}"), &e)),
        Err(_) => {
            return Err(AttemptError::new(
                ErrorClass::Timeout,
                format!("connect {dst}: no answer to INIT in {:?}", cfg.timer_f()),
            ))
        }
    }
    let transport_ready = start.elapsed();
    set_icmp_errors_fatal(fd.get_ref(), &dst, false).map_err(|e| local_error("IP_RECVERR", &e))?;
    let mut stream = SctpStream { fd };
    let local = stream
        .local_addr()
        .map_err(|e| local_error("local address", &e))?;
    let mut requests_sent = 0;
    let response = if cfg.probe_streams {
        progress(Progress::TransportUp {
            after: transport_ready,
        });
        let probe = cfg.probe_for(endpoint, local);
        requests_sent = 1;
        Some(super::stream::probe_stream(&mut stream, &probe, cfg.timer_f(), dst).await?)
    } else {
        None
    };
    Ok(Connected {
        connection: Connection::Sctp(stream),
        local,
        transport_ready,
        response,
        requests_sent,
    })
}

/// The SCTP stream of a [`Connection`], if it is one.
pub fn into_stream(connection: Connection) -> Option<SctpStream> {
    match connection {
        Connection::Sctp(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definitive_answers_count() {
        let err = |n| Err(io::Error::from_raw_os_error(n));
        let never = || -> io::Result<()> { panic!("IPv6 asked although IPv4 answered") };
        assert!(matches!(verdict(Ok(()), never), Verdict::Supported));
        assert!(matches!(
            verdict(err(libc::EPROTONOSUPPORT), never),
            Verdict::Unsupported(_)
        ));
        assert!(matches!(
            verdict(err(libc::ESOCKTNOSUPPORT), never),
            Verdict::Unsupported(_)
        ));
        // Out of descriptors, out of memory: no answer, nothing cached.
        assert!(matches!(
            verdict(err(libc::EMFILE), never),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            verdict(err(libc::ENOBUFS), never),
            Verdict::Unknown(_)
        ));
        // No IPv4 at all: IPv6 decides.
        let no_v4 = || err(libc::EAFNOSUPPORT);
        assert!(matches!(verdict(no_v4(), || Ok(())), Verdict::Supported));
        assert!(matches!(
            verdict(no_v4(), || err(libc::EAFNOSUPPORT)),
            Verdict::Unsupported(_)
        ));
        assert!(matches!(
            verdict(no_v4(), || err(libc::EPROTONOSUPPORT)),
            Verdict::Unsupported(_)
        ));
        assert!(matches!(
            verdict(no_v4(), || err(libc::EMFILE)),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn detection_agrees_with_the_kernel() {
        let direct = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::SCTP));
        match direct {
            Ok(_) => assert!(kernel_supported()),
            Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                assert!(!kernel_supported());
                let err = SctpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::Unsupported);
                assert!(err.to_string().contains(UNSUPPORTED), "{err}");
            }
            Err(e) => panic!("unexpected socket error: {e}"),
        }
    }
}
