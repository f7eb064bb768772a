//! The listeners' certificate. Every listener resolves it per handshake from one shared
//! slot, so a reload (SIGHUP) swaps a renewed certificate in without a restart:
//! connections from then on get the new one, open ones keep theirs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate chain and key the listeners present now.
#[derive(Debug)]
pub struct ServerCert(ArcSwap<CertifiedKey>);

impl ServerCert {
    pub fn new(cert: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self(ArcSwap::new(cert)))
    }

    /// From the next handshake on, present `cert`.
    pub fn replace(&self, cert: Arc<CertifiedKey>) {
        self.0.store(cert);
    }

    /// A TLS 1.2/1.3 acceptor (HTTP/1.1 by ALPN) presenting whatever this holds.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
