//! linphonec (package linphone-cli: liblinphone 5.1 on belle-sip): one
//! REGISTER for `sip:bench@<domain>` to the proxy `sip:<domain>;transport=udp`,
//! located by belle-sip's own resolver (SRV, then A/AAAA).
//!
//! liblinphone 5.1 ignores the `[sip] sip_port` of a configuration file
//! (`ports` then says 0) and so opens no SIP listening point ("No listening
//! point matching"); linphonec's `ports sip N` command does open one. So the
//! client is driven through its standard input: a small Python wrapper
//! starts linphonec with a configuration that does not wait for a network
//! monitor, sends `ports sip 5070` and `register ...`, and ends linphonec
//! when the wrapper ends (the kernel kills it with the wrapper, which the
//! dial kills at its end). UDP only: the commands open no TCP listening point.

use std::path::Path;

use super::{python, write_file, Invocation};
use crate::endpoint::Transport;

/// The configuration: no network monitoring (the lab's namespaces would
/// leave linphonec waiting for "network up" forever), register regardless.
const RC: &str = "[sip]\nauto_net_state_mon=0\nregister_only_when_network_is_up=0\n\
                  [net]\nipv6_enabled=1\n";

/// The wrapper: linphonec dies with it (PR_SET_PDEATHSIG), its commands are
/// written at once (linphonec reads them once it is up), then it runs until
/// the bound.
const SCRIPT: &str = r#"import ctypes, signal, subprocess, sys, time

rc, domain, transport, bound = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
PR_SET_PDEATHSIG = 1

def die_with_wrapper():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

p = subprocess.Popen(["linphonec", "-c", rc], stdin=subprocess.PIPE, text=True,
                     preexec_fn=die_with_wrapper)
p.stdin.write("ports sip 5070\n")
p.stdin.flush()
time.sleep(0.5)
p.stdin.write("register sip:bench@%s sip:%s;transport=%s x\n" % (domain, domain, transport))
p.stdin.flush()
try:
    p.wait(timeout=bound)
except subprocess.TimeoutExpired:
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
