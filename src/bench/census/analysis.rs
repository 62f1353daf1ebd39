//! The census's verdicts, read off the captured dials: the DNS query
//! pattern, the Resolution Delay, the effective Connection Attempt Delay
//! (the switch-over point of the IPv6 delay sweep), the order of the
//! addresses tried, and the cost of a broken family. Pure functions on
//! [`Dial`]s, unit-tested below.

use serde::Serialize;

use crate::endpoint::{Family, Transport};

/// Two queries sent within this many ms of each other count as "together".
pub const TOGETHER_MS: f64 = 5.0;

/// One dial as the census keeps it (times in ms after the client's first
/// packet, from the capture).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dial {
    pub ok: bool,
    /// The family that answered.
    pub family: Option<Family>,
    /// First packet to the response (the bound for a failed dial).
    pub latency_ms: f64,
    pub error: Option<String>,
    /// DNS queries sent: (record type, ms).
    pub queries: Vec<(String, f64)>,
    /// When the first answer of each record type arrived, ms.
    pub answers: Vec<(String, f64)>,
    /// The server addresses tried (SIP or TCP SYN), first send to each, ms.
    pub destinations: Vec<(String, f64)>,
    /// It exited without a response after this many ms (from its start).
    pub gave_up_ms: Option<f64>,
    /// The dial's bound, s.
    pub bound_s: u64,
    /// The transport the response came over.
    pub transport: Option<Transport>,
    /// When it first sent over TCP (a SYN) up to the response, DNS aside, ms.
    pub first_tcp_ms: Option<f64>,
    /// When it first sent SIP over UDP up to the response, ms.
    pub first_udp_ms: Option<f64>,
}

impl Dial {
    fn queried(&self, rtype: &str) -> bool {
        self.queries.iter().any(|(t, _)| t == rtype)
    }

    fn answer_ms(&self, rtype: &str) -> Option<f64> {
        self.answers
            .iter()
            .find(|(t, _)| t == rtype)
            .map(|(_, ms)| *ms)
    }

    /// When the first address of `family` was tried, ms.
    fn first_try_ms(&self, family: Family) -> Option<f64> {
        self.destinations
            .iter()
            .find(|(a, _)| family_of(a) == Some(family))
            .map(|(_, ms)| *ms)
    }

    /// The family of the first address tried (of the one that answered
    /// if the capture showed no attempt).
    fn first_family(&self) -> Option<Family> {
        self.destinations
            .first()
            .and_then(|(a, _)| family_of(a))
            .or(self.family)
    }

    /// The harness failed to run the dial: no answer and not one DNS query,
    /// so nothing can be said about what the client queries.
    fn not_run(&self) -> bool {
        !self.ok && self.queries.is_empty()
    }

    /// The families of the addresses tried, in order: "6 6 4".
    pub fn family_order(&self) -> String {
        let v: Vec<&str> = self
            .destinations
            .iter()
            .map(|(a, _)| match family_of(a) {
                Some(Family::V6) => "6",
                Some(Family::V4) => "4",
                None => "?",
            })
            .collect();
        v.join(" ")
    }
}

fn family_of(addr: &str) -> Option<Family> {
    addr.parse::<std::net::IpAddr>()
        .ok()
        .map(|a| Family::of(&a))
}

/// The DNS queries of a healthy dial: each record type at its first query,
/// in order, `+` between two sent together (within [`TOGETHER_MS`]), `→`
/// between two sent one after the other (the gap in ms), e.g.
/// `NAPTR → SRV → AAAA + A`. Repeated queries of a type are counted.
pub fn dns_pattern(queries: &[(String, f64)]) -> String {
    if queries.is_empty() {
        return "none".into();
    }
    let mut firsts: Vec<(&str, f64, usize)> = Vec::new();
    for (t, ms) in queries {
        match firsts.iter_mut().find(|(ft, _, _)| ft == t) {
            Some(f) => f.2 += 1,
            None => firsts.push((t, *ms, 1)),
        }
    }
    let mut s = String::new();
    let mut prev: Option<f64> = None;
    for (t, ms, n) in &firsts {
        if let Some(p) = prev {
            if ms - p <= TOGETHER_MS {
                s += " + ";
            } else {
                s += &format!(" →{:.0}→ ", ms - p);
            }
        }
        s += t;
        if *n > 1 {
            s += &format!("×{n}");
        }
        prev = Some(*ms);
    }
    s
}

/// The Resolution Delay verdicts from a dial with the AAAA answers delayed
/// and one with the A answers delayed. A client that sent no query of the
/// delayed type (it took the addresses from the SRV answer's additional
/// records, or asks for one family only) is not slowed by it: said so.
pub fn resolution_delay(aaaa_late: Option<&Dial>, a_late: Option<&Dial>) -> String {
    let aaaa = match aaaa_late {
        None => "not run".to_string(),
        Some(d) if d.not_run() => format!("failed ({})", short_error(d)),
        Some(d) if !d.queried("AAAA") => no_query(d, "AAAA"),
        Some(d) if !d.ok => format!("failed ({})", short_error(d)),
        // Judged from the family tried first: a client that tried IPv6
        // first waited for the AAAA answer, whichever family answered.
        Some(d) => match d.first_family() {
            Some(Family::V6) => "waits for AAAA".to_string(),
            _ => match (d.answer_ms("A"), d.first_try_ms(Family::V4)) {
                (Some(a), Some(t)) if t - a > TOGETHER_MS => {
                    format!("IPv4 {:.0} ms after A", t - a)
                }
                (Some(_), Some(_)) => "IPv4 at once (no RD)".to_string(),
                _ => "IPv4".to_string(),
            },
        },
    };
    let a = match a_late {
        None => "not run".to_string(),
        Some(d) if d.not_run() => format!("failed ({})", short_error(d)),
        Some(d) if !d.queried("A") => no_query(d, "A"),
        Some(d) if !d.ok => format!("failed ({})", short_error(d)),
        // The answers are kept up to the response: an A answer missing
        // from them came after it.
        Some(d) => match (d.answer_ms("A"), d.first_try_ms(Family::V6)) {
            (Some(a), Some(t6)) if t6 + TOGETHER_MS < a => "IPv6 before A".to_string(),
            (None, Some(_)) => "IPv6 before A".to_string(),
            (Some(_), Some(_)) => "waits for A".to_string(),
            (Some(a), None)
                if d.first_try_ms(Family::V4)
                    .is_some_and(|t4| t4 + TOGETHER_MS >= a) =>
            {
                "waits for A (tries IPv4 only)".to_string()
            }
            (_, None) => "tries IPv4 only".to_string(),
        },
    };
    format!("AAAA late: {aaaa}; A late: {a}")
}

/// What a client did at one point of the Resolution Delay sweep (the AAAA
/// answers that many ms late).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RdStep {
    /// It sent no AAAA query (IPv4 only, or the SRV answer's additionals).
    NoAaaaQuery,
    /// It tried IPv6 first: it waited for the AAAA answer.
    WaitedForAaaa,
    /// It tried IPv4 first, its first IPv4 attempt this many ms after the A
    /// answer (`None`: the capture showed no A answer before it).
    WentIpv4 { after_a_ms: Option<f64> },
    /// No answer.
    Failed,
}

/// The verdict on one dial with the AAAA answers late.
pub fn rd_step(d: &Dial) -> RdStep {
    // A dial the harness failed to run sent no query: that says nothing
    // about the client's AAAA queries.
    if d.not_run() {
        return RdStep::Failed;
    }
    if !d.queried("AAAA") {
        return RdStep::NoAaaaQuery;
    }
    if !d.ok {
        return RdStep::Failed;
    }
    // The family tried first, not the one that answered: a client that
    // tried IPv6 first and fell back to IPv4 still waited for the AAAA.
    match d.first_family() {
        Some(Family::V6) => RdStep::WaitedForAaaa,
        _ => RdStep::WentIpv4 {
            after_a_ms: match (d.answer_ms("A"), d.first_try_ms(Family::V4)) {
                (Some(a), Some(t)) => Some((t - a).max(0.0)),
                _ => None,
            },
        },
    }
}

/// The effective Resolution Delay from the sweep of AAAA delays ((AAAA
/// delay ms, dial) pairs, ascending): how long the client waits for a late
/// AAAA answer once the A answer is in. A client that took IPv6 at every
/// delay waits at least the largest one; one that went IPv4 even with the
/// AAAA answer on time has no race to wait for; otherwise the wait it showed
/// at the delays where it went IPv4 (their median), with the switch point.
/// A client that went IPv4 at every delay either did not wait (its median
/// wait after the A answer within [`TOGETHER_MS`]) or waited for the AAAA
/// answer and then went IPv4 anyway (its waits follow the delay).
pub fn effective_rd(sweep: &[(u32, Dial)]) -> String {
    if sweep.is_empty() {
        return "not run".into();
    }
    let steps: Vec<(u32, RdStep)> = sweep.iter().map(|(ms, d)| (*ms, rd_step(d))).collect();
    if steps.iter().all(|(_, s)| *s == RdStep::NoAaaaQuery) {
        return "never queries AAAA".into();
    }
    let answered: Vec<&(u32, RdStep)> = steps
        .iter()
        .filter(|(_, s)| matches!(s, RdStep::WaitedForAaaa | RdStep::WentIpv4 { .. }))
        .collect();
    let failed = steps.iter().filter(|(_, s)| *s == RdStep::Failed).count();
    let note = if failed > 0 {
        format!(" ({failed} of {} dials failed)", steps.len())
    } else {
        String::new()
    };
    // The largest delay the client was seen to wait through: a failed dial
    // at a larger one shows nothing.
    let Some(&&(max_answered, _)) = answered.last() else {
        return format!("no dial answered{note}");
    };
    let v4: Vec<(u32, Option<f64>)> = answered
        .iter()
        .filter_map(|(ms, s)| match s {
            RdStep::WentIpv4 { after_a_ms } => Some((*ms, *after_a_ms)),
            _ => None,
        })
        .collect();
    let Some(&(first_v4, _)) = v4.first() else {
        return format!("waits for AAAA (≥ {max_answered} ms){note}");
    };
    let mut waits: Vec<f64> = v4.iter().filter_map(|(_, w)| *w).collect();
    waits.sort_by(f64::total_cmp);
    let median_wait = waits.get(waits.len() / 2).copied();
    if v4.len() == answered.len() {
        // IPv4 at every delay: whether it raced at all is in its waits.
        let follows_delay = max_answered as f64 > TOGETHER_MS
            && v4
                .iter()
                .all(|(ms, w)| w.is_some_and(|w| w + TOGETHER_MS >= *ms as f64));
        return match median_wait {
            _ if follows_delay => {
                format!("waits for AAAA (≥ {max_answered} ms), then IPv4{note}")
            }
            Some(w) if w <= TOGETHER_MS => {
                format!("IPv4 always, no wait (even AAAA +{first_v4} ms){note}")
            }
            Some(w) => format!("IPv4 always, ~{w:.0} ms after A{note}"),
            None => format!("IPv4 always (wait after A not seen){note}"),
        };
    }
    let wait = median_wait
        .map(|w| format!("~{w:.0} ms"))
        .unwrap_or_else(|| "?".into());
    let v6_after = answered
        .iter()
        .any(|(ms, s)| *ms > first_v4 && *s == RdStep::WaitedForAaaa);
    let monotone = if v6_after { ", not monotone" } else { "" };
    format!("{wait} (IPv6 below AAAA +{first_v4} ms, IPv4 from it{monotone}){note}")
}

/// The NAPTR transport fall-over verdict: a dial toward the domain with no
/// transport given, the NAPTR-preferred transport's (TCP's) targets
/// rejecting every connection while UDP works.
pub fn naptr_fallover(d: Option<&Dial>) -> String {
    let Some(d) = d else {
        return "not run".into();
    };
    if d.not_run() {
        return format!("failed ({})", short_error(d));
    }
    if !d.queried("NAPTR") {
        return "no NAPTR".into();
    }
    // Which transport it tried first, from the capture's order.
    let tcp_first = match (d.first_tcp_ms, d.first_udp_ms) {
        (Some(tcp), Some(udp)) => Some(tcp <= udp),
        (Some(_), None) => Some(true),
        (None, _) => None,
    };
    match (d.ok, d.transport) {
        (true, Some(t)) if t != Transport::Tcp && tcp_first == Some(true) => format!(
            "falls over to {t} (TCP tried first): answered in {}",
            seconds(d.latency_ms)
        ),
        (true, Some(t)) if t != Transport::Tcp && tcp_first == Some(false) => format!(
            "takes {t} first (TCP tried after it): answered in {}",
            seconds(d.latency_ms)
        ),
        (true, Some(t)) if t != Transport::Tcp => format!(
            "takes {t} without trying TCP: answered in {}",
            seconds(d.latency_ms)
        ),
        (true, _) => format!("answered over tcp in {}", seconds(d.latency_ms)),
        (false, _) => match d.gave_up_ms {
            Some(ms) => format!("no fall-over: gave up after {}", seconds(ms)),
            None => format!("no fall-over within {} s", d.bound_s),
        },
    }
}

fn no_query(d: &Dial, rtype: &str) -> String {
    if d.queries.iter().any(|(t, _)| t == "A" || t == "AAAA") {
        format!("no {rtype} query")
    } else {
        "no A/AAAA query (SRV additionals)".to_string()
    }
}

/// The effective Connection Attempt Delay from the sweep: the smallest
/// extra IPv6 delay at which IPv4 won, if IPv6 won below it.
pub fn effective_cad(sweep: &[(u32, Dial)]) -> String {
    let ok: Vec<&(u32, Dial)> = sweep.iter().filter(|(_, d)| d.ok).collect();
    let Some((max, _)) = sweep.last() else {
        return "not run".into();
    };
    if ok.is_empty() {
        return "no dial answered".into();
    }
    let failed = sweep.len() - ok.len();
    let note = if failed > 0 {
        format!(" ({failed} of {} dials failed)", sweep.len())
    } else {
        String::new()
    };
    let v4_at: Vec<u32> = ok
        .iter()
        .filter(|(_, d)| d.family == Some(Family::V4))
        .map(|(ms, _)| *ms)
        .collect();
    let Some(&first_v4) = v4_at.first() else {
        return format!("never (IPv6 up to +{max} ms){note}");
    };
    if first_v4 == ok[0].0 {
        return if v4_at.len() == ok.len() {
            format!("IPv4 always (no race){note}")
        } else {
            format!("IPv4 at +{first_v4} ms, mixed after{note}")
        };
    }
    let v6_after = ok
        .iter()
        .any(|(ms, d)| *ms > first_v4 && d.family == Some(Family::V6));
    if v6_after {
        format!("~{first_v4} ms (not monotone){note}")
    } else {
        format!("{first_v4} ms{note}")
    }
}

/// Whether the family switch of the sweep happened between its first and
/// last point: IPv6 at the first, IPv4 at the last (the quick check).
pub fn switches(sweep: &[(u32, Dial)]) -> bool {
    matches!(
        (sweep.first(), sweep.last()),
        (Some((_, a)), Some((_, b))) if a.ok && b.ok && a.family == Some(Family::V6) && b.family == Some(Family::V4)
    )
}

/// Whether IPv6 won at every point of the sweep ("never" races).
pub fn never_switches(sweep: &[(u32, Dial)]) -> bool {
    !sweep.is_empty()
        && sweep
            .iter()
            .all(|(_, d)| d.ok && d.family == Some(Family::V6))
}

/// The cost of one broken family: the setup time of a dial with that
/// family blackholed, or how it failed.
pub fn cost(d: Option<&Dial>) -> String {
    match d {
        None => "not run".into(),
        Some(d) if d.ok => format!(
            "{} ({})",
            seconds(d.latency_ms),
            d.family.map(|f| f.as_str()).unwrap_or("?")
        ),
        Some(d) => match d.gave_up_ms {
            Some(ms) => format!("gave up after {}", seconds(ms)),
            None => format!("no answer within {} s", d.bound_s),
        },
    }
}

/// How it met a rejected IPv6 (ICMP port unreachable for UDP, TCP RST).
pub fn on_reject(d: Option<&Dial>) -> String {
    match d {
        None => "not run".into(),
        Some(d) if d.ok && d.family == Some(Family::V6) => "IPv6 answered".into(),
        // It never sent to IPv6, so the rejection never reached it.
        Some(d) if d.first_try_ms(Family::V6).is_none() => "not tried (IPv4 only)".into(),
        Some(d) if d.ok && d.latency_ms < 1000.0 => {
            format!("acts on it: IPv4 in {:.0} ms", d.latency_ms)
        }
        Some(d) if d.ok => format!("waits: IPv4 in {}", seconds(d.latency_ms)),
        Some(d) => cost(Some(d)),
    }
}

/// The addresses tried with IPv6 blackholed: their families in order,
/// whether it interleaves families, how many it tried.
pub fn address_order(d: Option<&Dial>) -> (String, String) {
    let Some(d) = d else {
        return ("not run".into(), "not run".into());
    };
    let order = d.family_order();
    if d.destinations.is_empty() {
        return ("none".into(), "-".into());
    }
    let fams: Vec<&str> = order.split(' ').collect();
    let switches = fams.windows(2).filter(|w| w[0] != w[1]).count();
    let both = fams.contains(&"6") && fams.contains(&"4");
    let interleaving = if !both {
        "one family only".to_string()
    } else if fams.len() >= 3 && switches >= 2 {
        "yes".to_string()
    } else if fams.get(1).is_some_and(|f| *f != fams[0]) {
        "other family second".to_string()
    } else {
        "no".to_string()
    };
    (format!("{} ({order})", fams.len()), interleaving)
}

fn seconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn short_error(d: &Dial) -> String {
    let e = d.error.as_deref().unwrap_or("no response");
    let mut s: String = e.chars().take(60).collect();
    if e.chars().count() > 60 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dial(family: Option<Family>, latency_ms: f64) -> Dial {
        Dial {
            ok: family.is_some(),
            family,
            latency_ms,
            bound_s: 5,
            ..Dial::default()
        }
    }

    #[test]
    fn dns_pattern_marks_parallel_and_sequential_queries() {
        let q = |t: &str, ms: f64| (t.to_string(), ms);
        assert_eq!(
            dns_pattern(&[q("NAPTR", 0.0), q("SRV", 1.2), q("AAAA", 2.5), q("A", 2.6)]),
            "NAPTR + SRV + AAAA + A"
        );
        assert_eq!(
            dns_pattern(&[q("SRV", 0.0), q("A", 20.0), q("AAAA", 41.0), q("A", 60.0)]),
            "SRV →20→ A×2 →21→ AAAA"
        );
        assert_eq!(dns_pattern(&[]), "none");
    }

    #[test]
    fn effective_cad_is_the_switch_over_point() {
        let sweep: Vec<(u32, Dial)> = (0..=40)
            .map(|i| {
                let ms = i * 10;
                let f = if ms < 250 { Family::V6 } else { Family::V4 };
                (ms, dial(Some(f), 10.0))
            })
            .collect();
        assert_eq!(effective_cad(&sweep), "250 ms");
        assert!(switches(&sweep));
        assert!(!never_switches(&sweep));

        let never: Vec<(u32, Dial)> = [0, 400]
            .iter()
            .map(|&ms| (ms, dial(Some(Family::V6), ms as f64)))
            .collect();
        assert_eq!(effective_cad(&never), "never (IPv6 up to +400 ms)");
        assert!(never_switches(&never));
        assert!(!switches(&never));

        let v4: Vec<(u32, Dial)> = [0, 400]
            .iter()
            .map(|&ms| (ms, dial(Some(Family::V4), 5.0)))
            .collect();
        assert_eq!(effective_cad(&v4), "IPv4 always (no race)");

        let mut noisy = sweep.clone();
        noisy[30].1.family = Some(Family::V6);
        assert_eq!(effective_cad(&noisy), "~250 ms (not monotone)");
        noisy[1].1 = dial(None, 5000.0);
        assert!(effective_cad(&noisy).contains("1 of 41 dials failed"));
    }

    #[test]
    fn resolution_delay_reads_when_ipv4_started_after_the_a_answer() {
        let q = vec![("AAAA".to_string(), 0.0), ("A".to_string(), 0.1)];
        let mut d = dial(Some(Family::V4), 80.0);
        d.queries = q.clone();
        d.answers = vec![("A".into(), 2.0), ("AAAA".into(), 302.0)];
        d.destinations = vec![("198.51.100.10".into(), 52.0)];
        let mut a_late = dial(Some(Family::V6), 5.0);
        a_late.queries = q.clone();
        // The A answer came after the response: not among the answers.
        a_late.answers = vec![("AAAA".into(), 2.0)];
        a_late.destinations = vec![("2001:db8:5e::10".into(), 3.0)];
        assert_eq!(
            resolution_delay(Some(&d), Some(&a_late)),
            "AAAA late: IPv4 50 ms after A; A late: IPv6 before A"
        );
        a_late.answers.push(("A".into(), 302.0));
        a_late.destinations[0].1 = 303.0;
        assert!(resolution_delay(None, Some(&a_late)).ends_with("A late: waits for A"));
        a_late.destinations[0].0 = "198.51.100.10".into();
        assert!(resolution_delay(None, Some(&a_late))
            .ends_with("A late: waits for A (tries IPv4 only)"));
        let mut waits = dial(Some(Family::V6), 310.0);
        waits.queries = q;
        assert!(resolution_delay(Some(&waits), None).starts_with("AAAA late: waits for AAAA"));
        let mut additionals = dial(Some(Family::V6), 3.0);
        additionals.queries = vec![("SRV".into(), 0.0)];
        assert_eq!(
            resolution_delay(Some(&additionals), Some(&additionals)),
            "AAAA late: no A/AAAA query (SRV additionals); A late: no A/AAAA query (SRV additionals)"
        );
    }

    #[test]
    fn costs_and_address_orders() {
        let mut gave_up = dial(None, 130_000.0);
        gave_up.gave_up_ms = Some(32_100.0);
        assert_eq!(cost(Some(&gave_up)), "gave up after 32.1 s");
        gave_up.gave_up_ms = None;
        gave_up.bound_s = 130;
        assert_eq!(cost(Some(&gave_up)), "no answer within 130 s");
        let mut fell_back = dial(Some(Family::V4), 32_500.0);
        assert_eq!(cost(Some(&fell_back)), "32.5 s (ipv4)");
        fell_back.destinations = vec![
            ("2001:db8:5e::10".into(), 0.0),
            ("2001:db8:5e::11".into(), 1.0),
            ("198.51.100.10".into(), 2.0),
        ];
        assert_eq!(
            address_order(Some(&fell_back)),
            ("3 (6 6 4)".to_string(), "no".to_string())
        );
        fell_back.destinations.swap(1, 2);
        assert_eq!(address_order(Some(&fell_back)).1, "yes");
        fell_back.destinations.truncate(2);
        assert_eq!(address_order(Some(&fell_back)).1, "other family second");
        assert_eq!(on_reject(Some(&fell_back)), "waits: IPv4 in 32.5 s");
        let mut at_once = dial(Some(Family::V4), 12.0);
        at_once.destinations = vec![
            ("2001:db8:5e::10".into(), 0.0),
            ("198.51.100.10".into(), 1.0),
        ];
        assert_eq!(on_reject(Some(&at_once)), "acts on it: IPv4 in 12 ms");
        at_once.destinations.remove(0);
        assert_eq!(on_reject(Some(&at_once)), "not tried (IPv4 only)");
    }

    /// A dial of the AAAA delay sweep: both queries at 0, the A answer at
    /// 2 ms, the AAAA answer `aaaa_ms` late; the first attempt to `to`.
    fn rd_dial(aaaa_ms: f64, to: &str, at_ms: f64) -> Dial {
        let mut d = dial(family_of(to), at_ms + 1.0);
        d.queries = vec![("AAAA".into(), 0.0), ("A".into(), 0.1)];
        d.answers = vec![("A".into(), 2.0), ("AAAA".into(), 2.0 + aaaa_ms)];
        d.destinations = vec![(to.into(), at_ms)];
        d
    }

    #[test]
    fn rd_sweep_reads_the_wait_after_the_a_answer() {
        const V6: &str = "2001:db8:5e::10";
        const V4: &str = "198.51.100.10";
        // Waits up to 50 ms: IPv6 at 0 and 25, IPv4 52 ms after A from 50.
        let rfc8305: Vec<(u32, Dial)> = [0u32, 25, 50, 100, 200, 300]
            .iter()
            .map(|&ms| {
                let d = if ms < 50 {
                    rd_dial(ms as f64, V6, ms as f64 + 3.0)
                } else {
                    rd_dial(ms as f64, V4, 54.0)
                };
                (ms, d)
            })
            .collect();
        assert_eq!(rd_step(&rfc8305[0].1), RdStep::WaitedForAaaa);
        assert_eq!(
            rd_step(&rfc8305[3].1),
            RdStep::WentIpv4 {
                after_a_ms: Some(52.0)
            }
        );
        assert_eq!(
            effective_rd(&rfc8305),
            "~52 ms (IPv6 below AAAA +50 ms, IPv4 from it)"
        );

        // Waits however late the AAAA answer comes.
        let waits: Vec<(u32, Dial)> = [0u32, 300]
            .iter()
            .map(|&ms| (ms, rd_dial(ms as f64, V6, ms as f64 + 3.0)))
            .collect();
        assert_eq!(effective_rd(&waits), "waits for AAAA (≥ 300 ms)");

        // IPv4 even with the AAAA answer on time: no race to wait for.
        let v4: Vec<(u32, Dial)> = [0u32, 300]
            .iter()
            .map(|&ms| (ms, rd_dial(ms as f64, V4, 3.0)))
            .collect();
        assert_eq!(effective_rd(&v4), "IPv4 always, no wait (even AAAA +0 ms)");

        // No AAAA query at all (SRV additionals or IPv4 only).
        let mut none = rd_dial(0.0, V4, 3.0);
        none.queries = vec![("SRV".into(), 0.0)];
        assert_eq!(rd_step(&none), RdStep::NoAaaaQuery);
        assert_eq!(
            effective_rd(&[(0, none.clone()), (300, none)]),
            "never queries AAAA"
        );

        // A failed dial is counted, and IPv6 after the switch flagged.
        let mut noisy = rfc8305.clone();
        noisy[4].1 = rd_dial(200.0, V6, 203.0);
        noisy[5].1.ok = false;
        noisy[5].1.family = None;
        assert_eq!(rd_step(&noisy[5].1), RdStep::Failed);
        assert_eq!(
            effective_rd(&noisy),
            "~52 ms (IPv6 below AAAA +50 ms, IPv4 from it, not monotone) (1 of 6 dials failed)"
        );
        assert_eq!(effective_rd(&[]), "not run");
    }

    /// A dial the harness could not run: an error and no packet at all.
    fn harness_failure() -> Dial {
        let mut d = dial(None, 0.0);
        d.error = Some("spawn failed: no such file".into());
        d
    }

    #[test]
    fn rd_sweep_of_a_client_waiting_for_aaaa_then_going_ipv4() {
        // siprace:sequential-v4 in the published run: its first IPv4
        // attempt follows the AAAA delay, so it waited for the AAAA answer.
        const V4: &str = "198.51.100.10";
        let sequential: Vec<(u32, Dial)> = [
            (0u32, 3.0),
            (25, 30.6),
            (50, 55.7),
            (100, 105.6),
            (200, 205.5),
            (300, 305.9),
        ]
        .iter()
        .map(|&(ms, at)| (ms, rd_dial(ms as f64, V4, at)))
        .collect();
        assert_eq!(
            effective_rd(&sequential),
            "waits for AAAA (≥ 300 ms), then IPv4"
        );
        // A constant wait that does not follow the delay is no race.
        let constant: Vec<(u32, Dial)> = [0u32, 100, 300]
            .iter()
            .map(|&ms| (ms, rd_dial(ms as f64, V4, 42.0)))
            .collect();
        assert_eq!(effective_rd(&constant), "IPv4 always, ~40 ms after A");
    }

    #[test]
    fn a_dial_the_harness_failed_to_run_reads_as_failed() {
        let failed = harness_failure();
        assert_eq!(rd_step(&failed), RdStep::Failed);
        assert_eq!(
            effective_rd(&[(0, failed.clone()), (300, failed.clone())]),
            "no dial answered (2 of 2 dials failed)"
        );
        assert_eq!(
            naptr_fallover(Some(&failed)),
            "failed (spawn failed: no such file)"
        );
        assert_eq!(
            resolution_delay(Some(&failed), Some(&failed)),
            "AAAA late: failed (spawn failed: no such file); A late: failed (spawn failed: no such file)"
        );
    }

    #[test]
    fn waits_for_aaaa_names_the_largest_delay_that_answered() {
        const V6: &str = "2001:db8:5e::10";
        let mut sweep: Vec<(u32, Dial)> = [0u32, 100, 200, 300]
            .iter()
            .map(|&ms| (ms, rd_dial(ms as f64, V6, ms as f64 + 3.0)))
            .collect();
        sweep[3].1 = harness_failure();
        assert_eq!(
            effective_rd(&sweep),
            "waits for AAAA (≥ 200 ms) (1 of 4 dials failed)"
        );
    }

    #[test]
    fn rd_step_goes_by_the_family_tried_first() {
        // IPv6 tried first (after the late AAAA), IPv4 answered: it waited.
        let mut d = rd_dial(100.0, "2001:db8:5e::10", 103.0);
        d.family = Some(Family::V4);
        d.destinations.push(("198.51.100.10".into(), 353.0));
        assert_eq!(rd_step(&d), RdStep::WaitedForAaaa);
        assert!(resolution_delay(Some(&d), None).starts_with("AAAA late: waits for AAAA"));
        // IPv4 tried first, IPv6 answered: it did not wait.
        let mut e = rd_dial(100.0, "198.51.100.10", 3.0);
        e.family = Some(Family::V6);
        e.destinations.push(("2001:db8:5e::10".into(), 104.0));
        assert_eq!(
            rd_step(&e),
            RdStep::WentIpv4 {
                after_a_ms: Some(1.0)
            }
        );
    }

    #[test]
    fn naptr_fallover_needs_a_naptr_query_and_a_udp_answer() {
        let mut d = dial(Some(Family::V6), 12.0);
        d.bound_s = 130;
        d.queries = vec![("NAPTR".into(), 0.0), ("SRV".into(), 1.0)];
        d.transport = Some(Transport::Udp);
        assert_eq!(
            naptr_fallover(Some(&d)),
            "takes udp without trying TCP: answered in 12 ms"
        );
        d.first_tcp_ms = Some(1.5);
        d.first_udp_ms = Some(32_050.0);
        d.latency_ms = 32_060.0;
        assert_eq!(
            naptr_fallover(Some(&d)),
            "falls over to udp (TCP tried first): answered in 32.1 s"
        );
        // TCP sent, but only after UDP: no fall-over.
        d.first_tcp_ms = Some(32_055.0);
        d.first_udp_ms = Some(1.5);
        assert_eq!(
            naptr_fallover(Some(&d)),
            "takes udp first (TCP tried after it): answered in 32.1 s"
        );
        let mut stuck = dial(None, 130_000.0);
        stuck.bound_s = 130;
        stuck.queries = d.queries.clone();
        assert_eq!(naptr_fallover(Some(&stuck)), "no fall-over within 130 s");
        stuck.gave_up_ms = Some(4_000.0);
        assert_eq!(
            naptr_fallover(Some(&stuck)),
            "no fall-over: gave up after 4.0 s"
        );
        d.queries = vec![("SRV".into(), 0.0)];
        assert_eq!(naptr_fallover(Some(&d)), "no NAPTR");
        assert_eq!(naptr_fallover(None), "not run");
    }
}
