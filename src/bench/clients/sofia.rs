//! sofia-sip's `sip-options` (package sofia-sip-bin): one OPTIONS to
//! `sip:<domain>;transport=T`, located by sofia-sip's own RFC 3263
//! resolver (sresolv: NAPTR, SRV, AAAA/A). It exits on the final response,
//! or after its transaction timeout.

use super::Invocation;
use crate::endpoint::Transport;

/// `sip-options`'s command line toward `domain` over `transport` (no files).
pub(super) fn invocation(transport: Transport, domain: &str) -> Invocation {
    Invocation::new(
        "sip-options",
        vec![format!("sip:{domain};transport={transport}")],
    )
}
