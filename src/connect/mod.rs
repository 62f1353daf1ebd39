//! The attempt layer: one connection attempt to one [`Endpoint`], whatever its
//! transport. The dialer calls [`attempt`], which dispatches on
//! `endpoint.transport`; each transport lives in its own submodule (UDP, TCP,
//! TLS over the TCP connect, SCTP).
//!
//! Every attempt is a plain future owning its socket: dropping it (a lost race)
//! closes the socket at once. No task is spawned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Protocol, Socket, Type};

use crate::endpoint::{AttemptError, ConfigError, Endpoint, ErrorClass, Transport};
use crate::sip::{uri_host, OptionsProbe};
use crate::socket::{self, Bind, Step};

pub mod sctp;
mod stream;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use stream::{MAX_IGNORED_MESSAGES, MAX_PEER_BYTES};

/// How attempts are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// Over the stream transports (TCP, TLS after its handshake, and SCTP),
    /// send an OPTIONS once connected and wait for its answer (`--probe`).
    /// Without it, an established connection (a completed handshake for TLS)
    /// is success. UDP always probes: it has no connection to establish.
    pub probe_streams: bool,
    /// RFC 3261 T1, the RTT estimate (500 ms). Timer E starts at T1 and
    /// Timer F (the probe's deadline) is 64·T1.
    pub t1: Duration,
    /// RFC 3261 T2, the cap on the retransmit interval (4 s).
    pub t2: Duration,
    /// The OPTIONS Request-URI. Empty: `sip:<sip_domain>`, or the endpoint's
    /// address when there is no domain either.
    pub request_uri: String,
    /// The SIP domain being dialed (used for the default Request-URI; TLS
    /// verifies the certificate against it and sends it as SNI, RFC 5922 §4,
    /// so a TLS attempt without one fails at once).
    pub sip_domain: String,
    /// Source address for IPv6 attempts (port chosen by the kernel).
    pub bind_v6: Option<Ipv6Addr>,
    /// Source address for IPv4 attempts (port chosen by the kernel).
    pub bind_v4: Option<Ipv4Addr>,
    /// How TLS attempts verify the server and authenticate (mutual TLS).
    pub tls: tls::TlsSettings,
    /// The local SIP host name (`--local-name`) for Via sent-by and From
    /// (RFC 5923 §4: a name the client's certificate can prove, and one
    /// that every path, whatever its family, can use). `None`: the local
    /// IP literal, as before.
    pub local_name: Option<String>,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            probe_streams: false,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            request_uri: String::new(),
            sip_domain: String::new(),
            bind_v6: None,
            bind_v4: None,
            tls: tls::TlsSettings::default(),
            local_name: None,
        }
    }
}

/// The largest T1 (RFC 3261 §17.1.1.1 only asks for more than 500 ms on
/// high-latency paths); Timer F is then 64 × 10 s.
pub const MAX_T1: Duration = Duration::from_secs(10);
/// The largest T2, the cap on the retransmit interval (4 s by default).
pub const MAX_T2: Duration = Duration::from_secs(60);

impl ConnectConfig {
    /// Checks the timers; the error names the field (`connect.<name>`) and
    /// the allowed range.
    pub fn validated(self) -> Result<ConnectConfig, ConfigError> {
        ConfigError::check_duration("connect.t1", self.t1, Duration::from_millis(1), MAX_T1)?;
        ConfigError::check_duration("connect.t2", self.t2, self.t1, MAX_T2)?;
        if let Some(name) = &self.local_name {
            if !crate::sip::is_host_name(name) {
                return Err(ConfigError::new(
                    "connect.local_name",
                    "a host name (letters, digits, '-' and '.')",
                    format!("{name:?}"),
                ));
            }
        }
        Ok(self)
    }

    /// The OPTIONS to send to `endpoint` from `local`: the Request-URI
    /// ([`ConnectConfig::request_uri_for`]), the local name in Via and
    /// From, and over TLS with a client certificate (mutual TLS) the Via
    /// `alias` (RFC 5923 §5: the server can then verify who owns the
    /// connection before it reuses it; never over plain TCP).
    pub fn probe_for(&self, endpoint: &Endpoint, local: SocketAddr) -> OptionsProbe {
        OptionsProbe::new(self.request_uri_for(endpoint), endpoint.transport, local)
            .with_local_name(self.local_name.as_deref())
            .with_alias(self.wants_alias(endpoint.transport))
    }

    /// Whether requests over `transport` carry the Via `alias`: TLS with a
    /// client certificate only (RFC 5923 restricts alias to TLS, and a
    /// server can only verify it under mutual TLS).
    pub fn wants_alias(&self, transport: Transport) -> bool {
        transport == Transport::Tls && self.tls.client_cert.is_some()
    }

    /// Timer F = 64·T1 (RFC 3261 §17.1.2.2): how long a probe may wait, and
    /// also the bound on a TCP handshake.
    pub fn timer_f(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// The Request-URI to probe `endpoint` with.
    pub fn request_uri_for(&self, endpoint: &Endpoint) -> String {
        if !self.request_uri.is_empty() {
            self.request_uri.clone()
        } else if !self.sip_domain.is_empty() {
            format!("sip:{}", self.sip_domain)
        } else {
            let addr = canonical(endpoint.addr);
            format!("sip:{}:{}", uri_host(addr.ip()), addr.port())
        }
    }

    /// The configured source address for `dst`'s family, if any.
    fn bind_for(&self, dst: &SocketAddr) -> Option<SocketAddr> {
        match dst {
            SocketAddr::V6(_) => self.bind_v6.map(|ip| SocketAddr::new(IpAddr::V6(ip), 0)),
            SocketAddr::V4(_) => self.bind_v4.map(|ip| SocketAddr::new(IpAddr::V4(ip), 0)),
        }
    }
}

/// The open connection an attempt leaves behind.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connection {
    /// A UDP socket `connect()`ed to the endpoint.
    Udp(tokio::net::UdpSocket),
    /// A TCP connection, established (and probed if `probe_streams` is set).
    Tcp(tokio::net::TcpStream),
    /// A TLS session over TCP, handshake done and certificate verified.
    Tls(Box<tls::TlsStream>),
    /// An established one-to-one SCTP association.
    Sctp(sctp::SctpStream),
}

/// The answer to the OPTIONS probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    /// The status code (100 to 699) of the first matching response, provisional or final.
    pub status: u16,
    /// The reason phrase as received (peer text: escape before printing).
    pub reason: String,
    /// From the first transmission of the OPTIONS to its answer.
    pub rtt: Duration,
}

/// A successful attempt.
#[derive(Debug)]
pub struct Connected {
    /// The open connection, ready for the caller to use.
    pub connection: Connection,
    /// The local address the attempt used.
    pub local: SocketAddr,
    /// Since the attempt started: TCP handshake done, or the first matching
    /// UDP response received.
    pub transport_ready: Duration,
    /// The probe's answer (always for UDP; for TCP, TLS and SCTP only with
    /// `probe_streams`).
    pub response: Option<ProbeResponse>,
    /// OPTIONS transmissions, retransmissions included.
    pub requests_sent: u32,
}

/// Intermediate milestones of an attempt, reported while it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The transport connection is up (e.g. TCP established) but the attempt
    /// goes on (probe, TLS handshake).
    TransportUp {
        /// Time since the attempt started.
        after: Duration,
    },
}

/// Makes one attempt to `endpoint`. `progress` is called synchronously at
/// milestones; it must not block.
pub async fn attempt(
    endpoint: &Endpoint,
    cfg: &ConnectConfig,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Connected, AttemptError> {
    match endpoint.transport {
        Transport::Udp => udp::attempt(endpoint, cfg).await,
        Transport::Tcp => tcp::attempt(endpoint, cfg, progress).await,
        Transport::Tls => tls::attempt(endpoint, cfg, progress).await,
        Transport::Sctp => sctp::attempt(endpoint, cfg, progress).await,
    }
}

/// A v4-mapped IPv6 address as plain IPv4, so a V6ONLY socket is never asked
/// to reach it.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// A non-blocking socket for `dst`'s family (see [`crate::socket`]),
/// bound to the configured source address if any. Errors are classified
/// for the report.
pub(crate) fn new_socket(
    dst: &SocketAddr,
    ty: Type,
    protocol: Protocol,
    cfg: &ConnectConfig,
) -> Result<Socket, AttemptError> {
    socket::new_socket(*dst, ty, protocol, Bind::Source(cfg.bind_for(dst))).map_err(|e| {
        match e.step {
            // Creation fails for reasons of the path too (no IPv6, say).
            Step::Create => AttemptError::io("socket", &e.source),
            step => local_error(&step.to_string(), &e.source),
        }
    })
}

/// Socket setup failures are ours, not the path's: classify them as Local
/// unless the kernel says the family or protocol is unavailable.
pub(crate) fn local_error(context: &str, err: &std::io::Error) -> AttemptError {
    let class = match ErrorClass::of_io(err) {
        ErrorClass::Unsupported => ErrorClass::Unsupported,
        _ => ErrorClass::Local,
    };
    AttemptError::new(class, format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn endpoint(transport: Transport, addr: &str) -> Endpoint {
        Endpoint {
            transport,
            addr: addr.parse().unwrap(),
            host: Arc::from("test"),
            rank: 0,
        }
    }

    #[tokio::test]
    async fn sctp_without_kernel_support_is_unsupported_at_once() {
        if sctp::kernel_supported() {
            println!("SKIPPED: this kernel has SCTP; the unsupported path cannot be taken");
            return;
        }
        let err = attempt(
            &endpoint(Transport::Sctp, "127.0.0.1:5060"),
            &ConnectConfig::default(),
            &|_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Unsupported);
        assert_eq!(err.detail, "sctp: not supported by this kernel");
    }

    #[test]
    fn request_uri_defaults() {
        let ep = endpoint(Transport::Udp, "[::ffff:192.0.2.1]:5070");
        let mut cfg = ConnectConfig::default();
        assert_eq!(cfg.request_uri_for(&ep), "sip:192.0.2.1:5070");
        let ep6 = endpoint(Transport::Udp, "[2001:db8::1]:5060");
        assert_eq!(cfg.request_uri_for(&ep6), "sip:[2001:db8::1]:5060");
        cfg.sip_domain = "example.test".into();
        assert_eq!(cfg.request_uri_for(&ep), "sip:example.test");
        cfg.request_uri = "sip:alice@example.test".into();
        assert_eq!(cfg.request_uri_for(&ep), "sip:alice@example.test");
        assert_eq!(cfg.timer_f(), Duration::from_secs(32));
    }

    #[test]
    fn alias_only_over_tls_with_a_client_certificate() {
        let local: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let mut cfg = ConnectConfig {
            local_name: Some("ua.example.test".into()),
            ..ConnectConfig::default()
        };
        let tls_ep = endpoint(Transport::Tls, "192.0.2.1:5061");
        let tcp_ep = endpoint(Transport::Tcp, "192.0.2.1:5060");
        let text = |cfg: &ConnectConfig, ep: &Endpoint| {
            String::from_utf8(cfg.probe_for(ep, local).to_bytes()).unwrap()
        };
        // No client certificate: no mutual TLS, no alias.
        assert!(!text(&cfg, &tls_ep).contains("alias"));
        assert!(text(&cfg, &tls_ep).contains("Via: SIP/2.0/TLS ua.example.test:40000;"));
        cfg.tls.client_cert = Some(tls::PemSource::File("client.pem".into()));
        assert!(text(&cfg, &tls_ep).contains(";rport;alias\r\n"));
        assert!(!text(&cfg, &tcp_ep).contains("alias"));
        assert!(text(&cfg, &tcp_ep).contains("From: <sip:siprace@ua.example.test>;tag="));
    }

    #[test]
    fn a_local_name_that_is_no_host_name_is_a_configuration_error() {
        for bad in ["", "a b", "ua.example.test\r\nX: y", "[::1]"] {
            let cfg = ConnectConfig {
                local_name: Some(bad.into()),
                ..ConnectConfig::default()
            };
            let err = cfg.validated().unwrap_err();
            assert_eq!(err.field, "connect.local_name", "{bad:?}");
        }
        let ok = ConnectConfig {
            local_name: Some("ua.example.test".into()),
            ..ConnectConfig::default()
        };
        assert!(ok.validated().is_ok());
    }

    #[tokio::test]
    async fn bind_to_an_address_we_do_not_own_is_local() {
        // 192.0.2.1 (TEST-NET-1) is not configured on this host.
        let cfg = ConnectConfig {
            bind_v4: Some("192.0.2.1".parse().unwrap()),
            ..ConnectConfig::default()
        };
        let err = attempt(&endpoint(Transport::Udp, "127.0.0.1:9"), &cfg, &|_| {})
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Local, "{err}");
    }
}
