//! sofia-sip's `sip-options` (package sofia-sip-bin): one OPTIONS to
//! `sip:<domain>;transport=T`, located by sofia-sip's own RFC 3263
//! resolver (sresolv: NAPTR, SRV, AAAA/A). It exits on the final response,
//! or after its transaction timeout.

use super::Invocation;
use crate::endpoint::Transport;

/// `sip-options`'s command line toward `domain` over `transport` (no files);
/// with none, sofia-sip picks the transport itself (NAPTR).
pub(super) fn invocation(transport: Option<Transport>, domain: &str) -> Invocation {
    let uri = match transport {
        Some(t) => format!("sip:{domain};transport={t}"),
        None => format!("sip:{domain}"),
    };
    Invocation::new("sip-options", vec![uri])
}
