//! Whether a postgres server is alive, without credentials and without a line in its log: an
//! SSL request, which a backend the server forks for the connection answers; then, when the
//! server offers TLS, a handshake and a clean close. A server that reads no startup packet on
//! a connection logs nothing. A frozen or hung server accepts the connection (the kernel does)
//! but never answers. Touches one TCP connection to the address it is given.

use std::{sync::Arc, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// The protocol's SSL request code.
const SSL_REQUEST_CODE: u32 = 80_877_103;

/// Why a server did not prove alive.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("{address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{address}: no answer within {}ms", timeout.as_millis())]
    Timeout { address: String, timeout: Duration },
    #[error("{address}: it answered {answer:#04x} to an SSL request: not postgres")]
    NotPostgres { address: String, answer: u8 },
}

/// Ping the postgres server at `address` (`host:port`), within `timeout` in all.
pub async fn ping(address: &str, timeout: Duration) -> Result<(), PingError> {
    match tokio::time::timeout(timeout, exchange(address)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(PingError::Timeout {
            address: address.to_string(),
            timeout,
        }),
    }
}

async fn exchange(address: &str) -> Result<(), PingError> {
    let failed = |source| PingError::Connect {
        address: address.to_string(),
        source,
    };
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(failed)?;
    let mut request = Vec::with_capacity(8);
    for word in [8, SSL_REQUEST_CODE] {
        request.extend_from_slice(&u32::to_be_bytes(word));
    }
    stream.write_all(&request).await.map_err(failed)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(failed)?;
    match answer[0] {
        // No TLS: hanging up now, before any startup packet, leaves no trace.
        b'N' => Ok(()),
        // It answered, so it is alive; the handshake and a clean close keep its log quiet
        // (a connection dropped mid-handshake is logged as an error).
        b'S' => {
            let connector = tokio_rustls::TlsConnector::from(any_certificate());
            let name = ServerName::try_from("postgres").expect("a valid name");
            if let Ok(mut tls) = connector.connect(name, stream).await {
                let _ = tls.shutdown().await;
            }
            Ok(())
        }
        other => Err(PingError::NotPostgres {
            address: address.to_string(),
            answer: other,
        }),
    }
}

/// A TLS client that accepts any certificate: the ping sends nothing over the connection, so
/// whom it talks to does not matter, only that a server answered.
fn any_certificate() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_that_never_answers_is_not_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // Accepted by the kernel, never read: a frozen server.
        let outcome = ping(&address, Duration::from_millis(200)).await;
        assert!(
            matches!(outcome, Err(PingError::Timeout { .. })),
            "{outcome:?}"
        );
        drop(listener);
        let outcome = ping(&address, Duration::from_millis(200)).await;
        assert!(
            matches!(outcome, Err(PingError::Connect { .. })),
            "{outcome:?}"
        );
    }

    /// `answer` to the request a ping sends, which is checked.
    async fn server_answering(answer: u8) -> (String, tokio::task::JoinHandle<[u8; 8]>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).await.unwrap();
            stream.write_all(&[answer]).await.unwrap();
            request
        });
        (address, server)
    }

    #[tokio::test]
    async fn a_server_that_declines_tls_is_alive_and_anything_else_is_not_postgres() {
        let (address, server) = server_answering(b'N').await;
        ping(&address, Duration::from_secs(2)).await.unwrap();
        assert_eq!(server.await.unwrap(), [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        let (address, _server) = server_answering(b'+').await;
        let outcome = ping(&address, Duration::from_secs(2)).await;
        assert!(
            matches!(outcome, Err(PingError::NotPostgres { answer: b'+', .. })),
            "{outcome:?}"
        );
    }
}
