//! One dial of a third-party client: start it, read the capture until its
//! first SIP response (or its exit, or the bound), kill it, and turn the
//! packets of its time window into a [`DialRecord`].

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime};

use super::capture::{Capture, SYNC};
use super::window::Window;
use super::{bound_text, epoch_ns, kill, Client, Invocation};
use crate::bench::records::DialRecord;
use crate::endpoint::{Family, Transport};
use crate::lab::topology::{Lab, Role};

/// What the capture showed of one dial beyond its [`DialRecord`]: the
/// census reads the client's DNS and address behaviour off it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The DNS queries the client sent (record type, ms after its first
    /// packet), in order, up to the response (all of them without one).
    pub queries: Vec<(String, f64)>,
    /// The server addresses it sent SIP (or a TCP SYN) to, each with when
    /// it was first sent to (ms after its first packet), in order.
    pub destinations: Vec<(IpAddr, f64)>,
    /// When the response came, ms after the client's first packet.
    pub response_ms: Option<f64>,
    /// When it first sent over TCP (a SYN) and over UDP (SIP), DNS aside,
    /// before the response (or at all): ms after its first packet.
    pub first_tcp_ms: Option<f64>,
    pub first_udp_ms: Option<f64>,
    /// It exited on its own without a response: after this many ms from
    /// its start (the process's, as it may have sent nothing).
    pub gave_up_ms: Option<f64>,
}

/// One dial: start the client, wait for its first SIP response in the
/// capture (or its exit, or the bound), kill it, and read its window; also
/// returns what the capture showed ([`Observed`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn dial_observed(
    lab: &Lab,
    client: Client,
    transport: Transport,
    inv: &Invocation,
    capture: &Capture,
    client_addrs: &[IpAddr],
    bound: Duration,
    dir: &Path,
) -> (DialRecord, Observed) {
    let failed = |error: String| (DialRecord::failed(bound, error), Observed::default());
    // Whatever the capture still holds belongs to earlier dials.
    capture.drain();
    let out_path = dir.join("client.out");
    let out = match std::fs::File::create(&out_path) {
        Ok(f) => f,
        Err(e) => return failed(format!("creating {}: {e}", out_path.display())),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return failed(format!("client output: {e}")),
    };
    // Started (and ready) before the window opens: its start-up is not timed.
    let _background = match inv.background.as_ref().map(|b| b.start(lab)) {
        Some(Err(e)) => return failed(e),
        Some(Ok(bg)) => Some(bg),
        None => None,
    };
    let window_start = epoch_ns(SystemTime::now());
    let started = Instant::now();
    let mut cmd: Command = lab.command(Role::Client, &inv.program);
    cmd.args(&inv.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("starting {}: {e}", inv.program)),
    };

    let mut window = Window::new(window_start, client_addrs, capture.marker_port)
        .counting_connects(inv.connects)
        .counting_server_hellos(transport == Transport::Tls)
        .for_domain(&inv.domain);
    let deadline = started + bound;
    let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
    // Bounded: every iteration waits at most 20 ms, and the loop ends at the
    // bound at the latest.
    while window.response().is_none() && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some((status, Instant::now()));
            break;
        }
        match capture.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(p) => window.add(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                kill(&mut child);
                return failed("the capture (tshark) stopped".into());
            }
        }
    }
    // At the bound, or once answered: it has done its part.
    kill(&mut child);
    // The capture shows packets with a lag (about 0.5 s): read on until a
    // marker sent now comes out, so the window holds all the dial's packets.
    if window.response().is_none() && !capture.sync(&mut window) {
        return failed(format!(
            "the capture (tshark) did not show a marker packet within {} s",
            SYNC.as_secs()
        ));
    }

    let bound_ns = window_start + bound.as_nanos() as u64;
    let first = window.first_sent();
    let response = window.response().filter(|r| r.ts_ns <= bound_ns).cloned();
    let attempts = window.sip_destinations(response.as_ref().map(|r| r.ts_ns));
    let dns_ms = window.dns_ms(first.map(|f| f.ts_ns), response.as_ref().map(|r| r.ts_ns));
    let until = response.as_ref().map(|r| r.ts_ns);
    let observed = Observed {
        queries: first
            .map(|f| window.queries(f.ts_ns, until))
            .unwrap_or_default(),
        destinations: first
            .map(|f| window.timed_destinations(f.ts_ns, until))
            .unwrap_or_default(),
        first_tcp_ms: first.and_then(|f| window.first_send_ms(true, f.ts_ns, until)),
        first_udp_ms: first.and_then(|f| window.first_send_ms(false, f.ts_ns, until)),
        response_ms: match (first, &response) {
            (Some(f), Some(r)) => Some(r.ts_ns.saturating_sub(f.ts_ns) as f64 / 1e6),
            _ => None,
        },
        gave_up_ms: match exited {
            Some((_, at)) if response.is_none() && at < deadline => {
                Some((at - started).as_secs_f64() * 1e3)
            }
            _ => None,
        },
    };
    let record = match (first, response) {
        (Some(first), Some(resp)) => DialRecord {
            ok: true,
            latency_us: (resp.ts_ns.saturating_sub(first.ts_ns) / 1000).max(1),
            family: Some(Family::of(&resp.src)),
            transport: Some(match transport {
                Transport::Tls => Transport::Tls,
                _ if resp.tcp => Transport::Tcp,
                _ => transport,
            }),
            attempts: attempts.len(),
            abandoned: attempts.len().saturating_sub(1),
            dns_ms,
            error: None,
            reused: false,
        },
        (first, _) => {
            let mut error = match exited {
                Some((status, at)) if at < deadline => format!(
                    "{} exited ({status}) after {:.0} ms without a SIP response: {}",
                    client.program(),
                    (at - started).as_secs_f64() * 1e3,
                    tail(&out_path, 3)
                ),
                _ => format!("no response within {}", bound_text(bound)),
            };
            if first.is_none() {
                error += " (it sent no packet)";
            } else if !attempts.is_empty() {
                let to: Vec<String> = attempts.iter().map(|a| a.to_string()).collect();
                error += &format!(" (SIP sent to {})", to.join(", "));
            } else {
                // It sent DNS only, as far as the capture shows: say what
                // else the capture held, so that a client that claims an
                // answer the capture did not see can be told apart.
                error += &format!(" ({})", window.non_dns_summary());
            }
            DialRecord {
                ok: false,
                latency_us: bound.as_micros() as u64,
                family: None,
                transport: None,
                attempts: attempts.len(),
                abandoned: attempts.len(),
                dns_ms,
                error: Some(error),
                reused: false,
            }
        }
    };
    (record, observed)
}

/// The last `n` non-empty lines of a file, on one line.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    let t = lines[from..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}
