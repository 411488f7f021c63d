//! Azurite (Microsoft's Azure Storage emulator), its Blob service on loopback, with one
//! container in its well-known development account: the real Azure-compatible store the backup
//! tests write to. Stopped (SIGKILL, by PID) on drop.

use std::{
    io::{Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use hmac::{KeyInit, Mac};

use crate::{free_port, kill_and_reap};

/// The development account every Azurite serves, and its published key (test data only).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, thiserror::Error)]
pub enum AzuriteError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("azurite did not answer within {secs}s; see {log}")]
    NotReady { secs: u64, log: String },
    #[error("creating container {container}: {answer}")]
    Container { container: String, answer: String },
    #[error(transparent)]
    Local(#[from] crate::LocalError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct AzuriteProcess {
    child: Child,
    /// The Blob service's URL with the account, `http://127.0.0.1:<port>/devstoreaccount1`.
    pub endpoint: String,
    pub container: String,
}

impl AzuriteProcess {
    /// Start `azurite-blob` from `binary` with its data under `dir`, and create `container`.
    pub fn start(binary: &Path, dir: &Path, container: &str) -> Result<Self, AzuriteError> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = dir.join("azurite.log");
        let child = Command::new(binary)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir)
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("azurite.err"))?)
            .spawn()
            .map_err(|source| AzuriteError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        let mut azurite = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            container: container.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                kill_and_reap(&mut azurite.child);
                return Err(AzuriteError::NotReady {
                    secs: 60,
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        azurite.create_container(port)?;
        Ok(azurite)
    }

    /// `Create Container`, signed with the account's shared key, as any Azure client would.
    fn create_container(&self, port: u16) -> Result<(), AzuriteError> {
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let resource = format!("/{ACCOUNT}/{ACCOUNT}/{}\nrestype:container", self.container);
        let signed = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .expect("the published key is base64");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(signed.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let request = format!(
            "PUT /{ACCOUNT}/{}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.container
        );
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        if answer.starts_with("HTTP/1.1 201") {
            Ok(())
        } else {
            Err(AzuriteError::Container {
                container: self.container.clone(),
                answer: answer.lines().next().unwrap_or_default().to_string(),
            })
        }
    }
}

impl Drop for AzuriteProcess {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
