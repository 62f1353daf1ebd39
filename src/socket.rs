//! The one place sockets are set up, for attempts and for listeners alike:
//! created non-blocking for the address's family, V6ONLY on IPv6 (so an
//! IPv6 socket never carries IPv4 in disguise, `[::]` and `0.0.0.0` can
//! share a port, and families are counted apart), then bound.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// What a socket is for, which decides how it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    /// An outgoing attempt: bound only to a chosen source address (port
    /// picked by the kernel), else left to the kernel at connect.
    Source(Option<SocketAddr>),
    /// A listener on the address itself; stream listeners also get
    /// SO_REUSEADDR, so a restarted server can bind while old connections
    /// linger in TIME_WAIT.
    Listen,
}

/// The set-up step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `socket(2)` itself.
    Create,
    /// IPV6_V6ONLY.
    V6Only,
    /// SO_REUSEADDR.
    ReuseAddress,
    /// `bind(2)` to this address.
    Bind(SocketAddr),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Create => f.write_str("socket"),
            Step::V6Only => f.write_str("IPV6_V6ONLY"),
            Step::ReuseAddress => f.write_str("SO_REUSEADDR"),
            Step::Bind(addr) => write!(f, "bind {addr}"),
        }
    }
}

/// A socket that could not be set up: the step and the kernel's error.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub step: Step,
    pub source: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

impl From<SetupError> for io::Error {
    /// The same kind, the step named in the text.
    fn from(e: SetupError) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// A non-blocking socket of `ty`/`protocol` for `addr`'s family, V6ONLY on
/// IPv6, bound as `bind` says (to `addr` itself for a listener).
pub(crate) fn new_socket(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
    bind: Bind,
) -> Result<Socket, SetupError> {
    let fail = |step| move |source| SetupError { step, source };
    let socket = Socket::new(Domain::for_address(addr), ty.nonblocking(), Some(protocol))
        .map_err(fail(Step::Create))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail(Step::V6Only))?;
    }
    let local = match bind {
        Bind::Source(source) => source,
        Bind::Listen => {
            if ty == Type::STREAM {
                socket
                    .set_reuse_address(true)
                    .map_err(fail(Step::ReuseAddress))?;
            }
            Some(addr)
        }
    };
    if let Some(local) = local {
        socket
            .bind(&SockAddr::from(local))
            .map_err(fail(Step::Bind(local)))?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_v6only_and_bound_to_their_address() {
        for addr in ["[::1]:0", "127.0.0.1:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let s = new_socket(addr, Type::STREAM, Protocol::TCP, Bind::Listen).unwrap();
            let local = s.local_addr().unwrap().as_socket().unwrap();
            assert_eq!(local.ip(), addr.ip());
            assert_ne!(local.port(), 0);
            assert!(s.reuse_address().unwrap());
            if addr.is_ipv6() {
                assert!(s.only_v6().unwrap());
            }
            let u = new_socket(addr, Type::DGRAM, Protocol::UDP, Bind::Listen).unwrap();
            assert!(!u.reuse_address().unwrap(), "only stream listeners reuse");
        }
    }

    #[test]
    fn attempts_bind_only_to_a_chosen_source() {
        let dst: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        let s = new_socket(dst, Type::DGRAM, Protocol::UDP, Bind::Source(None)).unwrap();
        assert!(s.only_v6().unwrap());
        let unbound = s.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(unbound.port(), 0, "left to the kernel at connect");
        let src: SocketAddr = "[::1]:0".parse().unwrap();
        let s = new_socket(dst, Type::DGRAM, Protocol::UDP, Bind::Source(Some(src))).unwrap();
        assert_eq!(s.local_addr().unwrap().as_socket().unwrap().ip(), src.ip());
    }

    #[test]
    fn a_failed_step_is_named() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this host.
        let addr: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let err = new_socket(addr, Type::STREAM, Protocol::TCP, Bind::Listen).unwrap_err();
        assert_eq!(err.step, Step::Bind(addr));
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::AddrNotAvailable);
        assert!(io.to_string().starts_with("bind 192.0.2.1:0: "), "{io}");
    }
}
