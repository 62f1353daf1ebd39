//! `siprace responder`: its flags, the [`ResponderConfig`] they make, and
//! the command's run (serve until Ctrl-C or SIGTERM, printing counters).

use std::path::PathBuf;
use std::time::Duration;

use siprace::connect::tls::PemSource;
use siprace::endpoint::Transport;
use siprace::outbound::digest::Credentials;
use siprace::responder::{
    start, write_stats, FlowChoice, FlowRequest, ListenSpec, RegistrarConfig, ResponderConfig,
    ResponderHandle, ResponderTls, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PENDING_OUTPUT,
    DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
use siprace::sip::MAX_MESSAGE_SIZE;

/// `siprace responder`: answer SIP requests for tests and the lab.
#[derive(Debug, Clone, clap::Args)]
pub struct ResponderArgs {
    /// Where to listen: udp|tcp|both|tls|sctp:ADDR:PORT[,silent], e.g. udp:[::1]:5060,
    /// tcp:127.0.0.1:5060, both:[::]:5060, tls:[::1]:5061, sctp:[::1]:5060. Repeatable.
    #[arg(long = "listen", value_name = "SPEC", required = true)]
    pub listen: Vec<ListenSpec>,
    /// Never answer on any listener (receive and count only): a black-holed server.
    #[arg(long)]
    pub silent: bool,
    /// Print the counters as one JSON line every SECS seconds (and write --stats-file).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stats_every: Option<u64>,
    /// Write the counters as JSON to this file on shutdown (and every --stats-every).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Most TCP/TLS/SCTP connections served at once; more are closed on accept.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TCP_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub max_connections: usize,
    /// Close TCP connections idle for this many seconds (default 60; with
    /// --registrar, 30 s more than the longest keep-alive interval of a
    /// registered flow: --flow-timer, or RFC 5626's 120 s without one).
    #[arg(long, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: Option<u64>,
    /// TLS certificate chain (PEM) for tls: listeners. Without it, a throwaway
    /// certificate for --domain is generated.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The SIP domain of the throwaway certificate (URI SAN sip:DOMAIN and dNSName DOMAIN).
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "example.test",
        conflicts_with = "cert"
    )]
    pub domain: String,
    /// Write the throwaway certificate's CA (PEM) here, for clients' --ca.
    #[arg(long, value_name = "FILE", conflicts_with = "cert")]
    pub write_ca: Option<PathBuf>,
    /// Require TLS clients to present a certificate issued by this CA (PEM).
    /// Their certificates' SIP identities decide whether an RFC 5923 `alias`
    /// in their Via is honoured.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: also serve TLS clients that present no certificate
    /// (their `alias` is refused and counted) instead of failing their handshake.
    #[arg(long, requires = "client_ca")]
    pub client_cert_optional: bool,
    /// RFC 5923 call-back: when a TLS client's `alias` is honoured, send it
    /// an OPTIONS over its own connection (never a new one) and count the
    /// answer (callbacks_sent / callbacks_answered in the stats).
    #[arg(long)]
    pub call_back: bool,
    /// Close a TCP/TLS/SCTP connection whose request (head and body) is not
    /// complete this many seconds after its first byte; also bounds TLS handshakes.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Close a connection when writing one answer takes this many seconds
    /// (a peer that does not read).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WRITE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,
    /// Be a minimal SIP Outbound registrar (RFC 5626): bind REGISTERed
    /// contacts with the flow (connection or UDP 5-tuple) they came over,
    /// keyed by AOR, +sip.instance and reg-id; answer STUN keep-alives.
    #[arg(long)]
    pub registrar: bool,
    /// Challenge REGISTERs (digest, SHA-256 and MD5) for this user.
    #[arg(long, value_name = "USER", requires_all = ["registrar", "registrar_password"])]
    pub registrar_user: Option<String>,
    /// The password of --registrar-user.
    #[arg(long, value_name = "PASSWORD", requires = "registrar_user")]
    pub registrar_password: Option<String>,
    /// The digest realm of the challenge.
    #[arg(
        long,
        value_name = "REALM",
        default_value = "siprace",
        requires = "registrar"
    )]
    pub realm: String,
    /// The Flow-Timer (seconds) sent to Outbound registrations; 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "registrar",
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub flow_timer: u64,
    /// With --registrar: play a registrar without Outbound support (reg-id
    /// ignored, no `Require: outbound`, no Flow-Timer).
    #[arg(long, requires = "registrar")]
    pub no_outbound: bool,
    /// Send a MESSAGE to this AOR every --send-every ms, down the first flow
    /// that works (RFC 5626 §5.3), printing one JSON line per result.
    #[arg(long, value_name = "AOR", requires_all = ["registrar", "send_every"])]
    pub send_to: Option<String>,
    /// Send OPTIONS instead of MESSAGE to --send-to.
    #[arg(long, requires = "send_to")]
    pub send_options: bool,
    /// The period of --send-to, in milliseconds.
    #[arg(long, value_name = "MS", requires = "send_to",
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub send_every: Option<u64>,
}

/// Most --send-to requests awaiting their answer at once; a tick finding
/// this many is skipped (and said so).
const MAX_SENDS_IN_FLIGHT: usize = 16;
/// How long one --send-to request may wait for its answer on one flow.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

impl ResponderArgs {
    pub fn config(&self) -> ResponderConfig {
        ResponderConfig {
            listeners: self
                .listen
                .iter()
                .flat_map(|spec| spec.listeners())
                .map(|mut l| {
                    l.silent |= self.silent;
                    l
                })
                .collect(),
            max_tcp_connections: self.max_connections,
            max_message_size: MAX_MESSAGE_SIZE,
            idle_timeout: self.idle_timeout.map_or_else(
                || DEFAULT_IDLE_TIMEOUT.max(self.keepalive_bound() + Duration::from_secs(30)),
                Duration::from_secs,
            ),
            request_timeout: Duration::from_secs(self.request_timeout),
            write_timeout: Duration::from_secs(self.write_timeout),
            max_pending_output: DEFAULT_MAX_PENDING_OUTPUT,
            tls: match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => Some(ResponderTls {
                    cert: PemSource::File(cert.clone()),
                    key: PemSource::File(key.clone()),
                    client_ca: self.client_ca.clone().map(PemSource::File),
                }),
                _ => None,
            },
            client_certificate_optional: self.client_cert_optional,
            call_back: self.call_back,
            registrar: self.registrar.then(|| RegistrarConfig {
                auth: match (&self.registrar_user, &self.registrar_password) {
                    (Some(user), Some(password)) => Some(Credentials {
                        user: user.clone(),
                        password: password.clone(),
                    }),
                    _ => None,
                },
                realm: self.realm.clone(),
                flow_timer: (self.flow_timer > 0).then(|| Duration::from_secs(self.flow_timer)),
                outbound: !self.no_outbound,
                ..RegistrarConfig::default()
            }),
        }
    }

    /// The longest a registered stream flow may go without a keep-alive:
    /// the Flow-Timer sent, else RFC 5626 §4.4.1's 120 s at most (zero
    /// when not a registrar).
    fn keepalive_bound(&self) -> Duration {
        match (self.registrar, self.flow_timer) {
            (false, _) => Duration::ZERO,
            (true, 0) => Duration::from_secs(120),
            (true, secs) => Duration::from_secs(secs),
        }
    }

    /// [`config`](Self::config), plus a throwaway certificate for --domain
    /// when a TLS listener has none (its CA written to --write-ca).
    /// Refuses an --idle-timeout that would close registered flows between
    /// their keep-alives.
    pub fn config_with_tls(&self) -> Result<ResponderConfig, String> {
        let bound = self.keepalive_bound();
        if let Some(idle) = self
            .idle_timeout
            .filter(|&s| Duration::from_secs(s) <= bound)
        {
            return Err(format!(
                "--idle-timeout {idle} would close registered flows between their keep-alives \
                 (up to {} s apart): give more than that, or a shorter --flow-timer",
                bound.as_secs()
            ));
        }
        let mut cfg = self.config();
        let serves_tls = cfg.listeners.iter().any(|l| l.transport == Transport::Tls);
        if serves_tls && cfg.tls.is_none() {
            let (mut tls, ca_pem) = ResponderTls::generate(&self.domain)?;
            tls.client_ca = self.client_ca.clone().map(PemSource::File);
            if let Some(path) = &self.write_ca {
                std::fs::write(path, &ca_pem)
                    .map_err(|e| format!("cannot write the CA to {}: {e}", path.display()))?;
            }
            cfg.tls = Some(tls);
        } else if self.write_ca.is_some() && !serves_tls {
            return Err("--write-ca needs a tls: listener".into());
        }
        Ok(cfg)
    }
}

/// Runs the responder until Ctrl-C or SIGTERM.
pub async fn run(args: ResponderArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cfg = args.config_with_tls()?;
    let handle = start(cfg.clone()).await?;
    for l in handle.listeners() {
        println!("listening {l}");
    }
    if handle
        .listeners()
        .iter()
        .any(|l| l.transport == Transport::Tls)
    {
        match (&args.cert, &args.write_ca) {
            (Some(cert), _) => println!("tls certificate {}", cert.display()),
            (None, Some(ca)) => println!(
                "tls throwaway certificate for sip:{} (CA written to {})",
                args.domain,
                ca.display()
            ),
            (None, None) => println!(
                "tls throwaway certificate for sip:{} (its CA is not saved: use --write-ca FILE)",
                args.domain
            ),
        }
        if let Some(ca) = &args.client_ca {
            let how = if args.client_cert_optional {
                "asks for (optional)"
            } else {
                "requires"
            };
            println!("tls {how} a client certificate issued by {}", ca.display());
        }
    }
    if args.call_back && args.client_ca.is_none() {
        println!(
            "note: --call-back without --client-ca: no client certificate is asked for, so every alias is refused (RFC 5923 §5.1)"
        );
    }
    if let Some(registrar) = &cfg.registrar {
        println!(
            "registrar: realm {}, {}, Flow-Timer {}",
            registrar.realm,
            if registrar.auth.is_some() {
                "digest challenge"
            } else {
                "no authentication"
            },
            registrar
                .flow_timer
                .map_or("none".into(), |t| format!("{} s", t.as_secs())),
        );
    }
    let handle = std::sync::Arc::new(handle);
    let mut sends = tokio::task::JoinSet::new();
    let mut send_ticker = args.send_every.map(|ms| {
        let mut t = tokio::time::interval(Duration::from_millis(ms));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let started = tokio::time::Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticker = args.stats_every.map(|secs| {
        let period = Duration::from_secs(secs);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            _ = term.recv() => break,
            Some(_) = sends.join_next(), if !sends.is_empty() => {}
            _ = async {
                match send_ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let aor = args.send_to.clone().unwrap_or_default();
                let t_ms = started.elapsed().as_millis();
                if sends.len() >= MAX_SENDS_IN_FLIGHT {
                    println!("{}", serde_json::json!({"t_ms": t_ms, "aor": aor, "error": "skipped: too many requests in flight"}));
                    continue;
                }
                let handle = handle.clone();
                let options = args.send_options;
                sends.spawn(async move {
                    let request = if options {
                        FlowRequest::Options
                    } else {
                        FlowRequest::Message(format!("siprace responder at {t_ms} ms"))
                    };
                    println!("{}", send_line(t_ms, &aor, &handle, &request).await);
                });
            }
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let snap = handle.stats();
                println!("stats {}", serde_json::to_string(&snap)?);
                if let Some(path) = &args.stats_file {
                    write_stats(path, &snap)?;
                }
            }
        }
    }
    // The requests in flight may finish (each is bounded), so that every
    // one sent has its line.
    let drained = tokio::time::timeout(2 * SEND_TIMEOUT, async {
        while sends.join_next().await.is_some() {}
    });
    let _ = drained.await;
    sends.shutdown().await;
    let handle =
        std::sync::Arc::into_inner(handle).ok_or("a send task still holds the responder")?;
    let snap = handle.shutdown().await;
    if let Some(path) = &args.stats_file {
        write_stats(path, &snap)?;
    }
    let t = snap.total();
    println!(
        "stopped: {} requests, {} responses, {} invalid, {} connections",
        t.requests, t.responses, t.invalid, t.connections
    );
    if args.call_back || t.alias_accepted > 0 || refused_aliases(&t) > 0 {
        println!("{}", reuse_line(&t));
    }
    Ok(())
}

/// Sends `request` to `aor` down its first working flow; the result as
/// one JSON line (`t_ms` is when it was sent).
async fn send_line(
    t_ms: u128,
    aor: &str,
    handle: &ResponderHandle,
    request: &FlowRequest,
) -> serde_json::Value {
    let skipped = |list: &[(u32, String)]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|(id, why)| serde_json::json!({"reg_id": id, "why": why}))
            .collect()
    };
    match handle
        .send_to_aor(aor, FlowChoice::FirstWorking, request, SEND_TIMEOUT)
        .await
    {
        Ok(d) => serde_json::json!({
            "t_ms": t_ms, "aor": aor, "status": d.status, "reg_id": d.reg_id,
            "transport": d.flow.transport.as_str(), "remote": d.flow.peer.to_string(),
            "skipped": skipped(&d.skipped),
        }),
        Err(siprace::responder::FlowSendError::AllFailed(list)) => serde_json::json!({
            "t_ms": t_ms, "aor": aor, "error": "every flow failed", "skipped": skipped(&list),
        }),
        Err(e) => serde_json::json!({"t_ms": t_ms, "aor": aor, "error": e.to_string()}),
    }
}

/// Aliases refused, whatever the reason.
fn refused_aliases(t: &siprace::responder::Counters) -> u64 {
    t.alias_refused_not_tls + t.alias_refused_no_client_cert + t.alias_refused_cert_mismatch
}

/// The RFC 5923 counters as one line: connections opened by clients vs
/// reused by the responder, aliases accepted and refused by reason,
/// call-backs sent and answered.
fn reuse_line(t: &siprace::responder::Counters) -> String {
    format!(
        "reuse: connections opened {} (by clients), reused {} (by call-backs); \
         alias accepted {}, refused {} (not TLS {}, no client certificate {}, certificate does not cover the sent-by {}); \
         call-backs sent {}, answered {}, unsent {}",
        t.connections,
        t.connections_reused,
        t.alias_accepted,
        refused_aliases(t),
        t.alias_refused_not_tls,
        t.alias_refused_no_client_cert,
        t.alias_refused_cert_mismatch,
        t.callbacks_sent,
        t.callbacks_answered,
        t.callbacks_unsent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ResponderArgs,
    }

    #[test]
    fn cli_args() {
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "udp:[::1]:5060",
            "--listen",
            "both:127.0.0.1:0,silent",
            "--stats-every",
            "5",
        ])
        .unwrap();
        let cfg = cli.args.config();
        assert_eq!(cfg.listeners.len(), 3);
        assert_eq!(
            cfg.listeners.iter().map(|l| l.silent).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(cli.args.stats_every, Some(5));
        assert_eq!(cfg.max_tcp_connections, DEFAULT_MAX_TCP_CONNECTIONS);
        let cli = Cli::try_parse_from(["x", "--listen", "udp:[::1]:5060", "--silent"]).unwrap();
        assert!(cli.args.config().listeners[0].silent);
        assert!(Cli::try_parse_from(["x"]).is_err(), "--listen is required");
        assert!(Cli::try_parse_from(["x", "--listen", "nope"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "--listen", "udp:[::1]:1", "--stats-every", "0"]).is_err()
        );
        let cfg = Cli::try_parse_from(["x", "--listen", "tcp:[::1]:0"])
            .unwrap()
            .args
            .config();
        assert_eq!(
            (cfg.request_timeout, cfg.write_timeout),
            (DEFAULT_REQUEST_TIMEOUT, DEFAULT_WRITE_TIMEOUT)
        );
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "tcp:[::1]:0",
            "--request-timeout",
            "3",
            "--write-timeout",
            "4",
        ])
        .unwrap();
        let cfg = cli.args.config();
        assert_eq!(
            (cfg.request_timeout, cfg.write_timeout),
            (Duration::from_secs(3), Duration::from_secs(4))
        );
        for flag in ["--request-timeout", "--write-timeout"] {
            assert!(Cli::try_parse_from(["x", "--listen", "tcp:[::1]:0", flag, "0"]).is_err());
        }
    }

    #[test]
    fn registrar_flags() {
        let cfg = Cli::try_parse_from(["x", "--listen", "both:[::1]:0"])
            .unwrap()
            .args
            .config();
        assert_eq!(cfg.registrar, None);
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "both:[::1]:0",
            "--registrar",
            "--registrar-user",
            "alice",
            "--registrar-password",
            "secret",
            "--flow-timer",
            "0",
            "--send-to",
            "sip:alice@example.test",
            "--send-every",
            "200",
        ])
        .unwrap();
        let registrar = cli.args.config().registrar.expect("a registrar");
        assert_eq!(
            registrar.auth.as_ref().map(|c| c.user.as_str()),
            Some("alice")
        );
        assert_eq!(registrar.flow_timer, None);
        // No Flow-Timer: keep-alives may be 120 s apart; idle closes later.
        assert_eq!(cli.args.config().idle_timeout, Duration::from_secs(150));
        let low = Cli::try_parse_from([
            "x",
            "--listen",
            "tcp:[::1]:0",
            "--registrar",
            "--idle-timeout",
            "30",
        ])
        .unwrap();
        let err = low.args.config_with_tls().unwrap_err();
        assert!(err.contains("--idle-timeout 30"), "{err}");
        let cfg = Cli::try_parse_from(["x", "--listen", "tcp:[::1]:0", "--registrar"])
            .unwrap()
            .args
            .config();
        let registrar = cfg.registrar.unwrap();
        assert_eq!(registrar.flow_timer, Some(Duration::from_secs(30)));
        assert_eq!(registrar.auth, None);
        // Registrar options need --registrar; a user needs a password;
        // --send-to needs a period (and the period a target).
        for bad in [
            &["--registrar-user", "a", "--registrar-password", "b"][..],
            &["--registrar", "--registrar-user", "a"],
            &["--flow-timer", "5"],
            &["--registrar", "--send-to", "sip:a@example.test"],
            &["--registrar", "--send-every", "100"],
            &["--registrar", "--send-to", "sip:a@x", "--send-every", "1"],
            &["--registrar", "--send-options"],
            &["--no-outbound"],
        ] {
            let mut line = vec!["x", "--listen", "tcp:[::1]:0"];
            line.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&line).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn alias_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "tls:[::1]:0",
            "--client-ca",
            "ca.pem",
            "--client-cert-optional",
            "--call-back",
        ])
        .unwrap();
        let cfg = cli.args.config();
        assert!(cfg.call_back && cfg.client_certificate_optional);
        let cfg = Cli::try_parse_from(["x", "--listen", "tls:[::1]:0"])
            .unwrap()
            .args
            .config();
        assert!(!cfg.call_back && !cfg.client_certificate_optional);
        // Optional client certificates only mean something with a client CA.
        assert!(
            Cli::try_parse_from(["x", "--listen", "tls:[::1]:0", "--client-cert-optional"])
                .is_err()
        );
        let mut t = siprace::responder::Counters {
            connections: 4,
            connections_reused: 1,
            alias_accepted: 1,
            alias_refused_not_tls: 1,
            alias_refused_no_client_cert: 2,
            alias_refused_cert_mismatch: 3,
            callbacks_sent: 1,
            callbacks_answered: 1,
            ..Default::default()
        };
        assert_eq!(refused_aliases(&t), 6);
        let line = reuse_line(&t);
        assert!(
            line.starts_with("reuse: connections opened 4 (by clients), reused 1"),
            "{line}"
        );
        assert!(line.contains("refused 6 (not TLS 1, no client certificate 2, certificate does not cover the sent-by 3)"), "{line}");
        t.callbacks_unsent = 2;
        assert!(reuse_line(&t).ends_with("call-backs sent 1, answered 1, unsent 2"));
    }

    #[test]
    fn tls_cli_and_throwaway_certificate() {
        let dir = std::env::temp_dir().join(format!("siprace-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "tls:[::1]:0",
            "--domain",
            "sip.example.test",
            "--write-ca",
            ca.to_str().unwrap(),
        ])
        .unwrap();
        let cfg = cli.args.config_with_tls().unwrap();
        let tls = cfg.tls.expect("a throwaway identity");
        let leaf = &tls.cert.certificates().unwrap()[0];
        let ids = siprace::connect::tls::CertIdentities::from_der(leaf.as_ref()).unwrap();
        assert_eq!(ids.sip_uris, ["sip.example.test"]);
        assert_eq!(ids.dns, ["sip.example.test"]);
        assert!(tls.server_config().is_ok());
        // The written CA is the one that issued the leaf.
        let ca_pem = PemSource::File(ca.clone());
        assert_eq!(ca_pem.certificates().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
        // --cert needs --key; --write-ca without a TLS listener is refused.
        assert!(Cli::try_parse_from(["x", "--listen", "tls:[::1]:0", "--cert", "c.pem"]).is_err());
        let cli =
            Cli::try_parse_from(["x", "--listen", "udp:[::1]:0", "--write-ca", "/tmp/x"]).unwrap();
        assert!(cli.args.config_with_tls().is_err());
    }
}
