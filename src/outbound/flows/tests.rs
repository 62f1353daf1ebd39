//! The flow rules driven with a fake clock: exact action sequences.

use super::*;

const V6: &str = "[2001:db8:5e::10]:5060";
const V4: &str = "198.51.100.10:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A machine with fixed keep-alive intervals, so the sequences are exact.
fn flows(count: u32) -> (Flows, Instant) {
    let cfg = FlowConfig {
        flows: count,
        keepalive: Some(secs(30)),
        ..FlowConfig::default()
    };
    (Flows::new(cfg, 7), Instant::now())
}

fn connected(flow: FlowId, transport: Transport, remote: &str) -> Input {
    Input::Connected {
        flow,
        transport,
        remote: addr(remote),
    }
}

fn registered(flow: FlowId, expires: u64) -> Input {
    Input::Registered {
        flow,
        flow_timer: None,
        expires: secs(expires),
        outbound: true,
    }
}

/// The wait of the `recovering` event among `out`.
fn recovering_wait(out: &[Action]) -> Duration {
    out.iter()
        .find_map(|a| match a {
            Action::Event(FlowEvent {
                kind: EventKind::Recovering(w),
                ..
            }) => Some(*w),
            _ => None,
        })
        .expect("a recovering event")
}

/// An event as the machine reports it (registered with Outbound confirmed).
fn event(flow: FlowId, kind: EventKind, path: Option<(Transport, &str)>) -> Action {
    let outbound = matches!(
        kind,
        EventKind::Registered | EventKind::Recovered | EventKind::Rehomed
    )
    .then_some(true);
    Action::Event(FlowEvent {
        flow,
        kind,
        path: path.map(|(t, a)| (t, addr(a))),
        outbound,
        race: None,
    })
}

/// Both flows up: flow 1 on IPv6 TCP, flow 2 on IPv4 TCP.
fn two_flows_up() -> (Flows, Instant) {
    let (mut m, t0) = flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, connected(2, Transport::Tcp, V4));
    m.step(t0, registered(1, 3600));
    m.step(t0, registered(2, 3600));
    (m, t0)
}

#[test]
fn flow_two_is_raced_in_the_other_family_than_flow_one() {
    let (mut m, t0) = flows(2);
    assert_eq!(
        m.start(),
        vec![Action::Connect {
            flow: 1,
            family: FamilyChoice::Any
        }]
    );
    assert_eq!(
        m.step(t0, connected(1, Transport::Tcp, V6)),
        vec![
            Action::Register { flow: 1 },
            Action::Connect {
                flow: 2,
                family: FamilyChoice::Only(Family::V4)
            },
        ]
    );
    assert_eq!(
        m.step(t0, registered(1, 3600)),
        vec![
            event(1, EventKind::Registered, Some((Transport::Tcp, V6))),
            Action::WakeAt(t0 + secs(30)),
        ]
    );
}

#[test]
fn one_family_only_keeps_one_flow() {
    let (mut m, t0) = flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    let out = m.step(
        t0,
        Input::ConnectFailed {
            flow: 2,
            reason: "no IPv4 address".into(),
            no_candidates: true,
        },
    );
    assert_eq!(
        out,
        vec![event(
            2,
            EventKind::Unavailable("no IPv4 address".into()),
            None
        )]
    );
    m.step(t0, registered(1, 3600));
    assert_eq!(m.registered().len(), 1);
}

#[test]
fn keepalives_run_at_the_interval_and_a_pong_rearms_them() {
    let (mut m, t0) = two_flows_up();
    let t1 = t0 + secs(30);
    assert_eq!(
        m.step(t1, Input::Timer),
        vec![
            Action::SendKeepalive {
                flow: 1,
                retransmission: false
            },
            Action::SendKeepalive {
                flow: 2,
                retransmission: false
            },
            Action::WakeAt(t1 + secs(10)),
        ]
    );
    let t2 = t1 + Duration::from_millis(40);
    m.step(
        t2,
        Input::KeepaliveAnswered {
            flow: 2,
            mapped: None,
        },
    );
    let out = m.step(
        t2,
        Input::KeepaliveAnswered {
            flow: 1,
            mapped: None,
        },
    );
    assert_eq!(
        out,
        vec![
            event(1, EventKind::KeepaliveOk, Some((Transport::Tcp, V6))),
            Action::WakeAt(t2 + secs(30)),
        ]
    );
    // A pong nobody waits for changes nothing.
    assert_eq!(
        m.step(
            t2,
            Input::KeepaliveAnswered {
                flow: 1,
                mapped: None
            }
        ),
        vec![Action::WakeAt(t2 + secs(30))]
    );
}

#[test]
fn an_unanswered_keepalive_fails_the_flow_and_it_is_raced_again_at_once() {
    let (mut m, t0) = two_flows_up();
    let t1 = t0 + secs(30);
    m.step(t1, Input::Timer);
    m.step(
        t1,
        Input::KeepaliveAnswered {
            flow: 2,
            mapped: None,
        },
    );
    let t2 = t1 + secs(10);
    let out = m.step(t2, Input::Timer);
    assert_eq!(
        out,
        vec![
            // History learns first, so the re-race below tries IPv4 first.
            Action::RecordPathFailure { flow: 1 },
            Action::Close { flow: 1 },
            event(
                1,
                EventKind::Failed("keep-alive unanswered for 10 s".into()),
                Some((Transport::Tcp, V6))
            ),
            event(
                1,
                EventKind::Recovering(Duration::ZERO),
                Some((Transport::Tcp, V6))
            ),
            Action::Connect {
                flow: 1,
                family: FamilyChoice::Any
            },
            Action::WakeAt(t1 + secs(30)),
        ],
        "a flow that was working is raced again at once, in every family"
    );
    // The race (with history demoting the failed family) comes back on IPv4.
    m.step(t2, connected(1, Transport::Tcp, V4));
    let out = m.step(t2, registered(1, 3600));
    assert_eq!(
        out[0],
        event(1, EventKind::Recovered, Some((Transport::Tcp, V4)))
    );
}

#[test]
fn failed_recoveries_back_off_per_rfc_5626() {
    let (mut m, t0) = two_flows_up();
    m.step(
        t0,
        Input::FlowLost {
            flow: 1,
            reason: "reset".into(),
            path_broken: true,
        },
    );
    // Every further failure waits longer: 50–100 % of 90 s · 2^n (flow 2
    // works), capped at 1800 s.
    let mut now = t0;
    for n in 1..=6u32 {
        let out = m.step(
            now,
            Input::ConnectFailed {
                flow: 1,
                reason: "every attempt failed".into(),
                no_candidates: false,
            },
        );
        let wait = recovering_wait(&out);
        let ceiling = (secs(90) * 2u32.pow(n)).min(secs(1800));
        assert!(
            wait >= ceiling / 2 && wait <= ceiling,
            "failure {n}: waited {wait:?}, ceiling {ceiling:?}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::Connect { .. })));
        now += wait;
        let out = m.step(now, Input::Timer);
        assert!(
            out.contains(&Action::Connect {
                flow: 1,
                family: FamilyChoice::Any
            }),
            "{out:?}"
        );
        // Flow 2 keeps working meanwhile (its keep-alive, if one went out,
        // is answered), so the base stays 90 s.
        m.step(
            now,
            Input::KeepaliveAnswered {
                flow: 2,
                mapped: None,
            },
        );
        assert_eq!(m.registered().len(), 1);
    }
}

#[test]
fn with_no_flow_working_the_base_is_30_seconds() {
    let (mut m, t0) = flows(1);
    m.start();
    let out = m.step(
        t0,
        Input::ConnectFailed {
            flow: 1,
            reason: "every attempt failed".into(),
            no_candidates: false,
        },
    );
    let wait = recovering_wait(&out);
    assert!(wait >= secs(30) && wait <= secs(60), "{wait:?}");
}

#[test]
fn stun_keepalives_retransmit_and_a_changed_mapping_fails_the_flow() {
    let (mut m, t0) = flows(1);
    m.start();
    m.step(t0, connected(1, Transport::Udp, V4));
    m.step(t0, registered(1, 3600));
    let t1 = t0 + secs(30);
    let first = m.step(t1, Input::Timer);
    assert_eq!(
        first,
        vec![
            Action::SendKeepalive {
                flow: 1,
                retransmission: false
            },
            Action::WakeAt(t1 + Duration::from_millis(500)),
        ]
    );
    let out = m.step(t1 + Duration::from_millis(500), Input::Timer);
    assert_eq!(
        out,
        vec![
            Action::SendKeepalive {
                flow: 1,
                retransmission: true
            },
            Action::WakeAt(t1 + Duration::from_millis(1500)),
        ]
    );
    let mapped = Some(addr("203.0.113.7:40000"));
    m.step(t1 + secs(1), Input::KeepaliveAnswered { flow: 1, mapped });
    let t2 = t1 + secs(31);
    m.step(t2, Input::Timer);
    let out = m.step(
        t2,
        Input::KeepaliveAnswered {
            flow: 1,
            mapped: Some(addr("203.0.113.7:40001")),
        },
    );
    // A NAT rebinding is not the path's failure: history is not told.
    assert_eq!(out[0], Action::Close { flow: 1 });
    assert!(matches!(
        &out[1],
        Action::Event(FlowEvent { kind: EventKind::Failed(r), .. }) if r.contains("mapped address changed")
    ));
}

#[test]
fn a_reset_is_recorded_as_the_paths_failure_but_a_refused_register_is_not() {
    let (mut m, t0) = two_flows_up();
    let out = m.step(
        t0,
        Input::FlowLost {
            flow: 2,
            reason: "reset".into(),
            path_broken: true,
        },
    );
    assert_eq!(out[0], Action::RecordPathFailure { flow: 2 });
    assert_eq!(out[1], Action::Close { flow: 2 });
    // Flow 2 races again; its REGISTER is refused: the path worked.
    m.step(t0, connected(2, Transport::Tcp, V6));
    let out = m.step(
        t0,
        Input::RegisterFailed {
            flow: 2,
            reason: "403 Forbidden".into(),
            path_broken: false,
        },
    );
    assert_eq!(out[0], Action::Close { flow: 2 });
    assert!(
        !out.contains(&Action::RecordPathFailure { flow: 2 }),
        "{out:?}"
    );
    // Nor is a connection lost while stopping.
    let (mut m, t0) = two_flows_up();
    m.step(t0, Input::Stop);
    let out = m.step(
        t0,
        Input::FlowLost {
            flow: 1,
            reason: "closed".into(),
            path_broken: true,
        },
    );
    assert!(
        !out.contains(&Action::RecordPathFailure { flow: 1 }),
        "{out:?}"
    );
}

fn registered_without_outbound(flow: FlowId) -> Input {
    Input::Registered {
        flow,
        flow_timer: None,
        expires: secs(3600),
        outbound: false,
    }
}

#[test]
fn without_outbound_the_second_flow_is_dropped_before_it_registers() {
    let (mut m, t0) = flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    // Flow 2 is being raced in IPv4 when flow 1's 2xx lacks Require: outbound.
    let out = m.step(t0, registered_without_outbound(1));
    let mut registered = event(1, EventKind::Registered, Some((Transport::Tcp, V6)));
    if let Action::Event(e) = &mut registered {
        e.outbound = Some(false);
    }
    assert_eq!(
        out,
        vec![
            registered,
            Action::Close { flow: 2 },
            event(2, EventKind::Unavailable(NO_OUTBOUND.into()), None),
            // Only the refresh at 80 % of 3600 s: no keep-alive is armed.
            Action::WakeAt(t0 + secs(2880)),
        ]
    );
    assert_eq!(m.registrar_outbound(), Some(false));
    assert!(!m.is_connecting(2));
    // Its race's late winner is not taken.
    assert_eq!(
        m.step(t0, connected(2, Transport::Tcp, V4)),
        vec![Action::WakeAt(t0 + secs(2880))]
    );
    // At the refresh: a REGISTER, never a keep-alive.
    let out = m.step(t0 + secs(2880), Input::Timer);
    assert_eq!(out[0], Action::Register { flow: 1 });
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::SendKeepalive { .. })),
        "{out:?}"
    );
}

#[test]
fn without_outbound_a_registered_second_flow_is_unregistered_and_not_raced_again() {
    let (mut m, t0) = flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Udp, V6));
    m.step(t0, connected(2, Transport::Udp, V4));
    // Flow 2's registrar said Outbound (or so it seemed), flow 1's did not.
    m.step(t0, registered(2, 3600));
    let out = m.step(t0, registered_without_outbound(1));
    assert_eq!(out[1], Action::Unregister { flow: 2 });
    assert_eq!(
        out[2],
        event(
            2,
            EventKind::Unavailable(NO_OUTBOUND.into()),
            Some((Transport::Udp, V4))
        )
    );
    let out = m.step(t0, Input::Unregistered { flow: 2 });
    assert!(out.contains(&Action::Close { flow: 2 }), "{out:?}");
    assert_eq!(m.registered().len(), 1);
    // The kept flow is reset: it is raced again (in any family); flow 2 stays out.
    let out = m.step(
        t0 + secs(5),
        Input::FlowLost {
            flow: 1,
            reason: "reset".into(),
            path_broken: true,
        },
    );
    assert!(out.contains(&Action::Connect {
        flow: 1,
        family: FamilyChoice::Any
    }));
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Connect { flow: 2, .. })),
        "{out:?}"
    );
    // Stopping unregisters the one flow left and finishes.
    m.step(t0 + secs(6), connected(1, Transport::Udp, V4));
    m.step(t0 + secs(6), registered_without_outbound(1));
    let out = m.step(t0 + secs(7), Input::Stop);
    assert_eq!(out, vec![Action::Unregister { flow: 1 }]);
    m.step(t0 + secs(7), Input::Unregistered { flow: 1 });
    assert!(m.finished());
}

#[test]
fn flow_timer_sets_the_interval_to_80_to_100_percent() {
    let cfg = FlowConfig {
        flows: 1,
        ..FlowConfig::default()
    };
    for seed in 0..20 {
        let mut m = Flows::new(cfg.clone(), seed);
        let t0 = Instant::now();
        m.start();
        m.step(t0, connected(1, Transport::Tls, V6));
        let out = m.step(
            t0,
            Input::Registered {
                flow: 1,
                flow_timer: Some(secs(120)),
                expires: secs(3600),
                outbound: true,
            },
        );
        let Some(Action::WakeAt(at)) = out.last() else {
            panic!("{out:?}")
        };
        let interval = *at - t0;
        assert!(
            interval >= secs(96) && interval <= secs(120),
            "{interval:?}"
        );
    }
}

#[test]
fn default_intervals_are_95_to_120_s_on_streams_and_24_to_29_s_on_udp() {
    for (transport, lo, hi) in [(Transport::Tcp, 95, 120), (Transport::Udp, 24, 29)] {
        for seed in 0..20 {
            let mut m = Flows::new(
                FlowConfig {
                    flows: 1,
                    ..FlowConfig::default()
                },
                seed,
            );
            let t0 = Instant::now();
            m.start();
            m.step(t0, connected(1, transport, V4));
            let out = m.step(t0, registered(1, 3600));
            let Some(Action::WakeAt(at)) = out.last() else {
                panic!("{out:?}")
            };
            let interval = *at - t0;
            assert!(
                interval >= secs(lo) && interval <= secs(hi),
                "{transport}: {interval:?}"
            );
        }
    }
}

#[test]
fn registrations_are_refreshed_at_80_percent_of_the_granted_expiry() {
    let (mut m, t0) = flows(1);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    let out = m.step(t0, registered(1, 20));
    assert_eq!(out.last(), Some(&Action::WakeAt(t0 + secs(16))));
    let out = m.step(t0 + secs(16), Input::Timer);
    assert_eq!(out[0], Action::Register { flow: 1 });
    // A refresh's 200 is no new "registered" event.
    let out = m.step(t0 + secs(16), registered(1, 20));
    assert!(
        !out.iter().any(|a| matches!(a, Action::Event(_))),
        "{out:?}"
    );
}

#[test]
fn stop_unregisters_every_registered_flow() {
    let (mut m, t0) = two_flows_up();
    assert_eq!(
        m.step(t0, Input::Stop),
        vec![
            Action::Unregister { flow: 1 },
            Action::Unregister { flow: 2 }
        ]
    );
    assert!(!m.finished());
    m.step(t0, Input::Unregistered { flow: 1 });
    let out = m.step(t0, Input::Unregistered { flow: 2 });
    assert_eq!(
        out,
        vec![
            event(2, EventKind::Unregistered, Some((Transport::Tcp, V4))),
            Action::Close { flow: 2 }
        ]
    );
    assert!(m.finished());
}

#[test]
fn inputs_for_unknown_or_idle_flows_change_nothing() {
    let (mut m, t0) = flows(2);
    m.start();
    for input in [
        registered(2, 60),
        Input::KeepaliveAnswered {
            flow: 1,
            mapped: None,
        },
        Input::FlowLost {
            flow: 9,
            reason: "x".into(),
            path_broken: true,
        },
        connected(3, Transport::Tcp, V4),
        Input::Unregistered { flow: 1 },
    ] {
        assert_eq!(m.step(t0, input.clone()), vec![], "{input:?}");
    }
}

#[test]
fn a_huge_expiry_or_flow_timer_is_cut_not_overflowed() {
    let (mut m, t0) = flows(1);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    let out = m.step(
        t0,
        Input::Registered {
            flow: 1,
            flow_timer: Some(Duration::from_secs(u64::MAX)),
            expires: Duration::from_secs(u64::MAX),
            outbound: true,
        },
    );
    let Some(Action::WakeAt(at)) = out.last() else {
        panic!("{out:?}")
    };
    assert!(*at <= t0 + MAX_FLOW_TIMER, "{:?}", *at - t0);
    let out = m.step(t0, registered(1, u64::MAX));
    assert!(matches!(out.last(), Some(Action::WakeAt(_))), "{out:?}");
}

#[test]
fn a_connection_closed_in_order_is_raced_again_without_blaming_its_path() {
    let (mut m, t0) = two_flows_up();
    // A FIN (the registrar restarted): re-raced at once, history not told,
    // and each flow prefers the family it ran on (so each family keeps one).
    for (flow, family) in [(1, Family::V6), (2, Family::V4)] {
        let out = m.step(
            t0,
            Input::FlowLost {
                flow,
                reason: "closed".into(),
                path_broken: false,
            },
        );
        assert_eq!(out[0], Action::Close { flow });
        assert!(
            !out.contains(&Action::RecordPathFailure { flow }),
            "{out:?}"
        );
        assert!(
            out.contains(&Action::Connect {
                flow,
                family: FamilyChoice::Prefer(family)
            }),
            "{out:?}"
        );
    }
    m.step(t0, connected(2, Transport::Tcp, V4));
    m.step(t0, registered(2, 3600));
    // A REGISTER that timed out is the path's failure.
    m.step(t0, connected(1, Transport::Tcp, V6));
    let out = m.step(
        t0,
        Input::RegisterFailed {
            flow: 1,
            reason: "no answer".into(),
            path_broken: true,
        },
    );
    assert_eq!(out[0], Action::RecordPathFailure { flow: 1 });
    // A working flow reset: history decides the order, no preference.
    let out = m.step(
        t0,
        Input::FlowLost {
            flow: 2,
            reason: "reset".into(),
            path_broken: true,
        },
    );
    assert!(
        out.contains(&Action::Connect {
            flow: 2,
            family: FamilyChoice::Any
        }),
        "{out:?}"
    );
}

#[test]
fn a_register_in_flight_is_taken_back_when_the_registrar_lacks_outbound_or_on_stop() {
    // Flow 2's REGISTER is out when flow 1's 2xx shows no Outbound: the
    // registrar may yet bind flow 2's contact, so it is unregistered.
    let (mut m, t0) = flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, connected(2, Transport::Tcp, V4));
    let out = m.step(t0, registered_without_outbound(1));
    assert!(out.contains(&Action::Unregister { flow: 2 }), "{out:?}");
    assert!(!out.contains(&Action::Close { flow: 2 }), "{out:?}");
    // Its late 2xx changes nothing; the unregistration's end closes it.
    let out = m.step(t0, registered(2, 3600));
    assert!(
        !out.iter().any(|a| matches!(a, Action::Event(_))),
        "{out:?}"
    );
    let out = m.step(t0, Input::Unregistered { flow: 2 });
    assert!(out.contains(&Action::Close { flow: 2 }), "{out:?}");

    // Stopping while a REGISTER is out unregisters that flow too.
    let (mut m, t0) = flows(1);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    assert_eq!(
        m.step(t0, Input::Stop),
        vec![Action::Unregister { flow: 1 }]
    );
    m.step(t0, Input::Unregistered { flow: 1 });
    assert!(m.finished());
}

// Going back home (see the module docs).

/// `flow`'s connection reset (its path failed).
fn reset(flow: FlowId) -> Input {
    Input::FlowLost {
        flow,
        reason: "reset".into(),
        path_broken: true,
    }
}

/// Flow 1's home race won: a connection over IPv6.
fn home_connected() -> Input {
    Input::HomeConnected {
        flow: 1,
        attempt: 1,
        transport: Transport::Tcp,
        remote: addr(V6),
    }
}

/// Flow 1's candidate connection reset.
fn home_reset() -> Input {
    Input::HomeLost {
        flow: 1,
        reason: "reset".into(),
        path_broken: true,
    }
}

/// Flow 1's candidate REGISTER refused (the registrar answered).
fn home_refused() -> Input {
    Input::HomeRegisterFailed {
        flow: 1,
        reason: "403 Forbidden".into(),
        path_broken: false,
    }
}

/// Keep-alives every 300 s, so the home race's wait is the earliest deadline.
fn rehome_flows(count: u32) -> (Flows, Instant) {
    let cfg = FlowConfig {
        flows: count,
        keepalive: Some(secs(300)),
        ..FlowConfig::default()
    };
    (Flows::new(cfg, 7), Instant::now())
}

/// The time of the last `WakeAt` among `out`.
fn wake(out: &[Action]) -> Instant {
    match out.last() {
        Some(Action::WakeAt(at)) => *at,
        _ => panic!("no WakeAt last: {out:?}"),
    }
}

/// Flow 1 (home IPv6) was reset and recovered over IPv4, where flow 2
/// (home IPv4) is: displaced. Flow 1's REGISTER there was granted
/// `expires`. Returns the machine, the start, and when the home race is due.
fn displaced(expires: u64) -> (Flows, Instant, Instant) {
    let (mut m, t0) = rehome_flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, connected(2, Transport::Tcp, V4));
    m.step(t0, registered(1, 3600));
    m.step(t0, registered(2, 3600));
    m.step(t0, reset(1));
    m.step(t0, connected(1, Transport::Tcp, V4));
    let out = m.step(t0, registered(1, expires));
    assert_eq!(
        out[0],
        event(1, EventKind::Recovered, Some((Transport::Tcp, V4)))
    );
    // Due after a random 50–100 % of 60 s (the refresh, if earlier, comes
    // first: then the wait is read from the flow itself).
    let due = match m.flows[0].rehome {
        Rehome::Due(at) => at,
        other => panic!("flow 1 is displaced: {other:?}"),
    };
    assert!(
        due >= t0 + secs(30) && due <= t0 + secs(60),
        "{:?}",
        due - t0
    );
    if expires >= 100 {
        assert_eq!(wake(&out), due, "{out:?}");
    }
    (m, t0, due)
}

/// [`displaced`] (a registration of an hour), its home race won at once
/// and the REGISTER over the candidate out.
fn home_register_out() -> (Flows, Instant, Instant) {
    let (mut m, t0, due) = displaced(3600);
    m.step(due, Input::Timer);
    m.step(due, home_connected());
    (m, t0, due)
}

/// The `rehome_failed` event's wait among `out`.
fn rehome_retry(out: &[Action]) -> Duration {
    out.iter()
        .find_map(|a| match a {
            Action::Event(FlowEvent {
                kind: EventKind::RehomeFailed { retry_in, .. },
                ..
            }) => Some(*retry_in),
            _ => None,
        })
        .expect("a rehome_failed event")
}

#[test]
fn a_displaced_flow_races_its_home_family_after_the_wait() {
    let (mut m, t0, due) = displaced(3600);
    // Flow 2 is at home: nothing due for it.
    assert_eq!(m.flows[1].rehome, Rehome::Idle);
    // Not before it is due.
    let early = due - Duration::from_millis(1);
    assert_eq!(m.step(early, Input::Timer), vec![Action::WakeAt(due)]);
    assert_eq!(
        m.step(due, Input::Timer),
        vec![
            Action::RaceHome {
                flow: 1,
                family: Family::V6,
                attempt: 1,
            },
            Action::WakeAt(t0 + secs(300)),
        ]
    );
    assert!(m.is_racing_home(1, 1));
    assert!(!m.is_racing_home(2, 1));
    // The flow keeps working meanwhile: still registered over IPv4.
    assert_eq!(m.registered().len(), 2);
}

#[test]
fn a_home_race_that_wins_registers_over_it_and_only_then_closes_the_old() {
    let (mut m, t0, due) = displaced(3600);
    m.step(due, Input::Timer);
    let t1 = due + Duration::from_millis(3);
    let home = "[2001:db8:5e::10]:5061";
    // Connected: a REGISTER over the candidate; the old connection stays.
    assert_eq!(
        m.step(
            t1,
            Input::HomeConnected {
                flow: 1,
                attempt: 1,
                transport: Transport::Tcp,
                remote: addr(home),
            }
        ),
        vec![
            Action::RegisterHome { flow: 1 },
            Action::WakeAt(t0 + secs(300))
        ]
    );
    assert!(m.registered().contains(&(1, Transport::Tcp, addr(V4))));
    // Registered over it: the candidate becomes the flow, the old closes.
    let t2 = t1 + Duration::from_millis(2);
    assert_eq!(
        m.step(
            t2,
            Input::HomeRegistered {
                flow: 1,
                flow_timer: None,
                expires: secs(3600),
                outbound: true,
            }
        ),
        vec![
            Action::AdoptHome { flow: 1 },
            event(1, EventKind::Rehomed, Some((Transport::Tcp, home))),
            // Flow 2's keep-alive; flow 1's restarts from the new REGISTER.
            Action::WakeAt(t0 + secs(300)),
        ]
    );
    assert!(m.registered().contains(&(1, Transport::Tcp, addr(home))));
    assert_eq!(m.flows[0].rehome, Rehome::Idle);
    // Late news of the candidate's race changes nothing now.
    let out = m.step(
        t2,
        Input::HomeConnectFailed {
            flow: 1,
            attempt: 1,
            reason: "late".into(),
        },
    );
    assert_eq!(out, vec![Action::WakeAt(t0 + secs(300))]);
    // The flow's keep-alive runs from the move (on the new connection).
    let out = m.step(t0 + secs(300), Input::Timer);
    assert_eq!(
        out,
        vec![
            Action::SendKeepalive {
                flow: 2,
                retransmission: false
            },
            Action::WakeAt(t0 + secs(310)),
        ]
    );
    m.step(
        t0 + secs(300),
        Input::KeepaliveAnswered {
            flow: 2,
            mapped: None,
        },
    );
    let out = m.step(t2 + secs(300), Input::Timer);
    assert!(
        out.contains(&Action::SendKeepalive {
            flow: 1,
            retransmission: false
        }),
        "{out:?}"
    );
}

#[test]
fn a_home_race_that_fails_keeps_the_old_flow_and_backs_off() {
    let (mut m, _t0, due) = displaced(3600);
    let mut now = due;
    // Each failed attempt waits 50–100 % of 60 s · 2^n, capped at 1800 s.
    for n in 1..=7u32 {
        let out = m.step(now, Input::Timer);
        assert!(
            out.contains(&Action::RaceHome {
                flow: 1,
                family: Family::V6,
                attempt: n,
            }),
            "attempt {n}: {out:?}"
        );
        let out = m.step(
            now,
            Input::HomeConnectFailed {
                flow: 1,
                attempt: n,
                reason: "every attempt failed".into(),
            },
        );
        let retry_in = rehome_retry(&out);
        // Nothing closed, nothing blamed: the race taught history itself,
        // and the working flow's path did not fail.
        assert_eq!(
            out[0],
            event(
                1,
                EventKind::RehomeFailed {
                    reason: "ipv6: every attempt failed".into(),
                    retry_in
                },
                Some((Transport::Tcp, V4))
            ),
            "attempt {n}"
        );
        assert_eq!(out.len(), 2, "{out:?}");
        let ceiling = (secs(60) * 2u32.pow(n)).min(secs(1800));
        assert!(
            retry_in >= ceiling / 2 && retry_in <= ceiling,
            "failure {n}: {retry_in:?}, ceiling {ceiling:?}"
        );
        assert!(m.registered().contains(&(1, Transport::Tcp, addr(V4))));
        now += retry_in;
        // Keep-alives go on meanwhile; answer any that went out.
        for flow in [1, 2] {
            m.step(now, Input::KeepaliveAnswered { flow, mapped: None });
        }
    }
}

#[test]
fn a_register_failure_on_the_candidate_closes_only_the_candidate() {
    for (path_broken, blamed) in [(true, true), (false, false)] {
        let (mut m, _t0, due) = home_register_out();
        let out = m.step(
            due,
            Input::HomeRegisterFailed {
                flow: 1,
                reason: if path_broken {
                    "no answer"
                } else {
                    "403 Forbidden"
                }
                .into(),
                path_broken,
            },
        );
        let retry_in = rehome_retry(&out);
        assert!(
            retry_in >= secs(60) && retry_in <= secs(120),
            "{retry_in:?}"
        );
        let mut expected = vec![];
        if blamed {
            // Its own path, not the working flow's.
            expected.push(Action::RecordHomePathFailure { flow: 1 });
        }
        expected.push(Action::CloseHome { flow: 1 });
        assert_eq!(out[..expected.len()], expected[..], "{out:?}");
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::Close { .. } | Action::RecordPathFailure { .. })),
            "{out:?}"
        );
        assert!(m.registered().contains(&(1, Transport::Tcp, addr(V4))));
        assert_eq!(m.flows[0].rehome, Rehome::Due(due + retry_in));
        // The candidate's death after that changes nothing.
        let out = m.step(due, home_reset());
        assert_eq!(out, vec![Action::WakeAt(due + retry_in)]);
    }
}

#[test]
fn stop_mid_rehome_unregisters_and_closes_both_connections() {
    // The candidate's REGISTER is out: unregistered over it too.
    let (mut m, _t0, due) = home_register_out();
    assert_eq!(
        m.step(due, Input::Stop),
        vec![
            Action::UnregisterHome { flow: 1 },
            Action::Unregister { flow: 1 },
            Action::Unregister { flow: 2 },
        ]
    );
    m.step(due, Input::Unregistered { flow: 1 });
    m.step(due, Input::Unregistered { flow: 2 });
    assert!(!m.finished(), "the candidate's unregistration is out");
    // Its late 2xx to the REGISTER moves nothing.
    assert_eq!(
        m.step(
            due,
            Input::HomeRegistered {
                flow: 1,
                flow_timer: None,
                expires: secs(3600),
                outbound: true,
            }
        ),
        vec![]
    );
    assert_eq!(
        m.step(due, Input::HomeUnregistered { flow: 1 }),
        vec![Action::CloseHome { flow: 1 }]
    );
    assert!(m.finished());

    // The home race is running: a winner is no longer wanted.
    let (mut m, _t0, due) = displaced(3600);
    m.step(due, Input::Timer);
    assert_eq!(
        m.step(due, Input::Stop),
        vec![
            Action::Unregister { flow: 1 },
            Action::Unregister { flow: 2 }
        ]
    );
    assert!(!m.is_racing_home(1, 1));
    // A candidate connected (its REGISTER held behind a refresh): closed.
    let (mut m, t0, due) = displaced(20);
    m.step(t0 + secs(16), Input::Timer);
    m.step(due, Input::Timer);
    m.step(due, home_connected());
    assert_eq!(
        m.step(due, Input::Stop),
        vec![
            Action::CloseHome { flow: 1 },
            Action::Unregister { flow: 1 },
            Action::Unregister { flow: 2 }
        ]
    );
}

#[test]
fn the_refresh_and_the_home_register_never_cross() {
    // Flow 1's registration there lasts 20 s: refreshed at 16 s, before
    // its home race (30–60 s).
    let (mut m, t0, due) = displaced(20);
    let out = m.step(t0 + secs(16), Input::Timer);
    assert_eq!(out[0], Action::Register { flow: 1 });
    assert_eq!(wake(&out), due);
    m.step(due, Input::Timer);
    // The candidate connects while the refresh is out: its REGISTER waits.
    let out = m.step(due, home_connected());
    assert_eq!(out, vec![Action::WakeAt(t0 + secs(300))]);
    // The refresh answered: now the candidate's REGISTER (and a wake-up
    // for the refresh that may be held behind it, see below).
    let t1 = due + secs(1);
    assert_eq!(
        m.step(t1, registered(1, 20)),
        vec![
            Action::RegisterHome { flow: 1 },
            Action::WakeAt(t1 + secs(18))
        ]
    );
    // The next refresh falls due while that REGISTER is out: held, and the
    // next wake-up is when it may be held no longer (18 s: halfway to the
    // expiry), not before (it would spin).
    assert_eq!(
        m.step(t1 + secs(16), Input::Timer),
        vec![Action::WakeAt(t1 + secs(18))]
    );
    // The candidate is refused: the held refresh goes at once.
    let t2 = t1 + secs(17);
    let out = m.step(t2, home_refused());
    assert_eq!(wake(&out), t1 + secs(16));
    let out = m.step(t2, Input::Timer);
    assert_eq!(out[0], Action::Register { flow: 1 });
}

#[test]
fn a_flow_failing_mid_rehome_adopts_its_connected_candidate() {
    // The candidate's REGISTER is out when the working connection resets:
    // the candidate becomes the flow's connection, no race from nothing.
    let (mut m, t0, due) = home_register_out();
    let out = m.step(due, reset(1));
    assert_eq!(
        out,
        vec![
            Action::RecordPathFailure { flow: 1 },
            Action::AdoptHome { flow: 1 },
            event(
                1,
                EventKind::Failed("reset".into()),
                Some((Transport::Tcp, V4))
            ),
            event(
                1,
                EventKind::Recovering(Duration::ZERO),
                Some((Transport::Tcp, V4))
            ),
            Action::WakeAt(t0 + secs(300)),
        ]
    );
    assert!(!m.is_connecting(1));
    // That REGISTER's 2xx (now the flow's) ends the recovery, at home.
    let out = m.step(due, registered(1, 3600));
    assert_eq!(
        out[0],
        event(1, EventKind::Recovered, Some((Transport::Tcp, V6)))
    );
    assert!(m.registered().contains(&(1, Transport::Tcp, addr(V6))));
    assert_eq!(m.flows[0].rehome, Rehome::Idle);

    // The candidate's REGISTER waited for a refresh that dies with the
    // working connection: adopted, its REGISTER goes now.
    let (mut m, t0, due) = displaced(20);
    m.step(t0 + secs(16), Input::Timer);
    m.step(due, Input::Timer);
    m.step(due, home_connected());
    let out = m.step(
        due,
        Input::RegisterFailed {
            flow: 1,
            reason: "no answer".into(),
            path_broken: true,
        },
    );
    assert!(out.contains(&Action::AdoptHome { flow: 1 }), "{out:?}");
    assert!(out.contains(&Action::Register { flow: 1 }), "{out:?}");
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Connect { .. } | Action::CloseHome { .. })),
        "{out:?}"
    );
    m.step(due, registered(1, 3600));
    assert!(m.registered().contains(&(1, Transport::Tcp, addr(V6))));

    // The registrar closed the working connection in order (its path
    // works): no adoption, the candidate goes with it and the flow races
    // again at once, as without a candidate.
    let (mut m, _t0, due) = home_register_out();
    let out = m.step(
        due,
        Input::FlowLost {
            flow: 1,
            reason: "closed".into(),
            path_broken: false,
        },
    );
    assert!(out.contains(&Action::CloseHome { flow: 1 }), "{out:?}");
    assert!(!out.contains(&Action::AdoptHome { flow: 1 }), "{out:?}");
    assert!(m.is_connecting(1));

    // The home race still runs: nothing to adopt; the flow races again and
    // the race's late winner is not wanted.
    let (mut m, t0, due) = displaced(3600);
    m.step(due, Input::Timer);
    let out = m.step(due, reset(1));
    assert!(
        out.contains(&Action::Connect {
            flow: 1,
            family: FamilyChoice::Any
        }),
        "{out:?}"
    );
    assert!(!m.is_racing_home(1, 1));
    assert_eq!(
        m.step(due, home_connected()),
        vec![Action::WakeAt(t0 + secs(300))]
    );
    // Recovering at home ends the displacement.
    m.step(due, connected(1, Transport::Tcp, V6));
    m.step(due, registered(1, 3600));
    assert_eq!(m.flows[0].rehome, Rehome::Idle);
}

#[test]
fn an_adopted_candidate_that_fails_races_again_at_once() {
    // The working path broke and the flow adopted its candidate, whose
    // REGISTER then goes unanswered: that is the first failure since the
    // flow worked, so the flow races again at once, not after a back-off.
    let (mut m, _t0, due) = home_register_out();
    let out = m.step(due, reset(1));
    assert!(out.contains(&Action::AdoptHome { flow: 1 }), "{out:?}");
    let out = m.step(
        due + secs(2),
        Input::RegisterFailed {
            flow: 1,
            reason: "no answer".into(),
            path_broken: true,
        },
    );
    assert_eq!(recovering_wait(&out), Duration::ZERO, "{out:?}");
    assert!(m.is_connecting(1), "{out:?}");
    // A failure of the race that follows backs off as usual.
    let out = m.step(
        due + secs(3),
        Input::ConnectFailed {
            flow: 1,
            reason: "no candidate answered".into(),
            no_candidates: false,
        },
    );
    assert!(recovering_wait(&out) >= secs(90), "{out:?}");
}

#[test]
fn no_rehome_with_one_flow_without_outbound_or_on_different_families() {
    let never_races_home = |m: &mut Flows, from: Instant| {
        // Every deadline for an hour: no home race.
        let mut now = from;
        for _ in 0..50 {
            let out = m.step(now, Input::Timer);
            assert!(
                !out.iter().any(|a| matches!(a, Action::RaceHome { .. })),
                "{out:?}"
            );
            for flow in [1, 2] {
                m.step(now, Input::KeepaliveAnswered { flow, mapped: None });
            }
            match out.last() {
                Some(Action::WakeAt(at)) if *at < from + secs(3600) => now = *at,
                _ => break,
            }
        }
        assert!(m.flows.iter().all(|f| f.rehome == Rehome::Idle));
    };

    // One flow: it recovered onto IPv4, there is no other to share it with.
    let (mut m, t0) = rehome_flows(1);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, registered(1, 3600));
    m.step(t0, reset(1));
    m.step(t0, connected(1, Transport::Tcp, V4));
    m.step(t0, registered(1, 3600));
    never_races_home(&mut m, t0);

    // Without Outbound: one plain registration, wherever it is.
    let (mut m, t0) = rehome_flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, registered_without_outbound(1));
    m.step(t0, reset(1));
    m.step(t0, connected(1, Transport::Tcp, V4));
    m.step(t0, registered_without_outbound(1));
    never_races_home(&mut m, t0);

    // Two flows on two families: flow 1 came back on IPv6 (a FIN), and
    // flow 2 still works on IPv4.
    let (mut m, t0) = rehome_flows(2);
    m.start();
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, connected(2, Transport::Tcp, V4));
    m.step(t0, registered(1, 3600));
    m.step(t0, registered(2, 3600));
    m.step(
        t0,
        Input::FlowLost {
            flow: 1,
            reason: "closed".into(),
            path_broken: false,
        },
    );
    m.step(t0, connected(1, Transport::Tcp, V6));
    m.step(t0, registered(1, 3600));
    never_races_home(&mut m, t0);

    // Off home but alone on its family (flow 2 is down): nothing due; it
    // becomes due once flow 2 is back on IPv4.
    let (mut m, _t0, due) = displaced(3600);
    m.step(due - secs(1), reset(2));
    assert_eq!(m.flows[0].rehome, Rehome::Idle);
    m.step(due, connected(2, Transport::Tcp, V4));
    m.step(due, registered(2, 3600));
    assert!(matches!(m.flows[0].rehome, Rehome::Due(_)));
}

/// Flow 1 displaced and stopped while its candidate's REGISTER was out.
fn stopped_mid_home_register() -> (Flows, Instant) {
    let (mut m, _t0, due) = home_register_out();
    m.step(due, Input::Stop);
    (m, due)
}

#[test]
fn stopping_a_refused_home_register_waits_for_the_candidates_unregistration() {
    let (mut m, due) = stopped_mid_home_register();
    // The REGISTER ahead of the unregistration is refused: the connection
    // stays, so the unregistration queued on it can still go.
    let out = m.step(due, home_refused());
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::CloseHome { .. } | Action::Close { .. })),
        "{out:?}"
    );
    m.step(due, Input::Unregistered { flow: 2 });
    assert!(!m.finished(), "flow 1's unregistrations are out");
    assert_eq!(
        m.step(due, Input::HomeUnregistered { flow: 1 }),
        vec![Action::CloseHome { flow: 1 }]
    );
    assert!(!m.finished(), "the working connection's is out");
    assert_eq!(
        m.step(due, Input::Unregistered { flow: 1 }),
        vec![
            event(1, EventKind::Unregistered, Some((Transport::Tcp, V4))),
            Action::Close { flow: 1 }
        ]
    );
    assert!(m.finished());

    // A candidate that dies is closed at once; the working connection
    // still waits for its own unregistration.
    let (mut m, due) = stopped_mid_home_register();
    let out = m.step(due, home_reset());
    assert_eq!(out, vec![Action::CloseHome { flow: 1 }]);
    m.step(due, Input::Unregistered { flow: 2 });
    assert!(!m.finished());
    m.step(due, Input::Unregistered { flow: 1 });
    assert!(m.finished());
}

#[test]
fn an_unanswered_home_register_refreshes_the_working_flow_at_once() {
    for (input, refresh) in [
        (
            Input::HomeRegisterFailed {
                flow: 1,
                reason: "no answer in 32 s".into(),
                path_broken: true,
            },
            true,
        ),
        (
            Input::HomeLost {
                flow: 1,
                reason: "the registrar closed the connection".into(),
                path_broken: false,
            },
            true,
        ),
        // A refusal bound nothing: the refresh keeps its time.
        (home_refused(), false),
    ] {
        let (mut m, _t0, due) = home_register_out();
        let out = m.step(due, input.clone());
        assert!(out.contains(&Action::CloseHome { flow: 1 }), "{out:?}");
        assert_eq!(
            out.contains(&Action::Register { flow: 1 }),
            refresh,
            "{input:?}: {out:?}"
        );
        if refresh {
            // Once: the next comes from its answer.
            let out = m.step(due + secs(1), Input::Timer);
            assert!(!out.contains(&Action::Register { flow: 1 }), "{out:?}");
            m.step(due + secs(1), registered(1, 3600));
        }
        assert!(m.registered().contains(&(1, Transport::Tcp, addr(V4))));
    }
}

#[test]
fn a_late_result_of_an_earlier_home_race_is_not_taken_for_the_current_one() {
    let (mut m, t0, due) = displaced(3600);
    m.step(due, Input::Timer);
    assert!(m.is_racing_home(1, 1));
    // Flow 1 fails while race 1 runs, recovers onto IPv4 again: displaced
    // again, and race 2 starts while race 1 is still out.
    m.step(due, reset(1));
    m.step(due, connected(1, Transport::Tcp, V4));
    m.step(due, registered(1, 3600));
    let due2 = match m.flows[0].rehome {
        Rehome::Due(at) => at,
        other => panic!("displaced again: {other:?}"),
    };
    let out = m.step(due2, Input::Timer);
    assert!(
        out.contains(&Action::RaceHome {
            flow: 1,
            family: Family::V6,
            attempt: 2
        }),
        "{out:?}"
    );
    // Race 1's failure does not count against race 2.
    let out = m.step(
        due2,
        Input::HomeConnectFailed {
            flow: 1,
            attempt: 1,
            reason: "late".into(),
        },
    );
    assert_eq!(out, vec![Action::WakeAt(t0 + secs(300))]);
    assert!(m.is_racing_home(1, 2));
    assert!(!m.is_racing_home(1, 1), "race 1's winner is closed");
    // Nor is race 1's winner taken for race 2's.
    let out = m.step(due2, home_connected());
    assert!(!out.contains(&Action::RegisterHome { flow: 1 }), "{out:?}");
    // Race 2's own winner is.
    let out = m.step(
        due2,
        Input::HomeConnected {
            flow: 1,
            attempt: 2,
            transport: Transport::Tcp,
            remote: addr(V6),
        },
    );
    assert_eq!(out[0], Action::RegisterHome { flow: 1 });
}

#[test]
fn a_refresh_without_outbound_drops_a_waiting_candidate_without_registering_it() {
    // The candidate connects while flow 1's refresh is out.
    let (mut m, t0, due) = displaced(20);
    m.step(t0 + secs(16), Input::Timer);
    m.step(due, Input::Timer);
    m.step(due, home_connected());
    // The refresh's 2xx lacks `Require: outbound` (the registrar changed):
    // the candidate is closed, and no REGISTER goes over it.
    let out = m.step(due, registered_without_outbound(1));
    assert!(out.contains(&Action::CloseHome { flow: 1 }), "{out:?}");
    assert!(!out.contains(&Action::RegisterHome { flow: 1 }), "{out:?}");
    assert_eq!(m.flows[0].rehome, Rehome::Idle);
}

#[test]
fn a_refresh_held_too_long_gives_up_the_candidate_before_the_registration_expires() {
    // Flow 1's registration there lasts 60 s: its refresh is due at 48 s.
    let (mut m, t0, due) = displaced(60);
    m.step(due, Input::Timer);
    m.step(due, home_connected());
    // The candidate's REGISTER is out and unanswered; the refresh falls due
    // (at 48 s after the 2xx at t0) and is held.
    let out = m.step(t0 + secs(48), Input::Timer);
    assert!(!out.contains(&Action::Register { flow: 1 }), "{out:?}");
    // Held up to 54 s (halfway to the expiry at 60 s), woken for then.
    assert_eq!(wake(&out), t0 + secs(54));
    let out = m.step(t0 + secs(54), Input::Timer);
    let retry_in = rehome_retry(&out);
    // A failed attempt: its back-off doubled.
    assert!(
        retry_in >= secs(60) && retry_in <= secs(120),
        "{retry_in:?}"
    );
    assert_eq!(out[0], Action::CloseHome { flow: 1 });
    assert!(out.contains(&Action::Register { flow: 1 }), "{out:?}");
    assert!(
        !out.iter().any(|a| matches!(
            a,
            Action::RecordHomePathFailure { .. } | Action::RecordPathFailure { .. }
        )),
        "nothing proves a path failed: {out:?}"
    );
    assert_eq!(m.flows[0].rehome, Rehome::Due(t0 + secs(54) + retry_in));
    // The refresh's 2xx keeps the flow registered where it is.
    m.step(t0 + secs(55), registered(1, 60));
    assert!(m.registered().contains(&(1, Transport::Tcp, addr(V4))));
}
