//! The responder's TLS identity: a certificate and key (given, or a
//! throwaway one generated for a SIP domain), optionally requiring client
//! certificates, turned into the rustls server configuration.

use std::io;
use std::sync::Arc;

use crate::connect::tls::PemSource;

/// A certificate authority made on the spot (rcgen), for throwaway server
/// and client certificates: the responder's, the lab's (Kamailio's domains
/// and the lab client's), tests'. Its key lives only in memory.
pub struct ThrowawayCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn rcgen_error(e: rcgen::Error) -> String {
    format!("cannot generate a certificate: {e}")
}

impl ThrowawayCa {
    /// A fresh self-signed CA with this common name.
    pub fn new(common_name: &str) -> Result<ThrowawayCa, String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, common_name);
        let cert = ca.self_signed(&key).map_err(rcgen_error)?;
        Ok(ThrowawayCa {
            issuer: Issuer::new(ca, key),
            pem: cert.pem(),
        })
    }

    /// The CA certificate (PEM), for whoever must trust it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A leaf for the SIP domain (or host) `name`, as (certificate PEM, key
    /// PEM): URI SAN `sip:<name>`, dNSName `<name>`, CN `<name>` (RFC 5922
    /// §7.1 reads the URI SAN first). Good for a server or a client (RFC 5923).
    pub fn leaf(&self, name: &str) -> Result<(String, String), String> {
        self.leaf_for(&[name])
    }

    /// A leaf for several SIP domains: a URI SAN `sip:<name>` and a dNSName
    /// `<name>` each; the CN is the first name.
    pub fn leaf_for(&self, names: &[&str]) -> Result<(String, String), String> {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType};
        let first = names.first().ok_or("a certificate needs a name")?;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let dns: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(dns).map_err(rcgen_error)?;
        for name in names {
            leaf.subject_alt_names.push(SanType::URI(
                format!("sip:{name}")
                    .try_into()
                    .map_err(|_| format!("{name:?} cannot go in a sip: URI"))?,
            ));
        }
        leaf.distinguished_name.push(DnType::CommonName, *first);
        let leaf = leaf.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok((leaf.pem(), key.serialize_pem()))
    }
}

/// The TLS identity of the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderTls {
    /// Certificate chain (PEM), leaf first.
    pub cert: PemSource,
    /// Its private key (PEM).
    pub key: PemSource,
    /// Require a client certificate issued by this CA (mutual TLS).
    pub client_ca: Option<PemSource>,
}

impl ResponderTls {
    /// A throwaway identity for `domain`: a fresh CA (returned as PEM so that
    /// clients can trust it) and a leaf it signs, holding the URI SAN
    /// `sip:<domain>` and the dNSName `<domain>` (RFC 5922).
    pub fn generate(domain: &str) -> Result<(ResponderTls, String), String> {
        let ca = ThrowawayCa::new(&format!("siprace throwaway CA for {domain}"))?;
        let (cert, key) = ca.leaf(domain)?;
        let tls = ResponderTls {
            cert: PemSource::Pem(cert),
            key: PemSource::Pem(key),
            client_ca: None,
        };
        Ok((tls, ca.pem().to_string()))
    }

    /// The rustls server configuration; with a client CA, a client
    /// certificate is required.
    pub fn server_config(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        self.server_config_with(false)
    }

    /// The rustls server configuration; with a client CA and
    /// `client_certificate_optional`, a client without a certificate is
    /// accepted (one that presents a certificate must still present a valid
    /// one).
    pub fn server_config_with(
        &self,
        client_certificate_optional: bool,
    ) -> io::Result<Arc<rustls::ServerConfig>> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("tls {what}: {e}"))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = self
            .cert
            .certificates()
            .map_err(|e| bad("certificate", &e))?;
        let key = self.key.private_key().map_err(|e| bad("key", &e))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("versions", &e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in ca.certificates().map_err(|e| bad("client CA", &e))? {
                    roots.add(c).map_err(|e| bad("client CA", &e))?;
                }
                let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                if client_certificate_optional {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier.build().map_err(|e| bad("client CA", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate", &e))?;
        Ok(Arc::new(cfg))
    }
}
