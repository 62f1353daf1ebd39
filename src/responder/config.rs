//! What the responder serves and its bounds: [`ResponderConfig`], one
//! [`ListenerConfig`] per socket, and the `--listen` text form of listeners
//! ([`ListenSpec`]).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use super::registrar::RegistrarConfig;
use super::tls::ResponderTls;
use crate::endpoint::Transport;
use crate::sip::MAX_MESSAGE_SIZE;

/// Default cap on concurrent TCP connections (all listeners together).
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 1024;
/// Default time after which a TCP connection that sent nothing is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a request (head and body) may take to arrive, from its first byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time writing one answer may take.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default kernel send buffer per connection (SO_SNDBUF): unread output a
/// peer can leave queued. About 150 answers to OPTIONS.
pub const DEFAULT_MAX_PENDING_OUTPUT: usize = 64 * 1024;

/// One socket to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Any transport; TLS needs [`ResponderConfig::tls`], SCTP a kernel with SCTP.
    pub transport: Transport,
    /// Port 0 picks a free port; see [`ResponderHandle::listeners`].
    pub addr: SocketAddr,
    /// Receive and count, but never answer.
    pub silent: bool,
}

/// What the responder serves and its resource bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderConfig {
    pub listeners: Vec<ListenerConfig>,
    /// Most stream connections served at once (all listeners together). When
    /// all are taken, a newcomer waits for one (at most `request_timeout`),
    /// and the connection that went longest without progress is closed to
    /// make room once that is `request_timeout` or more; see [`Counters`].
    pub max_tcp_connections: usize,
    /// Larger messages are dropped (UDP) or close the connection (TCP).
    pub max_message_size: usize,
    /// A TCP connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// A request on a stream must be complete (head and body) this long after
    /// its first byte, or the connection is closed: the bound on a peer that
    /// trickles a request (slowloris). It also bounds a TLS handshake.
    pub request_timeout: Duration,
    /// Writing one answer may take this long; a peer that does not read its
    /// answers is cut off.
    pub write_timeout: Duration,
    /// The kernel send buffer (SO_SNDBUF) of each TCP and TLS connection: the
    /// unread output a peer can leave queued before writes block (and
    /// `write_timeout` starts to matter). The kernel may round it.
    pub max_pending_output: usize,
    /// Certificate and key for the TLS listeners (required if there is one).
    pub tls: Option<ResponderTls>,
    /// With [`ResponderTls::client_ca`]: accept TLS clients that present no
    /// certificate (they are served, and an `alias` they send is refused and
    /// counted) instead of failing their handshake.
    pub client_certificate_optional: bool,
    /// RFC 5923 call-back: when a client's `alias` is honoured, send it one
    /// OPTIONS over its own connection (found through the alias table) and
    /// count the answer. See the `alias` module.
    pub call_back: bool,
    /// Act as a minimal SIP Outbound registrar: REGISTER binds contacts
    /// with their flows (see the `registrar` module) instead of being
    /// echoed, and STUN keep-alives are answered on UDP.
    pub registrar: Option<RegistrarConfig>,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            listeners: Vec::new(),
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            max_message_size: MAX_MESSAGE_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_pending_output: DEFAULT_MAX_PENDING_OUTPUT,
            tls: None,
            client_certificate_optional: false,
            call_back: false,
            registrar: None,
        }
    }
}

/// Which transports a `--listen` spec opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransports {
    Udp,
    Tcp,
    Both,
    Tls,
    Sctp,
}

/// A `--listen` value: `udp:ADDR`, `tcp:ADDR`, `both:ADDR` (UDP and TCP),
/// `tls:ADDR` or `sctp:ADDR`, where ADDR is
/// `127.0.0.1:5060` or `[::1]:5060`, optionally followed by `,silent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    pub transports: ListenTransports,
    pub addr: SocketAddr,
    pub silent: bool,
}

impl ListenSpec {
    /// The listeners this spec stands for (two for `both`).
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        let ts: &[Transport] = match self.transports {
            ListenTransports::Udp => &[Transport::Udp],
            ListenTransports::Tcp => &[Transport::Tcp],
            ListenTransports::Both => &[Transport::Udp, Transport::Tcp],
            ListenTransports::Tls => &[Transport::Tls],
            ListenTransports::Sctp => &[Transport::Sctp],
        };
        ts.iter()
            .map(|&transport| ListenerConfig {
                transport,
                addr: self.addr,
                silent: self.silent,
            })
            .collect()
    }
}

/// Why a `--listen` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen spec {input:?}: {reason} (expected udp|tcp|both|tls|sctp:ADDR:PORT[,silent], e.g. udp:[::1]:5060)")]
pub struct ListenSpecError {
    pub input: String,
    pub reason: String,
}

impl FromStr for ListenSpec {
    type Err = ListenSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ListenSpecError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (spec, silent) = match s.split_once(',') {
            Some((spec, "silent")) => (spec, true),
            Some(_) => return Err(fail("the only option after ',' is 'silent'")),
            None => (s, false),
        };
        let (kind, addr) = spec
            .split_once(':')
            .ok_or_else(|| fail("missing the transport prefix"))?;
        let transports = match kind.to_ascii_lowercase().as_str() {
            "udp" => ListenTransports::Udp,
            "tcp" => ListenTransports::Tcp,
            "both" => ListenTransports::Both,
            "tls" => ListenTransports::Tls,
            "sctp" => ListenTransports::Sctp,
            _ => return Err(fail("the transport must be udp, tcp, both, tls or sctp")),
        };
        let addr = addr
            .parse()
            .map_err(|_| fail("the address must be IP:PORT, with IPv6 in brackets"))?;
        Ok(ListenSpec {
            transports,
            addr,
            silent,
        })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.transports {
            ListenTransports::Udp => "udp",
            ListenTransports::Tcp => "tcp",
            ListenTransports::Both => "both",
            ListenTransports::Tls => "tls",
            ListenTransports::Sctp => "sctp",
        };
        write!(f, "{kind}:{}", self.addr)?;
        if self.silent {
            f.write_str(",silent")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        let s: ListenSpec = "udp:[::1]:5060".parse().unwrap();
        assert_eq!(s.transports, ListenTransports::Udp);
        assert_eq!(s.addr, "[::1]:5060".parse().unwrap());
        assert!(!s.silent);
        let s: ListenSpec = "BOTH:0.0.0.0:5062,silent".parse().unwrap();
        assert_eq!(s.transports, ListenTransports::Both);
        assert!(s.silent);
        assert_eq!(s.to_string(), "both:0.0.0.0:5062,silent");
        let ls = s.listeners();
        assert_eq!(ls.len(), 2);
        assert_eq!(
            (ls[0].transport, ls[1].transport),
            (Transport::Udp, Transport::Tcp)
        );
        let s: ListenSpec = "tls:[::1]:5061".parse().unwrap();
        assert_eq!(s.listeners()[0].transport, Transport::Tls);
        assert_eq!(s.to_string(), "tls:[::1]:5061");
        let s: ListenSpec = "SCTP:127.0.0.1:5060".parse().unwrap();
        assert_eq!(s.listeners()[0].transport, Transport::Sctp);
        for bad in [
            "",
            "udp",
            "tls",
            "sctp:[::1]",
            "udp:::1:5060",
            "tcp:127.0.0.1",
            "udp:[::1]:5060,loud",
            "[::1]:5060",
        ] {
            assert!(bad.parse::<ListenSpec>().is_err(), "{bad}");
        }
    }
}
