//! TLS for the cluster port (rustls with ring, through tonic): the master's certificate and key, the CA a worker
//! trusts, and optional client certificates (mTLS) checked against a CA the master trusts. Material is PEM,
//! given as bytes or read from files with errors that name the file.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a TLS handshake may take before the connection is dropped.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        /// What the file should hold (certificate, key, CA).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM block.
    #[error("the TLS {what} {path} holds no PEM block (-----BEGIN ...): give a PEM file")]
    NotPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let bytes = std::fs::read(path).map_err(|source| TlsFileError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.windows(11).any(|window| window == b"-----BEGIN ") {
        return Err(TlsFileError::NotPem {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// The master's TLS: its certificate chain and key, and with `client_ca_pem` the CA whose certificates workers
/// must present (mTLS; a worker without one is refused during the handshake).
#[derive(Clone)]
pub struct MasterTls {
    /// The master's certificate chain, PEM.
    pub certificate_pem: Vec<u8>,
    /// The master's private key, PEM.
    pub key_pem: Vec<u8>,
    /// The CA that signs the workers' client certificates, PEM; `None`: no client certificates asked for.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for MasterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterTls")
            .field("key_pem", &"<redacted>")
            .field("client_certificates", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl MasterTls {
    /// Reads the certificate, the key and the optional client CA from PEM files.
    pub fn from_files(
        certificate: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsFileError> {
        Ok(Self {
            certificate_pem: read_pem("certificate", certificate)?,
            key_pem: read_pem("key", key)?,
            client_ca_pem: client_ca
                .map(|path| read_pem("client CA", path))
                .transpose()?,
        })
    }

    pub(crate) fn to_tonic(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.certificate_pem, &self.key_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(client_ca) = &self.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(client_ca));
        }
        config
    }
}

/// A worker's TLS: the CA (or the master's own self-signed certificate) it trusts, the name the master's
/// certificate must carry, and for mTLS its own certificate and key.
#[derive(Clone)]
pub struct WorkerTls {
    /// Trusted roots, PEM. There are no built-in roots: a cluster names its own CA.
    pub ca_pem: Vec<u8>,
    /// The name to check the master's certificate against; `None`: the master host as given.
    pub domain: Option<String>,
    /// The worker's client certificate chain, PEM (mTLS).
    pub client_certificate_pem: Option<Vec<u8>>,
    /// The worker's client key, PEM (mTLS).
    pub client_key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for WorkerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerTls")
            .field("domain", &self.domain)
            .field("client_certificate", &self.client_certificate_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkerTls {
    /// Reads the trusted CA and, for mTLS, the client certificate and key from PEM files.
    pub fn from_files(
        ca: &Path,
        client_certificate: Option<(&Path, &Path)>,
    ) -> Result<Self, TlsFileError> {
        let (client_certificate_pem, client_key_pem) = match client_certificate {
            Some((certificate, key)) => (
                Some(read_pem("client certificate", certificate)?),
                Some(read_pem("client key", key)?),
            ),
            None => (None, None),
        };
        Ok(Self {
            ca_pem: read_pem("CA", ca)?,
            domain: None,
            client_certificate_pem,
            client_key_pem,
        })
    }

    pub(crate) fn to_tonic(&self, master_host: &str) -> ClientTlsConfig {
        let domain = self.domain.clone().unwrap_or_else(|| {
            master_host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        });
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(domain)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let (Some(certificate), Some(key)) = (&self.client_certificate_pem, &self.client_key_pem)
        {
            config = config.identity(Identity::from_pem(certificate, key));
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_pem_file_is_named() {
        let dir = std::env::temp_dir().join(format!("cicada-cluster-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let error = MasterTls::from_files(&missing, &missing, None).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        assert!(error.to_string().contains("certificate"), "{error}");

        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, b"hello").unwrap();
        let error = WorkerTls::from_files(&not_pem, None).unwrap_err();
        assert!(
            matches!(error, TlsFileError::NotPem { what: "CA", .. }),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
