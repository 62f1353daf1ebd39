//! What a dialer keeps about where it dials from, shared by its dials: the
//! network it is on (re-identified at most every [`NETWORK_RECHECK`]), the
//! DNS resolver for that network's servers (one per tokio runtime: the
//! resolver's connections run as tasks of the runtime that made them), and
//! the DNS cache (emptied when the network changes).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dns::{self, cache::DnsCache, DnsResolver, SharedCache};
use crate::locate::{LocateConfig, LocateError};
use crate::network::{self, Network};
use crate::race::history::NetworkId;

/// How long an identification of the network is trusted: a dial at most
/// this long after a change of network may still count as the old one.
pub const NETWORK_RECHECK: Duration = Duration::from_secs(1);

/// What a dial takes from its dialer's surroundings.
pub(crate) struct DialSetting {
    pub network: Network,
    /// `Err` when no resolver can be set up (no DNS server...).
    pub resolver: Result<DnsResolver, LocateError>,
    pub cache: SharedCache,
}

#[derive(Debug)]
struct Known {
    network: Network,
    checked: Instant,
    servers: Result<Vec<SocketAddr>, LocateError>,
}

/// See the module docs.
pub(crate) struct Surroundings {
    /// `Some`: the network is given, not identified.
    fixed: Option<NetworkId>,
    known: Option<Known>,
    /// Identify the network again at the next dial, however recent.
    force_recheck: bool,
    resolver: Option<(tokio::runtime::Id, DnsResolver)>,
    cache: SharedCache,
}

impl std::fmt::Debug for Surroundings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surroundings")
            .field("fixed", &self.fixed)
            .field("known", &self.known)
            .field("has_resolver", &self.resolver.is_some())
            .finish()
    }
}

impl Surroundings {
    pub(crate) fn new(fixed: Option<NetworkId>, cache_entries: usize) -> Surroundings {
        Surroundings {
            fixed,
            known: None,
            force_recheck: false,
            resolver: None,
            cache: Arc::new(Mutex::new(DnsCache::new(cache_entries))),
        }
    }

    /// The network the last dial ran on (`None` before any dial).
    pub(crate) fn network_id(&self) -> Option<NetworkId> {
        self.known.as_ref().map(|k| k.network.id.clone())
    }

    /// Forgets the identification, so the next dial identifies the network
    /// afresh (for an application told by its OS that the network changed).
    pub(crate) fn recheck(&mut self) {
        self.force_recheck = true;
    }

    /// The network, resolver and cache for a dial starting now, from a
    /// task of the current tokio runtime. `needs_dns`: whether the dial
    /// sends queries (an IP literal does not, and must not fail for want of
    /// a DNS server).
    pub(crate) fn for_dial(&mut self, cfg: &LocateConfig, needs_dns: bool) -> DialSetting {
        let now = Instant::now();
        let stale = std::mem::take(&mut self.force_recheck)
            || self
                .known
                .as_ref()
                .is_none_or(|k| now.duration_since(k.checked) >= NETWORK_RECHECK);
        if stale {
            let servers = dns::name_servers(cfg);
            let network = match &self.fixed {
                Some(id) => Network {
                    id: id.clone(),
                    description: format!("{id} (given)"),
                },
                None => network::identify(servers.as_deref().unwrap_or(&[])),
            };
            let changed = self.known.as_ref().is_some_and(|k| {
                k.network.id != network.id || k.servers.as_ref().ok() != servers.as_ref().ok()
            });
            if changed {
                tracing::debug!(network = %network.description, "the network changed");
                self.resolver = None;
                self.cache.lock().expect("dns cache").clear();
            }
            self.known = Some(Known {
                network,
                checked: now,
                servers,
            });
        }
        let known = self.known.as_ref().expect("identified above");
        let runtime = tokio::runtime::Handle::current().id();
        let resolver = match &self.resolver {
            _ if !needs_dns => Err(LocateError::Resolver("not needed".into())),
            Some((id, r)) if *id == runtime => Ok(r.clone()),
            _ => {
                let built = known
                    .servers
                    .clone()
                    .and_then(|servers| dns::resolver_on(&servers, cfg));
                if let Ok(r) = &built {
                    self.resolver = Some((runtime, r.clone()));
                }
                built
            }
        };
        DialSetting {
            network: known.network.clone(),
            resolver,
            cache: self.cache.clone(),
        }
    }
}
