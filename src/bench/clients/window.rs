//! The packets of one dial and the figures read off them: when the client
//! sent its first packet (DNS included, never a kernel RST), when the first
//! SIP response to a port it sent SIP from arrived, where it sent SIP, and
//! when each DNS record type was answered. Pure: unit-tested on capture
//! lines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::packet::Packet;

/// The packets of one dial.
pub(super) struct Window {
    start_ns: u64,
    /// The source port of the capture's marker datagrams (not the client's).
    marker_port: u16,
    client: Vec<IpAddr>,
    packets: Vec<Packet>,
    /// Local ports the client sent SIP from (UDP or TCP).
    sip_ports: BTreeSet<(bool, u16)>,
    response: Option<usize>,
    /// A TCP SYN-ACK counts as the response (the non-SIP reference clients,
    /// whose dial ends when the connection is up).
    connects: bool,
    /// A TLS ServerHello counts as the response (TLS dials: the SIP
    /// response inside TLS cannot be seen without keys).
    tls: bool,
    /// The dialled domain (lower case): DNS packets about other names (a
    /// client resolving its own host name, reverse lookups) are no part of
    /// the dial. `None`: every DNS packet is kept.
    domain: Option<String>,
}

impl Window {
    pub(super) fn new(start_ns: u64, client: &[IpAddr], marker_port: u16) -> Window {
        Window {
            start_ns,
            marker_port,
            client: client.to_vec(),
            packets: Vec::new(),
            sip_ports: BTreeSet::new(),
            response: None,
            connects: false,
            tls: false,
            domain: None,
        }
    }

    /// Keeps only the DNS packets about `domain`: the domain itself (NAPTR,
    /// A/AAAA) and the names under it (the `_sip*`/`_sips*` SRV owners and
    /// the SRV targets). A packet whose query name the capture did not show
    /// is kept.
    pub(super) fn for_domain(mut self, domain: &str) -> Window {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.domain = (!d.is_empty()).then_some(d);
        self
    }

    /// Whether a DNS packet is about a name other than the dialled domain's.
    fn foreign_dns(&self, p: &Packet) -> bool {
        match (&self.domain, &p.dns_name) {
            (Some(domain), Some(name)) if p.dns.is_some() => {
                name != domain
                    && !name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
            _ => false,
        }
    }

    /// Makes a TLS ServerHello count as the response (TLS dials).
    pub(super) fn counting_server_hellos(mut self, on: bool) -> Window {
        self.tls = on;
        self
    }

    /// Makes a TCP SYN-ACK (the connection accepted) count as the response.
    pub(super) fn counting_connects(mut self, on: bool) -> Window {
        self.connects = on;
        self
    }

    fn outgoing(&self, p: &Packet) -> bool {
        self.client.contains(&p.src)
    }

    /// A marker datagram of the capture: from its port to the discard port.
    /// The port alone is not enough: an IPv6 socket of the client may get
    /// the same port number as the (IPv4) marker socket, and its SIP must
    /// count.
    fn is_marker(&self, p: &Packet) -> bool {
        self.outgoing(p) && !p.tcp && p.sport == self.marker_port && p.dport == 9
    }

    /// What the window holds besides DNS, for a dial that got no response:
    /// packets sent and received, and the SIP responses among the received
    /// (to a port it did not send SIP from, they do not count).
    pub(super) fn non_dns_summary(&self) -> String {
        let other = |p: &&Packet| p.dns.is_none();
        let sent = self
            .packets
            .iter()
            .filter(other)
            .filter(|p| self.outgoing(p))
            .count();
        let received: Vec<&Packet> = self
            .packets
            .iter()
            .filter(other)
            .filter(|p| !self.outgoing(p))
            .collect();
        let responses = received.iter().filter(|p| p.status.is_some()).count();
        format!(
            "the capture showed {sent} non-DNS packet(s) sent and {} received, {responses} of them \
             SIP responses",
            received.len()
        )
    }

    pub(super) fn add(&mut self, p: Packet) {
        if p.ts_ns < self.start_ns
            || self.is_marker(&p)
            // Not the target's resolution: neither the dial's start, nor
            // its query pattern, nor its Resolution Delay.
            || self.foreign_dns(&p)
        {
            return;
        }
        if self.outgoing(&p) && p.dns.is_none() && !p.rst {
            self.sip_ports.insert((p.tcp, p.sport));
        }
        if self.response.is_none()
            && !self.outgoing(&p)
            && self.client.contains(&p.dst)
            && (p.status.is_some()
                || (self.connects && p.syn_ack)
                || (self.tls && p.tls_server_hello))
            && self.sip_ports.contains(&(p.tcp, p.dport))
        {
            self.response = Some(self.packets.len());
        }
        self.packets.push(p);
    }

    pub(super) fn response(&self) -> Option<&Packet> {
        self.response.map(|i| &self.packets[i])
    }

    /// The first packet the client sent (DNS included; not a kernel RST).
    pub(super) fn first_sent(&self) -> Option<&Packet> {
        self.packets
            .iter()
            .filter(|p| self.outgoing(p) && !p.rst)
            .min_by_key(|p| p.ts_ns)
    }

    /// The server addresses the client sent SIP (or a TCP SYN) to, up to `until`.
    pub(super) fn sip_destinations(&self, until: Option<u64>) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = Vec::new();
        let mut sorted: Vec<&Packet> = self.packets.iter().collect();
        sorted.sort_by_key(|p| p.ts_ns);
        for p in sorted {
            if until.is_some_and(|u| p.ts_ns > u) {
                break;
            }
            if self.outgoing(p) && p.dns.is_none() && !p.rst && !v.contains(&p.dst) {
                v.push(p.dst);
            }
        }
        v
    }

    /// When the client first sent over TCP (its first SYN; `tcp`) or over
    /// UDP (its first SIP datagram), DNS aside, up to `until`: ms after
    /// `first`. The order of the two says which transport it tried first.
    pub(super) fn first_send_ms(&self, tcp: bool, first: u64, until: Option<u64>) -> Option<f64> {
        self.packets
            .iter()
            .filter(|p| {
                self.outgoing(p)
                    && p.tcp == tcp
                    && p.dns.is_none()
                    && !p.rst
                    && until.is_none_or(|u| p.ts_ns <= u)
            })
            .map(|p| p.ts_ns)
            .min()
            .map(|ts| ts.saturating_sub(first) as f64 / 1e6)
    }

    /// The DNS queries the client sent up to `until`, in order: (record
    /// type, ms after `first`). Retransmissions are listed too.
    pub(super) fn queries(&self, first: u64, until: Option<u64>) -> Vec<(String, f64)> {
        let mut v: Vec<(u64, u16)> = self
            .packets
            .iter()
            .filter(|p| self.outgoing(p) && until.is_none_or(|u| p.ts_ns <= u))
            .filter_map(|p| match p.dns {
                Some((false, t)) if t != 0 => Some((p.ts_ns, t)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(ts, _)| *ts);
        v.into_iter()
            .map(|(ts, t)| (rtype_name(t), ts.saturating_sub(first) as f64 / 1e6))
            .collect()
    }

    /// The server addresses the client sent SIP (or a TCP SYN) to, up to
    /// `until`, each with when it was first sent to, ms after `first`.
    pub(super) fn timed_destinations(&self, first: u64, until: Option<u64>) -> Vec<(IpAddr, f64)> {
        let mut sorted: Vec<&Packet> = self.packets.iter().collect();
        sorted.sort_by_key(|p| p.ts_ns);
        let mut v: Vec<(IpAddr, f64)> = Vec::new();
        for p in sorted {
            if until.is_some_and(|u| p.ts_ns > u) {
                break;
            }
            if self.outgoing(p) && p.dns.is_none() && !p.rst && !v.iter().any(|(a, _)| *a == p.dst)
            {
                v.push((p.dst, p.ts_ns.saturating_sub(first) as f64 / 1e6));
            }
        }
        v
    }

    /// When the first DNS answer of each record type arrived, ms after `first`.
    pub(super) fn dns_ms(&self, first: Option<u64>, until: Option<u64>) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let Some(first) = first else {
            return m;
        };
        for p in &self.packets {
            if until.is_some_and(|u| p.ts_ns > u) {
                continue;
            }
            if let Some((true, t)) = p.dns {
                if self.client.contains(&p.dst) && t != 0 {
                    let ms = p.ts_ns.saturating_sub(first) as f64 / 1e6;
                    let e = m.entry(rtype_name(t)).or_insert(ms);
                    *e = f64::min(*e, ms);
                }
            }
        }
        m
    }
}

fn rtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        35 => "NAPTR".into(),
        other => format!("TYPE{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::clients::packet::parse_line;
    use crate::bench::clients::packet::tests::line;
    use crate::endpoint::Family;

    #[test]
    fn sip_from_the_marker_sockets_port_number_still_counts() {
        // The marker socket is IPv4 on port 41000; the client's IPv6 SIP
        // socket got the same port number. Only the marker is left out.
        let c6: IpAddr = "2001:db8:c1::10".parse().unwrap();
        let c4: IpAddr = "192.0.2.10".parse().unwrap();
        let mut w = Window::new(1_000, &[c6, c4], 41000);
        let udp = |ts: &str, src: &str, dst: &str, sport: &str, dport: &str, status: &str| {
            // ip.src, ipv6.src, ip.dst, ipv6.dst: one pair filled.
            let v6 = usize::from(src.contains(':'));
            let mut f = vec![ts, "", "", "", "", sport, dport, "", "", "", "", "", status];
            f[1 + v6] = src;
            f[3 + v6] = dst;
            parse_line(&line(&f)).unwrap()
        };
        w.add(udp("1.000", "192.0.2.10", "192.0.2.1", "41000", "9", ""));
        w.add(udp(
            "1.001",
            "2001:db8:c1::10",
            "2001:db8:5e::10",
            "41000",
            "5060",
            "",
        ));
        w.add(udp(
            "1.002",
            "2001:db8:5e::10",
            "2001:db8:c1::10",
            "5060",
            "41000",
            "200",
        ));
        assert_eq!(w.response().map(|r| r.ts_ns), Some(1_002_000_000));
        assert_eq!(
            w.sip_destinations(None),
            ["2001:db8:5e::10".parse::<IpAddr>().unwrap()]
        );
        assert!(
            w.non_dns_summary()
                .contains("1 non-DNS packet(s) sent and 1 received, 1 of them"),
            "{}",
            w.non_dns_summary()
        );
    }

    #[test]
    fn window_times_first_packet_to_first_response() {
        let c6: IpAddr = "2001:db8:c1::10".parse().unwrap();
        let c4: IpAddr = "192.0.2.10".parse().unwrap();
        let mut w = Window::new(1_000, &[c6, c4], 1);
        let pkts = [
            // an old packet: before the window
            line(&[
                "0.000000500",
                "",
                "2001:db8:c1::10",
                "",
                "2001:db8:d5::53",
                "5000",
                "53",
                "",
                "",
                "",
                "0",
                "1",
            ]),
            // DNS query (first packet) and answer
            line(&[
                "1.000000000",
                "",
                "2001:db8:c1::10",
                "",
                "2001:db8:d5::53",
                "40000",
                "53",
                "",
                "",
                "",
                "0",
                "28",
            ]),
            line(&[
                "1.001000000",
                "",
                "2001:db8:d5::53",
                "",
                "2001:db8:c1::10",
                "53",
                "40000",
                "",
                "",
                "",
                "1",
                "28",
            ]),
            // OPTIONS to v6, then to v4
            line(&[
                "1.002000000",
                "",
                "2001:db8:c1::10",
                "",
                "2001:db8:5e::10",
                "41000",
                "5060",
                "",
                "",
                "",
                "",
                "",
                "",
                "OPTIONS",
            ]),
            line(&[
                "1.003000000",
                "192.0.2.10",
                "",
                "198.51.100.10",
                "",
                "41001",
                "5060",
                "",
                "",
                "",
                "",
                "",
                "",
                "OPTIONS",
            ]),
            // a response to a port we never used: ignored
            line(&[
                "1.004000000",
                "198.51.100.10",
                "",
                "192.0.2.10",
                "",
                "5060",
                "9999",
                "",
                "",
                "",
                "",
                "",
                "200",
            ]),
            // the answer
            line(&[
                "1.005000000",
                "198.51.100.10",
                "",
                "192.0.2.10",
                "",
                "5060",
                "41001",
                "",
                "",
                "",
                "",
                "",
                "200",
            ]),
        ];
        for l in &pkts {
            w.add(parse_line(l).expect("parses"));
        }
        let r = w.response().expect("a response").clone();
        let first = w.first_sent().expect("first").ts_ns;
        assert_eq!(r.ts_ns - first, 5_000_000);
        assert_eq!(Family::of(&r.src), Family::V4);
        assert_eq!(w.sip_destinations(Some(r.ts_ns)).len(), 2);
        let dns = w.dns_ms(Some(first), Some(r.ts_ns));
        assert_eq!(dns.get("AAAA"), Some(&1.0));
    }

    /// A TCP packet line: time, v4 src, v4 dst, ports, SYN and ACK flags.
    fn tcp_line(ts: &str, src: &str, dst: &str, sport: &str, dport: &str, syn_ack: bool) -> String {
        let f = if syn_ack { "1" } else { "0" };
        line(&[
            ts, src, "", dst, "", "", "", sport, dport, "0", "", "", "", "", "1", f,
        ])
    }

    #[test]
    fn syn_ack_ends_a_dial_only_when_connects_count() {
        let c4: IpAddr = "192.0.2.10".parse().unwrap();
        let pkts = [
            tcp_line(
                "1.000",
                "192.0.2.10",
                "198.51.100.10",
                "40000",
                "5060",
                false,
            ),
            // a SYN-ACK to another port: not this dial's
            tcp_line(
                "1.001",
                "198.51.100.10",
                "192.0.2.10",
                "5060",
                "40001",
                true,
            ),
            tcp_line(
                "1.002",
                "198.51.100.10",
                "192.0.2.10",
                "5060",
                "40000",
                true,
            ),
        ];
        let mut sip = Window::new(0, &[c4], 1);
        let mut connect = Window::new(0, &[c4], 1).counting_connects(true);
        for l in &pkts {
            sip.add(parse_line(l).expect("parses"));
            connect.add(parse_line(l).expect("parses"));
        }
        assert!(sip.response().is_none(), "a SYN-ACK is no SIP response");
        let r = connect
            .response()
            .expect("the SYN-ACK to the client's port");
        assert_eq!(r.ts_ns, 1_002_000_000);
        let d = connect.timed_destinations(1_000_000_000, Some(r.ts_ns));
        assert_eq!(d, vec![("198.51.100.10".parse().unwrap(), 0.0)]);
    }

    /// A TLS-over-TCP packet line (IPv6): time, src, dst, ports, SYN and
    /// ACK flags, and the first TLS handshake type of the segment ("" none).
    fn tls_line(
        ts: &str,
        src: &str,
        dst: &str,
        ports: (&str, &str),
        flags: (&str, &str),
        hs: &str,
    ) -> String {
        line(&[
            ts, "", src, "", dst, "", "", ports.0, ports.1, "0", "", "", "", "", flags.0, flags.1,
            hs,
        ])
    }

    #[test]
    fn server_hello_ends_a_tls_dial_and_nothing_else_does() {
        const C: &str = "2001:db8:c1::10";
        const S: &str = "2001:db8:5e::10";
        let c6: IpAddr = C.parse().unwrap();
        let to = ("40000", "5061");
        let back = ("5061", "40000");
        let pkts = [
            tls_line("1.000", C, S, to, ("1", "0"), ""),
            tls_line("1.001", S, C, back, ("1", "1"), ""),
            // the ClientHello (type 1) is the client's
            tls_line("1.002", C, S, to, ("0", "1"), "1"),
            // a ServerHello to a port the client never used: not this dial's
            tls_line("1.003", S, C, ("5061", "40009"), ("0", "1"), "2"),
            // the ServerHello
            tls_line("1.004", S, C, back, ("0", "1"), "2"),
            // later records (Finished, application data): too late
            tls_line("1.005", S, C, back, ("0", "1"), "20"),
        ];
        let mut tls = Window::new(0, &[c6], 1).counting_server_hellos(true);
        let mut tcp = Window::new(0, &[c6], 1);
        for l in &pkts {
            tls.add(parse_line(l).expect("parses"));
            tcp.add(parse_line(l).expect("parses"));
        }
        let r = tls.response().expect("the ServerHello");
        assert_eq!(r.ts_ns, 1_004_000_000);
        assert!(r.tls_server_hello);
        assert!(
            tcp.response().is_none(),
            "no SIP response, no connect counted"
        );
        assert_eq!(tls.first_send_ms(true, 0, Some(r.ts_ns)), Some(1000.0));
        assert_eq!(tls.first_send_ms(false, 0, Some(r.ts_ns)), None);
        assert_eq!(tls.first_send_ms(true, 0, Some(999_000_000)), None);
    }

    #[test]
    fn queries_are_listed_in_the_order_sent() {
        let c6: IpAddr = "2001:db8:c1::10".parse().unwrap();
        let q = |ts: &str, qtype: &str, response: bool| {
            let (src, dst, sport, dport) = if response {
                ("2001:db8:d5::53", "2001:db8:c1::10", "53", "40000")
            } else {
                ("2001:db8:c1::10", "2001:db8:d5::53", "40000", "53")
            };
            let r = if response { "1" } else { "0" };
            line(&[ts, "", src, "", dst, sport, dport, "", "", "", r, qtype])
        };
        let mut w = Window::new(0, &[c6], 1);
        for l in [
            q("1.000", "33", false),
            q("1.001", "33", true),
            q("1.010", "28", false),
            q("1.0105", "1", false),
            q("1.020", "1", true),
        ] {
            w.add(parse_line(&l).expect("parses"));
        }
        let got = w.queries(1_000_000_000, None);
        let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["SRV", "AAAA", "A"]);
        assert!((got[2].1 - 10.5).abs() < 1e-9);
    }

    #[test]
    fn dns_about_other_names_is_no_part_of_the_dial() {
        let c6: IpAddr = "2001:db8:c1::10".parse().unwrap();
        // (time, query type, is a response, query name)
        let q = |ts: &str, qtype: &str, response: bool, name: &str| {
            let (src, dst, sport, dport) = if response {
                ("2001:db8:d5::53", "2001:db8:c1::10", "53", "40000")
            } else {
                ("2001:db8:c1::10", "2001:db8:d5::53", "40000", "53")
            };
            let r = if response { "1" } else { "0" };
            let mut f = vec![ts, "", src, "", dst, sport, dport, "", "", "", r, qtype];
            f.resize(17, "");
            f.push(name);
            line(&f)
        };
        let records = [
            // pjsua2 resolving its own host name first
            q("1.000", "28", false, "client-host.localdomain."),
            q("1.001", "28", true, "client-host.localdomain."),
            q("1.010", "33", false, "_sip._udp.example.test."),
            q("1.011", "33", true, "_sip._udp.example.test."),
            q("1.020", "28", false, "sip1.Example.Test."),
            q("1.021", "1", false, "sip1.example.test."),
            q("1.030", "28", true, "sip1.example.test."),
            // a name that only ends like the domain
            q("1.031", "1", false, "notexample.test."),
        ];
        let mut w = Window::new(0, &[c6], 1).for_domain("example.test");
        let mut all = Window::new(0, &[c6], 1);
        for l in &records {
            w.add(parse_line(l).expect("parses"));
            all.add(parse_line(l).expect("parses"));
        }
        let first = w.first_sent().expect("a query").ts_ns;
        assert_eq!(first, 1_010_000_000, "the dial starts at the SRV query");
        let types: Vec<String> = w.queries(first, None).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, ["SRV", "AAAA", "A"]);
        let answers = w.dns_ms(Some(first), None);
        assert_eq!(answers.get("AAAA"), Some(&20.0));
        // Without the domain every query counts (what the review found).
        assert_eq!(all.first_sent().expect("a query").ts_ns, 1_000_000_000);
    }

    #[test]
    fn tcp_rst_is_not_a_first_packet() {
        let c4: IpAddr = "192.0.2.10".parse().unwrap();
        let mut w = Window::new(0, &[c4], 1);
        w.add(
            parse_line(&line(&[
                "1.0",
                "192.0.2.10",
                "",
                "198.51.100.10",
                "",
                "",
                "",
                "40000",
                "5060",
                "1",
            ]))
            .unwrap(),
        );
        assert!(w.first_sent().is_none());
        assert!(w.sip_destinations(None).is_empty());
    }
}
