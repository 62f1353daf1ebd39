//! TLS attempts (SIPS+D2T, `_sips._tcp`, `;transport=tls`): the TCP connect
//! of [`super::tcp`], then a rustls handshake (ring provider), then with
//! `probe_streams` an OPTIONS over the TLS stream.
//!
//! The attempt reports [`Progress::TransportUp`] once TCP is up, so the
//! dialer records the TCP time and the handshake time separately and the race
//! engine knows a connection is up but still handshaking.
//!
//! Server certificates are verified as RFC 5922 says, not as the web does:
//!
//! * the chain must lead to a trusted root (system roots, plus `--ca` files);
//! * the identity matched is the SIP domain of the URI, never the SRV target,
//!   and it is also the SNI; an attempt without a SIP domain
//!   ([`ConnectConfig::sip_domain`] empty) fails at once (§4);
//! * `sip:` URI subjectAltNames take precedence: if the certificate has any,
//!   only they count, and dNSName entries are ignored;
//! * the Subject CN counts only when there is no subjectAltName at all;
//! * wildcards never match (§7.2).
//!
//! rustls-webpki matches dNSName and IP entries only (and accepts wildcards),
//! so the chain is checked with rustls and the name with [`CertIdentities`].

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore};
use rustls::{Error as TlsError, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::classify_io;
use super::{ConnectConfig, Connected, Connection, Progress};
use crate::endpoint::{AttemptError, Endpoint, ErrorClass};

/// The TLS stream an attempt leaves behind.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Where a PEM document comes from: a file, or text held in memory (tests,
/// certificates generated on the fly).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PemSource {
    /// A file holding the PEM text.
    File(PathBuf),
    /// The PEM text itself.
    Pem(String),
}

/// Why TLS settings cannot be used: a PEM document that cannot be read or
/// holds the wrong thing, an incomplete client identity, no root to trust.
/// `document` names the PEM document (its path, or "in-memory PEM"); the
/// messages are the ones `siprace dial` shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("cannot read {document}: {reason}")]
    Unreadable {
        /// The PEM document (its path, or "in-memory PEM").
        document: String,
        /// The I/O error.
        reason: String,
    },
    /// The document is not valid PEM.
    #[error("{document}: {reason}")]
    InvalidPem {
        /// The PEM document (its path, or "in-memory PEM").
        document: String,
        /// What the PEM parser rejected.
        reason: String,
    },
    /// The document holds no certificate.
    #[error("{document}: no PEM certificate in it")]
    NoCertificate {
        /// The PEM document (its path, or "in-memory PEM").
        document: String,
    },
    /// The document holds no private key.
    #[error("{document}: no private key: {reason}")]
    NoPrivateKey {
        /// The PEM document (its path, or "in-memory PEM").
        document: String,
        /// What the PEM parser reported.
        reason: String,
    },
    /// A `--ca` certificate cannot serve as a trust anchor.
    #[error("{document}: not a usable CA certificate: {reason}")]
    UnusableCa {
        /// The PEM document (its path, or "in-memory PEM").
        document: String,
        /// Why rustls rejects it as a root.
        reason: String,
    },
    /// A client certificate without its key, or a key without a certificate.
    #[error("a client certificate needs both --cert and --key")]
    IncompleteClientIdentity,
    /// The client certificate and key do not make a usable identity.
    #[error("client certificate {document}: {reason}")]
    UnusableClientIdentity {
        /// The client certificate's PEM document (its path, or "in-memory PEM").
        document: String,
        /// Why rustls rejects the certificate and key.
        reason: String,
    },
    /// Nothing to verify a server against (and verification is on).
    #[error("no trusted root: the system store is empty and no --ca was given")]
    NoTrustedRoot,
    /// rustls refused the configuration (its protocol versions).
    #[error("{0}")]
    Rustls(String),
}

impl PemSource {
    fn read(&self) -> Result<Vec<u8>, TlsConfigError> {
        match self {
            PemSource::File(path) => std::fs::read(path).map_err(|e| TlsConfigError::Unreadable {
                document: self.name(),
                reason: e.to_string(),
            }),
            PemSource::Pem(text) => Ok(text.clone().into_bytes()),
        }
    }

    fn name(&self) -> String {
        match self {
            PemSource::File(path) => path.display().to_string(),
            PemSource::Pem(_) => "in-memory PEM".into(),
        }
    }

    /// Every certificate in the document (at least one).
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
        let bytes = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::InvalidPem {
                document: self.name(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsConfigError::NoCertificate {
                document: self.name(),
            });
        }
        Ok(certs)
    }

    /// The first private key in the document.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
        let bytes = self.read()?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsConfigError::NoPrivateKey {
            document: self.name(),
            reason: e.to_string(),
        })
    }

    /// Every certificate in the document, added to `roots` as trust anchors.
    fn add_to(&self, roots: &mut RootCertStore) -> Result<(), TlsConfigError> {
        for cert in self.certificates()? {
            roots.add(cert).map_err(|e| TlsConfigError::UnusableCa {
                document: self.name(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// How TLS attempts verify and authenticate. Build with
/// `TlsSettings { ..., ..TlsSettings::default() }`. The rustls configuration
/// is built lazily, by the first TLS attempt (a dial without TLS never loads
/// a certificate store), then cached and shared by clones, so TLS session
/// resumption works across the attempts and dials that share these settings.
/// A configuration that cannot be built (no trusted root, say) fails the TLS
/// attempts with the reason, and only them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Extra trusted roots (`--ca`), added to the system roots.
    pub ca: Vec<PemSource>,
    /// Trust the system's root store (default true).
    pub system_roots: bool,
    /// Client certificate chain for mutual TLS (`--cert`).
    pub client_cert: Option<PemSource>,
    /// Its private key (`--key`).
    pub client_key: Option<PemSource>,
    /// Accept any server certificate (`--insecure`). Never the default.
    pub insecure: bool,
    /// Resume TLS sessions (default true; `--no-tls-resumption` turns it
    /// off so that every handshake is a full one).
    pub resumption: bool,
    /// The built configuration, shared by clones of these settings (leave
    /// it to `Default`); it compares equal to any other cache.
    pub cache: ConfigCache,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            ca: Vec::new(),
            system_roots: true,
            client_cert: None,
            client_key: None,
            insecure: false,
            resumption: true,
            cache: ConfigCache::default(),
        }
    }
}

/// The settings that shape a `ClientConfig` (everything but the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    ca: Vec<PemSource>,
    system_roots: bool,
    client_cert: Option<PemSource>,
    client_key: Option<PemSource>,
    insecure: bool,
    resumption: bool,
}

/// The last built configuration and the settings it was built from. Not part
/// of the settings' identity: it compares equal to any other cache.
#[derive(Clone, Default)]
pub struct ConfigCache(Arc<Mutex<Option<Built>>>);

/// A built configuration (or why it could not be built: trying again would
/// only fail again) and the settings it was built from.
type Built = (Key, Result<Arc<ClientConfig>, TlsConfigError>);

impl fmt::Debug for ConfigCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigCache")
    }
}

impl PartialEq for ConfigCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ConfigCache {}

impl TlsSettings {
    fn key(&self) -> Key {
        Key {
            ca: self.ca.clone(),
            system_roots: self.system_roots,
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            insecure: self.insecure,
            resumption: self.resumption,
        }
    }

    /// The rustls client configuration for these settings, built on the
    /// first call and then shared (its session cache is what makes
    /// resumption work).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, AttemptError> {
        let key = self.key();
        let mut cached = self.cache.0.lock().expect("tls config cache");
        let built = match cached.as_ref() {
            Some((k, built)) if *k == key => built.clone(),
            _ => {
                let built = build_client_config(&key).map(Arc::new);
                *cached = Some((key, built.clone()));
                built
            }
        };
        built.map_err(|e| AttemptError::new(ErrorClass::Local, format!("tls: {e}")))
    }

    /// Checks that the files named in these settings (`--ca`, `--cert`,
    /// `--key`) hold what they should, without building anything or reading
    /// the system store: a mistyped path is a usage error even for a dial
    /// that turns out to need no TLS.
    pub fn check_files(&self) -> Result<(), TlsConfigError> {
        for src in &self.ca {
            src.add_to(&mut RootCertStore::empty())?;
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                cert.certificates()?;
                key.private_key()?;
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err(TlsConfigError::IncompleteClientIdentity),
        }
    }
}

/// The system's trusted roots (`rustls-native-certs`: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR` or the distribution's store), read once per process:
/// reading them costs milliseconds, and every configuration built here
/// wants the same ones.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("system root store: {e}");
        }
        native.certs
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Set once the user was told that certificates are not verified: the
/// warning is given once per process, not once per TLS configuration built.
static INSECURE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells the library that the program has already warned its user about
/// `insecure` (as `siprace dial --insecure` does, loudly, at its start),
/// so the library's own warning is not repeated.
pub fn insecure_warning_given() {
    INSECURE_WARNED.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn build_client_config(key: &Key) -> Result<ClientConfig, TlsConfigError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    if key.insecure {
        if !INSECURE_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("TLS certificate verification is OFF (insecure: true)");
        }
    } else {
        if key.system_roots {
            let (added, ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
            tracing::debug!(added, ignored, "system roots loaded");
        }
        for src in &key.ca {
            src.add_to(&mut roots)?;
        }
        if roots.is_empty() {
            return Err(TlsConfigError::NoTrustedRoot);
        }
    }
    let verifier = Arc::new(SipDomainVerifier {
        roots: Arc::new(roots),
        signatures: Signatures {
            provider: provider.clone(),
        },
        insecure: key.insecure,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match (&key.client_cert, &key.client_key) {
        (Some(cert), Some(k)) => builder
            .with_client_auth_cert(cert.certificates()?, k.private_key()?)
            .map_err(|e| TlsConfigError::UnusableClientIdentity {
                document: cert.name(),
                reason: e.to_string(),
            })?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsConfigError::IncompleteClientIdentity),
    };
    if !key.resumption {
        cfg.resumption = Resumption::disabled();
    }
    Ok(cfg)
}

// ---------------------------------------------------------------------------
// RFC 5922 identities

/// The identities a certificate holds, as RFC 5922 §7.1 reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentities {
    /// Host parts of `sip:` URI subjectAltNames without a user part.
    pub sip_uris: Vec<String>,
    /// Other URI subjectAltNames (sips:, with a user part, other schemes): never identities.
    pub other_uris: Vec<String>,
    /// dNSName subjectAltNames.
    pub dns: Vec<String>,
    /// iPAddress subjectAltNames.
    pub ips: Vec<IpAddr>,
    /// Subject CNs.
    pub common_names: Vec<String>,
    /// Whether the certificate has a subjectAltName extension at all.
    pub has_san: bool,
}

/// Where the identities that count for a certificate come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// `sip:` URIs in the subjectAltName (RFC 5922 §7.1, preferred).
    SipUri,
    /// dNSName (and iPAddress) subjectAltNames, when there is no `sip:` URI.
    DnsName,
    /// The subject's Common Name, when there is no subjectAltName at all.
    CommonName,
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `sip:` URI with no user part, per RFC 5922 §7.1.
fn sip_uri_host(uri: &str) -> Option<String> {
    let rest = uri
        .get(..4)
        .filter(|s| s.eq_ignore_ascii_case("sip:"))
        .map(|_| &uri[4..])?;
    let hostport = rest.split([';', '?']).next().unwrap_or("");
    if hostport.contains('@') || hostport.is_empty() {
        return None;
    }
    let host = if let Some(inner) = hostport.strip_prefix('[') {
        inner.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    (!host.is_empty()).then(|| normalise(host))
}

impl CertIdentities {
    /// Reads the identities of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertIdentities, String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("unparsable certificate: {e}"))?;
        let mut ids = CertIdentities::default();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("bad subjectAltName: {e}"))?;
        if let Some(san) = san {
            ids.has_san = true;
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => match sip_uri_host(uri) {
                        Some(host) => ids.sip_uris.push(host),
                        None => ids.other_uris.push(uri.to_string()),
                    },
                    GeneralName::DNSName(d) => ids.dns.push(normalise(d)),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                            ids.ips.push(IpAddr::from(b));
                        } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                            ids.ips.push(IpAddr::from(b));
                        }
                    }
                    _ => {}
                }
            }
        }
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                ids.common_names.push(normalise(s));
            }
        }
        Ok(ids)
    }

    /// The SIP domain identities that count (RFC 5922 §7.1): the `sip:` URI
    /// hosts if there is any; else the dNSNames (and iPAddresses); the CN
    /// only when there is no subjectAltName at all.
    pub fn sip_identities(&self) -> (IdentitySource, Vec<String>) {
        if !self.sip_uris.is_empty() {
            (IdentitySource::SipUri, self.sip_uris.clone())
        } else if self.has_san {
            let mut v = self.dns.clone();
            v.extend(self.ips.iter().map(|ip| ip.to_string()));
            (IdentitySource::DnsName, v)
        } else {
            (IdentitySource::CommonName, self.common_names.clone())
        }
    }

    /// Whether the certificate is valid for `domain`; the error says what
    /// was expected and what the certificate holds.
    pub fn check(&self, domain: &str) -> Result<(), String> {
        let domain = normalise(domain.trim_start_matches('[').trim_end_matches(']'));
        let (source, ids) = self.sip_identities();
        if ids.iter().any(|id| !id.contains('*') && *id == domain) {
            return Ok(());
        }
        let mut why = String::new();
        if ids.iter().any(|id| id.contains('*')) {
            why += "; wildcard names are not allowed (RFC 5922 §7.2)";
        }
        match source {
            IdentitySource::SipUri if self.dns.contains(&domain) => {
                why += "; its dNSName entries do not count because it has sip: URI entries (RFC 5922 §7.1)"
            }
            IdentitySource::DnsName | IdentitySource::SipUri
                if self.common_names.contains(&domain) =>
            {
                why += "; its CN does not count because it has subjectAltNames (RFC 5922 §7.1)"
            }
            _ => {}
        }
        Err(format!(
            "the certificate does not match the SIP domain {domain:?}: it holds {}{why}",
            self.describe()
        ))
    }

    /// Everything the certificate holds, for error messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.sip_uris.iter().map(|h| format!("URI sip:{h}")));
        parts.extend(
            self.other_uris
                .iter()
                .map(|u| format!("URI {u} (not an identity)")),
        );
        parts.extend(self.dns.iter().map(|d| format!("DNS {d}")));
        parts.extend(self.ips.iter().map(|ip| format!("IP {ip}")));
        parts.extend(self.common_names.iter().map(|c| format!("CN {c}")));
        if !self.has_san {
            parts.push("no subjectAltName".into());
        }
        if parts.is_empty() {
            "no name".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A certificate that is not acceptable for the SIP domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipCertError(pub String);

impl fmt::Display for SipCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SipCertError {}

fn cert_error(msg: String) -> TlsError {
    TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(SipCertError(
        msg,
    )))))
}

/// The text of the SIP domain a `ServerName` stands for.
fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => normalise(d.as_ref()),
        ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The handshake-signature half of a [`ServerCertVerifier`], the same for
/// every verifier here: the provider's algorithms check that the server
/// holds the certificate's key.
#[derive(Debug)]
struct Signatures {
    provider: Arc<CryptoProvider>,
}

impl Signatures {
    fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Chain to a trusted root with rustls, name per RFC 5922 with
/// [`CertIdentities`]. With `insecure` (`--insecure`) any certificate is
/// accepted; the handshake signatures are still checked (they bind the
/// handshake to the certificate's key).
#[derive(Debug)]
struct SipDomainVerifier {
    roots: Arc<RootCertStore>,
    signatures: Signatures,
    insecure: bool,
}

impl ServerCertVerifier for SipDomainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let domain = server_name_text(server_name);
        if self.insecure {
            tracing::warn!(%domain, "accepting an unverified TLS certificate (--insecure)");
            return Ok(ServerCertVerified::assertion());
        }
        let ids = CertIdentities::from_der(end_entity.as_ref())
            .map_err(|e| cert_error(format!("certificate for {domain:?}: {e}")))?;
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.signatures
                .provider
                .signature_verification_algorithms
                .all,
        )
        .map_err(|e| {
            cert_error(format!(
                "the certificate for the SIP domain {domain:?} is not trusted ({}): it holds {}",
                describe_chain_error(&e),
                ids.describe()
            ))
        })?;
        ids.check(&domain).map_err(cert_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.signatures.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.signatures.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

fn describe_chain_error(e: &TlsError) -> String {
    match e {
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "issued by an unknown CA".into()
        }
        TlsError::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. }) => {
            format!("expired at {} (unix time)", not_after.as_secs())
        }
        TlsError::InvalidCertificate(CertificateError::Expired) => "expired".into(),
        TlsError::InvalidCertificate(CertificateError::NotValidYetContext {
            not_before, ..
        }) => {
            format!("not valid before {} (unix time)", not_before.as_secs())
        }
        TlsError::InvalidCertificate(c) => format!("{c:?}"),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The attempt

/// The name the certificate must match and the SNI: the SIP domain (RFC 5922
/// §4), never the SRV target or the endpoint's host. Without a SIP domain
/// there is nothing to verify against, so the attempt fails closed.
fn server_name(cfg: &ConnectConfig) -> Result<ServerName<'static>, AttemptError> {
    let domain = cfg.sip_domain.trim();
    if domain.is_empty() {
        return Err(AttemptError::new(
            ErrorClass::Local,
            "tls: no SIP domain to verify the certificate against (RFC 5922 §4 never \
             uses the SRV target or the address); set the SIP domain",
        ));
    }
    let bare = domain.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| {
        AttemptError::new(
            ErrorClass::Local,
            format!("tls: {domain:?} cannot be a TLS server name: {e}"),
        )
    })
}

/// Connects over TCP, completes a TLS handshake verified against the SIP
/// domain, then optionally probes with OPTIONS over TLS.
pub async fn attempt(
    endpoint: &Endpoint,
    cfg: &ConnectConfig,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Connected, AttemptError> {
    // Configuration problems fail at once, before any packet is sent.
    let client_config = cfg.tls.client_config()?;
    let name = server_name(cfg)?;
    let (stream, transport_ready, local, dst) = super::tcp::connect(endpoint, cfg).await?;
    progress(Progress::TransportUp {
        after: transport_ready,
    });
    let connector = TlsConnector::from(client_config);
    let mut tls = match tokio::time::timeout(cfg.timer_f(), connector.connect(name, stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(classify_io(&format!("TLS handshake with {dst}"), &e)),
        Err(_) => {
            return Err(AttemptError::new(
                ErrorClass::Timeout,
                format!(
                    "TLS handshake with {dst}: not done in {:?} (Timer F)",
                    cfg.timer_f()
                ),
            ))
        }
    };
    let mut requests_sent = 0;
    let response = if cfg.probe_streams {
        let probe = cfg.probe_for(endpoint, local);
        requests_sent = 1;
        Some(super::stream::probe_stream(&mut tls, &probe, cfg.timer_f(), dst).await?)
    } else {
        None
    };
    Ok(Connected {
        connection: Connection::Tls(Box::new(tls)),
        local,
        transport_ready,
        response,
        requests_sent,
    })
}

/// The TLS stream of a [`Connection`], if it is one.
pub fn into_stream(connection: Connection) -> Option<TlsStream> {
    match connection {
        Connection::Tls(s) => Some(*s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Transport;

    fn ids(sip: &[&str], dns: &[&str], cn: &[&str], has_san: bool) -> CertIdentities {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        CertIdentities {
            sip_uris: s(sip),
            dns: s(dns),
            common_names: s(cn),
            has_san,
            ..CertIdentities::default()
        }
    }

    #[test]
    fn sip_uri_hosts() {
        assert_eq!(
            sip_uri_host("sip:Example.TEST"),
            Some("example.test".into())
        );
        assert_eq!(
            sip_uri_host("SIP:example.test:5061;transport=tls"),
            Some("example.test".into())
        );
        assert_eq!(sip_uri_host("sip:[::1]:5061"), Some("::1".into()));
        assert_eq!(
            sip_uri_host("sip:alice@example.test"),
            None,
            "a user part is no domain"
        );
        assert_eq!(
            sip_uri_host("sips:example.test"),
            None,
            "only the sip scheme"
        );
        assert_eq!(sip_uri_host("https://example.test"), None);
        assert_eq!(sip_uri_host("sip:"), None);
    }

    #[test]
    fn rfc5922_precedence() {
        // URI entries win over dNSName entries.
        let both = ids(&["example.test"], &["other.test"], &[], true);
        assert!(both.check("example.test").is_ok());
        let err = both.check("other.test").unwrap_err();
        assert!(err.contains("dNSName entries do not count"), "{err}");
        // dNSName only.
        assert!(ids(&[], &["example.test"], &[], true)
            .check("Example.Test.")
            .is_ok());
        // CN only without any SAN; ignored with one.
        assert!(ids(&[], &[], &["example.test"], false)
            .check("example.test")
            .is_ok());
        let err = ids(&[], &["other.test"], &["example.test"], true)
            .check("example.test")
            .unwrap_err();
        assert!(err.contains("CN does not count"), "{err}");
        // No wildcards, anywhere.
        let err = ids(&[], &["*.example.test"], &[], true)
            .check("sip1.example.test")
            .unwrap_err();
        assert!(err.contains("wildcard"), "{err}");
        assert!(ids(&["*.example.test"], &[], &[], true)
            .check("sip1.example.test")
            .is_err());
        // Nothing at all.
        let err = ids(&[], &[], &[], true).check("example.test").unwrap_err();
        assert!(err.contains("\"example.test\""), "{err}");
    }

    #[test]
    fn ip_literal_domains_match_ip_entries() {
        let mut c = ids(&[], &[], &[], true);
        c.ips.push("::1".parse().unwrap());
        assert!(c.check("[::1]").is_ok());
        assert!(c.check("127.0.0.1").is_err());
    }

    #[test]
    fn server_name_is_the_sip_domain_and_never_a_fallback() {
        let mut cfg = ConnectConfig::default();
        let err = server_name(&cfg).unwrap_err();
        assert_eq!(err.class, ErrorClass::Local);
        assert!(
            err.detail
                .contains("no SIP domain to verify the certificate against"),
            "{err}"
        );
        cfg.sip_domain = "  ".into();
        assert_eq!(server_name(&cfg).unwrap_err().class, ErrorClass::Local);
        cfg.sip_domain = "Example.test".into();
        assert_eq!(
            server_name(&cfg).unwrap(),
            ServerName::try_from("Example.test").unwrap()
        );
        cfg.sip_domain = "[::1]".into();
        assert!(matches!(
            server_name(&cfg).unwrap(),
            ServerName::IpAddress(_)
        ));
    }

    #[tokio::test]
    async fn attempt_without_a_sip_domain_fails_closed_before_connecting() {
        // The SRV target is a perfectly good name, but it is not the identity.
        let endpoint = Endpoint {
            transport: Transport::Tls,
            addr: "127.0.0.1:9".parse().unwrap(),
            host: Arc::from("sip1.example.test"),
            rank: 0,
        };
        let cfg = ConnectConfig {
            tls: TlsSettings {
                insecure: true,
                ..TlsSettings::default()
            },
            ..ConnectConfig::default()
        };
        let transport_up = std::sync::atomic::AtomicBool::new(false);
        let err = attempt(&endpoint, &cfg, &|_| {
            transport_up.store(true, std::sync::atomic::Ordering::SeqCst)
        })
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Local, "{err}");
        assert!(err.detail.contains("no SIP domain"), "{err}");
        assert!(!transport_up.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn config_is_cached_and_rebuilt_when_settings_change() {
        // Insecure needs no root store, so this does not depend on the host's.
        let mut s = TlsSettings {
            insecure: true,
            ..TlsSettings::default()
        };
        let a = s.client_config().unwrap();
        let b = s.clone().client_config().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "clones share the built configuration");
        s.resumption = false;
        let c = s.client_config().unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        s.client_cert = Some(PemSource::Pem(String::new()));
        let err = s.client_config().unwrap_err();
        assert_eq!(err.class, ErrorClass::Local);
        assert!(err.detail.contains("--cert and --key"), "{err}");
        s.client_cert = None;
        s.insecure = false;
        s.system_roots = false;
        s.ca = vec![PemSource::File("/nonexistent/ca.pem".into())];
        assert!(s
            .client_config()
            .unwrap_err()
            .detail
            .contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn a_failed_build_is_kept_and_only_files_are_checked_up_front() {
        let s = TlsSettings {
            system_roots: false,
            ..TlsSettings::default()
        };
        // No file to check; building finds no root at all.
        s.check_files().unwrap();
        let err = s.client_config().unwrap_err();
        assert!(err.detail.contains("no trusted root"), "{err}");
        let cached = s.cache.0.lock().unwrap().as_ref().map(|(_, b)| b.is_err());
        assert_eq!(cached, Some(true), "the failure is cached, not retried");
        // A named file that is not there is caught without building.
        let bad = TlsSettings {
            ca: vec![PemSource::File("/nonexistent/ca.pem".into())],
            ..TlsSettings::default()
        };
        let err = bad.check_files().unwrap_err();
        assert!(
            matches!(&err, TlsConfigError::Unreadable { document, .. } if document == "/nonexistent/ca.pem"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/ca.pem: "),
            "{err}"
        );
        assert!(bad.cache.0.lock().unwrap().is_none(), "nothing was built");
        let half = TlsSettings {
            client_key: Some(PemSource::Pem(String::new())),
            ..TlsSettings::default()
        };
        assert_eq!(
            half.check_files(),
            Err(TlsConfigError::IncompleteClientIdentity)
        );
        // Text that is no certificate, and a certificate where a key should be.
        let garbage = PemSource::Pem("not pem".into());
        assert_eq!(
            garbage.certificates(),
            Err(TlsConfigError::NoCertificate {
                document: "in-memory PEM".into()
            })
        );
        assert!(matches!(
            garbage.private_key(),
            Err(TlsConfigError::NoPrivateKey { .. })
        ));
    }
}
