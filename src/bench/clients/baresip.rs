//! baresip: one REGISTER for `<sip:bench@<domain>;transport=T>`, located
//! by libre's RFC 3263 resolver (SRV of the given transport, then A/AAAA or
//! the SRV additionals). It runs with a configuration of its own that loads
//! no audio or video module; the process is killed on the first response.

use std::path::Path;

use super::{write_file, Invocation};
use crate::endpoint::Transport;

/// baresip's command line toward `domain` over `transport` (none: libre
/// picks it, by NAPTR), exiting after `self_bound` seconds; its
/// configuration directory is written into `dir`.
pub(super) fn invocation(
    transport: Option<Transport>,
    domain: &str,
    self_bound: String,
    dir: &Path,
) -> Result<Invocation, String> {
    let conf = dir.join("baresip");
    std::fs::create_dir_all(&conf).map_err(|e| format!("creating {}: {e}", conf.display()))?;
    // No audio/video modules: only what a REGISTER needs.
    let config = "poll_method\t\tepoll\n\
                  module_path\t\t/usr/lib/baresip/modules\n\
                  module_app\t\taccount.so\n\
                  sip_trans_def\t\tudp\n\
                  sip_verify_server\tno\n";
    write_file(dir, "baresip/config", config)?;
    let aor = match transport {
        Some(t) => format!("sip:bench@{domain};transport={t}"),
        None => format!("sip:bench@{domain}"),
    };
    write_file(dir, "baresip/accounts", &format!("<{aor}>;regint=3600\n"))?;
    write_file(dir, "baresip/contacts", "")?;
    Ok(Invocation::new(
        "baresip",
        vec![
            "-f".into(),
            conf.display().to_string(),
            "-t".into(),
            self_bound,
        ],
    ))
}
