//! The responder's TLS identity: a certificate and key (given, or a
//! throwaway one generated for a SIP domain), optionally requiring client
//! certificates, turned into the rustls server configuration.

use std::io;
use std::sync::Arc;

use crate::connect::tls::PemSource;

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
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let e = |e: rcgen::Error| format!("cannot generate a certificate: {e}");
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("siprace throwaway CA for {domain}"),
        );
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(e)?;
        let mut leaf = CertificateParams::new(vec![domain.to_string()]).map_err(e)?;
        leaf.subject_alt_names.push(SanType::URI(
            format!("sip:{domain}")
                .try_into()
                .map_err(|_| format!("{domain:?} cannot go in a sip: URI"))?,
        ));
        leaf.distinguished_name.push(DnType::CommonName, domain);
        let leaf = leaf.signed_by(&key, &issuer).map_err(e)?;
        let tls = ResponderTls {
            cert: PemSource::Pem(leaf.pem()),
            key: PemSource::Pem(key.serialize_pem()),
            client_ca: None,
        };
        Ok((tls, ca_cert.pem()))
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
