//! `siprace register AOR`: SIP Outbound (RFC 5626) with one flow per
//! address family, each raced, kept alive (CRLF pings on streams, STUN on
//! UDP) and re-raced when it fails, and moved back to its own family when a
//! flow that recovered onto the other flow's family can go home; inbound
//! OPTIONS and MESSAGE are answered with 200. One line per
//! event (`--json`: one JSON object per line), until `--for` has passed or
//! Ctrl-C; then every flow is unregistered (Expires: 0).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::tls::TlsArgs;
use super::{print, EXIT_CONNECTED, EXIT_NO_ANSWER, EXIT_USAGE};
use crate::complain;
use siprace::dialer::DialerConfig;
use siprace::endpoint::Family;
use siprace::outbound::agent::{Notice, RegisterConfig, Registration};
use siprace::outbound::digest::Credentials;
use siprace::outbound::flows::{EventKind, FlowConfig, DEFAULT_REHOME_AFTER};
use siprace::race::strategy::Strategy;
use siprace::report::terminal_safe;

/// Exit status after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;
/// The longest `--expires` (a day) and `--keepalive` (an hour).
const MAX_EXPIRES_S: u64 = 86_400;
const MAX_KEEPALIVE_S: u64 = 3_600;
/// The range of `--rehome-after`: a tenth of a second (labs and tests) to a
/// day (beyond, the back-off ceiling of 1800 s rules anyway).
const REHOME_AFTER_RANGE: std::ops::RangeInclusive<f64> = 0.1..=86_400.0;
/// The longest `--for` (a week).
const MAX_FOR: Duration = Duration::from_secs(7 * 86_400);

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 registered (and unregistered at the end), 1 never \
registered, 2 usage error, 130 interrupted (after unregistering)."
)]
pub struct RegisterArgs {
    /// The address-of-record, sip:user@domain (or sips:).
    aor: String,
    /// The registrar or outbound proxy to race (default: the AOR's domain),
    /// e.g. sip:registrar.example.test;transport=tls.
    #[arg(long, value_name = "URI")]
    registrar: Option<String>,
    /// The instance ID (+sip.instance), urn:uuid:…; default: one derived
    /// from /etc/machine-id and the AOR, the same on every run.
    #[arg(long, value_name = "URN")]
    instance: Option<String>,
    /// Flows to keep: 2 (one per address family) or 1. A registrar without
    /// Outbound (no `Require: outbound` in its 2xx) gets one registration
    /// whatever this says; its events say `outbound: false`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    flows: u32,
    /// Registration expiry to ask for, in seconds.
    #[arg(long, value_name = "S", default_value_t = 600)]
    expires: u64,
    /// Keep-alive interval in seconds when the registrar sends no Flow-Timer
    /// (default: RFC 5626's random 95–120 s).
    #[arg(long, value_name = "S")]
    keepalive: Option<u64>,
    /// With two flows: a flow that recovered onto the other flow's family
    /// tries to go back to its own after this many seconds (a random
    /// 50–100 % of it), doubled after each failed attempt up to 1800 s.
    /// Decimals allowed (0.1 to 86400); default 60. Refused with --flows 1.
    #[arg(long, value_name = "S")]
    rehome_after: Option<f64>,
    /// Stop after this long (e.g. 90s, 10m, 2h; plain numbers are seconds);
    /// default: until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// User name for the registrar's digest challenge.
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password for the registrar's digest challenge.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// One JSON object per event and line.
    #[arg(long)]
    json: bool,
    /// sequential | sequential-v4 | rfc6555 | rfc8305 | siprace
    #[arg(long, default_value = "siprace")]
    strategy: Strategy,
    /// DNS server to ask, IP[:PORT] (default: /etc/resolv.conf).
    #[arg(long, value_name = "IP[:PORT]")]
    dns: Option<String>,
    /// Only these transports (comma-separated: udp,tcp,tls,sctp).
    #[arg(long, value_delimiter = ',')]
    transports: Option<Vec<String>>,
    /// The local SIP host name for Via sent-by and Contact (RFC 5923).
    #[arg(long, value_name = "HOST")]
    local_name: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `90`, `90s`, `1500ms`, `10m`, `2h`: a duration up to [`MAX_FOR`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--for takes a duration like 90s, 10m or 2h, not {text:?}"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("--for: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if d.is_zero() || d > MAX_FOR {
        return Err(format!(
            "--for must be between 1 ms and 7 days, not {text:?}"
        ));
    }
    Ok(d)
}

/// An RFC 8141 URN as far as a Contact parameter needs (it goes inside
/// `"<…>"`): `urn:`, then only characters that cannot end the quoting or
/// the header.
fn is_urn(s: &str) -> bool {
    s.len() <= 256
        && s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        && s.len() > 4
        && s[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_+%".contains(c))
}

/// A urn:uuid (RFC 4122 version 5 layout) from the machine and the AOR, so
/// that the same UA registers with the same instance every run (RFC 5626
/// §4.1) without keeping a file.
fn derived_instance(aor: &str) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let seed = format!("siprace instance\n{}\n{aor}", machine.trim());
    let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut b: [u8; 16] = d.as_ref()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn configs(
    args: &RegisterArgs,
) -> Result<(DialerConfig, RegisterConfig, Option<Duration>), String> {
    if !(1..=MAX_EXPIRES_S).contains(&args.expires) {
        return Err(format!(
            "--expires must be 1 to {MAX_EXPIRES_S} s, not {}",
            args.expires
        ));
    }
    if let Some(k) = args
        .keepalive
        .filter(|k| !(1..=MAX_KEEPALIVE_S).contains(k))
    {
        return Err(format!(
            "--keepalive must be 1 to {MAX_KEEPALIVE_S} s, not {k}"
        ));
    }
    // Also refuses NaN and the infinities (outside every range).
    if let Some(r) = args
        .rehome_after
        .filter(|r| !REHOME_AFTER_RANGE.contains(r))
    {
        return Err(format!(
            "--rehome-after must be {} to {} s, not {r}",
            REHOME_AFTER_RANGE.start(),
            REHOME_AFTER_RANGE.end(),
        ));
    }
    // Refused rather than ignored: asked for, it would silently do nothing
    // (a lone flow shares its family with no other flow, so it is never
    // displaced), and whoever asked expects a move that never comes.
    if args.flows == 1 && args.rehome_after.is_some() {
        return Err(
            "--rehome-after applies with two flows only (--flows 2): a single flow \
             has no other flow's family to be displaced onto"
                .into(),
        );
    }
    let duration = args.duration.as_deref().map(parse_duration).transpose()?;
    if let Some(instance) = args.instance.as_deref().filter(|i| !is_urn(i)) {
        return Err(format!(
            "--instance must be a URN (urn:uuid:…: letters, digits and -.:_+%), not {:?}",
            terminal_safe(instance)
        ));
    }
    let mut dialer = DialerConfig::for_strategy(args.strategy);
    if let Some(list) = &args.transports {
        dialer.transports = Some(super::parse_transports(list)?);
    }
    if let Some(dns) = &args.dns {
        dialer.locate.dns_server =
            Some(siprace::locate::parse_dns_server(dns).map_err(|e| format!("--dns: {e}"))?);
    }
    args.tls.apply(&mut dialer.connect)?;
    dialer.connect.local_name = args.local_name.clone();
    let register = RegisterConfig {
        aor: args.aor.clone(),
        registrar: args.registrar.clone(),
        instance: args
            .instance
            .clone()
            .unwrap_or_else(|| derived_instance(&args.aor)),
        expires: Duration::from_secs(args.expires),
        credentials: args
            .user
            .clone()
            .zip(args.password.clone())
            .map(|(user, password)| Credentials { user, password }),
        flows: FlowConfig {
            flows: args.flows,
            keepalive: args.keepalive.map(Duration::from_secs),
            rehome_after: args
                .rehome_after
                .map_or(DEFAULT_REHOME_AFTER, Duration::from_secs_f64),
            ..FlowConfig::default()
        },
    };
    Ok((dialer, register, duration))
}

/// One event as a JSON line.
#[derive(Serialize)]
struct EventLine<'a> {
    t_ms: f64,
    flow: u32,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// An inbound request's CSeq number (a sender's sequence number, e.g.
    /// the bench's OPTIONS counter).
    #[serde(skip_serializing_if = "Option::is_none")]
    cseq: Option<u32>,
    /// On registered/recovered/rehomed: whether the registrar confirmed Outbound
    /// (`Require: outbound`); `false` means one plain registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    outbound: Option<bool>,
    /// On registered/recovered/rehomed: the family the flow's race tried first.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_family: Option<&'static str>,
    /// On registered/recovered/rehomed: history's note on that race's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a str>,
}

fn event_line(at: Duration, notice: &Notice) -> EventLine<'_> {
    let mut line = EventLine {
        t_ms: (at.as_secs_f64() * 10_000.0).round() / 10.0,
        flow: 0,
        event: "",
        family: None,
        transport: None,
        remote: None,
        reason: None,
        after_ms: None,
        method: None,
        status: None,
        cseq: None,
        outbound: None,
        first_family: None,
        history: None,
    };
    match notice {
        Notice::Flow(e) => {
            line.flow = e.flow;
            line.outbound = e.outbound;
            if let Some(race) = &e.race {
                line.first_family = Some(race.first_family.as_str());
                line.history = race.history.as_deref();
            }
            if let Some((transport, remote)) = e.path {
                line.family = Some(Family::of(&remote.ip()).as_str());
                line.transport = Some(transport.as_str());
                line.remote = Some(remote.to_string());
            }
            line.event = match &e.kind {
                EventKind::Registered => "registered",
                EventKind::KeepaliveOk => "keepalive_ok",
                EventKind::Failed(reason) => {
                    line.reason = Some(reason);
                    "failed"
                }
                EventKind::Recovering(after) => {
                    line.after_ms = Some((after.as_secs_f64() * 10_000.0).round() / 10.0);
                    "recovering"
                }
                EventKind::Recovered => "recovered",
                EventKind::Unavailable(reason) => {
                    line.reason = Some(reason);
                    "unavailable"
                }
                EventKind::Unregistered => "unregistered",
                EventKind::Rehomed => "rehomed",
                EventKind::RehomeFailed { reason, retry_in } => {
                    line.reason = Some(reason);
                    line.after_ms = Some((retry_in.as_secs_f64() * 10_000.0).round() / 10.0);
                    "rehome_failed"
                }
            };
        }
        Notice::Inbound {
            flow,
            method,
            status,
            request,
        } => {
            line.flow = *flow;
            line.event = "inbound";
            line.method = Some(method);
            line.status = Some(*status);
            line.cseq = Some(request.cseq.seq);
        }
    }
    line
}

/// The human line of an event.
fn human_line(line: &EventLine<'_>) -> String {
    let mut text = format!(
        "{:>9.3} s  flow {}  {:<12}",
        line.t_ms / 1000.0,
        line.flow,
        line.event
    );
    if let (Some(f), Some(t), Some(r)) = (line.family, line.transport, &line.remote) {
        text.push_str(&format!(" {f} {t} {r}"));
    }
    if let Some(reason) = line.reason {
        text.push_str(&format!(": {}", terminal_safe(reason)));
    }
    if let Some(after) = line.after_ms {
        text.push_str(&format!(" in {:.1} s", after / 1000.0));
    }
    if let (Some(m), Some(s)) = (line.method, line.status) {
        text.push_str(&format!(" {} answered {s}", terminal_safe(m)));
    }
    if line.outbound == Some(false) {
        text.push_str(" (the registrar lacks Outbound: one plain registration, no keep-alives)");
    }
    if let Some(history) = line.history {
        text.push_str(&format!(" (history: {})", terminal_safe(history)));
    }
    text
}

/// Runs `siprace register`.
pub async fn run(args: RegisterArgs) -> ExitCode {
    let (dialer, register, duration) = match configs(&args) {
        Ok(c) => c,
        Err(e) => {
            complain(format_args!("siprace register: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut registration = match Registration::start(dialer, register) {
        Ok(r) => r,
        Err(e) => {
            complain(format_args!("siprace register: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let end = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(end);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut stopping = false;
    let mut ever_registered = false;
    loop {
        let next = tokio::select! {
            n = registration.next() => n,
            _ = &mut end, if !stopping => { stopping = true; registration.stop(); continue; }
            _ = &mut ctrl_c, if !stopping => {
                interrupted = true;
                stopping = true;
                registration.stop();
                continue;
            }
        };
        let Some((at, notice)) = next else { break };
        ever_registered |= matches!(
            &notice,
            Notice::Flow(e) if matches!(e.kind, EventKind::Registered | EventKind::Recovered)
        );
        let line = event_line(at, &notice);
        if args.json {
            match serde_json::to_string(&line) {
                Ok(text) => print(&(text + "\n")),
                Err(e) => complain(format_args!("siprace: cannot encode an event: {e}")),
            }
        } else {
            print(&(human_line(&line) + "\n"));
        }
    }
    registration.finished().await;
    if interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if ever_registered {
        ExitCode::from(EXIT_CONNECTED)
    } else {
        ExitCode::from(EXIT_NO_ANSWER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siprace::outbound::flows::{FlowEvent, RaceNote, NO_OUTBOUND};
    use siprace::Transport;

    #[test]
    fn a_registrar_without_outbound_and_the_races_history_are_in_the_event_lines() {
        let registered = Notice::Flow(FlowEvent {
            flow: 1,
            kind: EventKind::Recovered,
            path: Some((Transport::Udp, "192.0.2.10:5060".parse().unwrap())),
            outbound: Some(false),
            race: Some(RaceNote {
                first_family: Family::V4,
                history: Some(
                    "ipv6/udp to r.example.test failed 0.2 s before: ipv4 first\x1b[2J".into(),
                ),
            }),
        });
        let line = event_line(Duration::from_millis(1500), &registered);
        let json: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(json["event"], "recovered");
        assert_eq!(json["outbound"], false);
        assert_eq!(json["first_family"], "ipv4");
        assert!(json["history"].as_str().unwrap().starts_with("ipv6/udp"));
        let human = human_line(&line);
        assert!(human.contains("lacks Outbound"), "{human}");
        assert!(human.contains("history: ipv6/udp"), "{human}");
        assert!(!human.contains('\x1b'), "DNS text is escaped: {human:?}");

        let dropped = Notice::Flow(FlowEvent {
            flow: 2,
            kind: EventKind::Unavailable(NO_OUTBOUND.into()),
            path: None,
            outbound: None,
            race: None,
        });
        let json = serde_json::to_value(event_line(Duration::ZERO, &dropped)).unwrap();
        assert_eq!(json["event"], "unavailable");
        assert!(json["reason"]
            .as_str()
            .unwrap()
            .contains("Require: outbound"));
        assert!(json.get("outbound").is_none(), "{json}");
    }

    #[test]
    fn a_flow_going_home_has_its_event_lines() {
        let rehomed = Notice::Flow(FlowEvent {
            flow: 1,
            kind: EventKind::Rehomed,
            path: Some((Transport::Tcp, "[2001:db8::10]:5060".parse().unwrap())),
            outbound: Some(true),
            race: Some(RaceNote {
                first_family: Family::V6,
                history: None,
            }),
        });
        let json = serde_json::to_value(event_line(Duration::from_secs(70), &rehomed)).unwrap();
        assert_eq!(json["event"], "rehomed");
        assert_eq!(json["family"], "ipv6");
        assert_eq!(json["remote"], "[2001:db8::10]:5060");
        assert_eq!(json["first_family"], "ipv6");

        let failed = Notice::Flow(FlowEvent {
            flow: 1,
            kind: EventKind::RehomeFailed {
                reason: "ipv6: connection refused\x1b[2J".into(),
                retry_in: Duration::from_millis(91_500),
            },
            path: Some((Transport::Tcp, "192.0.2.10:5060".parse().unwrap())),
            outbound: None,
            race: None,
        });
        let line = event_line(Duration::from_secs(70), &failed);
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["event"], "rehome_failed");
        assert_eq!(json["family"], "ipv4", "the flow stays where it was");
        assert_eq!(json["after_ms"], 91_500.0);
        let human = human_line(&line);
        assert!(human.contains("rehome_failed"), "{human}");
        assert!(human.contains("in 91.5 s"), "{human}");
        assert!(!human.contains('\x1b'), "{human:?}");
    }

    #[test]
    fn rehome_after_reaches_the_flow_config() {
        let args = parse(&["sip:a@example.test", "--rehome-after", "0.25"]).unwrap();
        let (_, register, _) = configs(&args).unwrap();
        assert_eq!(register.flows.rehome_after, Duration::from_millis(250));
        let args = parse(&["sip:a@example.test"]).unwrap();
        let (_, register, _) = configs(&args).unwrap();
        assert_eq!(register.flows.rehome_after, Duration::from_secs(60));
    }

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: RegisterArgs,
    }

    fn parse(line: &[&str]) -> Result<RegisterArgs, String> {
        use clap::Parser;
        let argv = std::iter::once("register").chain(line.iter().copied());
        Wrapper::try_parse_from(argv)
            .map(|w| w.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absurd_values_are_usage_errors_naming_the_flag() {
        for (line, flag) in [
            (&["sip:a@example.test", "--expires", "0"][..], "--expires"),
            (
                &["sip:a@example.test", "--expires", "99999999"][..],
                "--expires",
            ),
            (
                &["sip:a@example.test", "--keepalive", "0"][..],
                "--keepalive",
            ),
            (&["sip:a@example.test", "--for", "0s"][..], "--for"),
            (
                &["sip:a@example.test", "--rehome-after", "0"][..],
                "--rehome-after",
            ),
            (
                &["sip:a@example.test", "--rehome-after", "1e9"][..],
                "--rehome-after",
            ),
            (
                &["sip:a@example.test", "--rehome-after", "NaN"][..],
                "--rehome-after",
            ),
            (
                &["sip:a@example.test", "--rehome-after=-5"][..],
                "--rehome-after",
            ),
            (
                &["sip:a@example.test", "--flows", "1", "--rehome-after", "5"][..],
                "--rehome-after applies with two flows only",
            ),
            (
                &["sip:a@example.test", "--transports", "quic"][..],
                "transport",
            ),
            (&["sip:a@example.test", "--dns", "not-an-ip"][..], "--dns"),
            (
                &[
                    "sip:a@example.test",
                    "--instance",
                    "urn:uuid:x>\"\r\nX-Evil: 1",
                ][..],
                "--instance",
            ),
            (
                &["sip:a@example.test", "--instance", "uuid:1234"][..],
                "--instance",
            ),
        ] {
            let args = parse(line).expect("parses");
            let err = configs(&args).expect_err("refused");
            assert!(err.contains(flag), "{line:?}: {err}");
        }
        // Refused by the parser itself: a third flow, a lone password.
        assert!(parse(&["sip:a@example.test", "--flows", "3"]).is_err());
        assert!(parse(&["sip:a@example.test", "--password", "x"]).is_err());
    }

    #[tokio::test]
    async fn an_aor_without_a_user_is_refused() {
        let args = parse(&["sip:example.test"]).unwrap();
        let (dialer, register, _) = configs(&args).unwrap();
        let err = Registration::start(dialer, register)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no user part"), "{err}");
    }

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "0", "s", "10x", "-1", "99999999999999999999", "8000h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_derived_instance_is_a_stable_version_5_urn_uuid() {
        let a = derived_instance("sip:alice@example.test");
        assert_eq!(a, derived_instance("sip:alice@example.test"));
        assert_ne!(a, derived_instance("sip:bob@example.test"));
        assert!(is_urn(&a), "{a}");
        assert_eq!(a.len(), "urn:uuid:".len() + 36);
        assert_eq!(&a["urn:uuid:".len() + 14..][..1], "5");
    }
}
