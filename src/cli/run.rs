//! `replicant run`: its flags checked and turned into the options of the files runtime (a
//! process alone) or of the etcd runtime (hosts coordinated through etcd), then run.

use std::{fs, path::PathBuf, process::ExitCode};

use super::{CliError, LogFormat, init_logging, runtime, shutdown_signal};
use crate::{
    api::Duration,
    runtime::{etcd, files},
};

/// `replicant run` flags.
#[derive(clap::Args, Debug)]
pub(super) struct RunArgs {
    /// Directory of spec files (searched recursively; a git checkout works).
    #[arg(long)]
    pub(super) specs: PathBuf,
    /// Directory for journals and status (created if missing). Needed without
    /// --coordinator; with it, journals and status live in etcd.
    #[arg(long, required_unless_present = "coordinator")]
    pub(super) state: Option<PathBuf>,
    /// Serve /metrics and /healthz here, e.g. 127.0.0.1:9090.
    #[arg(long)]
    pub(super) admin: Option<std::net::SocketAddr>,
    /// Look at the spec directory at least this often, whatever the file watcher says
    /// (unchanged files are not read again).
    #[arg(long, default_value = "5s")]
    pub(super) rescan: Duration,
    /// The zone this host is in: its proxies send clients to members of this zone while
    /// any qualifies, then to the name's preferredZones, then to any member.
    #[arg(long)]
    pub(super) zone: Option<String>,
    /// Logs on stderr: `text` for people, `json` (one object per line) for collectors; `RUST_LOG` sets the level.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    #[command(flatten)]
    pub(super) coordination: CoordinationArgs,
    /// On SIGTERM, how long the proxies go on serving, no longer reconciling, for a new
    /// `replicant run` on the same --state to take their listening sockets over (not when
    /// systemd passed the sockets: it keeps them). A second signal ends the wait.
    #[arg(long, default_value = "10s")]
    pub(super) handover_wait: Duration,
    /// Once the proxies stop accepting (stopped, or replaced), how long their open
    /// connections have to finish before they are closed.
    #[arg(long, default_value = "30s")]
    pub(super) drain_grace: Duration,
}

/// What `replicant run` was asked to be.
enum RunOptions {
    Alone(files::Options),
    Hosts(etcd::run::EtcdOptions),
}

impl RunArgs {
    fn options(self) -> Result<RunOptions, CliError> {
        let rescan = self.rescan.std();
        if rescan < std::time::Duration::from_millis(100) {
            return Err(CliError::Invalid(format!(
                "--rescan {rescan:?} is too short: at least 100ms"
            )));
        }
        if let Some(problem) = self.zone.as_deref().and_then(crate::validate::zone_problem) {
            return Err(CliError::Invalid(format!("--zone: {problem}")));
        }
        if let Some(coordinator) = self.coordination.etcd.coordinator()? {
            let lease = self.coordination.lease.std();
            if lease < std::time::Duration::from_secs(2) || lease.subsec_nanos() != 0 {
                return Err(CliError::Invalid(format!(
                    "--lease {} must be whole seconds, at least 2s (etcd counts leases in seconds)",
                    self.coordination.lease
                )));
            }
            return Ok(RunOptions::Hosts(etcd::run::EtcdOptions {
                specs: self.specs,
                admin: self.admin,
                rescan,
                coordinator,
                identity: instance_identity(self.coordination.identity)?,
                lease,
                proxy_host: self.coordination.proxy_host,
                zone: self.zone,
            }));
        }
        let Some(state) = self.state else {
            return Err(CliError::Invalid(
                "--state is needed without --coordinator".into(),
            ));
        };
        Ok(RunOptions::Alone(files::Options {
            specs: self.specs,
            state,
            admin: self.admin,
            rescan,
            zone: self.zone,
            handover_wait: self.handover_wait.std(),
            drain_grace: self.drain_grace.std(),
        }))
    }
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    init_logging(args.log_format);
    match args.options()? {
        RunOptions::Hosts(options) => {
            runtime()?.block_on(etcd::run::run(options, shutdown_signal()))?;
        }
        RunOptions::Alone(options) => {
            runtime()?.block_on(files::run(options, shutdown_signal))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where etcd is and how to reach it, for `run` and `status`.
#[derive(clap::Args, Debug)]
pub(super) struct EtcdArgs {
    /// Coordinate with the other hosts through etcd: `etcd://h1:2379,h2:2379,h3:2379`, or
    /// `etcds://` for TLS; a path (`etcd://h1:2379/prod`) sets the key prefix (`/replicant`).
    #[arg(long)]
    pub(super) coordinator: Option<String>,
    /// The CA that signed the etcd members' certificates (etcds://).
    #[arg(long, requires = "coordinator")]
    pub(super) etcd_ca: Option<PathBuf>,
    /// This host's client certificate, where etcd asks for one.
    #[arg(long, requires = "etcd_key")]
    pub(super) etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert.
    #[arg(long, requires = "etcd_cert")]
    pub(super) etcd_key: Option<PathBuf>,
    /// The etcd user; the password comes from --etcd-password-file or REPLICANT_ETCD_PASSWORD.
    #[arg(long, requires = "coordinator")]
    pub(super) etcd_user: Option<String>,
    /// A file holding the etcd user's password (one line).
    #[arg(long, requires = "etcd_user")]
    pub(super) etcd_password_file: Option<PathBuf>,
    /// Every etcd request gives up after this long.
    #[arg(long, default_value = "1s")]
    pub(super) etcd_timeout: Duration,
}

impl EtcdArgs {
    pub(super) fn coordinator(
        &self,
    ) -> Result<Option<crate::runtime::etcd::Coordinator>, CliError> {
        use crate::runtime::etcd::{Coordinator, connect::TlsFiles};
        let Some(url) = &self.coordinator else {
            return Ok(None);
        };
        let (endpoints, prefix, tls) =
            Coordinator::parse(url).map_err(|e| CliError::Invalid(e.to_string()))?;
        let password = match (&self.etcd_user, &self.etcd_password_file) {
            (None, _) => None,
            (Some(_), Some(file)) => {
                let text = fs::read_to_string(file).map_err(|source| CliError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
                Some(text.trim_end_matches(['\n', '\r']).to_string())
            }
            (Some(_), None) => std::env::var("REPLICANT_ETCD_PASSWORD").ok(),
        };
        let timeout = self.etcd_timeout.std();
        if timeout < std::time::Duration::from_millis(100) {
            return Err(CliError::Invalid(format!(
                "--etcd-timeout {} is too short: at least 100ms",
                self.etcd_timeout
            )));
        }
        Ok(Some(Coordinator {
            endpoints,
            prefix,
            tls: tls.then(|| TlsFiles {
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            }),
            user: self.etcd_user.clone(),
            password: password.map(crate::engine::Secret::new),
            timeout,
        }))
    }
}

/// `replicant run` with others through etcd.
#[derive(clap::Args, Debug)]
pub(super) struct CoordinationArgs {
    #[command(flatten)]
    pub(super) etcd: EtcdArgs,
    /// This instance's name among the others: unique and stable (default: the hostname).
    #[arg(long, requires = "coordinator")]
    pub(super) identity: Option<String>,
    /// The etcd session lease, in whole seconds: a dead leader is replaced within about this
    /// long, and a proxy cut off from etcd stops routing within it (a fifth of it sooner).
    #[arg(long, default_value = "5s")]
    pub(super) lease: Duration,
    /// Bind this host's proxies to this address, keeping the port of each name's `listen`.
    #[arg(long, requires = "coordinator")]
    pub(super) proxy_host: Option<String>,
}

/// This host's name in etcd keys: the hostname unless given.
fn instance_identity(given: Option<String>) -> Result<String, CliError> {
    let identity = given.unwrap_or_else(hostname);
    let fits = !identity.is_empty()
        && identity.len() <= 253
        && identity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if fits {
        Ok(identity)
    } else {
        Err(CliError::Invalid(format!(
            "--identity {identity:?}: letters, digits, '.', '-' and '_' only, at most 253"
        )))
    }
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "replicant".into())
}
