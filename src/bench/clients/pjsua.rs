//! PJSIP (pjproject 2.15, through its pjsua2 Python binding, PyPI package
//! `pjsua2-python`): one REGISTER for `sip:bench@<domain>` to the registrar
//! `sip:<domain>;transport=T`, with pjsua's own DNS resolver pointed at the
//! lab DNS (as `pjsua --nameserver` does; without a nameserver pjsua does no
//! SRV lookups at all). It has a UDP or TCP transport of each family (pjsua
//! needs one per family to reach both). The binding lives in a virtual
//! environment of its own, [`VENV_PYTHON`]: `scripts/census-clients.sh`
//! makes it.

use std::path::Path;

use super::{write_file, Invocation};
use crate::endpoint::Transport;
use crate::lab::topology::Lab;

/// The interpreter of the virtual environment that has pjsua2.
pub(super) const VENV_PYTHON: &str = "/opt/siprace-pjsua2/bin/python3";

/// The script: register once, handling pjsua's events on this thread until
/// the registration has a final status or the bound has passed.
const SCRIPT: &str = r#"import sys, time
import pjsua2 as pj

domain, transport, dns, bound = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True
cfg.uaConfig.nameserver.append(dns)
cfg.logConfig.level = 3
cfg.logConfig.consoleLevel = 3
ep.libInit(cfg)
udp = (pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_UDP6)
tcp = (pj.PJSIP_TRANSPORT_TCP, pj.PJSIP_TRANSPORT_TCP6)
tls = (pj.PJSIP_TRANSPORT_TLS, pj.PJSIP_TRANSPORT_TLS6)
kinds = {"udp": udp, "tcp": tcp, "tls": tls, "any": udp + tcp}[transport]
for kind in kinds:
    tc = pj.TransportConfig()
    tc.port = 0
    ep.transportCreate(kind, tc)
ep.libStart()
ep.audDevManager().setNullDev()
acc_cfg = pj.AccountConfig()
acc_cfg.idUri = "sip:bench@" + domain
if transport == "any":
    acc_cfg.regConfig.registrarUri = "sip:" + domain
else:
    acc_cfg.regConfig.registrarUri = "sip:%s;transport=%s" % (domain, transport)
acc_cfg.natConfig.sipOutboundUse = 0
acc_cfg.natConfig.contactRewriteUse = 0
acc_cfg.natConfig.viaRewriteUse = 0
acc = pj.Account()
acc.create(acc_cfg)
end = time.time() + bound
while time.time() < end:
    ep.libHandleEvents(20)
    info = acc.getInfo()
    if info.regStatus >= 200:
        print("REGISTER answered:", info.regStatus, info.regStatusText)
        break
"#;

/// The command line toward `domain` over `transport` (none: a transport of
/// each kind and the registrar without one, so pjsip picks by NAPTR), giving up after
/// `self_bound` seconds; the script is written into `dir`. pjsip's resolver
/// is given the lab DNS's IPv4 address (it did not reach it over IPv6).
pub(super) fn invocation(
    lab: &Lab,
    transport: Option<Transport>,
    domain: &str,
    self_bound: String,
    dir: &Path,
) -> Result<Invocation, String> {
    let script = write_file(dir, "register.py", SCRIPT)?;
    Ok(Invocation::new(
        VENV_PYTHON,
        vec![
            script.display().to_string(),
            domain.into(),
            transport.map(|t| t.as_str()).unwrap_or("any").into(),
            lab.addrs.dns_v4.to_string(),
            self_bound,
        ],
    ))
}
