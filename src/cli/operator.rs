//! `replicant operator`: its flags (or their environment variables) checked and turned into
//! the Kubernetes runtime's options, then run.

use std::process::ExitCode;

use super::{CliError, LogFormat, init_logging, run::hostname, runtime, shutdown_signal};
use crate::api::Duration;

/// `replicant operator` flags; each can also be set from the environment (as the chart does).
#[derive(clap::Args, Debug)]
pub(super) struct OperatorArgs {
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub(super) namespace: Option<String>,
    /// Serve /metrics and /healthz here, e.g. 0.0.0.0:8080.
    #[arg(long, env = "REPLICANT_ADMIN")]
    pub(super) admin: Option<std::net::SocketAddr>,
    /// Act without a leader lease (only safe with a single replica).
    #[arg(long)]
    pub(super) no_leader_election: bool,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub(super) lease_namespace: String,
    /// Name of the leader Lease: operators that share it elect one leader.
    #[arg(long, default_value = "replicant-leader")]
    pub(super) lease_name: String,
    /// How long a silent leader keeps the lease.
    #[arg(long, default_value = "15s")]
    pub(super) lease_duration: Duration,
    /// The leader steps down after failing to renew for this long (less than the lease duration).
    #[arg(long, default_value = "10s")]
    pub(super) renew_deadline: Duration,
    /// Pause between attempts to acquire or renew the lease.
    #[arg(long, default_value = "2s")]
    pub(super) retry_period: Duration,
    /// This replica's name in the lease and in Events (defaults to host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub(super) identity: Option<String>,
    /// Logs on stderr: `text` for people, `json` (one object per line) for collectors; `RUST_LOG` sets the level.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "REPLICANT_LOG_FORMAT")]
    pub(super) log_format: LogFormat,
}

impl OperatorArgs {
    fn options(self) -> Result<crate::runtime::kubernetes::Options, CliError> {
        let (duration, deadline, retry) = (
            self.lease_duration.std(),
            self.renew_deadline.std(),
            self.retry_period.std(),
        );
        if !(retry < deadline && deadline < duration) {
            return Err(CliError::Invalid(format!(
                "need --retry-period < --renew-deadline < --lease-duration, got {} < {} < {}",
                self.retry_period, self.renew_deadline, self.lease_duration
            )));
        }
        let identity = self
            .identity
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        Ok(crate::runtime::kubernetes::Options {
            namespace: self.namespace,
            admin: self.admin,
            lease: (!self.no_leader_election).then_some(crate::runtime::kubernetes::LeaseOptions {
                name: self.lease_name,
                namespace: self.lease_namespace,
                duration,
                renew_deadline: deadline,
                retry_period: retry,
            }),
            identity,
        })
    }
}

pub(super) fn run(args: OperatorArgs) -> Result<ExitCode, CliError> {
    init_logging(args.log_format);
    let options = args.options()?;
    runtime()?.block_on(crate::runtime::kubernetes::run(options, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
