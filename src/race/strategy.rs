//! Named strategies: the race parameters of siprace and of the behaviours it
//! is compared against in the benchmark.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::endpoint::Family;
use crate::race::RaceConfig;

/// A named behaviour: siprace's, or one it is compared against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Strategy {
    /// What today's SIP stacks do: wait for every DNS answer, try one address
    /// at a time in DNS order with IPv6 first (RFC 6724 `getaddrinfo` order,
    /// as PJSIP, belle-sip or SIPp get it), move on only after a failure or
    /// after Timer B/F (32 s) expires.
    Sequential,
    /// The same with IPv4 first, as Kamailio (A before AAAA), OpenSIPS
    /// (IPv4 by default) and stacks on hickory's old `Ipv4thenIpv6` do.
    #[serde(rename = "sequential-v4")]
    SequentialV4,
    /// RFC 6555: wait for both address answers (as `getaddrinfo` does), IPv6
    /// first, one IPv4 fallback after 300 ms, at most two attempts at once.
    Rfc6555,
    /// RFC 8305: Resolution Delay, interleaving, RFC 6724, fixed 250 ms
    /// Connection Attempt Delay; DNS stages one after the other; no history.
    Rfc8305,
    /// siprace: RFC 8305 with a shorter cold attempt delay
    /// ([`SIPRACE_ATTEMPT_DELAY`]), history per network (order, RTT rule,
    /// RTT-based delays, cross-host evidence; see [`crate::race::history`])
    /// and pipelined NAPTR/SRV queries.
    Siprace,
}

/// siprace's attempt delay when history knows nothing of the path (a
/// cold dial). RFC 8305 says 250 ms; this value comes from the IPv6 delay
/// sweep (`bench-scenarios/ipv6-delay-sweep.toml`) read against the
/// published measurements (Bajpai and Schönwälder: see the README's
/// "Strategies" section for the figures behind it).
pub const SIPRACE_ATTEMPT_DELAY: Duration = Duration::from_millis(100);

impl Strategy {
    /// Every strategy: today's stacks first, siprace last.
    pub const ALL: [Strategy; 5] = [
        Strategy::Sequential,
        Strategy::SequentialV4,
        Strategy::Rfc6555,
        Strategy::Rfc8305,
        Strategy::Siprace,
    ];

    /// The strategy's name, as [`FromStr`] parses it and reports show it (the
    /// same as its serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Sequential => "sequential",
            Strategy::SequentialV4 => "sequential-v4",
            Strategy::Rfc6555 => "rfc6555",
            Strategy::Rfc8305 => "rfc8305",
            Strategy::Siprace => "siprace",
        }
    }

    /// The race parameters of this strategy.
    pub fn race_config(self) -> RaceConfig {
        let base = RaceConfig::default();
        match self {
            Strategy::Sequential => RaceConfig {
                resolution_delay: None,
                staggered: false,
                rfc6724: false,
                preferred_family_count: 0,
                max_concurrent: 1,
                attempt_timeout: Some(Duration::from_secs(32)),
                deadline: Duration::from_secs(130),
                use_history: false,
                ..base
            },
            Strategy::SequentialV4 => RaceConfig {
                preferred_family: Family::V4,
                ..Strategy::Sequential.race_config()
            },
            Strategy::Rfc6555 => RaceConfig {
                resolution_delay: None,
                attempt_delay: Duration::from_millis(300),
                max_concurrent: 2,
                use_history: false,
                ..base
            },
            Strategy::Rfc8305 => RaceConfig {
                use_history: false,
                ..base
            },
            Strategy::Siprace => RaceConfig {
                attempt_delay: SIPRACE_ATTEMPT_DELAY,
                ..base
            },
        }
    }

    /// Whether NAPTR and SRV queries go out together (see `locate`).
    pub fn pipelined_dns(self) -> bool {
        matches!(self, Strategy::Siprace)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A strategy name that is none of [`Strategy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {0:?} (expected sequential, sequential-v4, rfc6555, rfc8305 or siprace)")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse(), Ok(s));
            assert_eq!(s.as_str().to_uppercase().parse(), Ok(s));
        }
        let err = "happy".parse::<Strategy>().unwrap_err();
        assert_eq!(err, UnknownStrategy("happy".into()));
        assert!(err.to_string().contains("expected sequential"), "{err}");
    }
}
