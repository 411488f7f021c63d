//! Whether a postgres server is alive, without credentials and without a line in its log: a
//! cancel request that matches no backend, which the server reads and answers by closing the
//! connection. A frozen or hung server accepts the connection (the kernel does) but never
//! closes it. Touches one TCP connection to the address it is given.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The protocol's cancel request code, and a process id no backend has.
const CANCEL_REQUEST_CODE: u32 = 80_877_102;
const NO_BACKEND: u32 = 0;

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
    #[error("{address}: it answered with data, which postgres never sends to a cancel request")]
    NotPostgres { address: String },
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
    let mut request = Vec::with_capacity(16);
    for word in [16, CANCEL_REQUEST_CODE, NO_BACKEND, 0] {
        request.extend_from_slice(&u32::to_be_bytes(word));
    }
    stream.write_all(&request).await.map_err(failed)?;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte).await {
        // The server read the request and hung up: it is alive.
        Ok(0) => Ok(()),
        Ok(_) => Err(PingError::NotPostgres {
            address: address.to_string(),
        }),
        // A reset after the request was read is a hang-up too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(failed(e)),
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

    #[tokio::test]
    async fn a_server_that_reads_the_request_and_hangs_up_is_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 16];
            stream.read_exact(&mut request).await.unwrap();
            request
        });
        ping(&address, Duration::from_secs(2)).await.unwrap();
        let request = server.await.unwrap();
        assert_eq!(request[..8], [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
    }
}
