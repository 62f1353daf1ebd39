//! SIPp as a UAC: one OPTIONS (`lab/sipp/options.xml`, expecting 200),
//! `-m 1 -r 1000` so that the call goes out at once. SIPp has no SRV
//! support, so it is given the lowest-priority SRV target of the domain
//! (looked up here before the timed dial) and resolves that host itself
//! with `getaddrinfo`, using the first result only.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{write_file, Invocation};
use crate::endpoint::Transport;
use crate::lab::topology::{Lab, Role};

/// The SIPp UAC scenario (`lab/sipp/options.xml`): one OPTIONS, expects 200.
const SIPP_OPTIONS_XML: &str = include_str!("../../../lab/sipp/options.xml");

/// SIPp's command line toward `domain` over `transport`, giving up after
/// `self_bound` seconds; its scenario file is written into `dir`.
pub(super) fn invocation(
    lab: &Lab,
    transport: Transport,
    domain: &str,
    self_bound: String,
    dir: &Path,
) -> Result<Invocation, String> {
    let (host, port) = sipp_target(lab, domain, transport);
    let t = match transport {
        Transport::Tcp => "t1",
        Transport::Tls => "l1",
        _ => "u1",
    };
    options_invocation(dir, t, None, self_bound, &format!("{host}:{port}"))
}

/// SIPp sending the one OPTIONS of `lab/sipp/options.xml` (written into
/// `dir`) to `target` (HOST:PORT) over `t` (`u1` or `t1`), from `local_ip`
/// if given, giving up after `self_bound` seconds.
pub(super) fn options_invocation(
    dir: &Path,
    t: &str,
    local_ip: Option<&str>,
    self_bound: String,
    target: &str,
) -> Result<Invocation, String> {
    let xml = write_file(dir, "options.xml", SIPP_OPTIONS_XML)?;
    let mut args: Vec<String> = vec![
        "-sf".into(),
        xml.display().to_string(),
        "-m".into(),
        "1".into(),
        "-r".into(),
        "1000".into(),
        "-t".into(),
        t.into(),
    ];
    if let Some(ip) = local_ip {
        args.extend(["-i".into(), ip.into()]);
    }
    args.extend([
        "-nostdin".into(),
        "-timeout".into(),
        self_bound,
        target.into(),
    ]);
    Ok(Invocation::new("sipp", args))
}

/// SIPp cannot do SRV: the host and port of the lowest-priority SRV target
/// of the domain for `transport`, else the domain itself on 5060. Looked up
/// from the client namespace through the lab DNS, before any timed dial.
pub(super) fn sipp_target(lab: &Lab, domain: &str, transport: Transport) -> (String, u16) {
    use crate::dns::build_resolver;
    use crate::locate::LocateConfig;
    use hickory_resolver::proto::rr::{RData, RecordType};

    let fallback = (domain.to_string(), transport.default_port());
    let dns = SocketAddr::new(lab.addrs.dns_v6.into(), 53);
    let name = format!("{}.", crate::locate::select::srv_name(transport, domain));
    let found = lab.in_ns(Role::Client, move || -> Option<(String, u16)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let cfg = LocateConfig {
                dns_server: Some(dns),
                ..LocateConfig::default()
            };
            let resolver = build_resolver(&cfg).ok()?;
            let lookup = tokio::time::timeout(
                Duration::from_secs(3),
                resolver.lookup(name.as_str(), RecordType::SRV),
            )
            .await
            .ok()?
            .ok()?;
            lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some((
                        s.priority,
                        crate::locate::select::normalize_name(&s.target.to_ascii()),
                        s.port,
                    )),
                    _ => None,
                })
                .filter(|(_, t, _)| t != ".")
                .min_by_key(|(p, _, _)| *p)
                .map(|(_, t, port)| (t, port))
        })
    });
    found.ok().flatten().unwrap_or(fallback)
}
