//! A one-node Garage (an S3-compatible object store) on loopback, with one bucket and one
//! access key: the real store the backup tests and the benchmark write to. Stopped (SIGKILL, by
//! PID) on drop; it can be stopped and started again on the same ports and data, as a store
//! that goes away for a while.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, kill_and_reap};

/// The access key every `GarageProcess` grants (test data only).
pub const ACCESS_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET_ACCESS_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The region Garage answers for.
pub const REGION: &str = "garage";

#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("garage {args}: {output}")]
    Command { args: String, output: String },
    #[error("garage did not answer within {secs}s; see {log}")]
    NotReady { secs: u64, log: String },
    #[error(transparent)]
    Local(#[from] crate::LocalError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct GarageProcess {
    binary: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub bucket: String,
}

impl GarageProcess {
    /// Start Garage from `binary` with its data under `dir`, lay out its one node, and create
    /// `bucket` readable and writable with [`ACCESS_KEY_ID`].
    pub fn start(binary: &Path, dir: &Path, bucket: &str) -> Result<Self, GarageError> {
        std::fs::create_dir_all(dir)?;
        let s3 = free_port()?;
        let rpc = free_port()?;
        let admin = free_port()?;
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + s3 as usize) % 256))
            .collect();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.localhost\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
            ),
        )?;
        let mut garage = Self {
            binary: binary.to_path_buf(),
            config,
            dir: dir.to_path_buf(),
            child: None,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: bucket.to_string(),
        };
        garage.resume()?;
        let id = garage.run(&["node", "id", "-q"])?;
        let id = id.trim().split('@').next().unwrap_or_default().to_string();
        garage.run(&["layout", "assign", "-z", "local", "-c", "1G", &id])?;
        garage.run(&["layout", "apply", "--version", "1"])?;
        garage.run(&[
            "key",
            "import",
            "--yes",
            "-n",
            "tests",
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
        ])?;
        garage.run(&["bucket", "create", bucket])?;
        garage.run(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "tests",
        ])?;
        Ok(garage)
    }

    /// Run the `garage` command line against this server.
    fn run(&self, args: &[&str]) -> Result<String, GarageError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .map_err(|source| GarageError::Spawn {
                    binary: self.binary.display().to_string(),
                    source,
                })?;
            if output.status.success() {
                return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
            }
            // The layout takes a moment to reach the tables the key and bucket commands use.
            if Instant::now() > deadline {
                return Err(GarageError::Command {
                    args: args.join(" "),
                    output: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kill the server (its data stays): the store is unreachable until [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Start the server again on its ports and data, and wait until it answers.
    pub fn resume(&mut self) -> Result<(), GarageError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = self.dir.join("garage.log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|source| GarageError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        self.child = Some(child);
        let port: u16 = self
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(GarageError::NotReady {
                    secs: 30,
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for GarageProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
