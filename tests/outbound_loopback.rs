//! SIP Outbound end to end on loopback, without Kamailio: the library's
//! `Registration` against a small registrar of the test's own (TCP on `::1`
//! and `127.0.0.1`, one port, found through the lab DNS server).
//!
//! - A flow whose connection the registrar resets is recorded as a failure
//!   of its path in the race history, so the race that replaces it tries
//!   the other family first (and says so), although the failed family still
//!   accepts connections. One the registrar closes in order (a FIN) comes
//!   back too, without blaming its path.
//! - A registrar whose 2xx lacks `Require: outbound` gets one plain
//!   registration: one flow, no keep-alive.
//! - A flow that recovered onto IPv4 while IPv6 was broken goes back to
//!   IPv6 once it works again (make before break), and requests to its
//!   reg-id then arrive over IPv6; stopping while its REGISTER over the new
//!   connection is out unregisters over both connections and closes both.
#![cfg(feature = "tools")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use siprace::dialer::DialerConfig;
use siprace::endpoint::Family;
use siprace::outbound::agent::{Notice, RegisterConfig, Registration};
use siprace::outbound::flows::{EventKind, FlowConfig, FlowEvent, NO_OUTBOUND};
use siprace::sip::{self, Frame, OptionsProbe, StreamFramer};
use siprace::Transport;

const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-00000000c0de";
/// How long one step may take on a loaded machine.
const STEP: Duration = Duration::from_secs(15);

/// What the registrar saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A REGISTER over `family` for `reg_id` asking for `expires` seconds.
    Register {
        family: Family,
        reg_id: u32,
        expires: u64,
    },
    /// A CRLF keep-alive ping.
    Ping(Family),
}

/// A registrar on one port of both loopback addresses, over TCP: answers
/// REGISTER with 200 (with `Require: outbound` when `outbound`), OPTIONS
/// with 200, pings with pongs. Its tasks end with the test's runtime.
struct MiniRegistrar {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Bumped to close the IPv6 (IPv4) connections open at that moment
    /// (later ones are served): with a RST, or a FIN ([`Ending`]).
    close_v6: watch::Sender<u64>,
    close_v4: watch::Sender<u64>,
    /// The contacts registered now, by reg-id.
    bindings: Arc<Mutex<HashMap<u32, Bound>>>,
    /// What goes wrong over IPv6 (nothing until the test says).
    v6: Arc<Faults>,
    /// True: the IPv6 listener is closed, so connecting to it is refused
    /// (a family whose path is broken); see [`MiniRegistrar::refuse_v6`].
    refuse_v6: watch::Sender<bool>,
    /// Whether the IPv6 listener is open now.
    listening_v6: watch::Receiver<bool>,
    /// How many IPv6 (IPv4) connections are open now.
    open_v6: Arc<watch::Sender<usize>>,
    open_v4: Arc<watch::Sender<usize>>,
}

/// Faults of one family's listener, switched on and off by the test.
#[derive(Default)]
struct Faults {
    /// A connection is reset when a REGISTER arrives over it (connections
    /// and OPTIONS still work): a path that breaks a moment later.
    reset_register: AtomicBool,
    /// A REGISTER that binds is bound but never answered (a lost 200);
    /// unregistrations are answered.
    hold_register: AtomicBool,
}

impl Faults {
    fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
    }

    fn on(flag: &AtomicBool) -> bool {
        flag.load(Ordering::SeqCst)
    }
}

/// A registered contact: the connection it came over (the registrar's
/// requests to its reg-id go down that one, RFC 5626 §5.3).
#[derive(Debug, Clone)]
struct Bound {
    family: Family,
    /// The registrar's end of that connection.
    local: SocketAddr,
    /// Bytes to send down it.
    to_ua: mpsc::UnboundedSender<Vec<u8>>,
}

/// How the registrar ends the connections it closes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// A FIN: an orderly close (say, a restart).
    Fin,
    /// A RST (SO_LINGER 0), as a broken path or middlebox shows it.
    Reset,
}

impl MiniRegistrar {
    async fn start(outbound: bool, granted: Option<u64>, ending: Ending) -> MiniRegistrar {
        let (v6, v4) = bind_both().await;
        let port = v6.local_addr().unwrap().port();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (close_v6, closes_v6) = watch::channel(0u64);
        let (close_v4, closes_v4) = watch::channel(0u64);
        let bindings = Arc::new(Mutex::new(HashMap::new()));
        let v6_faults = Arc::new(Faults::default());
        let open_v6 = Arc::new(watch::channel(0usize).0);
        let open_v4 = Arc::new(watch::channel(0usize).0);
        let (refuse_v6, refusing_v6) = watch::channel(false);
        let (listening_v6_tx, listening_v6) = watch::channel(true);
        let mut listening_v6_tx = Some(listening_v6_tx);
        for (listener, family) in [(v6, Family::V6), (v4, Family::V4)] {
            // Only IPv6 is ever refused.
            let mut refusal = match family {
                Family::V6 => listening_v6_tx.take().map(|l| (refusing_v6.clone(), l)),
                Family::V4 => None,
            };
            let seen = seen_tx.clone();
            let closes = match family {
                Family::V6 => closes_v6.clone(),
                Family::V4 => closes_v4.clone(),
            };
            let bindings = bindings.clone();
            let faults = match family {
                Family::V6 => v6_faults.clone(),
                Family::V4 => Arc::new(Faults::default()),
            };
            let open = match family {
                Family::V6 => open_v6.clone(),
                Family::V4 => open_v4.clone(),
            };
            tokio::spawn(async move {
                let addr = listener.local_addr().expect("the listener's address");
                let mut listener = Some(listener);
                loop {
                    let Some(open_listener) = &listener else {
                        // Refusing: wait for the test to heal the path, then
                        // listen on the same address again.
                        let (refusing, listening) = refusal.as_mut().expect("refusing IPv6 only");
                        if refusing.wait_for(|on| !on).await.is_err() {
                            return;
                        }
                        let again = TcpListener::bind(addr).await;
                        listener = Some(again.expect("the IPv6 port is free again"));
                        let _ = listening.send(true);
                        continue;
                    };
                    let refused = async {
                        match refusal.as_mut() {
                            Some((refusing, _)) => refusing.wait_for(|on| *on).await.is_ok(),
                            None => std::future::pending().await,
                        }
                    };
                    let stream = tokio::select! {
                        accepted = open_listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => return,
                        },
                        refused = refused => {
                            if !refused {
                                return;
                            }
                            // Closed: a connection to it is refused (RST).
                            listener = None;
                            if let Some((_, listening)) = &refusal {
                                let _ = listening.send(false);
                            }
                            continue;
                        }
                    };
                    if ending == Ending::Reset {
                        // Dropping it then sends a RST instead of a FIN.
                        socket2::SockRef::from(&stream)
                            .set_linger(Some(Duration::ZERO))
                            .expect("SO_LINGER");
                    }
                    let open = OpenGuard::new(open.clone());
                    let mut closes = closes.clone();
                    closes.borrow_and_update();
                    let served = serve(
                        stream,
                        family,
                        outbound,
                        granted,
                        seen.clone(),
                        bindings.clone(),
                        faults.clone(),
                    );
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = served => {}
                            // Dropping the stream closes it (see `ending`).
                            _ = closes.changed() => {}
                        }
                        drop(open);
                    });
                }
            });
        }
        MiniRegistrar {
            port,
            seen,
            close_v6,
            close_v4,
            bindings,
            v6: v6_faults,
            refuse_v6,
            listening_v6,
            open_v6,
            open_v4,
        }
    }

    /// Closes (`true`) or reopens the IPv6 listener, and waits until it
    /// is done: while closed, connecting over IPv6 is refused.
    async fn refuse_v6(&mut self, refuse: bool) {
        self.refuse_v6.send_replace(refuse);
        tokio::time::timeout(STEP, self.listening_v6.wait_for(|open| *open != refuse))
            .await
            .expect("the IPv6 listener follows in time")
            .expect("the registrar runs");
    }

    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(STEP, self.seen.recv())
            .await
            .expect("the registrar hears from the UA in time")
            .expect("the registrar runs")
    }
}

/// Counts an open connection while it lives.
struct OpenGuard(Arc<watch::Sender<usize>>);

impl OpenGuard {
    fn new(count: Arc<watch::Sender<usize>>) -> OpenGuard {
        count.send_modify(|n| *n += 1);
        OpenGuard(count)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Listeners on `[::1]:P` and `127.0.0.1:P` for one free port P.
async fn bind_both() -> (TcpListener, TcpListener) {
    for _ in 0..50 {
        let v6 = TcpListener::bind("[::1]:0").await.expect("IPv6 loopback");
        let port = v6.local_addr().unwrap().port();
        if let Ok(v4) = TcpListener::bind(("127.0.0.1", port)).await {
            return (v6, v4);
        }
    }
    panic!("no port free on both loopback addresses in 50 tries");
}

/// Serves one connection until the UA closes it.
async fn serve(
    mut stream: TcpStream,
    family: Family,
    outbound: bool,
    granted: Option<u64>,
    seen: mpsc::UnboundedSender<Seen>,
    bindings: Arc<Mutex<HashMap<u32, Bound>>>,
    faults: Arc<Faults>,
) {
    let mut framer = StreamFramer::new(sip::MAX_MESSAGE_SIZE);
    let mut buf = vec![0u8; 16 * 1024];
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (to_ua, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    loop {
        let read = tokio::select! {
            read = stream.read(&mut buf) => read,
            Some(bytes) = outgoing.recv() => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_frame() {
            let answer = match frame {
                Frame::KeepAlive => {
                    let _ = seen.send(Seen::Ping(family));
                    b"\r\n".to_vec()
                }
                Frame::Message(bytes) => {
                    let Ok(request) = sip::parse_request(&bytes) else {
                        continue;
                    };
                    if request.method != "REGISTER" {
                        request.options_ok(None)
                    } else if Faults::on(&faults.reset_register) {
                        // Dropping the stream resets it (`Ending::Reset`).
                        return;
                    } else {
                        let asked: u64 = request
                            .headers
                            .get("Expires")
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(600);
                        let expires = if asked == 0 {
                            0
                        } else {
                            granted.unwrap_or(asked)
                        };
                        let reg_id = request
                            .headers
                            .get("Contact")
                            .and_then(|c| c.split(";reg-id=").nth(1))
                            .and_then(|v| v.split(';').next()?.trim().parse().ok())
                            .unwrap_or(0);
                        {
                            let mut b = bindings.lock().unwrap();
                            if expires == 0 {
                                b.remove(&reg_id);
                            } else {
                                // Same instance and reg-id: this flow
                                // replaces the one bound before (§6).
                                let bound = Bound {
                                    family,
                                    local,
                                    to_ua: to_ua.clone(),
                                };
                                b.insert(reg_id, bound);
                            }
                        }
                        let _ = seen.send(Seen::Register {
                            family,
                            reg_id,
                            expires,
                        });
                        if expires > 0 && Faults::on(&faults.hold_register) {
                            continue;
                        }
                        let mut response =
                            request.response(200).header("Expires", expires.to_string());
                        if outbound {
                            response = response.header("Require", "outbound");
                        }
                        response.build()
                    }
                }
            };
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    }
}

/// A registration of alice@example.test at the registrar, found by name
/// (`registrar.example.test`: AAAA ::1, A 127.0.0.1) through `dns`.
fn start_registration(
    dns: SocketAddr,
    port: u16,
    expires: Duration,
    keepalive: Duration,
) -> Registration {
    start_registration_with(
        dns,
        port,
        FlowConfig {
            flows: 2,
            keepalive: Some(keepalive),
            ..FlowConfig::default()
        },
        expires,
    )
}

/// The same with the flows' rules given.
fn start_registration_with(
    dns: SocketAddr,
    port: u16,
    flows: FlowConfig,
    expires: Duration,
) -> Registration {
    let mut dialer = DialerConfig::default();
    dialer.locate.dns_server = Some(dns);
    Registration::start(
        dialer,
        RegisterConfig {
            aor: "sip:alice@example.test".into(),
            registrar: Some(format!("sip:registrar.example.test:{port};transport=tcp")),
            instance: INSTANCE.into(),
            expires,
            credentials: None,
            flows,
        },
    )
    .expect("the registration starts")
}

/// The next flow event that `wanted` accepts (others are skipped, each
/// bounded by [`STEP`]).
async fn wait_for(
    registration: &mut Registration,
    what: &str,
    wanted: impl Fn(&FlowEvent) -> bool,
) -> FlowEvent {
    let mut skipped = vec![];
    for _ in 0..100 {
        let next = tokio::time::timeout(STEP, registration.next()).await;
        match next {
            Ok(Some((_, Notice::Flow(e)))) if wanted(&e) => return e,
            Ok(Some((_, notice))) => skipped.push(notice),
            Ok(None) => panic!("the registration ended before {what}: {skipped:#?}"),
            Err(_) => panic!("no {what} within {STEP:?}: {skipped:#?}"),
        }
    }
    panic!("no {what} among 100 notices: {skipped:#?}");
}

/// Stops the registration, waits until it ended, and checks that it took
/// back every binding.
async fn stop_and_expect_no_binding(mut registration: Registration, registrar: &MiniRegistrar) {
    registration.stop();
    while registration.next().await.is_some() {}
    registration.finished().await;
    let bindings = registrar.bindings.lock().unwrap();
    assert!(bindings.is_empty(), "{bindings:?}");
}

fn family_of(e: &FlowEvent) -> Option<Family> {
    e.path.map(|(_, a)| Family::of(&a.ip()))
}

/// Waits (bounded per event) until both flows are registered; their
/// `registered` events, by flow.
async fn both_registered(registration: &mut Registration) -> HashMap<u32, FlowEvent> {
    let mut up = HashMap::new();
    while up.len() < 2 {
        let e = wait_for(registration, "both flows registered", |e| {
            e.kind == EventKind::Registered
        })
        .await;
        up.insert(e.flow, e);
    }
    up
}

#[tokio::test]
async fn a_flow_reset_comes_back_on_the_other_family_first() {
    let dns = common::serve_zone("registrar IN AAAA ::1\nregistrar IN A 127.0.0.1\n", "").await;
    let registrar = MiniRegistrar::start(true, None, Ending::Reset).await;
    let mut registration = start_registration(
        dns.addrs()[0],
        registrar.port,
        Duration::from_secs(600),
        Duration::from_secs(600),
    );

    // Flow 1 wins on IPv6 (first by default), flow 2 is raced in IPv4.
    let up = both_registered(&mut registration).await;
    let (first, second) = (up[&1].clone(), up[&2].clone());
    assert_eq!(family_of(&first), Some(Family::V6), "{first:?}");
    let race = first.race.clone().expect("the race's note");
    assert_eq!(race.first_family, Family::V6);
    assert_eq!(race.history, None, "a fresh history changes nothing");
    assert_eq!(first.outbound, Some(true));
    assert_eq!(family_of(&second), Some(Family::V4), "{second:?}");

    // The registrar resets the IPv6 connection (it still accepts new ones).
    registrar.close_v6.send_modify(|n| *n += 1);
    let failed = wait_for(&mut registration, "flow 1 failing", |e| {
        e.flow == 1 && matches!(e.kind, EventKind::Failed(_))
    })
    .await;
    assert!(
        matches!(&failed.kind, EventKind::Failed(r) if r.contains("reset")),
        "{failed:?}"
    );
    let recovered = wait_for(&mut registration, "flow 1 recovered", |e| {
        e.flow == 1 && e.kind == EventKind::Recovered
    })
    .await;
    eprintln!("flow 1: {failed:?}\nthen {recovered:?}");
    // History demoted IPv6, whose flow just failed: IPv4 went first.
    let race = recovered.race.clone().expect("the race's note");
    assert_eq!(race.first_family, Family::V4, "{recovered:?}");
    let note = race.history.expect("history's reason for the order");
    assert!(
        note.starts_with("ipv6/tcp to registrar.example.test failed"),
        "{note}"
    );
    assert_eq!(family_of(&recovered), Some(Family::V4), "{recovered:?}");

    // Both reg-ids stay bound; stopping unregisters them.
    stop_and_expect_no_binding(registration, &registrar).await;
}

#[tokio::test]
async fn a_registrar_without_outbound_gets_one_registration_and_no_keepalives() {
    let dns = common::serve_zone("registrar IN AAAA ::1\nregistrar IN A 127.0.0.1\n", "").await;
    // No `Require: outbound`; 2 s granted, so the refresh comes at 1.6 s.
    let mut registrar = MiniRegistrar::start(false, Some(2), Ending::Fin).await;
    let mut registration = start_registration(
        dns.addrs()[0],
        registrar.port,
        Duration::from_secs(600),
        // Were keep-alives sent, several would go before the refresh.
        Duration::from_millis(200),
    );

    let registered = wait_for(&mut registration, "a flow registered", |e| {
        e.kind == EventKind::Registered
    })
    .await;
    assert_eq!(registered.outbound, Some(false), "{registered:?}");
    let other = 3 - registered.flow;
    let dropped = wait_for(&mut registration, "the other flow dropped", |e| {
        e.flow == other && matches!(e.kind, EventKind::Unavailable(_))
    })
    .await;
    assert_eq!(dropped.kind, EventKind::Unavailable(NO_OUTBOUND.into()));

    // Until the kept flow's refresh: no ping, and no REGISTER of the other
    // flow but (if it got one in first) its unregistration.
    let kept = registered.flow;
    let mut registers_of_kept = 0;
    let mut other_bound = false;
    let mut seen = vec![];
    // Bounded: the kept flow refreshes every 1.6 s, so an unregistration
    // that never comes shows as a failure here, not as a test that hangs.
    for _ in 0..20 {
        if registers_of_kept >= 2 && !other_bound {
            break;
        }
        let s = registrar.next_seen().await;
        match s {
            Seen::Register {
                reg_id, expires, ..
            } if reg_id == kept && expires > 0 => registers_of_kept += 1,
            Seen::Register { expires, .. } if expires > 0 => other_bound = true,
            // The other flow's unregistration, if it got in first.
            Seen::Register { .. } => other_bound = false,
            Seen::Ping(_) => {}
        }
        seen.push(s);
    }
    assert!(
        registers_of_kept >= 2 && !other_bound,
        "two REGISTERs of the kept flow and the other's taken back: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Ping(_))),
        "no keep-alive to a registrar without Outbound: {seen:?}"
    );
    let bound: Vec<u32> = registrar.bindings.lock().unwrap().keys().copied().collect();
    assert_eq!(bound, vec![kept], "one registration: {seen:?}");

    stop_and_expect_no_binding(registration, &registrar).await;
}

#[tokio::test]
async fn a_flow_closed_in_order_comes_back_without_blaming_its_path() {
    let dns = common::serve_zone("registrar IN AAAA ::1\nregistrar IN A 127.0.0.1\n", "").await;
    let registrar = MiniRegistrar::start(true, None, Ending::Fin).await;
    let mut registration = start_registration(
        dns.addrs()[0],
        registrar.port,
        Duration::from_secs(600),
        Duration::from_secs(600),
    );
    let up = both_registered(&mut registration).await;
    assert_eq!(family_of(&up[&1]), Some(Family::V6), "{:?}", up[&1]);

    // A FIN (a registrar restart, say): the path worked, so the history
    // is not told and the flow comes back over IPv6, first as before.
    registrar.close_v6.send_modify(|n| *n += 1);
    let failed = wait_for(&mut registration, "flow 1 failing", |e| {
        e.flow == 1 && matches!(e.kind, EventKind::Failed(_))
    })
    .await;
    assert!(
        matches!(&failed.kind, EventKind::Failed(r) if r.contains("closed the connection")),
        "{failed:?}"
    );
    let recovered = wait_for(&mut registration, "flow 1 recovered", |e| {
        e.flow == 1 && e.kind == EventKind::Recovered
    })
    .await;
    let race = recovered.race.clone().expect("the race's note");
    assert_eq!(race.first_family, Family::V6, "{recovered:?}");
    assert_eq!(race.history, None, "{recovered:?}");

    // The IPv4 flow closed in order goes back to IPv4 first, although
    // RFC 6724 ranks IPv6 first: each family keeps its flow.
    let v4_flow = up[&2].flow;
    registrar.close_v4.send_modify(|n| *n += 1);
    let recovered = wait_for(&mut registration, "the IPv4 flow recovered", |e| {
        e.flow == v4_flow && e.kind == EventKind::Recovered
    })
    .await;
    let race = recovered.race.clone().expect("the race's note");
    assert_eq!(race.first_family, Family::V4, "{recovered:?}");
    assert_eq!(family_of(&recovered), Some(Family::V4), "{recovered:?}");

    registration.stop();
    while registration.next().await.is_some() {}
    registration.finished().await;
}

/// A registration whose displaced flow tries to go home 0.15–0.3 s after
/// it is displaced, then 0.3–0.6 s after a failed attempt, and so on;
/// returned once both flows are registered, flow 1 over IPv6 and flow 2
/// over IPv4.
async fn registered_and_quick_to_go_home(dns: SocketAddr, port: u16) -> Registration {
    let mut registration = start_registration_with(
        dns,
        port,
        FlowConfig {
            flows: 2,
            keepalive: Some(Duration::from_secs(600)),
            rehome_after: Duration::from_millis(300),
            ..FlowConfig::default()
        },
        Duration::from_secs(600),
    );
    let up = both_registered(&mut registration).await;
    assert_eq!(family_of(&up[&1]), Some(Family::V6), "{:?}", up[&1]);
    assert_eq!(family_of(&up[&2]), Some(Family::V4), "{:?}", up[&2]);
    registration
}

#[tokio::test]
async fn a_flow_displaced_onto_ipv4_goes_home_to_ipv6_once_it_works_again() {
    let dns = common::serve_zone("registrar IN AAAA ::1\nregistrar IN A 127.0.0.1\n", "").await;
    let mut registrar = MiniRegistrar::start(true, None, Ending::Reset).await;
    let mut registration = registered_and_quick_to_go_home(dns.addrs()[0], registrar.port).await;

    // IPv6 breaks: the flow's connection is reset, and connecting over
    // IPv6 is refused.
    registrar.refuse_v6(true).await;
    registrar.close_v6.send_modify(|n| *n += 1);
    let recovered = wait_for(&mut registration, "flow 1 recovered", |e| {
        e.flow == 1 && e.kind == EventKind::Recovered
    })
    .await;
    assert_eq!(family_of(&recovered), Some(Family::V4), "{recovered:?}");

    // Displaced onto IPv4, it tries IPv6 again; its race fails while IPv6
    // refuses connections (the race's own attempts teach history: the
    // event blames no connection), and the flow stays registered over IPv4.
    let failed = wait_for(&mut registration, "a failed home attempt", |e| {
        e.flow == 1 && matches!(e.kind, EventKind::RehomeFailed { .. })
    })
    .await;
    eprintln!("{failed:?}");
    assert_eq!(family_of(&failed), Some(Family::V4), "{failed:?}");
    assert!(
        matches!(&failed.kind, EventKind::RehomeFailed { reason, .. }
            if reason.starts_with("ipv6: ") && !reason.contains("recorded")),
        "a home race that found no connection: {failed:?}"
    );
    assert_eq!(
        registrar.bindings.lock().unwrap()[&1].family,
        Family::V4,
        "a failed attempt leaves the binding alone"
    );

    // IPv6 connects again, but a REGISTER over it is reset: the flow stays
    // on IPv4, and the reset counts as the new path's failure.
    Faults::set(&registrar.v6.reset_register, true);
    registrar.refuse_v6(false).await;
    let failed = wait_for(&mut registration, "a home REGISTER reset", |e| {
        e.flow == 1
            && matches!(&e.kind, EventKind::RehomeFailed { reason, .. }
                if reason.contains("recorded as the path's failure"))
    })
    .await;
    eprintln!("{failed:?}");
    assert_eq!(family_of(&failed), Some(Family::V4), "{failed:?}");
    assert_eq!(registrar.bindings.lock().unwrap()[&1].family, Family::V4);

    // IPv6 works again: the flow goes home.
    Faults::set(&registrar.v6.reset_register, false);
    let rehomed = wait_for(&mut registration, "flow 1 back on IPv6", |e| {
        e.flow == 1 && e.kind == EventKind::Rehomed
    })
    .await;
    eprintln!("{rehomed:?}");
    assert_eq!(family_of(&rehomed), Some(Family::V6), "{rehomed:?}");
    assert_eq!(rehomed.outbound, Some(true));
    let race = rehomed.race.clone().expect("the home race's note");
    assert_eq!(race.first_family, Family::V6);
    let bound = registrar.bindings.lock().unwrap()[&1].clone();
    assert_eq!(bound.family, Family::V6, "reg-id 1 now bound over IPv6");
    assert_eq!(registrar.bindings.lock().unwrap()[&2].family, Family::V4);

    // The old IPv4 connection of flow 1 is closed: only flow 2's is left.
    let mut open_v4 = registrar.open_v4.subscribe();
    tokio::time::timeout(STEP, open_v4.wait_for(|n| *n == 1))
        .await
        .expect("flow 1's IPv4 connection closed in time")
        .expect("the registrar runs");

    // A request to reg-id 1 goes down its binding, over IPv6, and arrives
    // on flow 1.
    let options = OptionsProbe::new("sip:alice@example.test", Transport::Tcp, bound.local)
        .with_cseq(4242)
        .to_bytes();
    bound
        .to_ua
        .send(options)
        .expect("the IPv6 connection is served");
    let mut skipped = vec![];
    loop {
        match tokio::time::timeout(STEP, registration.next()).await {
            Ok(Some((
                _,
                Notice::Inbound {
                    flow,
                    method,
                    status,
                    request,
                },
            ))) if request.cseq.seq == 4242 => {
                assert_eq!((flow, method.as_str(), status), (1, "OPTIONS", 200));
                break;
            }
            Ok(Some((_, notice))) if skipped.len() < 100 => skipped.push(notice),
            other => panic!("no OPTIONS over flow 1: {other:?} after {skipped:#?}"),
        }
    }

    stop_and_expect_no_binding(registration, &registrar).await;
}

#[tokio::test]
async fn stopping_while_the_home_register_is_out_unregisters_over_both_connections() {
    let dns = common::serve_zone("registrar IN AAAA ::1\nregistrar IN A 127.0.0.1\n", "").await;
    let mut registrar = MiniRegistrar::start(true, None, Ending::Reset).await;
    let mut registration = registered_and_quick_to_go_home(dns.addrs()[0], registrar.port).await;

    // From now on a REGISTER over IPv6 is bound but its 200 never comes.
    // Flow 1's IPv6 connection is reset: it recovers over IPv4, then goes
    // for home, whose REGISTER stays out.
    Faults::set(&registrar.v6.hold_register, true);
    registrar.close_v6.send_modify(|n| *n += 1);
    let mut seen = vec![];
    let mut wanted = [
        Seen::Register {
            family: Family::V4,
            reg_id: 1,
            expires: 600,
        },
        Seen::Register {
            family: Family::V6,
            reg_id: 1,
            expires: 600,
        },
    ]
    .into_iter();
    let mut next = wanted.next();
    while let Some(want) = &next {
        assert!(seen.len() < 100, "{seen:?}");
        let s = registrar.next_seen().await;
        if s == *want {
            next = wanted.next();
        }
        seen.push(s);
    }
    assert_eq!(registrar.bindings.lock().unwrap()[&1].family, Family::V6);

    // Stop: the flow is unregistered over the candidate (behind its
    // REGISTER) and over its working connection, flow 2 over its own, and
    // every connection closes.
    registration.stop();
    while registration.next().await.is_some() {}
    registration.finished().await;
    let mut unregistered = vec![];
    while let Ok(s) = registrar.seen.try_recv() {
        if let Seen::Register {
            family,
            reg_id,
            expires: 0,
        } = s
        {
            unregistered.push((reg_id, family));
        }
    }
    unregistered.sort_by_key(|(reg_id, family)| (*reg_id, *family == Family::V4));
    assert_eq!(
        unregistered,
        vec![(1, Family::V6), (1, Family::V4), (2, Family::V4)],
        "{seen:?}"
    );
    assert!(registrar.bindings.lock().unwrap().is_empty());
    for (family, open) in [
        (Family::V6, &registrar.open_v6),
        (Family::V4, &registrar.open_v4),
    ] {
        tokio::time::timeout(STEP, open.subscribe().wait_for(|n| *n == 0))
            .await
            .unwrap_or_else(|_| panic!("{family:?} connections left open"))
            .expect("the registrar runs");
    }
}
