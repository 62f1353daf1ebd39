//! sipsak: one OPTIONS (its default "shoot" mode) to `sip:bench@<domain>`.
//! It does its own SRV lookup (c-ares) and then `gethostbyname`, so it only
//! ever reaches IPv4.

use super::Invocation;
use crate::endpoint::Transport;

/// sipsak's command line toward `domain` over `transport` (it needs no files).
pub(super) fn invocation(transport: Transport, domain: &str) -> Invocation {
    Invocation::new(
        "sipsak",
        vec![
            "-vv".into(),
            "-s".into(),
            format!("sip:bench@{domain}"),
            "--transport".into(),
            transport.as_str().into(),
        ],
    )
}
