//! Driving the sans-IO race engine (`siprace::race`) with your own I/O and
//! your own clock: here a simulated network on a fake clock, so the whole
//! race runs in microseconds and always the same way.
//!
//! The simulated server has two addresses per family. Its first IPv6
//! address is a black hole (nothing ever comes back), its first IPv4
//! address refuses at once, and the others connect 40 ms after an attempt
//! starts: the engine starts IPv6, falls back to IPv4 after the attempt
//! delay, and starts the next address the moment the refusal arrives. The
//! engine asks for attempts, cancellations and wake-ups; this program
//! performs them on its fake network and feeds back what happened.
//!
//! Run it with `cargo run --example race_engine`. It needs only the
//! library (`default-features = false` is enough).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siprace::endpoint::TargetSpec;
use siprace::race::history::HistoryView;
use siprace::race::{Action, AttemptId, Input, Outcome, Race, RaceConfig};
use siprace::{AttemptError, ErrorClass, Family, Transport};

const HOST: &str = "sip.example.test";

/// What the fake network does with a connection attempt to `addr`: the
/// delay after which the attempt ends, and how (None: it never ends).
fn network(addr: SocketAddr) -> Option<(Duration, Result<(), AttemptError>)> {
    match addr.ip().to_string().as_str() {
        "2001:db8::1" => None, // black hole
        "192.0.2.10" => Some((
            Duration::from_millis(3),
            Err(AttemptError::new(ErrorClass::Refused, "connection refused")),
        )),
        _ => Some((Duration::from_millis(40), Ok(()))),
    }
}

fn main() {
    // The fake clock: a start instant plus a simulated offset. The engine
    // only ever compares the instants it is given, so any base will do.
    let t0 = Instant::now();
    let at = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;

    let config = RaceConfig::default();
    let mut race = Race::new(
        config,
        HistoryView::default(),
        &[Family::V6, Family::V4],
        t0,
    );

    // Events the fake network will deliver, by the time they happen
    // (the counter keeps two events at one instant in order).
    let mut pending: BTreeMap<(Instant, u64), Input> = BTreeMap::new();
    let mut seq = 0u64;
    let mut wake_at: Option<Instant> = None;

    // Location's results, as the dial machine would hand them over: one
    // UDP service location, then the AAAA answer, 20 ms later the A answer.
    let host: Arc<str> = Arc::from(HOST);
    let answers = [
        (0, Family::V6, vec!["2001:db8::1", "2001:db8::2"]),
        (20, Family::V4, vec!["192.0.2.10", "192.0.2.11"]),
    ];
    let mut inputs = vec![(
        t0,
        Input::Targets(vec![TargetSpec {
            host: host.clone(),
            port: 5060,
            transport: Transport::Udp,
            rank: 0,
        }]),
    )];
    for (ms, family, addrs) in answers {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let input = Input::Addresses {
            host: host.clone(),
            family,
            addrs,
        };
        inputs.push((t0 + Duration::from_millis(ms), input));
    }
    for (when, input) in inputs {
        pending.insert((when, seq), input);
        seq += 1;
    }
    pending.insert((t0 + Duration::from_millis(21), seq), Input::ResolutionDone);
    seq += 1;

    // The driver loop: take the earliest of the next event and the
    // engine's wake-up, advance the clock to it, step the engine, perform
    // its actions. Bounded: a race always ends by its deadline.
    for _ in 0..1000 {
        let next_event = pending.keys().next().copied();
        let (now, input) = match (next_event, wake_at) {
            (Some((t, _)), Some(w)) if w < t => (w, Input::Timer),
            (Some(key), _) => {
                let input = pending.remove(&key).expect("the key was just read");
                (key.0, input)
            }
            (None, Some(w)) => (w, Input::Timer),
            (None, None) => {
                println!("nothing left to happen");
                return;
            }
        };
        if matches!(input, Input::Timer) {
            wake_at = None;
        }
        for action in race.step(now, input) {
            match action {
                Action::Start { id, endpoint } => {
                    println!(
                        "{:7.1} ms  start #{} {} {}",
                        at(now),
                        id.0,
                        endpoint.transport,
                        endpoint.addr
                    );
                    if let Some((after, result)) = network(endpoint.addr) {
                        let input = match result {
                            Ok(()) => Input::Succeeded(id),
                            Err(e) => Input::Failed(id, e),
                        };
                        pending.insert((now + after, seq), input);
                        seq += 1;
                    }
                }
                Action::Cancel { id, reason } => {
                    println!("{:7.1} ms  cancel #{} ({})", at(now), id.0, reason.as_str());
                    // A real driver closes the socket here; the fake
                    // network forgets the attempt's pending result.
                    pending.retain(|_, input| !ends(input, id));
                }
                Action::WakeAt(t) => wake_at = Some(t),
                Action::Done(Outcome::Won { id, endpoint }) => {
                    println!("{:7.1} ms  winner #{} {}", at(now), id.0, endpoint.addr);
                    return;
                }
                Action::Done(Outcome::Failed(why)) => {
                    println!("{:7.1} ms  no winner: {why:?}", at(now));
                    return;
                }
            }
        }
    }
    println!("stopped after 1000 steps");
}

/// Whether `input` is the end of attempt `id`.
fn ends(input: &Input, id: AttemptId) -> bool {
    matches!(input, Input::Succeeded(i) | Input::Failed(i, _) if *i == id)
}
