//! The figures of a "registered, then a family breaks" case, computed from
//! what was logged (pure: no I/O, unit-tested): the sender's log of its
//! requests to the AOR and the UA's flow events.
//!
//! Every time is in ms since the case's start (one monotonic clock for the
//! sender, the UA's events and the break).
//!
//! Definitions (printed with the tables, see [`DEFINITIONS`]):
//! - a request is **delivered** if the sender got a 2xx for it, **late** if
//!   that 2xx came more than `late_after_ms` after it was sent (e.g. after
//!   Kamailio's fr_timer failover to the next flow), **lost** otherwise (an
//!   error response, or no final response within the sender's bound, also
//!   for a request answered later than that during the run);
//! - **lost-inbound time**: for each run of consecutive lost requests (in
//!   sending order), the time from the first one's sending to the sending
//!   of the next delivered request (or, for a run that lasts until the end,
//!   one interval after the last one's sending), summed over the runs. At
//!   one request every `interval_ms`, it is the time during which a request
//!   sent to the AOR would not have been delivered, to one interval.
//! - **late time**: the same over runs of late requests.

use serde::Serialize;

/// How the tables define their columns.
pub const DEFINITIONS: &str = "delivered = the sender got a 2xx; late = a 2xx more than \
the late threshold after sending (e.g. after Kamailio's fr_timer moved the request to the \
next flow); lost = an error response or no final response within the sender's bound. \
Lost-inbound ms = for each run of consecutive lost requests, the time from the sending of \
its first request to the sending of the next delivered one (or one interval after its last \
one, at the end), summed; late ms likewise for runs of late requests. Notice = the UA's \
first `failed` event (of any flow) after the break; re-registered = that flow's next \
`recovered` (or `registered`) event, for baresip any flow's; both in ms after the break. \
The break is one-way, client → registrar: the registrar's requests still reach the UA \
(`lost, seen by the UA`), their answers do not.";

/// The final response a request got.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Answer {
    pub status: u16,
    pub at_ms: f64,
}

/// One request of the sender's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentRequest {
    /// Its sequence number (its CSeq), from 1.
    pub seq: u32,
    pub sent_ms: f64,
    /// The final response, if one came within the sender's bound.
    pub answer: Option<Answer>,
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    OnTime,
    Late,
    Lost,
}

impl SentRequest {
    pub fn outcome(&self, late_after_ms: f64) -> Outcome {
        match self.answer {
            Some(a) if (200..300).contains(&a.status) => {
                if a.at_ms - self.sent_ms > late_after_ms {
                    Outcome::Late
                } else {
                    Outcome::OnTime
                }
            }
            _ => Outcome::Lost,
        }
    }
}

/// The inbound figures of one UA.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InboundFigures {
    pub sent: usize,
    /// On time and late together.
    pub delivered: usize,
    pub late: usize,
    pub lost: usize,
    /// Lost requests the UA did see (its answer did not get back, or came
    /// after the sender's bound).
    pub lost_seen_by_ua: usize,
    pub lost_ms: f64,
    pub late_ms: f64,
}

/// The summed spans of the runs of requests with outcome `which` (see the
/// module's definitions); `requests` in sending order.
fn run_spans(outcomes: &[(f64, Outcome)], which: Outcome, interval_ms: f64) -> f64 {
    let mut total = 0.0;
    let mut run_start: Option<f64> = None;
    for &(sent, outcome) in outcomes {
        match (outcome == which, run_start) {
            (true, None) => run_start = Some(sent),
            (false, Some(start)) => {
                total += sent - start;
                run_start = None;
            }
            _ => {}
        }
    }
    if let (Some(start), Some(&(last, _))) = (run_start, outcomes.last()) {
        total += last + interval_ms - start;
    }
    total
}

/// The figures of a sender's log (any order); `seen_by_ua` are the
/// sequence numbers of the requests the UA reported.
pub fn inbound_figures(
    requests: &[SentRequest],
    seen_by_ua: &[u32],
    interval_ms: f64,
    late_after_ms: f64,
) -> InboundFigures {
    let mut sorted: Vec<&SentRequest> = requests.iter().collect();
    sorted.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    let outcomes: Vec<(f64, Outcome)> = sorted
        .iter()
        .map(|r| (r.sent_ms, r.outcome(late_after_ms)))
        .collect();
    let count = |o: Outcome| outcomes.iter().filter(|(_, x)| *x == o).count();
    let lost_seen_by_ua = sorted
        .iter()
        .filter(|r| r.outcome(late_after_ms) == Outcome::Lost && seen_by_ua.contains(&r.seq))
        .count();
    InboundFigures {
        sent: sorted.len(),
        delivered: count(Outcome::OnTime) + count(Outcome::Late),
        late: count(Outcome::Late),
        lost: count(Outcome::Lost),
        lost_seen_by_ua,
        lost_ms: run_spans(&outcomes, Outcome::Lost, interval_ms),
        late_ms: run_spans(&outcomes, Outcome::Late, interval_ms),
    }
}

/// One event of a UA (siprace register's JSON lines, or what was read off
/// another UA's log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UaEvent {
    pub at_ms: f64,
    pub flow: u32,
    /// registered, keepalive_ok, failed, recovering, recovered, rehomed,
    /// rehome_failed, unavailable, unregistered, inbound.
    pub event: String,
    /// ipv6 or ipv4, for events that name the flow's path.
    pub family: Option<String>,
    /// An inbound request's CSeq number.
    pub cseq: Option<u32>,
}

/// A span of one flow's life: up over a family, or down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowSpan {
    pub flow: u32,
    pub from_ms: f64,
    pub to_ms: f64,
    /// The family it was up over; None while down.
    pub up_over: Option<String>,
}

/// Each flow's spans up and down, from its first registration to `end_ms`.
pub fn flow_spans(events: &[UaEvent], end_ms: f64) -> Vec<FlowSpan> {
    let mut flows: Vec<u32> = events
        .iter()
        .filter(|e| e.flow > 0 && e.event != "inbound")
        .map(|e| e.flow)
        .collect();
    flows.sort_unstable();
    flows.dedup();
    let mut spans = Vec::new();
    for flow in flows {
        // (since, up over) of the flow's current state.
        let mut state: Option<(f64, Option<String>)> = None;
        for e in events.iter().filter(|e| e.flow == flow) {
            let next = match e.event.as_str() {
                // A flow that went back home (`rehomed`) stays up, over
                // its home family from then on.
                "registered" | "recovered" | "rehomed" => Some(e.family.clone()),
                "failed" | "unavailable" | "unregistered" => Some(None),
                _ => None,
            };
            let Some(up_over) = next else { continue };
            if let Some((since, was)) = state.take() {
                spans.push(FlowSpan {
                    flow,
                    from_ms: since,
                    to_ms: e.at_ms,
                    up_over: was,
                });
            }
            state = Some((e.at_ms, up_over));
        }
        if let Some((since, was)) = state {
            spans.push(FlowSpan {
                flow,
                from_ms: since,
                to_ms: end_ms.max(since),
                up_over: was,
            });
        }
    }
    spans
}

/// How a UA's flows met the break.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowFigures {
    /// Flows up at the break, as "ipv6", "ipv4" (in flow order).
    pub up_at_break: Vec<String>,
    /// A flow was up over the broken family at the break.
    pub affected: bool,
    /// The first `failed` event after the break, ms after it.
    pub notice_ms: Option<f64>,
    /// That flow's next `recovered` (or `registered`) event, ms after the break.
    pub reregistered_ms: Option<f64>,
    /// The family it came back over.
    pub reregistered_over: Option<String>,
}

/// The flow figures of a UA's events around a break at `break_ms` of
/// `broken_family` ("ipv6" or "ipv4").
pub fn flow_figures(events: &[UaEvent], break_ms: f64, broken_family: &str) -> FlowFigures {
    let mut figures = FlowFigures {
        up_at_break: flow_spans(events, f64::INFINITY)
            .into_iter()
            .filter(|s| s.from_ms <= break_ms && s.to_ms > break_ms)
            .filter_map(|s| s.up_over)
            .collect(),
        ..FlowFigures::default()
    };
    figures.affected = figures.up_at_break.iter().any(|f| f == broken_family);
    let Some(failed) = events
        .iter()
        .find(|e| e.event == "failed" && e.at_ms >= break_ms)
    else {
        return figures;
    };
    figures.notice_ms = Some(failed.at_ms - break_ms);
    // Flow 0: a UA whose failure report names no flow (baresip); then any
    // flow's next registration counts.
    if let Some(back) = events.iter().find(|e| {
        (e.flow == failed.flow || failed.flow == 0)
            && e.at_ms >= failed.at_ms
            && matches!(e.event.as_str(), "recovered" | "registered")
    }) {
        figures.reregistered_ms = Some(back.at_ms - break_ms);
        figures.reregistered_over = back.family.clone();
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request sent at `sent_ms`, answered `status` after `after_ms`
    /// (None: never answered).
    fn req(seq: u32, sent_ms: f64, answer: Option<(u16, f64)>) -> SentRequest {
        SentRequest {
            seq,
            sent_ms,
            answer: answer.map(|(status, after)| Answer {
                status,
                at_ms: sent_ms + after,
            }),
        }
    }

    fn event(at_ms: f64, flow: u32, event: &str, family: Option<&str>) -> UaEvent {
        UaEvent {
            at_ms,
            flow,
            event: event.into(),
            family: family.map(str::to_string),
            cseq: None,
        }
    }

    #[test]
    fn outcomes_are_on_time_late_or_lost() {
        assert_eq!(
            req(1, 0.0, Some((200, 5.0))).outcome(1000.0),
            Outcome::OnTime
        );
        assert_eq!(
            req(1, 0.0, Some((202, 3005.0))).outcome(1000.0),
            Outcome::Late
        );
        assert_eq!(
            req(1, 0.0, Some((408, 3005.0))).outcome(1000.0),
            Outcome::Lost
        );
        assert_eq!(req(1, 0.0, Some((404, 1.0))).outcome(1000.0), Outcome::Lost);
        assert_eq!(req(1, 0.0, None).outcome(1000.0), Outcome::Lost);
    }

    #[test]
    fn lost_time_spans_each_run_to_the_next_delivered_request() {
        // 1 ok, 2-4 lost, 5 ok, 6 late, 7 lost until the end.
        let log = vec![
            req(1, 0.0, Some((200, 2.0))),
            req(2, 200.0, Some((408, 3000.0))),
            req(3, 400.0, None),
            req(4, 600.0, Some((404, 1.0))),
            req(5, 800.0, Some((200, 2.0))),
            req(6, 1000.0, Some((200, 3001.0))),
            req(7, 1200.0, None),
        ];
        // In any order: the log is sorted by sending time first.
        let mut shuffled = log.clone();
        shuffled.reverse();
        let f = inbound_figures(&shuffled, &[2, 3, 5, 6], 200.0, 1000.0);
        assert_eq!(
            f,
            InboundFigures {
                sent: 7,
                delivered: 3,
                late: 1,
                lost: 4,
                lost_seen_by_ua: 2,
                // 200 → 800 (600 ms), then 1200 → the end (one interval).
                lost_ms: 800.0,
                late_ms: 200.0,
            }
        );
    }

    #[test]
    fn nothing_lost_is_zero_and_an_empty_log_is_all_zero() {
        let log = vec![
            req(1, 0.0, Some((200, 1.0))),
            req(2, 200.0, Some((200, 1.0))),
        ];
        let f = inbound_figures(&log, &[1, 2], 200.0, 1000.0);
        assert_eq!(
            (f.delivered, f.lost, f.lost_ms, f.late_ms),
            (2, 0, 0.0, 0.0)
        );
        assert_eq!(
            inbound_figures(&[], &[], 200.0, 1000.0),
            InboundFigures::default()
        );
    }

    #[test]
    fn a_flow_that_went_back_home_is_up_over_its_home_family_from_then_on() {
        let events = vec![
            event(11.0, 1, "registered", Some("ipv6")),
            event(14_000.0, 1, "failed", Some("ipv6")),
            event(14_040.0, 1, "recovered", Some("ipv4")),
            event(70_000.0, 1, "rehome_failed", None),
            event(130_000.0, 1, "rehomed", Some("ipv6")),
        ];
        let flow_1: Vec<(f64, f64, Option<String>)> = flow_spans(&events, 200_000.0)
            .into_iter()
            .map(|s| (s.from_ms, s.to_ms, s.up_over))
            .collect();
        let up = |f: &str| Some(f.to_string());
        assert_eq!(
            flow_1,
            [
                (11.0, 14_000.0, up("ipv6")),
                (14_000.0, 14_040.0, None),
                (14_040.0, 130_000.0, up("ipv4")),
                (130_000.0, 200_000.0, up("ipv6")),
            ]
        );
    }

    #[test]
    fn a_failed_flow_is_noticed_and_re_registered_over_the_other_family() {
        let events = vec![
            event(10.0, 2, "registered", Some("ipv4")),
            event(11.0, 1, "registered", Some("ipv6")),
            event(500.0, 2, "inbound", None),
            event(4000.0, 2, "keepalive_ok", Some("ipv4")),
            event(14_000.0, 1, "failed", Some("ipv6")),
            event(14_001.0, 1, "recovering", Some("ipv6")),
            event(14_040.0, 1, "recovered", Some("ipv4")),
        ];
        let f = flow_figures(&events, 1000.0, "ipv6");
        assert_eq!(f.up_at_break, ["ipv6", "ipv4"], "in flow order");
        assert!(f.affected);
        assert_eq!(f.notice_ms, Some(13_000.0));
        assert_eq!(f.reregistered_ms, Some(13_040.0));
        assert_eq!(f.reregistered_over.as_deref(), Some("ipv4"));
        let spans = flow_spans(&events, 20_000.0);
        let flow_1: Vec<(f64, f64, Option<&str>)> = spans
            .iter()
            .filter(|s| s.flow == 1)
            .map(|s| (s.from_ms, s.to_ms, s.up_over.as_deref()))
            .collect();
        assert_eq!(
            flow_1,
            [
                (11.0, 14_000.0, Some("ipv6")),
                (14_000.0, 14_040.0, None),
                (14_040.0, 20_000.0, Some("ipv4")),
            ]
        );
    }

    #[test]
    fn a_ua_without_a_flow_over_the_broken_family_is_not_affected() {
        let events = vec![event(10.0, 1, "registered", Some("ipv6"))];
        let f = flow_figures(&events, 1000.0, "ipv4");
        assert!(!f.affected);
        assert_eq!(f.up_at_break, ["ipv6"]);
        assert_eq!((f.notice_ms, f.reregistered_ms), (None, None));
        // A failure before the break is no notice of it; a flow that never
        // comes back has no re-registration.
        let events = vec![
            event(10.0, 1, "registered", Some("ipv6")),
            event(500.0, 1, "failed", Some("ipv6")),
            event(900.0, 1, "recovered", Some("ipv6")),
            event(3000.0, 1, "failed", Some("ipv6")),
        ];
        let f = flow_figures(&events, 1000.0, "ipv6");
        assert!(f.affected);
        assert_eq!((f.notice_ms, f.reregistered_ms), (Some(2000.0), None));
    }
}
