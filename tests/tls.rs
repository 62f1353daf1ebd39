//! TLS on loopback: certificates made here with rcgen, served by the
//! responder, checked by the attempt layer as RFC 5922 says; end-to-end
//! `sips:` dials through the lab DNS server.
//!
//! Each wrong certificate must fail closed with ErrorClass::Certificate and
//! an error that names the expected SIP domain and what the certificate
//! holds; the printed messages are the ones a user sees.
//!
//! No assertion here is a latency claim.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, SanType,
};
use siprace::connect::tls::{PemSource, TlsSettings};
use siprace::connect::{self, ConnectConfig, Connected, Connection};
use siprace::dialer::{DialError, Dialer, DialerConfig};
use siprace::endpoint::{AttemptError, Endpoint, ErrorClass, Family, Transport};
use siprace::lab::dns::{DnsServer, DnsServerConfig};
use siprace::race::strategy::Strategy;
use siprace::responder::{ResponderConfig, ResponderHandle, ResponderTls};

mod common;
use common::DOMAIN;

/// A test CA.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(p, key),
            pem: cert.pem(),
        }
    }

    /// A leaf with these names: `uri:sip:x`, `dns:x`, `cn:x` (no SAN at all
    /// if only `cn:` names are given).
    fn leaf(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        for n in names {
            match n.split_once(':').unwrap() {
                ("uri", v) => p
                    .subject_alt_names
                    .push(SanType::URI(v.to_string().try_into().unwrap())),
                ("dns", v) => p
                    .subject_alt_names
                    .push(SanType::DnsName(v.to_string().try_into().unwrap())),
                ("cn", v) => p.distinguished_name.push(DnType::CommonName, v),
                other => panic!("bad name {other:?}"),
            }
        }
        edit(&mut p);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn responder_tls(&self, names: &[&str]) -> ResponderTls {
        let (cert, key) = self.leaf(names, |_| {});
        ResponderTls {
            cert: PemSource::Pem(cert),
            key: PemSource::Pem(key),
            client_ca: None,
        }
    }

    /// Client settings trusting only this CA.
    fn trusted_by(&self) -> TlsSettings {
        TlsSettings {
            ca: vec![PemSource::Pem(self.pem.clone())],
            system_roots: false,
            ..TlsSettings::default()
        }
    }
}

/// A responder serving TLS on `::1` and `127.0.0.1` on one port.
async fn tls_responder(tls: ResponderTls) -> ResponderHandle {
    let config = ResponderConfig {
        tls: Some(tls),
        ..ResponderConfig::default()
    };
    common::responder_on_both(&[Transport::Tls], config).await
}

/// One TLS attempt to the responder's IPv6 listener, found through the SRV
/// target `sip1.<domain>` but verified against `domain`.
async fn attempt(
    responder: &ResponderHandle,
    domain: &str,
    tls: TlsSettings,
) -> Result<Connected, AttemptError> {
    let addr = responder.addr(Transport::Tls, Family::V6).unwrap();
    let endpoint = Endpoint {
        transport: Transport::Tls,
        addr,
        host: Arc::from(format!("sip1.{domain}")),
        rank: 0,
    };
    let cfg = ConnectConfig {
        probe_streams: true,
        sip_domain: domain.to_string(),
        request_uri: format!("sips:{domain}"),
        tls,
        ..ConnectConfig::default()
    };
    connect::attempt(&endpoint, &cfg, &|_| {}).await
}

/// Asserts a verified connection that carried an OPTIONS and its 200.
async fn assert_accepted(names: &[&str], domain: &str) {
    let ca = Ca::new("test CA");
    let responder = tls_responder(ca.responder_tls(names)).await;
    let c = attempt(&responder, domain, ca.trusted_by())
        .await
        .unwrap_or_else(|e| panic!("{names:?} for {domain}: {e}"));
    assert_eq!(c.response.unwrap().status, 200);
    assert!(matches!(c.connection, Connection::Tls(_)));
    let stats = responder.shutdown().await;
    assert_eq!(stats.get(Transport::Tls, Family::V6).options, 1);
}

/// Asserts a certificate failure whose message names `domain` and holds
/// every `held` text; prints it. The connection carried no request.
async fn assert_rejected(
    responder: ResponderHandle,
    domain: &str,
    tls: TlsSettings,
    held: &[&str],
) {
    let err = attempt(&responder, domain, tls)
        .await
        .expect_err("must fail closed");
    println!("certificate error: {err}");
    assert_eq!(err.class, ErrorClass::Certificate, "{err}");
    assert!(
        err.detail.contains(&format!("{domain:?}")),
        "expected name missing: {err}"
    );
    for h in held {
        assert!(err.detail.contains(h), "{h:?} missing: {err}");
    }
    let stats = responder.shutdown().await;
    assert_eq!(stats.get(Transport::Tls, Family::V6).requests, 0);
}

async fn reject(names: &[&str], domain: &str, held: &[&str]) {
    let ca = Ca::new("test CA");
    let responder = tls_responder(ca.responder_tls(names)).await;
    assert_rejected(responder, domain, ca.trusted_by(), held).await;
}

#[tokio::test]
async fn uri_san_only_is_accepted() {
    assert_accepted(&["uri:sip:example.test"], DOMAIN).await;
}

#[tokio::test]
async fn dns_san_only_is_accepted() {
    assert_accepted(&["dns:example.test"], DOMAIN).await;
}

#[tokio::test]
async fn cn_only_is_accepted_without_any_san() {
    assert_accepted(&["cn:example.test"], DOMAIN).await;
}

#[tokio::test]
async fn uri_san_takes_precedence_over_dns_san() {
    // URI sip:example.test + DNS other.test: valid for example.test only.
    assert_accepted(&["uri:sip:example.test", "dns:other.test"], DOMAIN).await;
    reject(
        &["uri:sip:example.test", "dns:other.test"],
        "other.test",
        &["URI sip:example.test", "dNSName entries do not count"],
    )
    .await;
    // URI sip:other.test + DNS example.test: not valid for example.test.
    reject(
        &["uri:sip:other.test", "dns:example.test"],
        DOMAIN,
        &[
            "URI sip:other.test",
            "DNS example.test",
            "dNSName entries do not count",
        ],
    )
    .await;
}

#[tokio::test]
async fn cn_is_ignored_when_there_is_a_san() {
    reject(
        &["dns:other.test", "cn:example.test"],
        DOMAIN,
        &["DNS other.test", "CN example.test", "CN does not count"],
    )
    .await;
}

#[tokio::test]
async fn wildcard_is_rejected() {
    reject(
        &["dns:*.example.test"],
        "sip.example.test",
        &["DNS *.example.test", "wildcard"],
    )
    .await;
}

#[tokio::test]
async fn srv_target_name_is_not_the_identity() {
    // The attempt reaches sip1.example.test, but the SIP domain is example.test.
    reject(
        &["dns:sip1.example.test"],
        DOMAIN,
        &["DNS sip1.example.test"],
    )
    .await;
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf(&["uri:sip:example.test"], |p| {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2001, 1, 1);
    });
    let responder = tls_responder(ResponderTls {
        cert: PemSource::Pem(cert),
        key: PemSource::Pem(key),
        client_ca: None,
    })
    .await;
    assert_rejected(
        responder,
        DOMAIN,
        ca.trusted_by(),
        &["expired", "URI sip:example.test"],
    )
    .await;
}

#[tokio::test]
async fn unknown_ca_is_rejected() {
    let ca = Ca::new("test CA");
    let stranger = Ca::new("someone else's CA");
    let responder = tls_responder(stranger.responder_tls(&["uri:sip:example.test"])).await;
    assert_rejected(
        responder,
        DOMAIN,
        ca.trusted_by(),
        &["unknown CA", "URI sip:example.test"],
    )
    .await;
}

#[tokio::test]
async fn system_roots_do_not_trust_a_private_ca() {
    if rustls_native_certs::load_native_certs().certs.is_empty() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: this host has no system root store"
        );
        return;
    }
    let ca = Ca::new("test CA");
    let responder = tls_responder(ca.responder_tls(&["uri:sip:example.test"])).await;
    assert_rejected(responder, DOMAIN, TlsSettings::default(), &["unknown CA"]).await;
}

#[tokio::test]
async fn insecure_accepts_anything_but_is_explicit() {
    let stranger = Ca::new("someone else's CA");
    let responder = tls_responder(stranger.responder_tls(&["dns:*.other.test"])).await;
    let tls = TlsSettings {
        insecure: true,
        ..TlsSettings::default()
    };
    let c = attempt(&responder, DOMAIN, tls).await.unwrap();
    assert_eq!(c.response.unwrap().status, 200);
    responder.shutdown().await;
}

// ---------------------------------------------------------------------------
// Mutual TLS

async fn mtls_responder(server_ca: &Ca, client_ca: &Ca) -> ResponderHandle {
    let mut tls = server_ca.responder_tls(&["uri:sip:example.test"]);
    tls.client_ca = Some(PemSource::Pem(client_ca.pem.clone()));
    tls_responder(tls).await
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let responder = mtls_responder(&server_ca, &client_ca).await;
    let (cert, key) = client_ca.leaf(&["uri:sip:client.test"], |_| {});
    let tls = TlsSettings {
        client_cert: Some(PemSource::Pem(cert)),
        client_key: Some(PemSource::Pem(key)),
        ..server_ca.trusted_by()
    };
    let c = attempt(&responder, DOMAIN, tls).await.unwrap();
    assert_eq!(c.response.unwrap().status, 200);
    let Connection::Tls(stream) = c.connection else {
        panic!("not TLS")
    };
    // The server saw our certificate (it asked for one and accepted it).
    assert!(stream.get_ref().1.peer_certificates().is_some());
    let stats = responder.shutdown().await;
    assert_eq!(stats.tls.ipv6.options, 1);
    assert_eq!(stats.tls.ipv6.handshake_failures, 0);
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_fails() {
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let responder = mtls_responder(&server_ca, &client_ca).await;
    let err = attempt(&responder, DOMAIN, server_ca.trusted_by())
        .await
        .expect_err("the server requires a client certificate");
    println!("mutual TLS without a certificate: {err}");
    assert_eq!(err.class, ErrorClass::Tls, "{err}");
    assert!(err.detail.contains("client certificate"), "{err}");
    let stats = tokio::time::timeout(
        Duration::from_secs(10),
        responder.wait_for_stats(|s| s.tls.ipv6.handshake_failures >= 1),
    )
    .await
    .expect("the server counted the failed handshake");
    assert_eq!(stats.tls.ipv6.requests, 0);
    responder.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_from_an_unknown_ca_fails() {
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let responder = mtls_responder(&server_ca, &client_ca).await;
    let stranger = Ca::new("stranger");
    let (cert, key) = stranger.leaf(&["uri:sip:client.test"], |_| {});
    let tls = TlsSettings {
        client_cert: Some(PemSource::Pem(cert)),
        client_key: Some(PemSource::Pem(key)),
        ..server_ca.trusted_by()
    };
    let err = attempt(&responder, DOMAIN, tls).await.unwrap_err();
    println!("client certificate from an unknown CA: {err}");
    assert_eq!(err.class, ErrorClass::Tls, "{err}");
    responder.shutdown().await;
}

// ---------------------------------------------------------------------------
// End to end through DNS

fn zone(port: u16, services: &str) -> String {
    let mut body = format!("@ IN AAAA ::1\n@ IN A 127.0.0.1\n{}", common::SIP1_LOOPBACK);
    for (i, svc) in services.split(',').filter(|s| !s.is_empty()).enumerate() {
        let (naptr, srv) = match svc {
            "tls" => ("SIPS+D2T", "_sips._tcp"),
            "tcp" => ("SIP+D2T", "_sip._tcp"),
            "udp" => ("SIP+D2U", "_sip._udp"),
            "srv-tcp" => ("", "_sip._tcp"),
            "srv-udp" => ("", "_sip._udp"),
            other => panic!("{other}"),
        };
        if !naptr.is_empty() {
            body += &common::naptr(10 + i as u16, naptr, srv);
        }
        body += &common::srv(srv, port, "sip1");
    }
    common::zone(&body)
}

async fn dns(zone: String) -> DnsServer {
    common::serve(DnsServerConfig::new(zone)).await
}

fn dial_config(dns: &DnsServer, tls: TlsSettings) -> DialerConfig {
    let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
    cfg.locate.dns_server = Some(dns.addrs()[0]);
    cfg.locate.query_timeout = Duration::from_millis(800);
    cfg.connect.probe_streams = true;
    cfg.connect.tls = tls;
    cfg
}

#[tokio::test]
async fn sips_dial_end_to_end_reports_tcp_and_tls_times() {
    let ca = Ca::new("test CA");
    let responder =
        tls_responder(ca.responder_tls(&["uri:sip:example.test", "dns:example.test"])).await;
    let port = responder.addr(Transport::Tls, Family::V6).unwrap().port();
    let dns = dns(zone(port, "tls")).await;
    let dial = Dialer::new(dial_config(&dns, ca.trusted_by()))
        .unwrap()
        .dial(&format!("sips:{DOMAIN}"))
        .await
        .unwrap();
    let report = &dial.report;
    println!("{}", report.render());
    assert_eq!(dial.endpoint.transport, Transport::Tls);
    assert_eq!(dial.endpoint.family(), Family::V6);
    assert_eq!(&*dial.endpoint.host, "sip1.example.test");
    assert_eq!(dial.response.as_ref().map(|r| r.status), Some(200));
    let w = report.winner_entry().unwrap();
    let up = w.transport_up_ms.expect("TCP-up time recorded for TLS");
    assert!(up >= w.started_ms && up <= w.ended_ms.unwrap(), "{w:?}");
    let stats = responder.shutdown().await;
    assert_eq!(stats.tls.ipv6.options, 1);
    dns.shutdown().await;
}

#[tokio::test]
async fn a_host_serving_another_domain_is_not_used_for_this_one() {
    // The same addresses and port hold a certificate for other.test only.
    let ca = Ca::new("test CA");
    let responder =
        tls_responder(ca.responder_tls(&["uri:sip:other.test", "dns:other.test"])).await;
    let port = responder.addr(Transport::Tls, Family::V6).unwrap().port();
    let dns = dns(zone(port, "tls")).await;
    let err = Dialer::new(dial_config(&dns, ca.trusted_by()))
        .unwrap()
        .dial(&format!("sips:{DOMAIN}"))
        .await
        .expect_err("a certificate for other.test must not serve example.test");
    let report = err.report().unwrap();
    println!("{}", report.render());
    assert!(matches!(err, DialError::Failed(_)));
    assert_eq!(report.attempts.len(), 2, "both families tried");
    for a in &report.attempts {
        assert_eq!(a.error_class.as_deref(), Some("certificate"), "{a:?}");
        let detail = a.detail.as_deref().unwrap();
        assert!(
            detail.contains("\"example.test\"") && detail.contains("URI sip:other.test"),
            "{detail}"
        );
    }
    let stats = tokio::time::timeout(
        Duration::from_secs(10),
        responder
            .wait_for_stats(|s| s.tls.ipv6.handshake_failures + s.tls.ipv4.handshake_failures >= 2),
    )
    .await
    .expect("the server saw both handshakes fail");
    assert_eq!(
        stats.total().requests,
        0,
        "no request went over a wrong connection"
    );
    responder.shutdown().await;
    dns.shutdown().await;
}

/// A responder for plaintext UDP and TCP on one port of both families.
async fn plaintext_responder() -> ResponderHandle {
    common::responder_on_both(
        &[Transport::Udp, Transport::Tcp],
        ResponderConfig::default(),
    )
    .await
}

#[tokio::test]
async fn sips_never_starts_a_plaintext_attempt() {
    let ca = Ca::new("test CA");
    let responder = plaintext_responder().await;
    let port = responder.addr(Transport::Tcp, Family::V6).unwrap().port();

    // NAPTR offers only plaintext services (SIP+D2U, SIP+D2T), with SRV.
    let naptr = dns(zone(port, "udp,tcp")).await;
    let err = Dialer::new(dial_config(&naptr, ca.trusted_by()))
        .unwrap()
        .dial(&format!("sips:{DOMAIN}"))
        .await
        .expect_err("no SIPS service");
    let report = err.report().unwrap();
    println!("{}", report.render());
    assert!(matches!(err, DialError::Resolution(_)), "{err}");
    assert!(report.attempts.is_empty());
    assert!(
        report.reason.as_deref().unwrap().contains("SIPS+D2T"),
        "{:?}",
        report.reason
    );
    naptr.shutdown().await;

    // No NAPTR; SRV only for _sip._udp and _sip._tcp: only TLS (to the
    // default port 5061 of the domain's addresses) may be tried.
    let srv = dns(zone(port, "srv-udp,srv-tcp")).await;
    let res = Dialer::new(dial_config(&srv, ca.trusted_by()))
        .unwrap()
        .dial(&format!("sips:{DOMAIN}"))
        .await;
    let report = match &res {
        Ok(d) => &d.report,
        Err(e) => e.report().unwrap(),
    };
    println!("{}", report.render());
    assert!(
        report
            .attempts
            .iter()
            .all(|a| a.transport == Transport::Tls && a.addr.port() != port),
        "a non-TLS or plaintext-port attempt was started"
    );
    srv.shutdown().await;

    let stats = responder.shutdown().await;
    let t = stats.total();
    assert_eq!((t.messages, t.connections), (0, 0), "{stats:?}");
}

// ---------------------------------------------------------------------------
// Session resumption

async fn two_dials(resumption: bool) -> Vec<rustls::HandshakeKind> {
    let ca = Ca::new("test CA");
    let responder = tls_responder(ca.responder_tls(&["uri:sip:example.test"])).await;
    let port = responder.addr(Transport::Tls, Family::V6).unwrap().port();
    let dns = dns(zone(port, "tls")).await;
    let tls = TlsSettings {
        resumption,
        ..ca.trusted_by()
    };
    let dialer = Dialer::new(dial_config(&dns, tls)).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let dial = dialer.dial(&format!("sips:{DOMAIN}")).await.unwrap();
        let Some(Connection::Tls(stream)) = dial.connection else {
            panic!("not TLS")
        };
        kinds.push(stream.get_ref().1.handshake_kind().unwrap());
    }
    responder.shutdown().await;
    dns.shutdown().await;
    kinds
}

#[tokio::test]
async fn resumption_is_on_by_default_across_dials() {
    use rustls::HandshakeKind::{Full, Resumed};
    assert!(TlsSettings::default().resumption);
    assert_eq!(two_dials(true).await, [Full, Resumed]);
}

#[tokio::test]
async fn resumption_off_gives_full_handshakes() {
    use rustls::HandshakeKind::Full;
    assert_eq!(two_dials(false).await, [Full, Full]);
}

// ---------------------------------------------------------------------------
// Event order

/// The TCP-up time of a TLS attempt is sent while the attempt goes on, and
/// its success follows soon after on loopback: both are often ready at once.
/// The dialer must never lose the first to the second. Many dials, some side
/// by side, so that the two land together in many ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_winner_has_its_transport_up_time() {
    let ca = Ca::new("test CA");
    let responder = tls_responder(ca.responder_tls(&["uri:sip:example.test"])).await;
    let addr = responder.addr(Transport::Tls, Family::V4).unwrap();
    let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
    cfg.connect.tls = ca.trusted_by();
    cfg.sip_domain = Some(DOMAIN.into());
    let dialer = Dialer::new(cfg).unwrap();
    let target = format!("sips:{addr}");
    let (rounds, side_by_side) = (20, 4);
    let mut missing = Vec::new();
    for round in 0..rounds {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..side_by_side {
            let (dialer, target) = (dialer.clone(), target.clone());
            set.spawn(async move { dialer.dial(&target).await });
        }
        while let Some(dial) = set.join_next().await {
            let dial = dial.unwrap().expect("a loopback TLS dial");
            let w = dial.report.winner_entry().unwrap();
            match w.transport_up_ms {
                Some(up) => assert!(up >= w.started_ms && up <= w.ended_ms.unwrap(), "{w:?}"),
                None => missing.push(round),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} winners lost their transport-up time",
        missing.len(),
        rounds * side_by_side
    );
    responder.shutdown().await;
}
