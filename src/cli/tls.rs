//! The TLS flags of `siprace dial` (trust, client certificate, resumption),
//! applied to the library's [`ConnectConfig`].

use std::path::PathBuf;

use siprace::connect::tls::PemSource;
use siprace::connect::ConnectConfig;

/// The TLS flags of `siprace dial`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Also trust this CA certificate (PEM) for TLS, besides the system roots. Repeatable.
    #[arg(long = "ca", value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// DANGEROUS: accept any TLS certificate (no chain, no name check).
    #[arg(long)]
    pub insecure: bool,
    /// Full TLS handshakes every time (no session resumption), e.g. for benchmarks.
    #[arg(long)]
    pub no_tls_resumption: bool,
}

impl TlsArgs {
    /// Applies the flags and checks that the files they name load. The
    /// TLS configuration itself is built only if a TLS attempt is made.
    pub fn apply(&self, cfg: &mut ConnectConfig) -> Result<(), String> {
        let tls = &mut cfg.tls;
        tls.ca.extend(self.ca.iter().cloned().map(PemSource::File));
        tls.client_cert = self.cert.clone().map(PemSource::File);
        tls.client_key = self.key.clone().map(PemSource::File);
        tls.insecure = self.insecure;
        tls.resumption = !self.no_tls_resumption;
        if self.insecure {
            eprintln!(
                "WARNING: --insecure: TLS certificates are NOT verified; anyone on the path can \
                 impersonate the server. Never use this outside a lab."
            );
            // Once is enough: the library would repeat it per TLS configuration.
            siprace::connect::tls::insecure_warning_given();
        }
        cfg.tls.check_files().map_err(|e| e.to_string())
    }
}
