//! Keep what was raced: the table of live connections a [`crate::Dialer`]
//! reuses (RFC 3261 §18.1.1, RFC 5923 §5), and the connection handle it
//! gives the caller.
//!
//! The pipeline is locate → race → connect → **keep** → report. A dial
//! with the table on asks it, before the start, which kept connections may
//! carry the dial's SIP domain ([`table::may_carry`]: for TLS only a
//! certificate that proved the domain, RFC 5922 §7.1; a `sips:` target only
//! TLS); the dial machine takes the first located destination among them
//! instead of racing ([`crate::dial_machine::Outcome::Reused`]). A stream
//! connection that wins a race is kept here. Each kept connection has a
//! reader task ([`SipConnection`]) that removes it the moment the peer
//! closes or resets it; idle ones expire and a full table evicts the least
//! recently used.
//!
//! [`table`] holds the rules, pure and tested without sockets; this file
//! puts them behind a lock shared by the dialer's clones.

mod conn;
pub mod table;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::connect::tls::CertIdentities;
use crate::connect::Connection;
use crate::endpoint::{ConfigError, Transport};
pub use conn::{
    Expected, Mailroom, NotExpected, SipConnection, Stream, INBOUND_CAPACITY, MAX_PENDING,
};
pub use table::{Key, Miss};

/// How the dialer keeps connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepConfig {
    /// An entry no dial used for this long is closed (default 60 s) — at
    /// the next dial or keep, which is when the table looks at its entries
    /// (a `Dialer` that no longer dials holds its connections until dropped).
    pub idle_timeout: Duration,
    /// At most this many kept connections; the least recently used goes
    /// first (default 64).
    pub max_entries: usize,
}

impl Default for KeepConfig {
    fn default() -> Self {
        KeepConfig {
            idle_timeout: Duration::from_secs(60),
            max_entries: 64,
        }
    }
}

/// The longest idle timeout (one hour).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest table.
pub const MAX_ENTRIES: usize = 4096;

impl KeepConfig {
    /// Checks the bounds; the error names the field (`keep.<name>`).
    pub fn validated(self) -> Result<KeepConfig, ConfigError> {
        ConfigError::check_duration(
            "keep.idle_timeout",
            self.idle_timeout,
            Duration::from_millis(100),
            MAX_IDLE_TIMEOUT,
        )?;
        ConfigError::check_count("keep.max_entries", self.max_entries, 1, MAX_ENTRIES)?;
        Ok(self)
    }
}

/// A kept connection taken for a dial.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The connection.
    pub connection: SipConnection,
    /// When it was opened.
    pub opened_at: Instant,
}

/// A kept connection that was found dead when a dial took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundDead {
    /// Its number in the table.
    pub id: u64,
}

/// The table of a dialer, shared by its clones.
#[derive(Debug, Clone)]
pub struct Keeper {
    table: Arc<Mutex<table::Table<SipConnection>>>,
}

impl Keeper {
    /// An empty table with `cfg`'s bounds.
    pub fn new(cfg: &KeepConfig) -> Keeper {
        Keeper {
            table: Arc::new(Mutex::new(table::Table::new(
                cfg.max_entries,
                cfg.idle_timeout,
            ))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, table::Table<SipConnection>> {
        self.table.lock().expect("connection table lock")
    }

    /// How many connections are kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The destinations a dial of `domain` over `transports` may reuse (idle
    /// entries are dropped first).
    pub fn reusable(
        &self,
        now: Instant,
        domain: &str,
        sips: bool,
        transports: &[Transport],
    ) -> Vec<Key> {
        let (keys, expired) = {
            let mut table = self.lock();
            let expired = table.expire(now);
            (table.reusable(domain, sips, transports), expired)
        };
        drop(expired);
        keys
    }

    /// Takes the kept connection to `key` for `domain`. One whose reader
    /// has seen it die is removed and reported as such: the dial then races
    /// afresh.
    pub fn take(
        &self,
        now: Instant,
        key: Key,
        domain: &str,
        sips: bool,
    ) -> Result<Taken, Option<FoundDead>> {
        let mut table = self.lock();
        let (id, connection, opened_at) = {
            let entry = table.take(now, key, domain, sips).ok_or(None)?;
            (entry.id, entry.conn.clone(), entry.opened_at)
        };
        if connection.is_dead() {
            let gone = table.remove(id);
            drop(table);
            drop(gone);
            return Err(Some(FoundDead { id }));
        }
        Ok(Taken {
            connection,
            opened_at,
        })
    }

    /// Removes connection `id` (found dead at first use) and closes it.
    pub async fn discard(&self, id: u64) {
        let gone = self.lock().remove(id);
        if let Some(entry) = gone {
            entry.conn.close().await;
        }
    }

    /// Why a dial of `domain` that located `located` reused nothing.
    pub fn explain_miss(&self, located: &[Key], domain: &str, sips: bool) -> Miss {
        self.lock().explain_miss(located, domain, sips)
    }

    /// Keeps the stream `connection` that just won a race to `peer` from
    /// `local`, with what its certificate proved for TLS; `client_certificate`
    /// says whether we presented one. UDP (nothing to keep) comes back as
    /// `Err`. Must run inside a tokio runtime.
    pub fn adopt(
        &self,
        now: Instant,
        connection: Connection,
        local: SocketAddr,
        peer: SocketAddr,
        client_certificate: bool,
    ) -> Result<SipConnection, Connection> {
        let weak = Arc::downgrade(&self.table);
        let mut table = self.lock();
        let id = table.next_id();
        let on_death = move || forget(&weak, id);
        let (transport, identities, kept) = match connection {
            Connection::Tcp(s) => (
                Transport::Tcp,
                None,
                SipConnection::start(id, Transport::Tcp, s, local, peer, Box::new(on_death)),
            ),
            Connection::Tls(s) => {
                let identities = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|cert| CertIdentities::from_der(cert.as_ref()).ok());
                (
                    Transport::Tls,
                    identities,
                    SipConnection::start(id, Transport::Tls, *s, local, peer, Box::new(on_death)),
                )
            }
            Connection::Sctp(s) => (
                Transport::Sctp,
                None,
                SipConnection::start(id, Transport::Sctp, s, local, peer, Box::new(on_death)),
            ),
            other => return Err(other),
        };
        let key = Key {
            transport,
            remote: peer,
        };
        let (given, evicted) = table.insert(now, key, identities, client_certificate, kept.clone());
        debug_assert_eq!(given, id);
        drop(table);
        drop(evicted);
        Ok(kept)
    }
}

/// The reader of connection `id` saw it die: drop its entry at once.
fn forget(table: &Weak<Mutex<table::Table<SipConnection>>>, id: u64) {
    if let Some(table) = table.upgrade() {
        // A poisoned lock means a panic elsewhere; the entry then goes with the table.
        let gone = table.lock().ok().and_then(|mut t| t.remove(id));
        drop(gone);
    }
}
