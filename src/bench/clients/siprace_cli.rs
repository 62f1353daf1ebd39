//! siprace's own CLI as a census row: `siprace dial --strategy S --probe`
//! toward `sip:<domain>` over one transport, timed by the same capture as
//! the third-party clients (so every row of the census is measured the same
//! way). `--probe` makes TCP dials end with an OPTIONS answer too.

use std::time::Duration;

use super::Invocation;
use crate::endpoint::Transport;
use crate::lab::topology::{find_siprace_binary, Lab};
use crate::race::strategy::Strategy;

/// The command line of `siprace dial` with `strategy` over `transport`,
/// its own deadline at `bound`.
pub(super) fn invocation(
    lab: &Lab,
    strategy: Strategy,
    transport: Transport,
    domain: &str,
    bound: Duration,
) -> Result<Invocation, String> {
    let bin = find_siprace_binary().ok_or("the siprace binary was not found (set SIPRACE_BIN)")?;
    Ok(Invocation::new(
        bin.display().to_string(),
        vec![
            "dial".into(),
            "--strategy".into(),
            strategy.as_str().into(),
            "--dns".into(),
            format!("[{}]:53", lab.addrs.dns_v6),
            "--transports".into(),
            transport.as_str().into(),
            "--probe".into(),
            "--deadline".into(),
            bound.as_millis().to_string(),
            "--json".into(),
            format!("sip:{domain}"),
        ],
    ))
}
