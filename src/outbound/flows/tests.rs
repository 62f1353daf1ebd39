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
    let outbound = matches!(kind, EventKind::Registered | EventKind::Recovered).then_some(true);
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
    // A FIN (the registrar restarted): re-raced at once, history not told.
    let out = m.step(
        t0,
        Input::FlowLost {
            flow: 1,
            reason: "closed".into(),
            path_broken: false,
        },
    );
    assert_eq!(out[0], Action::Close { flow: 1 });
    assert!(
        !out.contains(&Action::RecordPathFailure { flow: 1 }),
        "{out:?}"
    );
    assert!(
        out.contains(&Action::Connect {
            flow: 1,
            family: FamilyChoice::Any
        }),
        "{out:?}"
    );
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
