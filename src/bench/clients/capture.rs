//! The timing source of the client rows: a `tshark` capture on `eth0` of
//! the client namespace, its packets handed over a channel as they come
//! out, and marker datagrams that show how far the capture has got (it
//! shows packets with a lag of about half a second).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use super::packet::{parse_line, Packet, FIELDS};
use super::window::Window;
use super::{ceil_secs, epoch_ns, kill};
use crate::bench::priority::at_ordinary_priority;
use crate::lab::topology::{Lab, Role, HOST_IF};

/// Bound on the wait for the capture to show a marker sent after a dial. The
/// marker comes out ~0.5 s later on an idle machine; the wait ends then, so the
/// bound is generous for a loaded one.
pub(super) const SYNC: Duration = Duration::from_secs(15);
/// Bound on the capture's start.
const CAPTURE_START: Duration = Duration::from_secs(15);

/// A running `tshark` in the client namespace, its packets on a channel.
pub(super) struct Capture {
    child: Child,
    pub(super) rx: Receiver<Packet>,
    /// A UDP socket in the client namespace for marker datagrams.
    marker: std::net::UdpSocket,
    pub(super) marker_port: u16,
    marker_to: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Capture {
    pub(super) fn start(lab: &Lab, dir: &Path, max: Duration) -> Result<Capture, String> {
        let marker = lab
            .in_ns(Role::Client, || std::net::UdpSocket::bind("0.0.0.0:0"))
            .map_err(|e| format!("client namespace: {e}"))?
            .map_err(|e| format!("marker socket: {e}"))?;
        let marker_port = marker
            .local_addr()
            .map_err(|e| format!("marker socket: {e}"))?
            .port();
        let marker_to = SocketAddr::new(lab.addrs.router_client_v4.into(), 9);
        let mut cmd = lab.command(Role::Client, "tshark");
        cmd.args(["-i", HOST_IF, "-l", "-n", "-q", "-p"])
            .arg("--temp-dir")
            .arg(dir)
            .args(["-a", &format!("duration:{}", ceil_secs(max))])
            .args(["-f", "udp or tcp"])
            .args(["--enable-heuristic", "sip_udp"])
            .args(["--enable-heuristic", "sip_tcp"])
            // SIP over TLS on its port, so TLS records are dissected.
            .args(["-d", "tcp.port==5061,tls"])
            .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
        for f in FIELDS {
            cmd.args(["-e", f]);
        }
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The kernel stamps the packets, so tshark's own scheduling does not show in
        // the figures: it need not share a benchmark run's real-time priority.
        at_ordinary_priority(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("starting tshark: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let err_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_buf = err_text.clone();
        let t_err = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            // Until EOF (tshark's exit); each line is bounded by tshark's output.
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.contains("Capturing on") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut b) = err_buf.lock() {
                    if b.len() < 16_384 {
                        b.push_str(&line);
                    }
                }
                line.clear();
            }
        });
        let t_out = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let mut open = true;
            // Until EOF (tshark's exit). Once nobody listens, the rest is
            // still read, so tshark never blocks on a full pipe.
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if open {
                    if let Some(p) = parse_line(line.trim_end_matches(['\n', '\r'])) {
                        open = tx.send(p).is_ok();
                    }
                }
                line.clear();
            }
        });
        let mut cap = Capture {
            child,
            rx,
            marker,
            marker_port,
            marker_to,
            stderr: err_text,
            threads: vec![t_err, t_out],
        };
        // "Capturing on" comes before the pipeline delivers packets: wait
        // for a marker to come out too.
        let started = Instant::now();
        let ready = ready_rx.recv_timeout(CAPTURE_START).is_ok()
            && cap.wait_marker(CAPTURE_START.saturating_sub(started.elapsed()), |_| {});
        if ready {
            return Ok(cap);
        }
        let text = cap.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        cap.stop_inner();
        Err(format!(
            "tshark did not show packets within {} s: {}",
            CAPTURE_START.as_secs(),
            text.trim()
        ))
    }

    /// Sends marker datagrams from the client namespace (to the discard
    /// port of the client's router), one every 100 ms, passing every packet
    /// read to `each`, until a marker comes out of the capture (true) or
    /// `within` has passed (false). Earlier markers are dropped. The capture keeps the order of packets,
    /// so everything sent before the marker has been read by then.
    fn wait_marker(&self, within: Duration, mut each: impl FnMut(Packet)) -> bool {
        let end = Instant::now() + within;
        // Markers of earlier calls may still be on their way: only a marker
        // sent by this call counts.
        let since = epoch_ns(SystemTime::now());
        // Bounded by `within`.
        while Instant::now() < end {
            let _ = self
                .marker
                .send_to(b"siprace capture marker", self.marker_to);
            let until = (Instant::now() + Duration::from_millis(100)).min(end);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match self.rx.recv_timeout(left) {
                    Ok(p) if p.sport == self.marker_port && p.dport == 9 && p.ts_ns >= since => {
                        return true
                    }
                    Ok(p) => each(p),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        }
        false
    }

    /// Reads packets into `window` until a marker sent now comes out.
    pub(super) fn sync(&self, window: &mut Window) -> bool {
        self.wait_marker(SYNC, |p| window.add(p))
    }

    /// Discards what is queued (earlier dials' packets).
    pub(super) fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    pub(super) fn stop(mut self) {
        self.stop_inner();
    }

    /// SIGTERM (tshark stops its dumpcap and removes its temporary file),
    /// then SIGKILL after 3 s; joins the reader threads.
    fn stop_inner(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own child (`ip netns exec`
            // execs tshark, so it is tshark's PID), which is not yet reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        kill(&mut self.child);
        // The readers end at EOF of the pipes, i.e. once tshark is gone.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_inner();
        }
    }
}
