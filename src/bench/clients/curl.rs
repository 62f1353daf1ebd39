//! curl as a non-SIP Happy Eyeballs reference: `curl http://HOST:5060/`
//! over TCP to the SIP port. curl has no SRV, so HOST is the domain's most
//! preferred `_sip._tcp` SRV target (looked up before the dial, not timed),
//! which curl resolves with `getaddrinfo` and races with its own Happy
//! Eyeballs (200 ms by default). The dial ends when the TCP connection is up
//! (the SYN-ACK in the capture); what the SIP server makes of the HTTP
//! request does not matter.

use super::{sipp, Invocation};
use crate::endpoint::Transport;
use crate::lab::topology::Lab;

/// curl's command line toward the SRV target of `domain` over TCP, or
/// over TLS (`https://` to the `_sips._tcp` target's port, the certificate
/// not verified: `-k`), giving up after `self_bound` seconds.
pub(super) fn invocation(
    lab: &Lab,
    transport: Transport,
    domain: &str,
    self_bound: String,
) -> Invocation {
    let (host, port) = sipp::sipp_target(lab, domain, transport);
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-o".into(),
        "/dev/null".into(),
        "--max-time".into(),
        self_bound,
    ];
    if transport == Transport::Tls {
        args.extend(["-k".into(), format!("https://{host}:{port}/")]);
    } else {
        args.push(format!("http://{host}:{port}/"));
    }
    let mut inv = Invocation::new("curl", args);
    inv.connects = true;
    inv
}
