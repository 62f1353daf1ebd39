//! linphonec (package linphone-cli: liblinphone 5.1 on belle-sip): one
//! REGISTER for `sip:bench@<domain>` to the proxy `sip:<domain>;transport=udp`,
//! located by belle-sip's own resolver (SRV, then A/AAAA).
//!
//! liblinphone 5.1 ignores the `[sip] sip_port` of a configuration file
//! (`ports` then says 0) and so opens no SIP listening point ("No listening
//! point matching"); linphonec's `ports sip N` command does open one. So the
//! client is driven through its standard input: a small Python wrapper
//! starts linphonec with a configuration that does not wait for a network
//! monitor, sends `ports sip 5070`, waits (bounded) for linphonec to confirm
//! the port, sends `register ...`, and ends linphonec when the wrapper ends
//! (the kernel kills it with the wrapper, which the dial kills at its end). UDP only: the commands open no TCP listening point.

use std::path::Path;

use super::{python, write_file, Invocation};
use crate::endpoint::Transport;

/// The configuration: no network monitoring (the lab's namespaces would
/// leave linphonec waiting for "network up" forever), register regardless.
const RC: &str = "[sip]\nauto_net_state_mon=0\nregister_only_when_network_is_up=0\n\
                  [net]\nipv6_enabled=1\n";

/// The wrapper: linphonec dies with it (PR_SET_PDEATHSIG; if the wrapper
/// is already gone when that is set, no signal would come, so linphonec
/// exits at once). It sends `ports sip 5070` and then `ports`, and waits
/// (at most PORT_WAIT s) for linphonec's answer `sip port = 5070`: the
/// commands run in order, so the port is set before the REGISTER is asked
/// for (a REGISTER sent earlier goes out with no listening point). Then
/// `register ...`; linphonec's output is passed on to the wrapper's (the
/// dial's error shows its tail) until the bound.
const SCRIPT: &str = r#"import ctypes, os, select, signal, subprocess, sys, time

rc, domain, transport, bound = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
PR_SET_PDEATHSIG = 1
PORT_WAIT = 5.0
PORT_SET = b"sip port = 5070"
wrapper = os.getpid()
started = time.monotonic()

def die_with_wrapper():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != wrapper:
        os._exit(1)

p = subprocess.Popen(["linphonec", "-c", rc], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, preexec_fn=die_with_wrapper)

def pass_on(until, wanted=None):
    """Copies linphonec's output until `until` (monotonic s), its exit, or
    `wanted` seen; returns whether `wanted` was seen."""
    recent = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, min(0.2, until - time.monotonic())))
        if not ready:
            continue
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            return False
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        recent = (recent + chunk)[-4096:]
        if wanted is not None and wanted in recent:
            return True
    return False

try:
    p.stdin.write(b"ports sip 5070\nports\n")
    p.stdin.flush()
    port_wait = min(PORT_WAIT, bound)
    if not pass_on(started + port_wait, PORT_SET):
        sys.stderr.write("linphonec did not confirm the SIP port 5070 within %.2f s\n" % port_wait)
        sys.exit(1)
    p.stdin.write(("register sip:bench@%s sip:%s;transport=%s x\n" % (domain, domain, transport)).encode())
    p.stdin.flush()
    pass_on(started + bound)
finally:
    p.kill()
    p.wait()
"#;

/// The wrapper's command line toward `domain` over `transport`, giving up
/// after `self_bound` seconds; the wrapper and linphonec's configuration are
/// written into `dir`.
pub(super) fn invocation(
    transport: Transport,
    domain: &str,
    self_bound: String,
    dir: &Path,
) -> Result<Invocation, String> {
    let rc = write_file(dir, "linphonerc", RC)?;
    let script = write_file(dir, "linphonec.py", SCRIPT)?;
    Ok(Invocation::new(
        python::PROGRAM,
        vec![
            script.display().to_string(),
            rc.display().to_string(),
            domain.into(),
            transport.as_str().into(),
            self_bound,
        ],
    ))
}
