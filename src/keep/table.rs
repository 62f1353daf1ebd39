//! The rules of the connection table, pure: which kept connection a dial
//! may use, why none, which entry goes when the table is full or idle.
//! Generic over what is kept (`C`) and given the time, so its tests need
//! no socket and no clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::connect::tls::CertIdentities;
use crate::endpoint::Transport;

/// Where a kept connection goes: its transport and the remote address,
/// port included. Several entries may share a key (virtual hosting: one
/// server address, one TLS connection per domain its certificates cover).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// TCP, TLS or SCTP (UDP has no connection to keep).
    pub transport: Transport,
    /// The peer's address and port.
    pub remote: SocketAddr,
}

/// What the table knows of one kept connection.
#[derive(Debug)]
pub struct Entry<C> {
    /// Its number in this table (1, 2...), for the report's "reused #k".
    pub id: u64,
    /// Where it goes.
    pub key: Key,
    /// For TLS, what the peer's certificate proved (RFC 5922 §7.1); `None`
    /// for TCP and SCTP, which prove nothing.
    pub identities: Option<CertIdentities>,
    /// Whether we presented a client certificate in the handshake (mutual
    /// TLS), which is what lets the peer honour our `alias` (RFC 5923 §5).
    pub client_certificate: bool,
    /// When it was opened.
    pub opened_at: Instant,
    /// When a dial last took it (or when it was opened).
    pub last_used: Instant,
    /// The connection itself.
    pub conn: C,
}

/// Why a dial found no connection to reuse among its located destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No kept connection goes to any of them.
    NoLiveConnection,
    /// A kept TLS connection goes to one of them, but its certificate does
    /// not cover the dial's SIP domain (virtual hosting: the opensips#1651
    /// bug is to reuse it anyway).
    NotCovered {
        /// The SIP domain the dial must reach.
        domain: String,
        /// The connection that was passed over.
        id: u64,
    },
}

impl Miss {
    /// The reason as the report words it.
    pub fn describe(&self) -> String {
        match self {
            Miss::NoLiveConnection => "no live connection".into(),
            Miss::NotCovered { domain, id } => {
                format!("certificate of connection #{id} does not cover {domain}")
            }
        }
    }
}

/// Whether a kept connection may carry requests for `domain`, over a
/// `sips:` target or not. TLS: only if its certificate proved `domain`
/// (RFC 5922 §7.1 with [`CertIdentities::check`], the check the handshake
/// made). TCP and SCTP prove nothing, so RFC 3261 §18.1.1 reuse by address
/// is all there is, and never for `sips:`.
pub fn may_carry<C>(entry: &Entry<C>, domain: &str, sips: bool) -> bool {
    match (&entry.identities, entry.key.transport) {
        (Some(ids), Transport::Tls) => ids.check(domain).is_ok(),
        (_, Transport::Tls) => false,
        _ => !sips,
    }
}

/// The table: at most `max_entries` connections, each dropped once idle for
/// `idle_timeout`. The least recently used goes first when it is full.
#[derive(Debug)]
pub struct Table<C> {
    entries: Vec<Entry<C>>,
    next_id: u64,
    max_entries: usize,
    idle_timeout: Duration,
}

impl<C> Table<C> {
    /// An empty table with these bounds (`max_entries` at least 1).
    pub fn new(max_entries: usize, idle_timeout: Duration) -> Table<C> {
        Table {
            entries: Vec::new(),
            next_id: 1,
            max_entries: max_entries.max(1),
            idle_timeout,
        }
    }

    /// The number the next inserted entry gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// How many connections are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// Keeps `conn` (opened at `now`); returns its number and the entries
    /// that had to go to make room (least recently used first), for the
    /// caller to close.
    pub fn insert(
        &mut self,
        now: Instant,
        key: Key,
        identities: Option<CertIdentities>,
        client_certificate: bool,
        conn: C,
    ) -> (u64, Vec<Entry<C>>) {
        let mut evicted = self.expire(now);
        while self.entries.len() >= self.max_entries {
            let lru = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (e.last_used, e.id))
                .map(|(i, _)| i)
                .expect("a full table has entries");
            evicted.push(self.entries.remove(lru));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            key,
            identities,
            client_certificate,
            opened_at: now,
            last_used: now,
            conn,
        });
        (id, evicted)
    }

    /// Removes the entries idle for `idle_timeout` or longer and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Entry<C>> {
        let timeout = self.idle_timeout;
        let (gone, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| now.saturating_duration_since(e.last_used) >= timeout);
        self.entries = kept;
        gone
    }

    /// Removes entry `id` (its peer closed it, or it was found dead).
    pub fn remove(&mut self, id: u64) -> Option<Entry<C>> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.remove(i))
    }

    /// The destinations a dial of `domain` may reuse, over the allowed
    /// `transports`: the keys of the entries that [`may_carry`] it. The
    /// dial machine takes the first one location finds.
    pub fn reusable(&self, domain: &str, sips: bool, transports: &[Transport]) -> Vec<Key> {
        let mut keys: Vec<Key> = Vec::new();
        for e in &self.entries {
            if transports.contains(&e.key.transport)
                && may_carry(e, domain, sips)
                && !keys.contains(&e.key)
            {
                keys.push(e.key);
            }
        }
        keys
    }

    /// Takes the most recently used entry for `key` that may carry
    /// `domain`, marking it used at `now`.
    pub fn take(&mut self, now: Instant, key: Key, domain: &str, sips: bool) -> Option<&Entry<C>> {
        let entry = self
            .entries
            .iter_mut()
            .filter(|e| e.key == key && may_carry(e, domain, sips))
            .max_by_key(|e| (e.last_used, e.id))?;
        entry.last_used = now;
        Some(entry)
    }

    /// Why a dial of `domain` that located `located` reused nothing: a kept
    /// connection to one of them whose certificate does not cover the
    /// domain, or none at all.
    pub fn explain_miss(&self, located: &[Key], domain: &str, sips: bool) -> Miss {
        match self
            .entries
            .iter()
            .find(|e| located.contains(&e.key) && !may_carry(e, domain, sips))
        {
            Some(e) if e.key.transport == Transport::Tls => Miss::NotCovered {
                domain: domain.to_string(),
                id: e.id,
            },
            _ => Miss::NoLiveConnection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(transport: Transport, addr: &str) -> Key {
        Key {
            transport,
            remote: addr.parse().unwrap(),
        }
    }

    fn proving(domains: &[&str]) -> Option<CertIdentities> {
        Some(CertIdentities {
            sip_uris: domains.iter().map(|d| d.to_string()).collect(),
            has_san: true,
            ..CertIdentities::default()
        })
    }

    const TLS_A: &str = "[2001:db8::10]:5061";

    #[test]
    fn tls_is_reused_only_for_a_domain_its_certificate_proved() {
        let t0 = Instant::now();
        let mut table = Table::new(8, Duration::from_secs(60));
        let k = key(Transport::Tls, TLS_A);
        table.insert(t0, k, proving(&["example.test"]), false, ());
        assert_eq!(table.reusable("example.test", true, &[Transport::Tls]), [k]);
        assert_eq!(
            table.reusable("EXAMPLE.test.", true, &[Transport::Tls]),
            [k]
        );
        // Virtual hosting: same address, a domain the certificate does not cover.
        assert!(table
            .reusable("other.test", true, &[Transport::Tls])
            .is_empty());
        assert_eq!(
            table.explain_miss(&[k], "other.test", true),
            Miss::NotCovered {
                domain: "other.test".into(),
                id: 1
            }
        );
        assert_eq!(
            table.explain_miss(&[k], "other.test", true).describe(),
            "certificate of connection #1 does not cover other.test"
        );
        assert!(table.take(t0, k, "other.test", true).is_none());
        assert_eq!(table.take(t0, k, "example.test", true).unwrap().id, 1);
        // Not located: no connection, whatever it covers.
        let elsewhere = key(Transport::Tls, "192.0.2.1:5061");
        assert_eq!(
            table.explain_miss(&[elsewhere], "other.test", true),
            Miss::NoLiveConnection
        );
    }

    #[test]
    fn a_tls_entry_without_identities_is_never_reused() {
        let mut table = Table::new(8, Duration::from_secs(60));
        table.insert(Instant::now(), key(Transport::Tls, TLS_A), None, false, ());
        assert!(table
            .reusable("example.test", false, &[Transport::Tls])
            .is_empty());
    }

    #[test]
    fn wildcards_and_dns_names_beside_sip_uris_do_not_cover() {
        let mut table = Table::new(8, Duration::from_secs(60));
        let ids = CertIdentities {
            sip_uris: vec!["other.test".into()],
            dns: vec!["example.test".into(), "*.example.test".into()],
            has_san: true,
            ..CertIdentities::default()
        };
        table.insert(
            Instant::now(),
            key(Transport::Tls, TLS_A),
            Some(ids),
            true,
            (),
        );
        for domain in ["example.test", "a.example.test"] {
            assert!(table.reusable(domain, true, &[Transport::Tls]).is_empty());
        }
        assert_eq!(
            table.reusable("other.test", true, &[Transport::Tls]).len(),
            1
        );
    }

    #[test]
    fn sips_only_ever_reuses_tls_and_tcp_is_reused_by_address() {
        let mut table = Table::new(8, Duration::from_secs(60));
        let tcp = key(Transport::Tcp, "[2001:db8::10]:5060");
        let sctp = key(Transport::Sctp, "[2001:db8::10]:5060");
        table.insert(Instant::now(), tcp, None, false, ());
        table.insert(Instant::now(), sctp, None, false, ());
        let all = [Transport::Tcp, Transport::Tls, Transport::Sctp];
        assert_eq!(table.reusable("any.test", false, &all), [tcp, sctp]);
        assert!(table.reusable("any.test", true, &all).is_empty());
        // A transport the dial does not allow is not offered.
        assert_eq!(
            table.reusable("any.test", false, &[Transport::Sctp]),
            [sctp]
        );
        assert_eq!(
            table.explain_miss(&[tcp], "any.test", true),
            Miss::NoLiveConnection
        );
    }

    #[test]
    fn idle_entries_expire_and_use_keeps_them() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let mut table = Table::new(8, idle);
        let a = key(Transport::Tcp, "192.0.2.1:5060");
        let b = key(Transport::Tcp, "192.0.2.2:5060");
        table.insert(t0, a, None, false, "a");
        table.insert(t0, b, None, false, "b");
        assert!(table
            .take(t0 + Duration::from_secs(20), a, "x", false)
            .is_some());
        let gone = table.expire(t0 + idle);
        assert_eq!(gone.iter().map(|e| e.conn).collect::<Vec<_>>(), ["b"]);
        assert_eq!(table.len(), 1);
        assert!(table.expire(t0 + Duration::from_secs(49)).is_empty());
        assert_eq!(table.expire(t0 + Duration::from_secs(50)).len(), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut table = Table::new(2, s(600));
        let a = key(Transport::Tcp, "192.0.2.1:5060");
        let b = key(Transport::Tcp, "192.0.2.2:5060");
        let c = key(Transport::Tcp, "192.0.2.3:5060");
        table.insert(t0, a, None, false, "a");
        table.insert(t0 + s(1), b, None, false, "b");
        // a is used after b was opened: b is now the least recently used.
        table.take(t0 + s(2), a, "x", false).unwrap();
        let (id, evicted) = table.insert(t0 + s(3), c, None, false, "c");
        assert_eq!(id, 3);
        assert_eq!(evicted.iter().map(|e| e.conn).collect::<Vec<_>>(), ["b"]);
        let left: Vec<_> = table.entries().iter().map(|e| e.conn).collect();
        assert_eq!(left, ["a", "c"]);
        // Numbers are never given twice, even after removals.
        assert_eq!(table.remove(1).unwrap().conn, "a");
        assert!(table.remove(1).is_none());
        assert_eq!(table.insert(t0 + s(4), a, None, false, "a2").0, 4);
    }

    #[test]
    fn the_most_recent_of_several_connections_to_one_key_is_taken() {
        let t0 = Instant::now();
        let mut table = Table::new(8, Duration::from_secs(60));
        let k = key(Transport::Tls, TLS_A);
        table.insert(t0, k, proving(&["example.test"]), false, ());
        table.insert(t0, k, proving(&["other.test"]), false, ());
        table.insert(t0, k, proving(&["example.test"]), false, ());
        // Two cover example.test: one key offered, the newest taken.
        assert_eq!(table.reusable("example.test", true, &[Transport::Tls]), [k]);
        assert_eq!(table.take(t0, k, "example.test", true).unwrap().id, 3);
        assert_eq!(table.take(t0, k, "other.test", true).unwrap().id, 2);
    }
}
