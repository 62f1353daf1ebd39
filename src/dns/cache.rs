//! The answers a dialer keeps for the lifetime of their DNS TTL, shared by
//! its dials: a dial whose query is cached is answered at once, without a
//! lookup (the location machine still sequences the queries; the driver
//! just answers one instantly, and the report says it came from here).
//!
//! What is kept: answers with records, for the smallest TTL of their
//! records; NODATA and NXDOMAIN for their negative TTL (RFC 2308: the SOA's
//! TTL and MINIMUM, as hickory reads them). A TTL of 0 means "do not cache"
//! and is honoured. Failures (SERVFAIL, timeouts, network errors) are never
//! kept. TTLs are capped at a day, and the cache at a number of entries
//! (expired ones go first, then those closest to expiry).
//!
//! The cache belongs to one network: the dialer empties it when the
//! network changes (answers may differ per network, e.g. split DNS).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::locate::{DnsFailure, Record, RecordType};

/// The longest an answer is kept, whatever its TTL (hickory's cap too).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// The result of a query as location sees it.
pub type QueryResult = Result<Vec<Record>, DnsFailure>;

#[derive(Debug)]
struct Cached {
    result: QueryResult,
    until: Instant,
}

/// Cached answers by (name, type). See the module docs.
#[derive(Debug)]
pub struct DnsCache {
    entries: HashMap<(String, RecordType), Cached>,
    capacity: usize,
}

impl DnsCache {
    /// A cache of at most `capacity` answers (0: nothing is kept).
    pub fn new(capacity: usize) -> DnsCache {
        DnsCache {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn key(name: &str, rtype: RecordType) -> (String, RecordType) {
        (name.trim_end_matches('.').to_ascii_lowercase(), rtype)
    }

    /// The answer to `name`/`rtype` if one is kept and still valid at `now`.
    pub fn get(&mut self, name: &str, rtype: RecordType, now: Instant) -> Option<QueryResult> {
        let key = Self::key(name, rtype);
        match self.entries.get(&key) {
            Some(c) if now < c.until => Some(c.result.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `result` for `ttl` from `now`, if it is an answer (records,
    /// NODATA or NXDOMAIN) and `ttl` is not zero.
    pub fn insert(
        &mut self,
        name: &str,
        rtype: RecordType,
        result: &QueryResult,
        ttl: Duration,
        now: Instant,
    ) {
        let answer = matches!(result, Ok(_) | Err(DnsFailure::NxDomain));
        if !answer || ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let key = Self::key(name, rtype);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, c| now < c.until);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, c)| c.until)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            Cached {
                result: result.clone(),
                until: now + ttl.min(MAX_TTL),
            },
        );
    }

    /// Forgets everything (a new network).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many answers are kept (expired ones count until a lookup or an
    /// insert drops them).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(ip: &str) -> QueryResult {
        Ok(vec![Record::address(ip.parse().unwrap())])
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn answers_are_kept_for_their_ttl_and_ttl_zero_is_not_kept() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        let a = records("192.0.2.1");
        cache.insert("sip1.example.test.", RecordType::A, &a, secs(60), t0);
        // The name is matched without case or trailing dot.
        assert_eq!(
            cache.get("SIP1.example.test", RecordType::A, t0 + secs(59)),
            Some(a.clone())
        );
        assert_eq!(cache.get("sip1.example.test", RecordType::Aaaa, t0), None);
        assert_eq!(
            cache.get("sip1.example.test", RecordType::A, t0 + secs(60)),
            None
        );
        assert!(cache.is_empty(), "an expired entry is dropped when met");
        // TTL 0: "do not cache".
        cache.insert("zero.example.test", RecordType::A, &a, Duration::ZERO, t0);
        assert_eq!(cache.get("zero.example.test", RecordType::A, t0), None);
        // NODATA and NXDOMAIN are answers; SERVFAIL and timeouts are not.
        cache.insert("nodata.test", RecordType::Aaaa, &Ok(vec![]), secs(5), t0);
        cache.insert(
            "nx.test",
            RecordType::A,
            &Err(DnsFailure::NxDomain),
            secs(5),
            t0,
        );
        cache.insert(
            "sf.test",
            RecordType::A,
            &Err(DnsFailure::ServFail),
            secs(5),
            t0,
        );
        cache.insert(
            "to.test",
            RecordType::A,
            &Err(DnsFailure::Timeout),
            secs(5),
            t0,
        );
        assert_eq!(
            cache.get("nodata.test", RecordType::Aaaa, t0),
            Some(Ok(vec![]))
        );
        assert_eq!(
            cache.get("nx.test", RecordType::A, t0),
            Some(Err(DnsFailure::NxDomain))
        );
        assert_eq!(cache.get("sf.test", RecordType::A, t0), None);
        assert_eq!(cache.get("to.test", RecordType::A, t0), None);
        // A huge TTL is capped at a day.
        cache.insert("long.test", RecordType::A, &a, secs(u64::MAX / 4), t0);
        assert!(cache
            .get("long.test", RecordType::A, t0 + MAX_TTL)
            .is_none());
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(3);
        let a = records("192.0.2.1");
        cache.insert("short.test", RecordType::A, &a, secs(1), t0);
        for (i, ttl) in [(1, 50), (2, 40)] {
            cache.insert(&format!("n{i}.test"), RecordType::A, &a, secs(ttl), t0);
        }
        // Full: the expired entry goes first...
        cache.insert("n3.test", RecordType::A, &a, secs(60), t0 + secs(2));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("n1.test", RecordType::A, t0 + secs(2)).is_some());
        // ...then the one closest to expiry.
        cache.insert("n4.test", RecordType::A, &a, secs(60), t0 + secs(2));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("n2.test", RecordType::A, t0 + secs(2)).is_none());
        // Capacity 0: nothing is kept.
        let mut off = DnsCache::new(0);
        off.insert("x.test", RecordType::A, &a, secs(60), t0);
        assert!(off.is_empty());
    }
}
