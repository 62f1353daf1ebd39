//! The registrar's location service as pure state (no sockets, no clock:
//! the caller passes `now`): the bindings of each address-of-record, what
//! a REGISTER's Contacts do to them, their expiry, and the order in which
//! a request to an AOR tries its flows.
//!
//! RFC 5626 §6: a Contact with `+sip.instance` and `reg-id` (from a
//! REGISTER that supports `outbound`) is bound by (AOR, instance, reg-id)
//! together with the *flow* it arrived over — the connection for streams,
//! the 5-tuple for UDP — and a later REGISTER with the same instance and
//! reg-id replaces it (the UA re-established that flow). Any other Contact
//! is bound by its URI (RFC 3261 §10.3).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::endpoint::Transport;

/// The flow a binding's requests must go down (RFC 5626 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowRef {
    pub transport: Transport,
    /// The responder's end of the flow.
    pub local: SocketAddr,
    /// The UA's end (the REGISTER's source).
    pub peer: SocketAddr,
    /// The responder's number of the stream connection; `None` for UDP,
    /// whose flow is the 5-tuple alone.
    pub connection: Option<u64>,
}

/// What identifies a binding within its AOR.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BindingKey {
    /// An Outbound binding: the UA's `+sip.instance` and the flow's `reg-id`.
    Outbound { instance: String, reg_id: u32 },
    /// A plain binding: the Contact URI.
    Uri(String),
}

/// Where and in what order a REGISTER came: its flow, and its Call-ID and
/// CSeq number (RFC 3261 §10.3 step 7 orders a binding's updates by them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub flow: FlowRef,
    pub call_id: String,
    pub cseq: u32,
}

/// One Contact of a REGISTER, as the registrar reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactUpdate {
    pub key: BindingKey,
    /// The Contact URI (without `<>`).
    pub uri: String,
    /// The Contact's header parameters other than `expires`, each with its
    /// leading `;` (echoed in the 200).
    pub params: String,
    /// The expiry asked for (the Contact's `expires`, else the request's
    /// `Expires`, else the default); zero removes the binding.
    pub expires: Duration,
}

/// A stored binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub key: BindingKey,
    pub uri: String,
    pub params: String,
    pub flow: FlowRef,
    /// The Call-ID and CSeq number of the REGISTER that made or last
    /// refreshed it.
    pub call_id: String,
    pub cseq: u32,
    pub expires_at: Instant,
    /// Increases with every (re-)registration: later is fresher.
    pub registered: u64,
}

impl Binding {
    /// The Contact value for a 200: the URI, its parameters and the time
    /// left, in whole seconds (rounded up, so a live binding never says 0).
    pub fn contact(&self, now: Instant) -> String {
        let left = self.expires_at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        format!("<{}>{};expires={secs}", self.uri, self.params)
    }

    /// The binding's `reg-id`, for an Outbound binding.
    pub fn reg_id(&self) -> Option<u32> {
        match &self.key {
            BindingKey::Outbound { reg_id, .. } => Some(*reg_id),
            BindingKey::Uri(_) => None,
        }
    }
}

/// The bindings of every AOR.
#[derive(Debug, Default)]
pub struct Bindings {
    by_aor: BTreeMap<String, Vec<Binding>>,
    registrations: u64,
    /// The longest expiry granted; longer requests are cut to it.
    max_expires: Option<Duration>,
    /// The most bindings held ([`MAX_BINDINGS`] unless set).
    max_bindings: Option<usize>,
}

/// The expiry a Contact gets when neither it nor the request names one
/// (RFC 3261 §10.3 step 7 leaves it to the registrar; an hour is common).
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(3600);
/// The longest expiry granted by default.
pub const MAX_EXPIRES: Duration = Duration::from_secs(86_400);
/// The most bindings stored (all AORs together): a peer registering
/// contact after contact cannot grow memory without bound.
pub const MAX_BINDINGS: usize = 10_000;
/// Most bindings one address-of-record may hold (a phone, a few devices);
/// more are refused, so no AOR's list (nor its 200's Contacts) grows big.
pub const MAX_BINDINGS_PER_AOR: usize = 32;
/// Most Contacts one REGISTER may carry (more are a 400).
pub const MAX_CONTACTS_PER_REGISTER: usize = 32;

/// Why a REGISTER changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The table holds as many bindings as it may.
    #[error("the registrar holds as many bindings as it may")]
    TableFull,
    /// The address-of-record holds [`MAX_BINDINGS_PER_AOR`] already.
    #[error("the address-of-record holds as many bindings as it may")]
    AorFull,
    /// RFC 3261 §10.3 step 7: an older REGISTER of the same Call-ID than
    /// the one a binding has (a delayed or reordered request).
    #[error("a REGISTER older than the binding's (same Call-ID, lower CSeq)")]
    OutOfOrder,
}

impl Bindings {
    /// Bindings whose granted expiry is at most `max_expires`.
    pub fn new(max_expires: Duration) -> Bindings {
        Bindings {
            max_expires: Some(max_expires),
            ..Bindings::default()
        }
    }

    /// [`new`](Self::new), holding at most `max_bindings`.
    pub fn with_limit(max_expires: Duration, max_bindings: usize) -> Bindings {
        Bindings {
            max_bindings: Some(max_bindings),
            ..Bindings::new(max_expires)
        }
    }

    /// Applies one REGISTER's Contacts for `aor`, from `origin`: each is
    /// added, refreshed (same key: its URI, flow and expiry are replaced)
    /// or removed (expiry zero). Expired bindings go first. Fails, changing
    /// nothing, if the new bindings would pass [`MAX_BINDINGS`], or if the
    /// REGISTER is older than a binding it updates (same Call-ID, lower
    /// CSeq; an equal CSeq is a retransmission and applies again).
    pub fn register(
        &mut self,
        aor: &str,
        updates: &[ContactUpdate],
        origin: Origin,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.expire(now);
        let existing = self.by_aor.get(aor);
        let out_of_order = existing.is_some_and(|list| {
            list.iter().any(|b| {
                b.call_id == origin.call_id
                    && b.cseq > origin.cseq
                    && updates.iter().any(|u| u.key == b.key)
            })
        });
        if out_of_order {
            return Err(Refusal::OutOfOrder);
        }
        let added = updates
            .iter()
            .filter(|u| !u.expires.is_zero())
            .filter(|u| existing.is_none_or(|list| list.iter().all(|b| b.key != u.key)))
            .count();
        if self.len() + added > self.max_bindings.unwrap_or(MAX_BINDINGS) {
            return Err(Refusal::TableFull);
        }
        if existing.map_or(0, Vec::len) + added > MAX_BINDINGS_PER_AOR {
            return Err(Refusal::AorFull);
        }
        let max = self.max_expires.unwrap_or(MAX_EXPIRES);
        for update in updates {
            let list = self.by_aor.entry(aor.to_string()).or_default();
            list.retain(|b| b.key != update.key);
            if update.expires.is_zero() {
                continue;
            }
            self.registrations += 1;
            list.push(Binding {
                key: update.key.clone(),
                uri: update.uri.clone(),
                params: update.params.clone(),
                flow: origin.flow,
                call_id: origin.call_id.clone(),
                cseq: origin.cseq,
                // A huge configured maximum must not overflow the clock.
                expires_at: now
                    .checked_add(update.expires.min(max))
                    .unwrap_or(now + MAX_EXPIRES),
                registered: self.registrations,
            });
        }
        self.by_aor.retain(|_, list| !list.is_empty());
        Ok(())
    }

    /// How many bindings are stored (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.by_aor.values().map(Vec::len).sum()
    }

    /// No binding at all.
    pub fn is_empty(&self) -> bool {
        self.by_aor.is_empty()
    }

    /// Removes every binding of `aor` (`Contact: *` with `Expires: 0`).
    pub fn remove_all(&mut self, aor: &str) {
        self.by_aor.remove(aor);
    }

    /// Drops the bindings whose expiry has come; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        for list in self.by_aor.values_mut() {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            removed += before - list.len();
        }
        self.by_aor.retain(|_, list| !list.is_empty());
        removed
    }

    /// The live bindings of `aor`, in the order they were first made.
    pub fn of(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        self.by_aor
            .get(aor)
            .map(|list| list.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// The live Outbound bindings of `aor` in the order a request tries
    /// them (RFC 5626 §5.3: one flow at a time, the next after a flow
    /// failure): the most recently registered first — the flow the UA
    /// touched last is the likeliest to work — then by `reg-id`.
    pub fn flows(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        let mut flows: Vec<&Binding> = self
            .of(aor, now)
            .into_iter()
            .filter(|b| b.reg_id().is_some())
            .collect();
        flows.sort_by_key(|b| (std::cmp::Reverse(b.registered), b.reg_id()));
        flows
    }

    /// The live binding of `aor` with this `reg-id` (any instance).
    pub fn flow(&self, aor: &str, reg_id: u32, now: Instant) -> Option<&Binding> {
        self.of(aor, now)
            .into_iter()
            .find(|b| b.reg_id() == Some(reg_id))
    }

    /// Every AOR with a binding, live or not yet expired away.
    pub fn aors(&self) -> impl Iterator<Item = &str> {
        self.by_aor.keys().map(String::as_str)
    }
}

/// Why a REGISTER's Contacts are refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error("a Contact is not a SIP address")]
    BadContact,
    #[error("reg-id is not a number from 1 to 2^31-1")]
    BadRegId,
    /// RFC 5626 §6: a REGISTER with a `reg-id` Contact registers one
    /// flow, so no other Contact with a non-zero expiry may come with it.
    #[error("a Contact with a reg-id among several Contacts with a non-zero expiry")]
    RegIdAmongSeveral,
    /// RFC 3261 §10.3 step 6.
    #[error("Contact: * needs Expires: 0 and no other Contact")]
    BadWildcard,
    #[error("more than {MAX_CONTACTS_PER_REGISTER} Contacts")]
    TooManyContacts,
}

/// What a REGISTER asks of its AOR's bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterChange {
    /// Nothing: a query for the current bindings.
    Query,
    /// Add, refresh or remove these Contacts.
    Contacts(Vec<ContactUpdate>),
    /// Remove every binding (`Contact: *`).
    RemoveAll,
}

/// Reads the Contact header values of a REGISTER (each may hold several
/// comma-separated entries). `expires_header` is its `Expires`;
/// `outbound` says whether it supports `outbound` (else `reg-id` is ignored,
/// RFC 5626 §6 step 3: the binding is a plain one).
pub fn read_contacts<'a>(
    contacts: impl IntoIterator<Item = &'a str>,
    expires_header: Option<Duration>,
    outbound: bool,
) -> Result<RegisterChange, ContactError> {
    let entries: Vec<&str> = contacts
        .into_iter()
        .flat_map(crate::sip::split_comma_list)
        .map(str::trim)
        .collect();
    if entries.is_empty() {
        return Ok(RegisterChange::Query);
    }
    if entries.contains(&"*") {
        return if entries.len() == 1 && expires_header == Some(Duration::ZERO) {
            Ok(RegisterChange::RemoveAll)
        } else {
            Err(ContactError::BadWildcard)
        };
    }
    if entries.len() > MAX_CONTACTS_PER_REGISTER {
        return Err(ContactError::TooManyContacts);
    }
    let mut updates = Vec::new();
    for entry in entries {
        let uri = crate::sip::address_uri(entry).ok_or(ContactError::BadContact)?;
        let params = crate::outbound::register::contact_params(entry);
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let expires = param("expires")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .or(expires_header)
            .unwrap_or(DEFAULT_EXPIRES);
        let instance = param("+sip.instance").map(|v| v.trim_matches('"').to_string());
        let reg_id = match param("reg-id").filter(|_| outbound) {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=i32::MAX as u32).contains(n))
                    .ok_or(ContactError::BadRegId)?,
            ),
        };
        let key = match (reg_id, instance) {
            (Some(reg_id), Some(instance)) => BindingKey::Outbound { instance, reg_id },
            // RFC 5626 §6: a reg-id without an instance ID is ignored; the
            // Contact is bound by RFC 3261's rules.
            (_, _) => BindingKey::Uri(uri.to_string()),
        };
        let kept: String = params
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("expires"))
            .map(|(n, v)| {
                if v.is_empty() {
                    format!(";{n}")
                } else {
                    format!(";{n}={v}")
                }
            })
            .collect();
        updates.push(ContactUpdate {
            key,
            uri: uri.to_string(),
            params: kept,
            expires,
        });
    }
    // Taking other contacts back (expires=0) alongside is allowed.
    let binding: Vec<&ContactUpdate> = updates.iter().filter(|u| !u.expires.is_zero()).collect();
    if binding.len() > 1
        && binding
            .iter()
            .any(|u| matches!(u.key, BindingKey::Outbound { .. }))
    {
        return Err(ContactError::RegIdAmongSeveral);
    }
    Ok(RegisterChange::Contacts(updates))
}

/// The address-of-record a REGISTER's To names, as the bindings key it:
/// the URI without parameters or headers, scheme and host in lowercase.
pub fn aor_key(to_uri: &str) -> String {
    let bare = to_uri.split([';', '?']).next().unwrap_or(to_uri);
    match bare.split_once('@') {
        Some((user, host)) => format!("{}@{}", lowercase_scheme(user), host.to_ascii_lowercase()),
        None => bare.to_ascii_lowercase(),
    }
}

/// `sip:`/`sips:` in lowercase, the user part as is.
fn lowercase_scheme(user_part: &str) -> String {
    match user_part.split_once(':') {
        Some((scheme, user)) => format!("{}:{user}", scheme.to_ascii_lowercase()),
        None => user_part.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>";

    /// A REGISTER over connection `connection` from `port`, with the
    /// Call-ID `c<port>` and CSeq 1.
    fn flow(port: u16, connection: u64) -> Origin {
        Origin {
            flow: FlowRef {
                transport: Transport::Tcp,
                local: "[::1]:5060".parse().unwrap(),
                peer: SocketAddr::new("::1".parse().unwrap(), port),
                connection: Some(connection),
            },
            call_id: format!("c{port}"),
            cseq: 1,
        }
    }

    fn contact(reg_id: u32, port: u16, expires: u64) -> String {
        format!(
            "<sip:alice@[::1]:{port};transport=tcp;ob>;reg-id={reg_id};+sip.instance=\"{INSTANCE}\";expires={expires}"
        )
    }

    fn updates(contact: &str) -> Vec<ContactUpdate> {
        match read_contacts([contact], None, true).unwrap() {
            RegisterChange::Contacts(u) => u,
            other => panic!("{other:?}"),
        }
    }

    const AOR: &str = "sip:alice@example.test";

    #[test]
    fn outbound_contacts_are_keyed_by_instance_and_reg_id() {
        let u = updates(&contact(2, 40000, 600));
        assert_eq!(
            u[0].key,
            BindingKey::Outbound {
                instance: INSTANCE.into(),
                reg_id: 2
            }
        );
        assert_eq!(u[0].uri, "sip:alice@[::1]:40000;transport=tcp;ob");
        assert_eq!(u[0].expires, Duration::from_secs(600));
        assert!(!u[0].params.contains("expires"), "{}", u[0].params);
        // Without `Supported: outbound` the reg-id is ignored: a plain binding.
        let RegisterChange::Contacts(plain) =
            read_contacts([contact(2, 40000, 600).as_str()], None, false).unwrap()
        else {
            panic!()
        };
        assert!(matches!(plain[0].key, BindingKey::Uri(_)));
        // The request's Expires when the Contact names none; else the default.
        let RegisterChange::Contacts(u) =
            read_contacts(["<sip:a@192.0.2.1>"], Some(Duration::from_secs(30)), true).unwrap()
        else {
            panic!()
        };
        assert_eq!(u[0].expires, Duration::from_secs(30));
        let RegisterChange::Contacts(u) = read_contacts(["<sip:a@192.0.2.1>"], None, true).unwrap()
        else {
            panic!()
        };
        assert_eq!(u[0].expires, DEFAULT_EXPIRES);
    }

    #[test]
    fn bad_contacts_are_refused() {
        let both = format!("{}, {}", contact(1, 1, 60), contact(2, 2, 60));
        assert_eq!(
            read_contacts([both.as_str()], None, true),
            Err(ContactError::RegIdAmongSeveral)
        );
        let with_plain = format!("{}, <sip:a@192.0.2.9>", contact(1, 1, 60));
        assert_eq!(
            read_contacts([with_plain.as_str()], None, true),
            Err(ContactError::RegIdAmongSeveral)
        );
        // Taking another flow back in the same REGISTER is fine.
        let one_back = format!("{}, {}", contact(1, 1, 60), contact(2, 2, 0));
        assert!(read_contacts([one_back.as_str()], None, true).is_ok());
        // A reg-id without an instance ID is ignored: a plain binding.
        let RegisterChange::Contacts(u) =
            read_contacts(["<sip:a@192.0.2.1;ob>;reg-id=1"], None, true).unwrap()
        else {
            panic!()
        };
        assert!(matches!(u[0].key, BindingKey::Uri(_)), "{u:?}");
        assert_eq!(
            read_contacts(
                [format!("<sip:a@x>;reg-id=0;+sip.instance=\"{INSTANCE}\"").as_str()],
                None,
                true
            ),
            Err(ContactError::BadRegId)
        );
        assert_eq!(
            read_contacts(["*"], None, true),
            Err(ContactError::BadWildcard)
        );
        assert_eq!(
            read_contacts(["*"], Some(Duration::ZERO), true),
            Ok(RegisterChange::RemoveAll)
        );
        assert_eq!(
            read_contacts(["not an address"], None, true),
            Err(ContactError::BadContact)
        );
        assert_eq!(
            read_contacts(Vec::<&str>::new(), None, true),
            Ok(RegisterChange::Query)
        );
    }

    /// Flows 1 and 2 of one instance registered at `t0`, in that order.
    fn two_flows(t0: Instant) -> Bindings {
        let mut b = Bindings::new(MAX_EXPIRES);
        for (reg_id, port) in [(1, 40001), (2, 40002)] {
            let contact = contact(reg_id, port, 600);
            b.register(AOR, &updates(&contact), flow(port, u64::from(reg_id)), t0)
                .unwrap();
        }
        b
    }

    #[test]
    fn same_instance_and_reg_id_replaces_the_flow() {
        let t0 = Instant::now();
        let mut b = two_flows(t0);
        assert_eq!(b.of(AOR, t0).len(), 2);
        // Flow 1 re-established over a new connection: still two bindings,
        // flow 1's now on connection 3.
        b.register(AOR, &updates(&contact(1, 40003, 600)), flow(40003, 3), t0)
            .unwrap();
        let now = b.of(AOR, t0);
        assert_eq!(now.len(), 2);
        let one = b.flow(AOR, 1, t0).unwrap();
        assert_eq!(one.flow.connection, Some(3));
        assert_eq!(one.uri, "sip:alice@[::1]:40003;transport=tcp;ob");
        // Another AOR is apart.
        assert!(b.of("sip:bob@example.test", t0).is_empty());
    }

    #[test]
    fn expires_zero_removes_and_expiry_expires() {
        let t0 = Instant::now();
        let mut b = Bindings::new(Duration::from_secs(100));
        b.register(AOR, &updates(&contact(1, 40001, 600)), flow(40001, 1), t0)
            .unwrap();
        b.register(AOR, &updates(&contact(2, 40002, 50)), flow(40002, 2), t0)
            .unwrap();
        // Granted at most max_expires: 100 s, not 600.
        assert_eq!(
            b.flow(AOR, 1, t0).unwrap().contact(t0),
            format!(
                "<sip:alice@[::1]:40001;transport=tcp;ob>;reg-id=1;+sip.instance=\"{INSTANCE}\";expires=100"
            )
        );
        // Flow 2 lapses at 50 s: gone from queries at once, from the table on expire.
        let t50 = t0 + Duration::from_secs(50);
        assert!(b.flow(AOR, 2, t50).is_none());
        assert_eq!(b.expire(t50), 1);
        assert_eq!(b.of(AOR, t50).len(), 1);
        // Expires: 0 on flow 1 removes it, and with it the AOR.
        b.register(AOR, &updates(&contact(1, 40001, 0)), flow(40001, 1), t50)
            .unwrap();
        assert!(b.of(AOR, t50).is_empty());
        assert_eq!(b.aors().count(), 0);
        // Contact: * removes everything.
        b.register(AOR, &updates(&contact(1, 40001, 60)), flow(40001, 1), t50)
            .unwrap();
        b.remove_all(AOR);
        assert!(b.of(AOR, t50).is_empty());
    }

    #[test]
    fn an_older_register_of_the_same_call_id_changes_nothing() {
        let t0 = Instant::now();
        let mut b = Bindings::new(MAX_EXPIRES);
        let at = |cseq| Origin {
            cseq,
            ..flow(40001, 1)
        };
        b.register(AOR, &updates(&contact(1, 40001, 600)), at(5), t0)
            .unwrap();
        // CSeq 4 after 5: refused, the binding keeps its expiry.
        assert_eq!(
            b.register(AOR, &updates(&contact(1, 40001, 0)), at(4), t0),
            Err(Refusal::OutOfOrder)
        );
        assert_eq!(b.of(AOR, t0).len(), 1);
        // The same CSeq again (a retransmission) and a later one apply.
        b.register(AOR, &updates(&contact(1, 40001, 300)), at(5), t0)
            .unwrap();
        assert!(b
            .flow(AOR, 1, t0)
            .unwrap()
            .contact(t0)
            .ends_with(";expires=300"));
        b.register(AOR, &updates(&contact(1, 40001, 0)), at(6), t0)
            .unwrap();
        assert!(b.of(AOR, t0).is_empty());
        // Another Call-ID (a new flow's) is not ordered against it.
        b.register(AOR, &updates(&contact(1, 40001, 600)), at(9), t0)
            .unwrap();
        let other = Origin {
            cseq: 1,
            ..flow(40002, 2)
        };
        b.register(AOR, &updates(&contact(1, 40002, 600)), other, t0)
            .unwrap();
        assert_eq!(b.flow(AOR, 1, t0).unwrap().flow.connection, Some(2));
    }

    #[test]
    fn flows_are_tried_freshest_first() {
        let t0 = Instant::now();
        let mut b = two_flows(t0);
        // A plain binding is no flow.
        let RegisterChange::Contacts(plain) =
            read_contacts(["<sip:alice@192.0.2.9>"], None, true).unwrap()
        else {
            panic!()
        };
        b.register(AOR, &plain, flow(40009, 9), t0).unwrap();
        let order = |b: &Bindings| -> Vec<Option<u32>> {
            b.flows(AOR, t0).iter().map(|f| f.reg_id()).collect()
        };
        assert_eq!(order(&b), [Some(2), Some(1)]);
        // Flow 1 refreshed: now it is the freshest.
        b.register(AOR, &updates(&contact(1, 40001, 600)), flow(40001, 1), t0)
            .unwrap();
        assert_eq!(order(&b), [Some(1), Some(2)]);
        assert_eq!(b.of(AOR, t0).len(), 3);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        const LIMIT: usize = 50;
        let mut b = Bindings::with_limit(MAX_EXPIRES, LIMIT);
        for i in 0..LIMIT {
            let RegisterChange::Contacts(u) =
                read_contacts([format!("<sip:a{i}@192.0.2.1>").as_str()], None, true).unwrap()
            else {
                panic!()
            };
            // Spread over AORs: one AOR holds at most MAX_BINDINGS_PER_AOR.
            b.register(&format!("sip:u{i}@example.test"), &u, flow(1, 1), t0)
                .unwrap();
        }
        assert_eq!(b.len(), LIMIT);
        // A new binding is refused, a refresh of an existing one is not.
        let refused = updates(&contact(1, 40001, 600));
        assert_eq!(
            b.register(AOR, &refused, flow(1, 1), t0),
            Err(Refusal::TableFull)
        );
        assert_eq!(b.len(), LIMIT);
        let RegisterChange::Contacts(again) =
            read_contacts(["<sip:a0@192.0.2.1>"], None, true).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            b.register("sip:u0@example.test", &again, flow(1, 1), t0),
            Ok(())
        );
        // Once they expire there is room again.
        let later = t0 + DEFAULT_EXPIRES;
        assert_eq!(b.register(AOR, &refused, flow(1, 1), later), Ok(()));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn one_aor_and_one_register_are_bounded_too() {
        let t0 = Instant::now();
        let mut b = Bindings::new(MAX_EXPIRES);
        let one = |i: usize| {
            let RegisterChange::Contacts(u) =
                read_contacts([format!("<sip:d{i}@192.0.2.1>").as_str()], None, true).unwrap()
            else {
                panic!()
            };
            u
        };
        for i in 0..MAX_BINDINGS_PER_AOR {
            b.register(AOR, &one(i), flow(1, 1), t0).unwrap();
        }
        assert_eq!(
            b.register(AOR, &one(MAX_BINDINGS_PER_AOR), flow(1, 1), t0),
            Err(Refusal::AorFull)
        );
        // Another AOR still registers.
        assert_eq!(
            b.register("sip:bob@example.test", &one(0), flow(1, 1), t0),
            Ok(())
        );
        let many: Vec<String> = (0..=MAX_CONTACTS_PER_REGISTER)
            .map(|i| format!("<sip:m{i}@192.0.2.1>"))
            .collect();
        assert_eq!(
            read_contacts(many.iter().map(String::as_str), None, true),
            Err(ContactError::TooManyContacts)
        );
    }

    #[test]
    fn aor_keys_ignore_parameters_and_case_of_scheme_and_host() {
        assert_eq!(aor_key("SIP:alice@Example.TEST;transport=tcp"), AOR);
        assert_eq!(aor_key("sip:Alice@example.test"), "sip:Alice@example.test");
        assert_eq!(aor_key("sip:example.test"), "sip:example.test");
    }
}
