//! A throwaway certificate authority and a server certificate for `localhost`/`127.0.0.1`,
//! so every server in the story speaks real TLS.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files of a generated CA and one server certificate signed by it.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (trust this).
    pub ca_cert: PathBuf,
    /// The server certificate chain.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The CA certificate's PEM bytes.
    pub ca_pem: Vec<u8>,
}

/// Errors while generating or writing the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing a PEM file failed.
    #[error("writing certificates: {0}")]
    Io(#[from] std::io::Error),
}

impl Pki {
    /// Generates a CA and a server certificate valid for `localhost` and `127.0.0.1`, and
    /// writes them as PEM files into `dir`.
    ///
    /// # Errors
    /// [`PkiError`].
    pub fn generate(dir: &Path) -> Result<Self, PkiError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &ca)?;
        let pki = Pki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            ca_pem: ca.pem().into_bytes(),
        };
        std::fs::write(&pki.ca_cert, &pki.ca_pem)?;
        std::fs::write(&pki.server_cert, cert.pem())?;
        std::fs::write(&pki.server_key, key.serialize_pem())?;
        Ok(pki)
    }
}
