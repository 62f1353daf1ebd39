//! siprace's own CLI as a census row: `siprace dial --strategy S --probe`
//! toward `sip:<domain>` over one transport, timed by the same capture as
//! the third-party clients (so every row of the census is measured the same
//! way). `--probe` makes TCP dials end with an OPTIONS answer too.

use std::time::Duration;

use super::Invocation;
use crate::endpoint::Transport;
use crate::lab::topology::{find_siprace_binary, Lab};
use crate::race::strategy::Strategy;

/// The command line of `siprace dial` with `strategy` over `transport`
/// (none: UDP or TCP, in the NAPTR order), its own deadline at `bound`.
pub(super) fn invocation(
    lab: &Lab,
    strategy: Strategy,
    transport: Option<Transport>,
    domain: &str,
    bound: Duration,
) -> Result<Invocation, String> {
    let bin = find_siprace_binary().ok_or("the siprace binary was not found (set SIPRACE_BIN)")?;
    let mut args: Vec<String> = vec![
        "dial".into(),
        "--strategy".into(),
        strategy.as_str().into(),
        "--dns".into(),
        format!("[{}]:53", lab.addrs.dns_v6),
        "--transports".into(),
        transport.map(|t| t.as_str()).unwrap_or("udp,tcp").into(),
        "--probe".into(),
        "--deadline".into(),
        bound.as_millis().to_string(),
        "--json".into(),
    ];
    if transport == Some(Transport::Tls) {
        // Like every census TLS client, it does not verify the lab's
        // throwaway certificate (the ServerHello, which ends the timed dial,
        // comes before any verification anyway).
        args.extend(["--insecure".into(), format!("sips:{domain}")]);
    } else {
        args.push(format!("sip:{domain}"));
    }
    Ok(Invocation::new(bin.display().to_string(), args))
}
