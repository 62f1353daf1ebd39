//! What the responder counts, per transport and address family: the
//! public snapshot ([`StatsSnapshot`] of [`Counters`]), the shared atomic
//! cells the serving tasks bump, and the counters written as a JSON file.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Notify;

use crate::endpoint::{Family, Transport};

/// Counters for one transport and family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Datagrams or framed stream messages received (garbage included).
    pub messages: u64,
    /// Messages that parsed as requests.
    pub requests: u64,
    /// Of which OPTIONS.
    pub options: u64,
    /// Responses sent.
    pub responses: u64,
    /// Messages that were not valid requests (garbage, responses, framing errors).
    pub invalid: u64,
    /// Requests left unanswered because the listener is silent.
    pub dropped_silent: u64,
    /// CRLF keep-alives received.
    pub keepalives: u64,
    /// TCP connections accepted and served.
    pub connections: u64,
    /// Connections closed unserved: every slot was taken by a connection
    /// that kept making progress while this one waited.
    pub connections_rejected: u64,
    /// Connections closed to make room for a newcomer, having gone longest
    /// without progress (no complete request or keep-alive).
    pub connections_evicted: u64,
    /// TCP connections closed for being idle.
    pub connections_idle_closed: u64,
    /// Connections closed because a request did not arrive complete within
    /// the request timeout (or a TLS handshake did not finish in it).
    pub connections_request_timeout: u64,
    /// Connections closed because an answer could not be written within the
    /// write timeout (a peer that does not read).
    pub connections_write_timeout: u64,
    /// TLS connections whose handshake failed (or timed out); they are
    /// also counted in `connections`.
    pub handshake_failures: u64,
    /// Requests whose top Via `alias` was honoured (RFC 5923 §5.1): TLS, a
    /// client certificate covering the sent-by host. The connection is then
    /// recorded under (sent-by host, port, transport).
    pub alias_accepted: u64,
    /// `alias` ignored: not a TLS connection (plain TCP or SCTP never aliases).
    pub alias_refused_not_tls: u64,
    /// `alias` ignored: TLS, but the client presented no certificate.
    pub alias_refused_no_client_cert: u64,
    /// `alias` ignored: the client certificate does not cover the sent-by host.
    pub alias_refused_cert_mismatch: u64,
    /// Connections the responder reused for a request of its own (a
    /// call-back), instead of opening one back to the client. The responder
    /// never opens connections itself: every connection it uses is one of
    /// `connections`, opened by a client.
    pub connections_reused: u64,
    /// Call-back OPTIONS written over an aliased connection (`--call-back`).
    pub callbacks_sent: u64,
    /// Call-backs that got a final response over the same connection.
    pub callbacks_answered: u64,
    /// Call-backs that could not be sent: the aliased connection ended first,
    /// or its outbound queue was full.
    pub callbacks_unsent: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.messages += o.messages;
        self.requests += o.requests;
        self.options += o.options;
        self.responses += o.responses;
        self.invalid += o.invalid;
        self.dropped_silent += o.dropped_silent;
        self.keepalives += o.keepalives;
        self.connections += o.connections;
        self.connections_rejected += o.connections_rejected;
        self.connections_evicted += o.connections_evicted;
        self.connections_idle_closed += o.connections_idle_closed;
        self.connections_request_timeout += o.connections_request_timeout;
        self.connections_write_timeout += o.connections_write_timeout;
        self.handshake_failures += o.handshake_failures;
        self.alias_accepted += o.alias_accepted;
        self.alias_refused_not_tls += o.alias_refused_not_tls;
        self.alias_refused_no_client_cert += o.alias_refused_no_client_cert;
        self.alias_refused_cert_mismatch += o.alias_refused_cert_mismatch;
        self.connections_reused += o.connections_reused;
        self.callbacks_sent += o.callbacks_sent;
        self.callbacks_answered += o.callbacks_answered;
        self.callbacks_unsent += o.callbacks_unsent;
    }
}

/// Counters of one transport, per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FamilyCounters {
    pub ipv6: Counters,
    pub ipv4: Counters,
}

/// A snapshot of every counter; serialises as
/// `{"udp":{"ipv6":{...},"ipv4":{...}},"tcp":{...},"tls":{...},"sctp":{...}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub udp: FamilyCounters,
    pub tcp: FamilyCounters,
    pub tls: FamilyCounters,
    pub sctp: FamilyCounters,
}

impl StatsSnapshot {
    /// The counters of one transport and family.
    pub fn get(&self, transport: Transport, family: Family) -> Counters {
        let fc = match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
            Transport::Sctp => &self.sctp,
        };
        match family {
            Family::V6 => fc.ipv6,
            Family::V4 => fc.ipv4,
        }
    }

    /// Everything added up.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for fc in [&self.udp, &self.tcp, &self.tls, &self.sctp] {
            t.add(&fc.ipv6);
            t.add(&fc.ipv4);
        }
        t
    }
}

/// The counters of one transport and family, bumped by the serving tasks.
#[derive(Default)]
pub(super) struct Cell {
    pub(super) messages: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) options: AtomicU64,
    pub(super) responses: AtomicU64,
    pub(super) invalid: AtomicU64,
    pub(super) dropped_silent: AtomicU64,
    pub(super) keepalives: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) connections_rejected: AtomicU64,
    pub(super) connections_evicted: AtomicU64,
    pub(super) connections_idle_closed: AtomicU64,
    pub(super) connections_request_timeout: AtomicU64,
    pub(super) connections_write_timeout: AtomicU64,
    pub(super) handshake_failures: AtomicU64,
    pub(super) alias_accepted: AtomicU64,
    pub(super) alias_refused_not_tls: AtomicU64,
    pub(super) alias_refused_no_client_cert: AtomicU64,
    pub(super) alias_refused_cert_mismatch: AtomicU64,
    pub(super) connections_reused: AtomicU64,
    pub(super) callbacks_sent: AtomicU64,
    pub(super) callbacks_answered: AtomicU64,
    pub(super) callbacks_unsent: AtomicU64,
}

impl Cell {
    fn snapshot(&self) -> Counters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            messages: l(&self.messages),
            requests: l(&self.requests),
            options: l(&self.options),
            responses: l(&self.responses),
            invalid: l(&self.invalid),
            dropped_silent: l(&self.dropped_silent),
            keepalives: l(&self.keepalives),
            connections: l(&self.connections),
            connections_rejected: l(&self.connections_rejected),
            connections_evicted: l(&self.connections_evicted),
            connections_idle_closed: l(&self.connections_idle_closed),
            connections_request_timeout: l(&self.connections_request_timeout),
            connections_write_timeout: l(&self.connections_write_timeout),
            handshake_failures: l(&self.handshake_failures),
            alias_accepted: l(&self.alias_accepted),
            alias_refused_not_tls: l(&self.alias_refused_not_tls),
            alias_refused_no_client_cert: l(&self.alias_refused_no_client_cert),
            alias_refused_cert_mismatch: l(&self.alias_refused_cert_mismatch),
            connections_reused: l(&self.connections_reused),
            callbacks_sent: l(&self.callbacks_sent),
            callbacks_answered: l(&self.callbacks_answered),
            callbacks_unsent: l(&self.callbacks_unsent),
        }
    }
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Shared counters, plus a notification whenever one changes.
#[derive(Default)]
pub(super) struct Stats {
    /// udp/v6, udp/v4, tcp/v6, tcp/v4, tls/v6, tls/v4, sctp/v6, sctp/v4.
    cells: [Cell; 8],
    /// Notified after every change (see `ResponderHandle::wait_for_stats`).
    pub(super) changed: Notify,
}

impl Stats {
    /// The cell of `transport` and `peer`'s family.
    pub(super) fn cell(&self, transport: Transport, peer: &SocketAddr) -> &Cell {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Sctp => 3,
        };
        let f = usize::from(Family::of(&peer.ip()) == Family::V4);
        &self.cells[t * 2 + f]
    }

    /// Wakes whoever waits for a change.
    pub(super) fn touched(&self) {
        self.changed.notify_waiters();
    }

    /// Every counter, now.
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let fc = |t: usize| FamilyCounters {
            ipv6: self.cells[t * 2].snapshot(),
            ipv4: self.cells[t * 2 + 1].snapshot(),
        };
        StatsSnapshot {
            udp: fc(0),
            tcp: fc(1),
            tls: fc(2),
            sctp: fc(3),
        }
    }
}

/// Writes the counters as pretty JSON, atomically (temp file + rename).
pub fn write_stats(path: &Path, snap: &StatsSnapshot) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let json = serde_json::to_vec_pretty(snap).map_err(io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_serialise_per_transport_and_family() {
        let mut snap = StatsSnapshot::default();
        snap.tcp.ipv6.requests = 3;
        snap.udp.ipv4.requests = 2;
        let json: serde_json::Value = serde_json::to_value(snap).unwrap();
        assert_eq!(json["tcp"]["ipv6"]["requests"], 3);
        assert_eq!(json["udp"]["ipv4"]["requests"], 2);
        assert_eq!(snap.get(Transport::Tcp, Family::V6).requests, 3);
        assert_eq!(snap.total().requests, 5);
    }

    #[test]
    fn stats_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("siprace-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.json");
        let mut snap = StatsSnapshot::default();
        snap.udp.ipv6.options = 7;
        write_stats(&path, &snap).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["udp"]["ipv6"]["options"], 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
