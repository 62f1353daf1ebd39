//! A captured packet as the timing needs it: the fields `tshark` prints
//! (one tab-separated line per packet) and how they are read.

use std::net::IpAddr;

/// One captured packet (the fields the timing needs).
#[derive(Debug, Clone)]
pub(super) struct Packet {
    pub(super) ts_ns: u64,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) tcp: bool,
    /// TCP RST (a kernel's answer, never the client's first packet).
    pub(super) rst: bool,
    /// DNS: (is a response, query type).
    pub(super) dns: Option<(bool, u16)>,
    /// DNS: the (first) query name, lower case, without the trailing dot.
    pub(super) dns_name: Option<String>,
    /// A SIP response's status code.
    pub(super) status: Option<u16>,
    /// TCP SYN and ACK both set: a server accepting a connection.
    pub(super) syn_ack: bool,
    /// A TLS ServerHello (handshake type 2; tshark dissects the record
    /// headers without keys): the server's first record of a handshake.
    pub(super) tls_server_hello: bool,
}

/// The `-e` fields, in the order [`parse_line`] reads them.
pub(super) const FIELDS: [&str; 18] = [
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags.reset",
    "dns.flags.response",
    "dns.qry.type",
    "sip.Status-Code",
    "sip.Method",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "tls.handshake.type",
    "dns.qry.name",
];

fn flag(s: &str) -> bool {
    matches!(s, "1" | "True" | "true")
}

/// "1795814137.408458604" → nanoseconds since the epoch.
fn parse_epoch(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let frac: u64 = digits.parse().ok()?;
    Some(secs * 1_000_000_000 + frac)
}

pub(super) fn parse_line(line: &str) -> Option<Packet> {
    let f: Vec<&str> = line.split('\t').collect();
    // The last fields are often empty (and may be cut off): up to the SIP
    // status code they must be there.
    if f.len() < 13 {
        return None;
    }
    let get = |i: usize| f.get(i).copied().unwrap_or("").trim();
    let ts_ns = parse_epoch(get(0))?;
    let ip = |a: &str, b: &str| -> Option<IpAddr> {
        if !a.is_empty() {
            a.parse().ok()
        } else {
            b.parse().ok()
        }
    };
    let src = ip(get(1), get(2))?;
    let dst = ip(get(3), get(4))?;
    let tcp = get(5).is_empty() && !get(7).is_empty();
    let (sport, dport) = if tcp {
        (get(7).parse().ok()?, get(8).parse().ok()?)
    } else {
        (get(5).parse().ok()?, get(6).parse().ok()?)
    };
    let dns = (sport == 53 || dport == 53).then(|| {
        let resp = flag(get(10)) || sport == 53;
        // "1" or "A"-style values: keep numbers only (0 when absent).
        (resp, get(11).parse().unwrap_or(0))
    });
    let status = get(12).parse().ok();
    let dns_name = dns.is_some().then(|| get(17)).and_then(|n| {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        (!n.is_empty()).then_some(n)
    });
    Some(Packet {
        ts_ns,
        src,
        dst,
        sport,
        dport,
        tcp,
        rst: flag(get(9)),
        dns,
        dns_name,
        status,
        syn_ack: tcp && flag(get(14)) && flag(get(15)),
        // The first handshake message of the segment (occurrence=f): a
        // ServerHello leads the server's first flight.
        tls_server_hello: tcp && get(16) == "2",
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A capture line with these first fields (the rest empty).
    pub(crate) fn line(fields: &[&str]) -> String {
        let mut v: Vec<&str> = fields.to_vec();
        v.resize(FIELDS.len(), "");
        v.join("\t")
    }

    #[test]
    fn parses_epoch_to_nanoseconds() {
        assert_eq!(
            parse_epoch("1795814137.408458604"),
            Some(1_795_814_137_408_458_604)
        );
        assert_eq!(parse_epoch("10.5"), Some(10_500_000_000));
        assert_eq!(parse_epoch("x"), None);
    }
}
