//! TLS for the client port (`--tls-cert`, `--tls-key`): the rustls server configuration every
//! shard shares, and the certificate it serves, reloadable on SIGHUP.
//!
//! The shards drive one `rustls::ServerConnection` per connection (sans-IO: the driver feeds it
//! the bytes it reads and writes out what it encrypts, see `shard/mod.rs`). Which certificate a
//! new handshake gets is asked of [`CertStore`] (a `ResolvesServerCert`), which holds the
//! current one behind a lock read once per handshake: a reload swaps it, connections already
//! open keep the keys they agreed on, new ones get the new certificate.
//!
//! Protocols: TLS 1.3 and 1.2 only (rustls has nothing older), ALPN `http/1.1` (a client that
//! offers ALPN without it is refused; one that offers none is served), the ring provider's
//! cipher suites.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

fn err(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The crypto provider tickcast uses (ring: a small C/asm build; aws-lc-rs, rustls's default,
/// needs a much larger one). Deprecated only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The served certificate chain and key, and where they are reloaded from.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the PEM chain at `cert` (leaf first) and its PEM key at `key`.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file that cannot be read or used (a key that does not match
    /// the leaf certificate is refused).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let ck = load_certified_key(cert, key)?;
        Ok(Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: RwLock::new(Arc::new(ck)),
        })
    }

    /// Reads the files again and serves them to new handshakes; on error the current
    /// certificate stays.
    ///
    /// # Errors
    /// As [`CertStore::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write() = Arc::new(ck);
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert, "no certificate in the file"));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("no usable private key: {e}")))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| err(key, e))
}

/// The server configuration every shard shares: TLS 1.3 and 1.2, ALPN `http/1.1`, the
/// certificate from `store`.
///
/// # Errors
/// When the provider refuses the protocol versions (it does not).
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
