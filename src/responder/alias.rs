//! Connection reuse, server side (RFC 5923): the `alias` Via parameter, the
//! rule that decides whether to honour it, the table of aliased connections
//! and the call-back OPTIONS sent over them.
//!
//! A client that adds `;alias` to its top Via asks the server to send its own
//! requests for the Via sent-by (host, port, transport) over the connection
//! the request came on, instead of opening a connection back. RFC 5923 §5.1
//! lets a server honour that only when it knows the connection belongs to the
//! sent-by host: over TLS (over TCP or SCTP), with a client certificate
//! whose SIP identities (RFC 5922 §7.1) cover the sent-by host. Otherwise
//! the alias is ignored; the responder counts why ([`AliasRefusal`]).
//! Plain TCP (and SCTP without TLS) never aliases.
//!
//! The table maps (sent-by host, port, transport) to the live connection's
//! outbound queue. With `--call-back`, the responder looks the alias up in
//! the table when it records it, and sends one OPTIONS through the found
//! connection; the connection's task writes it and matches the answer by
//! transaction (top Via branch, Call-ID, CSeq).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::connect::tls::CertIdentities;
use crate::endpoint::Transport;
use crate::sip::{OptionsProbe, Via};

/// The port a sent-by without one stands for over TLS (RFC 3261 §18.2.1 /
/// RFC 5923 §5.1 use the transport's default).
const TLS_DEFAULT_PORT: u16 = 5061;

/// What the responder knows of a connection's security, for the alias rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ConnectionSecurity {
    /// Plain TCP or SCTP: anyone can claim any sent-by.
    Plain,
    /// TLS; `client` holds the identities of the certificate the client
    /// presented (and the responder verified), if it presented one.
    Tls { client: Option<CertIdentities> },
}

/// Why an `alias` was not honoured (RFC 5923 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AliasRefusal {
    /// The connection is not TLS: nothing proves who owns it.
    NotTls,
    /// TLS, but the client presented no certificate.
    NoClientCertificate,
    /// The client certificate's SIP identities do not cover the sent-by host.
    CertificateDoesNotCover,
}

/// Where requests for an aliased client go: its sent-by host (lowercase, no
/// brackets), port and transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct AliasKey {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) transport: Transport,
}

impl AliasKey {
    /// The Request-URI of a request for this client.
    fn request_uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("sip:{host}:{};transport=tls", self.port)
    }
}

/// The sent-by port of `via`, if it names one.
fn sent_by_port(via: &Via) -> Option<u16> {
    let s = via.sent_by.as_str();
    let port = match s.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:")?.1,
        None => s.split_once(':')?.1,
    };
    port.parse().ok()
}

/// What to do with the top Via of a request received over a connection with
/// `security` and `transport`: `None` if it carries no `alias`; else the key
/// to record it under, or why not.
pub(super) fn decide(
    via: &Via,
    transport: Transport,
    security: &ConnectionSecurity,
) -> Option<Result<AliasKey, AliasRefusal>> {
    via.param("alias")?;
    let client = match security {
        ConnectionSecurity::Plain => return Some(Err(AliasRefusal::NotTls)),
        ConnectionSecurity::Tls { client } => client,
    };
    let Some(ids) = client else {
        return Some(Err(AliasRefusal::NoClientCertificate));
    };
    let host = via.sent_by_host();
    if ids.check(host).is_err() {
        return Some(Err(AliasRefusal::CertificateDoesNotCover));
    }
    Some(Ok(AliasKey {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port: sent_by_port(via).unwrap_or(TLS_DEFAULT_PORT),
        transport,
    }))
}

/// A request the responder sends over an aliased connection.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) probe: OptionsProbe,
}

/// One aliased connection: which connection, and its outbound queue.
struct Entry {
    connection: u64,
    queue: mpsc::Sender<Outbound>,
}

/// The aliased connections, by (sent-by host, port, transport). A newer
/// alias for the same key replaces the older (the client moved to a new
/// connection); an entry goes when its connection ends.
#[derive(Default)]
pub(super) struct AliasTable {
    entries: Mutex<HashMap<AliasKey, Entry>>,
}

impl AliasTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AliasKey, Entry>> {
        // Every critical section is one map operation: a panic cannot leave
        // the map inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `key` as reachable over `connection` through `queue`.
    pub(super) fn record(&self, key: AliasKey, connection: u64, queue: mpsc::Sender<Outbound>) {
        self.lock().insert(key, Entry { connection, queue });
    }

    /// Removes every alias still pointing at `connection` (it ended).
    pub(super) fn forget(&self, connection: u64) {
        self.lock().retain(|_, e| e.connection != connection);
    }

    /// How many aliases are recorded now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sends an OPTIONS to the client `key` over its aliased connection,
    /// from `local` (the connection's local address, for Via and From).
    /// False if no live connection is recorded for `key` or its queue is full.
    pub(super) fn call_back(&self, key: &AliasKey, local: SocketAddr) -> bool {
        let queue = match self.lock().get(key) {
            Some(e) => e.queue.clone(),
            None => return false,
        };
        let probe = OptionsProbe::new(key.request_uri(), key.transport, local);
        queue.try_send(Outbound { probe }).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(uri_sans: &[&str], dns: &[&str]) -> CertIdentities {
        CertIdentities {
            sip_uris: uri_sans.iter().map(|s| s.to_string()).collect(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            has_san: true,
            ..CertIdentities::default()
        }
    }

    fn via(text: &str) -> Via {
        Via::parse(text).unwrap()
    }

    #[test]
    fn sent_by_ports() {
        assert_eq!(sent_by_port(&via("SIP/2.0/TLS a.test:5071")), Some(5071));
        assert_eq!(sent_by_port(&via("SIP/2.0/TLS a.test")), None);
        assert_eq!(
            sent_by_port(&via("SIP/2.0/TLS [2001:db8::1]:5072")),
            Some(5072)
        );
        assert_eq!(sent_by_port(&via("SIP/2.0/TLS [2001:db8::1]")), None);
        assert_eq!(sent_by_port(&via("SIP/2.0/TLS 192.0.2.1:5073")), Some(5073));
    }

    #[test]
    fn alias_honoured_only_over_tls_with_a_covering_certificate() {
        let alias = via("SIP/2.0/TLS client.example.test:5071;branch=z9hG4bKx;alias");
        let covered = ConnectionSecurity::Tls {
            client: Some(ids(&["client.example.test"], &[])),
        };
        assert_eq!(
            decide(&alias, Transport::Tls, &covered),
            Some(Ok(AliasKey {
                host: "client.example.test".into(),
                port: 5071,
                transport: Transport::Tls,
            }))
        );
        // No alias: nothing to decide.
        let plain_via = via("SIP/2.0/TLS client.example.test:5071;branch=z9hG4bKx");
        assert_eq!(decide(&plain_via, Transport::Tls, &covered), None);
        // Plain TCP never aliases, whatever it claims.
        assert_eq!(
            decide(&alias, Transport::Tcp, &ConnectionSecurity::Plain),
            Some(Err(AliasRefusal::NotTls))
        );
        assert_eq!(
            decide(
                &alias,
                Transport::Tls,
                &ConnectionSecurity::Tls { client: None }
            ),
            Some(Err(AliasRefusal::NoClientCertificate))
        );
        // A certificate for another host; and RFC 5922 §7.1: with a sip: URI
        // SAN present, a matching dNSName does not count.
        for other in [
            ids(&["other.example.test"], &[]),
            ids(&["other.example.test"], &["client.example.test"]),
        ] {
            let sec = ConnectionSecurity::Tls {
                client: Some(other),
            };
            assert_eq!(
                decide(&alias, Transport::Tls, &sec),
                Some(Err(AliasRefusal::CertificateDoesNotCover))
            );
        }
        // No port: the TLS default; the host is matched case-insensitively.
        let no_port = via("SIP/2.0/TLS Client.Example.Test;alias;branch=z9hG4bKy");
        assert_eq!(
            decide(&no_port, Transport::Tls, &covered)
                .unwrap()
                .unwrap()
                .port,
            TLS_DEFAULT_PORT
        );
    }

    #[tokio::test]
    async fn the_table_routes_a_call_back_to_the_latest_connection() {
        let table = AliasTable::default();
        let key = AliasKey {
            host: "client.example.test".into(),
            port: 5071,
            transport: Transport::Tls,
        };
        let local: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        assert!(!table.call_back(&key, local), "nothing recorded yet");
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        table.record(key.clone(), 1, tx1);
        table.record(key.clone(), 2, tx2);
        assert!(table.call_back(&key, local));
        let sent = rx2.try_recv().expect("the newer connection gets it");
        assert!(rx1.try_recv().is_err());
        let text = String::from_utf8(sent.probe.to_bytes()).unwrap();
        assert!(text.starts_with("OPTIONS sip:client.example.test:5071;transport=tls SIP/2.0\r\n"));
        assert!(text.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"));
        // Forgetting connection 1 leaves 2's entry; forgetting 2 empties it.
        table.forget(1);
        assert_eq!(table.len(), 1);
        table.forget(2);
        assert_eq!(table.len(), 0);
        assert!(!table.call_back(&key, local));
    }
}
