//! TLS for the agent's API: a certificate and key from PEM files, and a listener whose
//! handshakes run side by side with a time limit, so a client that stalls one holds up nobody.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, rustls, server::TlsStream};

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent's certificate and key cannot serve TLS: which of them, and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsSetupError {
    what: String,
    reason: String,
}

/// The server side of TLS from a PEM certificate chain and a PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let failed = |what: &Path| {
        let what = what.display().to_string();
        move |e: &dyn std::fmt::Display| TlsSetupError {
            what,
            reason: e.to_string(),
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| failed(cert)(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| failed(cert)(&e))?;
    if certs.is_empty() {
        return Err(failed(cert)(&"no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| failed(key)(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(Path::new("TLS"))(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| failed(Path::new("certificate and key"))(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connections that finished their handshake, for axum to serve.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task never ends while the listener exists.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
