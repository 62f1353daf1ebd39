//! The responder as a minimal SIP Outbound registrar (RFC 5626 §6), for
//! tests that must not need Kamailio: it answers REGISTER for any AOR
//! (optionally after a digest challenge), keeps the bindings with the flow
//! each came over ([`super::bindings`], the pure part), and sends a request
//! to an AOR down a chosen flow or down the first flow that works
//! (RFC 5626 §5.3), returning its final status.
//!
//! The socket side stays thin: a stream connection registers a command
//! queue here while it lives (so "the flow's connection is gone" is a
//! missing queue), a UDP listener registers its socket, and both hand the
//! responses they receive to [`Registrar::take_response`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Notify};

use super::bindings::{
    aor_key, read_contacts, Binding, Bindings, FlowRef, Origin, Refusal, RegisterChange,
};
use crate::endpoint::Transport;
use crate::outbound::digest::{Algorithm, Authorization, Challenge, Credentials};
use crate::sip::{self, address_uri, is_sip_uri, split_comma_list, Request, BRANCH_MAGIC};

/// What the registrar does (see `ResponderConfig::registrar`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Challenge every REGISTER that does not prove these credentials.
    pub auth: Option<Credentials>,
    /// The digest realm of the challenge.
    pub realm: String,
    /// The `Flow-Timer` sent to Outbound registrations (RFC 5626 §4.4.1:
    /// the UA keeps alive at 80–100 % of it); `None`: not sent.
    pub flow_timer: Option<Duration>,
    /// The longest expiry granted.
    pub max_expires: Duration,
    /// Support Outbound (RFC 5626). Without it the registrar plays one
    /// that predates it: `reg-id` is ignored (every Contact is bound by its
    /// URI) and no answer carries `Require: outbound` or `Flow-Timer`.
    pub outbound: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            auth: None,
            realm: "siprace".into(),
            flow_timer: Some(Duration::from_secs(30)),
            max_expires: super::bindings::MAX_EXPIRES,
            outbound: true,
        }
    }
}

/// What a REGISTER's credentials prove.
enum Authorized {
    Yes,
    /// Right, but for a nonce no longer live: challenge again, `stale=true`.
    Stale,
    No,
}

/// Which flow of an AOR a request goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowChoice {
    /// The flow registered with this `reg-id`, and no other.
    RegId(u32),
    /// The flows in order (freshest first), the next one after a flow
    /// failure (RFC 5626 §5.3).
    FirstWorking,
}

/// The request to send to the UA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowRequest {
    Options,
    /// A MESSAGE with this text/plain body.
    Message(String),
}

/// A request delivered down a flow: which, and its final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDelivery {
    /// The flow's reg-id.
    pub reg_id: u32,
    /// The connection / 5-tuple it went down.
    pub flow: FlowRef,
    /// The final status the UA answered with.
    pub status: u16,
    /// The flows tried first, and why each failed.
    pub skipped: Vec<(u32, String)>,
}

/// Why a request could not be delivered down any flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowSendError {
    #[error("no flow registered for {0}")]
    NoFlow(String),
    /// Every flow tried failed; each with why.
    #[error("every flow failed: {}", describe(.0))]
    AllFailed(Vec<(u32, String)>),
    #[error("reset needs a stream flow (TCP, TLS, SCTP); this one is {0}")]
    NotAStream(Transport),
    #[error("{0:?} is not a SIP URI")]
    BadAor(String),
    #[error("the responder is not a registrar (ResponderConfig::registrar, --registrar)")]
    NotARegistrar,
}

fn describe(failures: &[(u32, String)]) -> String {
    failures
        .iter()
        .map(|(id, why)| format!("reg-id {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a stream connection's task is asked to do.
pub(super) enum FlowCommand {
    /// Write these bytes; say whether it worked.
    Send(Vec<u8>, oneshot::Sender<bool>),
    /// Reset the connection (RST, not FIN) and end; say when done.
    Reset(oneshot::Sender<()>),
}

/// Most commands queued for one connection.
const COMMAND_QUEUE: usize = 16;
/// Most nonces remembered (older ones are no longer accepted: the UA gets
/// a fresh challenge, with `stale=true` if its answer was right).
const MAX_NONCES: usize = 1024;
/// How long a nonce may be answered. Each is accepted once: a captured
/// answer cannot be replayed to bind other contacts.
const NONCE_LIFETIME: Duration = Duration::from_secs(60);
/// Most requests of ours awaiting an answer at once.
const MAX_PENDING: usize = 1024;
/// RFC 3261 T1: the first UDP retransmission interval (doubling after).
const T1: Duration = Duration::from_millis(500);
/// How long a connection's task may take to act on a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The registrar's state, shared by every listener task.
pub(crate) struct Registrar {
    cfg: RegistrarConfig,
    bindings: Mutex<Bindings>,
    /// The nonces issued and not yet used, with when.
    nonces: Mutex<VecDeque<(String, Instant)>>,
    /// The command queue of each live stream connection, by connection id.
    streams: Mutex<HashMap<u64, mpsc::Sender<FlowCommand>>>,
    /// The UDP listeners' sockets, by local address.
    udp: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
    /// Our requests awaiting a final response, by Via branch.
    pending: Mutex<HashMap<String, oneshot::Sender<u16>>>,
    /// Signalled whenever the bindings change.
    pub(super) changed: Notify,
}

/// Locks a mutex whose critical sections leave it consistent even if one
/// panicked (each is a single map operation or a pure call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a stream connection's queue when its task ends, however it ends.
pub(super) struct StreamFlowGuard {
    registrar: Arc<Registrar>,
    connection: u64,
}

impl Drop for StreamFlowGuard {
    fn drop(&mut self) {
        lock(&self.registrar.streams).remove(&self.connection);
    }
}

impl Registrar {
    pub(crate) fn new(cfg: RegistrarConfig) -> Registrar {
        Registrar {
            bindings: Mutex::new(Bindings::new(cfg.max_expires)),
            cfg,
            nonces: Mutex::new(VecDeque::new()),
            streams: Mutex::new(HashMap::new()),
            udp: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    /// A stream connection's command queue, registered while the guard lives.
    pub(super) fn attach_stream(
        self: &Arc<Self>,
        connection: u64,
    ) -> (mpsc::Receiver<FlowCommand>, StreamFlowGuard) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        lock(&self.streams).insert(connection, tx);
        let guard = StreamFlowGuard {
            registrar: self.clone(),
            connection,
        };
        (rx, guard)
    }

    /// A UDP listener's socket, for requests down its flows.
    pub(super) fn attach_udp(&self, socket: Arc<UdpSocket>) {
        if let Ok(local) = socket.local_addr() {
            lock(&self.udp).insert(local, socket);
        }
    }

    /// If `msg` is a final response to a request of ours, completes it and
    /// returns true (provisional ones are absorbed too).
    pub(super) fn take_response(&self, msg: &[u8]) -> bool {
        let Ok(response) = sip::parse_response(msg) else {
            return false;
        };
        let Some(branch) = response.branch.as_deref() else {
            return false;
        };
        let mut pending = lock(&self.pending);
        if !pending.contains_key(branch) {
            return false;
        }
        if response.status >= 200 {
            if let Some(tx) = pending.remove(branch) {
                let _ = tx.send(response.status);
            }
        }
        true
    }

    /// The answer to a REGISTER received over `flow`.
    pub(super) fn on_register(&self, req: &Request, flow: FlowRef, now: Instant) -> Vec<u8> {
        let src = Some(flow.peer);
        let Some(to_uri) = address_uri(&req.to).filter(|u| is_sip_uri(u)) else {
            return req
                .response(400)
                .reason("Bad Request (To is not a SIP address-of-record)")
                .received(src)
                .build();
        };
        if let Some(creds) = &self.cfg.auth {
            match self.authorize(req, creds, now) {
                Authorized::Yes => {}
                Authorized::Stale => return self.challenge(req, src, now, true),
                Authorized::No => return self.challenge(req, src, now, false),
            }
        }
        let supports_outbound = self.cfg.outbound
            && req
                .headers
                .get_all("supported")
                .flat_map(split_comma_list)
                .any(|o| o.trim().eq_ignore_ascii_case("outbound"));
        let expires_header = req
            .headers
            .get("expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let change = match read_contacts(
            req.headers.get_all("contact"),
            expires_header,
            supports_outbound,
        ) {
            Ok(change) => change,
            Err(e) => {
                return req
                    .response(400)
                    .reason(format!("Bad Request ({e})"))
                    .received(src)
                    .build()
            }
        };
        let aor = aor_key(to_uri);
        let outbound_contact = matches!(&change, RegisterChange::Contacts(updates)
            if updates.iter().any(|u| matches!(u.key, super::bindings::BindingKey::Outbound { .. })));
        let contacts: Vec<String> = {
            let mut bindings = lock(&self.bindings);
            match &change {
                RegisterChange::Query => {}
                RegisterChange::RemoveAll => bindings.remove_all(&aor),
                RegisterChange::Contacts(updates) => {
                    let origin = Origin {
                        flow,
                        call_id: req.call_id.clone(),
                        cseq: req.cseq.seq,
                    };
                    if let Err(refusal) = bindings.register(&aor, updates, origin, now) {
                        // 503 for a full table (try later), 500 for an
                        // out-of-order request (RFC 3261 §10.3 step 7).
                        let status = match refusal {
                            Refusal::TableFull | Refusal::AorFull => 503,
                            Refusal::OutOfOrder => 500,
                        };
                        return req
                            .response(status)
                            .reason(format!("{} ({refusal})", sip::reason_phrase(status)))
                            .received(src)
                            .build();
                    }
                }
            }
            bindings
                .of(&aor, now)
                .iter()
                .map(|b| b.contact(now))
                .collect()
        };
        self.changed.notify_waiters();
        let mut resp = req.response(200).received(src);
        for contact in contacts {
            resp = resp.header("Contact", contact);
        }
        // RFC 5626 §6 step 4: confirm Outbound only to a REGISTER that
        // asked for it (reg-id and Supported: outbound).
        if outbound_contact {
            resp = resp.header("Require", "outbound");
            if let Some(timer) = self.cfg.flow_timer {
                resp = resp.header("Flow-Timer", timer.as_secs().max(1).to_string());
            }
        }
        resp.build()
    }

    /// Does one of the request's `Authorization` values prove the
    /// configured user over the Request-URI, answering a live nonce of ours
    /// (which is then used up)? `Stale`: it would, but its nonce is unknown,
    /// expired or used.
    fn authorize(&self, req: &Request, creds: &Credentials, now: Instant) -> Authorized {
        let mut nonces = lock(&self.nonces);
        nonces.retain(|(_, issued)| now.saturating_duration_since(*issued) < NONCE_LIFETIME);
        let mut verdict = Authorized::No;
        for auth in req
            .headers
            .get_all("authorization")
            .filter_map(|v| Authorization::parse(v).ok())
        {
            let issued = Challenge {
                realm: self.cfg.realm.clone(),
                nonce: auth.nonce.clone(),
                opaque: None,
                algorithm: auth.algorithm,
                qop_auth: true,
                stale: false,
            };
            if auth.uri != req.uri || !issued.verify(creds, &req.method, &auth) {
                continue;
            }
            match nonces.iter().position(|(n, _)| *n == auth.nonce) {
                Some(i) => {
                    nonces.remove(i);
                    return Authorized::Yes;
                }
                None => verdict = Authorized::Stale,
            }
        }
        verdict
    }

    /// A 401 with a fresh nonce, offered with SHA-256 then MD5 (RFC 8760
    /// §2.4); `stale`: the answer was right but its nonce is no longer.
    fn challenge(
        &self,
        req: &Request,
        src: Option<SocketAddr>,
        now: Instant,
        stale: bool,
    ) -> Vec<u8> {
        let nonce = sip::random_token(24);
        {
            let mut nonces = lock(&self.nonces);
            if nonces.len() >= MAX_NONCES {
                nonces.pop_front();
            }
            nonces.push_back((nonce.clone(), now));
        }
        let mut resp = req.response(401).received(src);
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let challenge = Challenge {
                realm: self.cfg.realm.clone(),
                nonce: nonce.clone(),
                opaque: None,
                algorithm,
                qop_auth: true,
                stale,
            };
            resp = resp.header("WWW-Authenticate", challenge.to_header());
        }
        resp.build()
    }

    /// The live bindings of `aor` (a SIP URI), as stored now.
    pub(crate) fn bindings_of(&self, aor: &str) -> Vec<Binding> {
        lock(&self.bindings)
            .of(&aor_key(aor), Instant::now())
            .into_iter()
            .cloned()
            .collect()
    }

    /// Sends `request` to `aor` down the flow(s) `choice` names; each try
    /// waits at most `timeout` for the final response.
    pub(crate) async fn send(
        &self,
        aor: &str,
        choice: FlowChoice,
        request: &FlowRequest,
        timeout: Duration,
    ) -> Result<FlowDelivery, FlowSendError> {
        if !is_sip_uri(aor) || aor.contains(['\r', '\n', '<', '>']) {
            return Err(FlowSendError::BadAor(aor.to_string()));
        }
        let aor_key = aor_key(aor);
        let candidates: Vec<Binding> = {
            let bindings = lock(&self.bindings);
            let now = Instant::now();
            match choice {
                FlowChoice::RegId(id) => bindings
                    .flow(&aor_key, id, now)
                    .cloned()
                    .into_iter()
                    .collect(),
                FlowChoice::FirstWorking => {
                    bindings.flows(&aor_key, now).into_iter().cloned().collect()
                }
            }
        };
        if candidates.is_empty() {
            return Err(FlowSendError::NoFlow(aor.to_string()));
        }
        let mut skipped = Vec::new();
        for binding in candidates {
            let reg_id = binding.reg_id().unwrap_or(0);
            match self.try_flow(aor, &binding, request, timeout).await {
                // RFC 5626 §5.3: a 408 or 430 is the flow failing; any other
                // final response ends the request.
                Ok(status) if status != 408 && status != 430 => {
                    return Ok(FlowDelivery {
                        reg_id,
                        flow: binding.flow,
                        status,
                        skipped,
                    })
                }
                Ok(status) => skipped.push((reg_id, format!("answered {status}"))),
                Err(why) => skipped.push((reg_id, why)),
            }
        }
        Err(FlowSendError::AllFailed(skipped))
    }

    /// One request down one binding's flow: its final status, or why the
    /// flow failed.
    async fn try_flow(
        &self,
        aor: &str,
        binding: &Binding,
        request: &FlowRequest,
        timeout: Duration,
    ) -> Result<u16, String> {
        let flow = binding.flow;
        let branch = format!("{BRANCH_MAGIC}{}", sip::random_token(22));
        let bytes = request_bytes(request, &binding.uri, aor, flow, &branch);
        let (tx, mut answer) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                return Err("too many requests awaiting answers".into());
            }
            pending.insert(branch.clone(), tx);
        }
        // Whatever happens below, the transaction is forgotten after it.
        let _forget = PendingGuard {
            registrar: self,
            branch: &branch,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        match flow.connection {
            Some(connection) => {
                let queue = lock(&self.streams).get(&connection).cloned();
                let queue = queue.ok_or("the flow's connection is gone")?;
                let (written_tx, written) = oneshot::channel();
                // A full queue (a connection stuck writing) waits no longer
                // than the request may.
                match tokio::time::timeout_at(
                    deadline,
                    queue.send(FlowCommand::Send(bytes, written_tx)),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err("the flow's connection is gone".into()),
                    Err(_) => return Err("the flow's connection is busy".into()),
                }
                match tokio::time::timeout_at(deadline, written).await {
                    Ok(Ok(true)) => {}
                    Ok(_) => return Err("writing to the flow's connection failed".into()),
                    Err(_) => return Err("writing to the flow's connection timed out".into()),
                }
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(status)) => Ok(status),
                    Ok(Err(_)) => Err("the request was dropped".into()),
                    Err(_) => Ok(408),
                }
            }
            None => {
                let socket = lock(&self.udp).get(&flow.local).cloned();
                let socket = socket.ok_or("no UDP socket for the flow")?;
                // RFC 3261 §17.1.2.2: retransmit at T1, doubling, until answered.
                let mut interval = T1;
                loop {
                    socket
                        .send_to(&bytes, flow.peer)
                        .await
                        .map_err(|e| format!("sending over UDP: {e}"))?;
                    let next = (tokio::time::Instant::now() + interval).min(deadline);
                    match tokio::time::timeout_at(next, &mut answer).await {
                        Ok(Ok(status)) => return Ok(status),
                        Ok(Err(_)) => return Err("the request was dropped".into()),
                        Err(_) if next >= deadline => return Ok(408),
                        Err(_) => interval = (interval * 2).min(Duration::from_secs(4)),
                    }
                }
            }
        }
    }

    /// Resets (TCP RST) the connection of `aor`'s flow `reg_id`, as a
    /// registrar whose connection breaks would; returns the flow.
    pub(crate) async fn reset_flow(
        &self,
        aor: &str,
        reg_id: u32,
    ) -> Result<FlowRef, FlowSendError> {
        let binding = lock(&self.bindings)
            .flow(&aor_key(aor), reg_id, Instant::now())
            .cloned()
            .ok_or_else(|| FlowSendError::NoFlow(format!("{aor} reg-id {reg_id}")))?;
        let flow = binding.flow;
        let connection = flow
            .connection
            .ok_or(FlowSendError::NotAStream(flow.transport))?;
        let gone = || FlowSendError::AllFailed(vec![(reg_id, "the connection is gone".into())]);
        // Taken out at once: from now on the flow counts as failed.
        let queue = lock(&self.streams).remove(&connection).ok_or_else(gone)?;
        let (done_tx, done) = oneshot::channel();
        // One bound for queueing the reset and its being done.
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        match tokio::time::timeout_at(deadline, queue.send(FlowCommand::Reset(done_tx))).await {
            Ok(Ok(())) => {}
            _ => return Err(gone()),
        }
        match tokio::time::timeout_at(deadline, done).await {
            Ok(Ok(())) => Ok(flow),
            _ => Err(gone()),
        }
    }
}

/// Forgets a transaction of ours when its try ends.
struct PendingGuard<'a> {
    registrar: &'a Registrar,
    branch: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.registrar.pending).remove(self.branch);
    }
}

/// The request sent down a flow: to the binding's Contact URI, From the
/// registrar, To the AOR.
fn request_bytes(
    request: &FlowRequest,
    contact_uri: &str,
    aor: &str,
    flow: FlowRef,
    branch: &str,
) -> Vec<u8> {
    let (method, body) = match request {
        FlowRequest::Options => ("OPTIONS", ""),
        FlowRequest::Message(text) => ("MESSAGE", text.as_str()),
    };
    let host = sip::uri_host(flow.local.ip());
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: text/plain\r\n".to_string()
    };
    format!(
        "{method} {contact_uri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {host}:{port};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:registrar@{host}>;tag={tag}\r\n\
         To: <{aor}>\r\n\
         Call-ID: {call_id}@siprace-registrar\r\n\
         CSeq: 1 {method}\r\n\
         {content_type}Content-Length: {len}\r\n\r\n{body}",
        transport = flow.transport.via_token(),
        port = flow.local.port(),
        tag = sip::random_token(10),
        call_id = sip::random_token(20),
        len = body.len(),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-000a95a0e128";

    fn flow() -> FlowRef {
        FlowRef {
            transport: Transport::Tcp,
            local: "127.0.0.1:5060".parse().unwrap(),
            peer: "127.0.0.1:40001".parse().unwrap(),
            connection: Some(7),
        }
    }

    fn register(reg_id: u32, supported: &str, authorization: Option<&str>) -> Request {
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let raw = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:40001;branch=z9hG4bKr{reg_id}\r\n\
             From: <sip:alice@example.test>;tag=f\r\nTo: <sip:alice@example.test>\r\nCall-ID: r@x\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:alice@127.0.0.1:40001;transport=tcp;ob>;reg-id={reg_id};+sip.instance=\"<{INSTANCE}>\"\r\n\
             {supported}{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n"
        );
        sip::parse_request(raw.as_bytes()).unwrap()
    }

    fn parse(bytes: &[u8]) -> sip::Response {
        sip::parse_response(bytes).unwrap()
    }

    #[test]
    fn an_outbound_register_is_confirmed_with_require_and_flow_timer() {
        let r = Registrar::new(RegistrarConfig::default());
        let resp = parse(&r.on_register(
            &register(1, "Supported: outbound, path\r\n", None),
            flow(),
            Instant::now(),
        ));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers.get("require"), Some("outbound"));
        assert_eq!(resp.headers.get("flow-timer"), Some("30"));
        let contact = resp.headers.get("contact").unwrap();
        assert!(
            contact.contains(";reg-id=1;") && contact.ends_with(";expires=600"),
            "{contact}"
        );
        // Without Supported: outbound, a plain binding: no Require, no Flow-Timer.
        let r = Registrar::new(RegistrarConfig::default());
        let resp = parse(&r.on_register(&register(1, "", None), flow(), Instant::now()));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers.get("require"), None);
        assert_eq!(resp.headers.get("flow-timer"), None);
        assert_eq!(r.bindings_of("sip:alice@example.test").len(), 1);
        // A registrar without Outbound: the same, whatever the UA supports.
        let r = Registrar::new(RegistrarConfig {
            outbound: false,
            ..RegistrarConfig::default()
        });
        let register = register(1, "Supported: outbound, path\r\n", None);
        let resp = parse(&r.on_register(&register, flow(), Instant::now()));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers.get("require"), None);
        let bound = r.bindings_of("sip:alice@example.test");
        assert!(matches!(
            bound[0].key,
            super::super::bindings::BindingKey::Uri(_)
        ));
    }

    #[test]
    fn a_challenged_register_is_bound_only_with_the_right_answer() {
        let creds = Credentials {
            user: "alice".into(),
            password: "secret".into(),
        };
        let r = Registrar::new(RegistrarConfig {
            auth: Some(creds.clone()),
            ..RegistrarConfig::default()
        });
        let supported = "Supported: outbound\r\n";
        let first = parse(&r.on_register(&register(1, supported, None), flow(), Instant::now()));
        assert_eq!(first.status, 401);
        let offered: Vec<&str> = first.headers.get_all("www-authenticate").collect();
        assert_eq!(offered.len(), 2);
        let challenge = Challenge::choose(offered.iter().copied()).unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        assert!(r.bindings_of("sip:alice@example.test").is_empty());
        // A wrong password: challenged again, nothing bound.
        let wrong = Credentials {
            password: "guess".into(),
            ..creds.clone()
        };
        let bad = challenge.answer(&wrong, "REGISTER", "sip:example.test", "c", 1);
        let again =
            parse(&r.on_register(&register(1, supported, Some(&bad)), flow(), Instant::now()));
        assert_eq!(again.status, 401);
        // Over another URI than the Request-URI: refused too.
        let elsewhere = challenge.answer(&creds, "REGISTER", "sip:elsewhere.test", "c", 1);
        let again = parse(&r.on_register(
            &register(1, supported, Some(&elsewhere)),
            flow(),
            Instant::now(),
        ));
        assert_eq!(again.status, 401);
        let good = challenge.answer(&creds, "REGISTER", "sip:example.test", "c", 1);
        let ok =
            parse(&r.on_register(&register(1, supported, Some(&good)), flow(), Instant::now()));
        assert_eq!(ok.status, 200);
        assert_eq!(r.bindings_of("sip:alice@example.test").len(), 1);
        // The same answer again (a replay, to bind another flow): its nonce
        // is used up; the answer was right, so the challenge says stale.
        let replayed =
            parse(&r.on_register(&register(2, supported, Some(&good)), flow(), Instant::now()));
        assert_eq!(replayed.status, 401);
        let stale = Challenge::choose(replayed.headers.get_all("www-authenticate")).unwrap();
        assert!(stale.stale);
        assert_eq!(r.bindings_of("sip:alice@example.test").len(), 1);
        // A nonce past its lifetime is refused the same way.
        let fresh = parse(&r.on_register(&register(2, supported, None), flow(), Instant::now()));
        let fresh = Challenge::choose(fresh.headers.get_all("www-authenticate")).unwrap();
        let late = fresh.answer(&creds, "REGISTER", "sip:example.test", "c", 1);
        let later = Instant::now() + NONCE_LIFETIME + Duration::from_secs(1);
        let refused = parse(&r.on_register(&register(2, supported, Some(&late)), flow(), later));
        assert_eq!(refused.status, 401);
        // A wrong password is no stale nonce.
        let wrong_again =
            parse(&r.on_register(&register(2, supported, Some(&bad)), flow(), Instant::now()));
        let plain = Challenge::choose(wrong_again.headers.get_all("www-authenticate")).unwrap();
        assert!(!plain.stale);
        // A nonce the registrar never issued is refused.
        let forged = Challenge {
            nonce: "forged".into(),
            ..challenge
        }
        .answer(&creds, "REGISTER", "sip:example.test", "c", 1);
        let refused = parse(&r.on_register(
            &register(2, supported, Some(&forged)),
            flow(),
            Instant::now(),
        ));
        assert_eq!(refused.status, 401);
        assert_eq!(r.bindings_of("sip:alice@example.test").len(), 1);
    }

    #[test]
    fn an_out_of_order_register_is_a_500_and_changes_nothing() {
        let r = Registrar::new(RegistrarConfig::default());
        let supported = "Supported: outbound\r\n";
        let with_cseq = |cseq: u32, expires: u32| {
            let req = register(1, supported, None);
            let text = format!(
                "REGISTER sip:example.test SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\n\
                 Call-ID: {}\r\nCSeq: {cseq} REGISTER\r\nContact: {}\r\n{supported}\
                 Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
                req.vias[0],
                req.from,
                req.to,
                req.call_id,
                req.headers.get("contact").unwrap(),
            );
            sip::parse_request(text.as_bytes()).unwrap()
        };
        let now = Instant::now();
        assert_eq!(
            parse(&r.on_register(&with_cseq(5, 600), flow(), now)).status,
            200
        );
        let late = parse(&r.on_register(&with_cseq(4, 0), flow(), now));
        assert_eq!(late.status, 500, "{}", late.reason);
        assert_eq!(r.bindings_of("sip:alice@example.test").len(), 1);
        assert_eq!(
            parse(&r.on_register(&with_cseq(6, 0), flow(), now)).status,
            200
        );
        assert!(r.bindings_of("sip:alice@example.test").is_empty());
    }

    #[test]
    fn a_reg_id_without_instance_is_a_plain_binding() {
        let r = Registrar::new(RegistrarConfig::default());
        let raw = "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n\
             From: <sip:alice@example.test>;tag=f\r\nTo: <sip:alice@example.test>\r\nCall-ID: r@x\r\n\
             CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:1;ob>;reg-id=1\r\n\
             Supported: outbound\r\nContent-Length: 0\r\n\r\n";
        let req = sip::parse_request(raw.as_bytes()).unwrap();
        let resp = parse(&r.on_register(&req, flow(), Instant::now()));
        assert_eq!(resp.status, 200);
        // Not an Outbound registration: no `Require: outbound`.
        assert!(
            !resp
                .headers
                .get_all("Require")
                .any(|v| v.contains("outbound")),
            "{resp:?}"
        );
        let bound = r.bindings_of("sip:alice@example.test");
        assert!(
            matches!(bound[0].key, super::super::bindings::BindingKey::Uri(_)),
            "{bound:?}"
        );
    }

    #[test]
    fn the_request_down_a_flow_is_valid_sip() {
        for request in [FlowRequest::Options, FlowRequest::Message("hello".into())] {
            let bytes = request_bytes(
                &request,
                "sip:alice@127.0.0.1:40001;transport=tcp;ob",
                "sip:alice@example.test",
                flow(),
                "z9hG4bKtest",
            );
            let req = sip::parse_request(&bytes).unwrap();
            assert_eq!(req.uri, "sip:alice@127.0.0.1:40001;transport=tcp;ob");
            assert_eq!(
                req.body,
                match &request {
                    FlowRequest::Options => Vec::new(),
                    FlowRequest::Message(t) => t.clone().into_bytes(),
                }
            );
        }
    }
}
