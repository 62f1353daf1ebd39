//! Writes the generated seed inputs: certificates (DER) for `cert_identities`
//! and history files for `history_load`. The text seeds of the other targets
//! are committed as they are. Run from fuzz/: `cargo run --example make_seeds`.

use std::fs;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use siprace::endpoint::{Endpoint, Transport};
use siprace::race::history::{History, NetworkId, PathOutcome};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).expect("seed directory");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn certificate(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let key = KeyPair::generate().expect("key");
    params
        .self_signed(&key)
        .expect("certificate")
        .der()
        .to_vec()
}

fn uri(text: &str) -> SanType {
    SanType::URI(text.try_into().expect("ia5 string"))
}

fn dns(text: &str) -> SanType {
    SanType::DnsName(text.try_into().expect("ia5 string"))
}

fn main() {
    let certs = [
        (
            "sip-uri.der",
            certificate(None, vec![uri("sip:example.test")]),
        ),
        (
            "sip-uri-and-dns.der",
            certificate(
                Some("cn.example.test"),
                vec![
                    uri("sip:Example.Test.;transport=tls"),
                    dns("sip1.example.test"),
                ],
            ),
        ),
        (
            "not-identities.der",
            certificate(
                None,
                vec![
                    uri("sips:example.test"),
                    uri("sip:alice@example.test"),
                    uri("https://x"),
                ],
            ),
        ),
        (
            "dns-and-ips.der",
            certificate(
                None,
                vec![
                    dns("*.example.test"),
                    dns("sip1.example.test"),
                    SanType::IpAddress("192.0.2.1".parse().unwrap()),
                    SanType::IpAddress("2001:db8::1".parse().unwrap()),
                ],
            ),
        ),
        ("cn-only.der", certificate(Some("example.test"), vec![])),
        ("no-name.der", certificate(None, vec![])),
        (
            "ipv6-sip-uri.der",
            certificate(None, vec![uri("sip:[2001:db8::1]:5061")]),
        ),
    ];
    for (name, der) in certs {
        write("cert_identities", name, &der);
    }

    let endpoint = |addr: &str, transport, host: &str| Endpoint {
        transport,
        addr: addr.parse().unwrap(),
        host: host.into(),
        rank: 0,
    };
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut history = History::default();
    write(
        "history_load",
        "empty.json",
        serde_json::to_string(&history).unwrap().as_bytes(),
    );
    let home = NetworkId::of("ipv6 default via 2001:db8:c1::1 dev eth0");
    history.record(
        t0,
        &home,
        &[
            (
                endpoint("[2001:db8::1]:5060", Transport::Udp, "sip1.example.test"),
                PathOutcome::Failed,
            ),
            (
                endpoint("192.0.2.1:5060", Transport::Udp, "sip1.example.test"),
                PathOutcome::Worked(Duration::from_millis(12)),
            ),
            (
                endpoint("192.0.2.2:5061", Transport::Tls, "sip2.example.test"),
                PathOutcome::Worked(Duration::from_micros(700)),
            ),
        ],
    );
    write(
        "history_load",
        "three-paths.json",
        serde_json::to_string_pretty(&history).unwrap().as_bytes(),
    );
    // Two networks, IPv6 suspect on the second (failures to two hosts).
    let away = NetworkId::named("away");
    history.record(
        t0 + Duration::from_secs(1),
        &away,
        &[
            (
                endpoint("[2001:db8::3]:5060", Transport::Udp, "sip3.example.test"),
                PathOutcome::Failed,
            ),
            (
                endpoint("[2001:db8::4]:5060", Transport::Tcp, "sip4.example.test"),
                PathOutcome::Failed,
            ),
        ],
    );
    write(
        "history_load",
        "two-networks.json",
        serde_json::to_string_pretty(&history).unwrap().as_bytes(),
    );
}
