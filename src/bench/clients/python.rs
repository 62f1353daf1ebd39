//! Python asyncio as a non-SIP Happy Eyeballs reference:
//! `asyncio.open_connection(HOST, 5060)` over TCP to the SIP port, with
//! `happy_eyeballs_delay=0.25` (RFC 8305's 250 ms) or with its defaults (no
//! Happy Eyeballs: one address after the other, each until the kernel's
//! connect timeout). HOST is the domain's most preferred `_sip._tcp` SRV
//! target (looked up before the dial, not timed). The dial ends when the
//! TCP connection is up (the SYN-ACK in the capture).

use std::path::Path;

use super::{sipp, write_file, Invocation};
use crate::endpoint::Transport;
use crate::lab::topology::Lab;

/// Debian's interpreter (package python3), not whatever is first in PATH.
pub(super) const PROGRAM: &str = "/usr/bin/python3";

/// The script: connect once, print the peer, close.
const SCRIPT: &str = r#"import asyncio, sys

async def main(host, port, delay):
    kw = {} if delay == "default" else {"happy_eyeballs_delay": float(delay)}
    reader, writer = await asyncio.open_connection(host, int(port), **kw)
    print("connected to", writer.get_extra_info("peername"))
    writer.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"#;

/// The interpreter's command line toward the SRV target of `domain`, with
/// `happy_eyeballs_delay` in seconds (`None`: asyncio's default); the script
/// is written into `dir`.
pub(super) fn invocation(
    lab: &Lab,
    domain: &str,
    happy_eyeballs_delay: Option<f64>,
    dir: &Path,
) -> Result<Invocation, String> {
    let script = write_file(dir, "connect.py", SCRIPT)?;
    let (host, port) = sipp::sipp_target(lab, domain, Transport::Tcp);
    let delay = happy_eyeballs_delay
        .map(|d| d.to_string())
        .unwrap_or_else(|| "default".into());
    let mut inv = Invocation::new(
        PROGRAM,
        vec![script.display().to_string(), host, port.to_string(), delay],
    );
    inv.connects = true;
    Ok(inv)
}
