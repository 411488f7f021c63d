//! The command line: parses arguments and runs one subcommand; prints to stdout/stderr, reads only the files named.

mod faults;
mod render;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    bounded,
    core::{desired::Desired, observed::Observed, plan},
    validate::{self, Resource},
};

#[derive(Parser, Debug)]
#[command(
    name = "replicant",
    version,
    about = "Declarative reconcile controller for master/replica replication clusters"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check spec files (multi-document YAML); exit 1 and list every problem if any is invalid.
    Validate {
        /// Spec files, checked together (a VirtualName may name a cluster in another file).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Dry run: print what the controller would do for a cluster, and why.
    Plan {
        /// Spec file(s) holding the ReplicationCluster and its VirtualNames.
        #[arg(long = "spec", required = true)]
        specs: Vec<PathBuf>,
        /// YAML or JSON file describing what was observed (members, virtual names, journal).
        #[arg(long)]
        observed: PathBuf,
        /// Which cluster, when the spec files hold several.
        #[arg(long)]
        cluster: Option<String>,
        /// The time to plan at (RFC 3339); defaults to now.
        #[arg(long)]
        now: Option<jiff::Timestamp>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Reconcile every cluster in a directory of specs, continuously, with built-in proxies.
    Run {
        /// Directory of spec files (searched recursively; a git checkout works).
        #[arg(long)]
        specs: PathBuf,
        /// Directory for journals and status (created if missing). Needed without
        /// --coordinator; with it, journals and status live in etcd.
        #[arg(long, required_unless_present = "coordinator")]
        state: Option<PathBuf>,
        /// Serve /metrics and /healthz here, e.g. 127.0.0.1:9090.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Look at the spec directory at least this often, whatever the file watcher says
        /// (unchanged files are not read again).
        #[arg(long, default_value = "5s")]
        rescan: crate::api::Duration,
        /// The zone this host is in: its proxies send clients to members of this zone while
        /// any qualifies, then to the name's preferredZones, then to any member.
        #[arg(long)]
        zone: Option<String>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        #[command(flatten)]
        hosts: HostsArgs,
        /// On SIGTERM, how long the proxies go on serving, no longer reconciling, for a new
        /// `replicant run` on the same --state to take their listening sockets over (not when
        /// systemd passed the sockets: it keeps them). A second signal ends the wait.
        #[arg(long, default_value = "10s")]
        handover_wait: crate::api::Duration,
        /// Once the proxies stop accepting (stopped, or replaced), how long their open
        /// connections have to finish before they are closed.
        #[arg(long, default_value = "30s")]
        drain_grace: crate::api::Duration,
    },
    /// Run the PostgreSQL node agent on a database host: the parent of its postgres, serving
    /// the controller start, stop, status and the self-fencing lease.
    Node(NodeArgs),
    /// Run as a Kubernetes operator: reconcile ReplicationClusters and VirtualNames in the cluster.
    Operator(OperatorArgs),
    /// Show what the controller last saw and did, per cluster: from a `replicant run`'s state
    /// directory, from etcd, or from a Kubernetes cluster's resources and Events.
    Status {
        /// The state directory of a `replicant run` on its own.
        #[arg(
            long,
            required_unless_present_any = ["coordinator", "kubernetes"],
            conflicts_with_all = ["coordinator", "kubernetes"]
        )]
        state: Option<PathBuf>,
        /// Read ReplicationClusters, VirtualNames and Events from Kubernetes, through the
        /// kubeconfig (`KUBECONFIG`, `~/.kube/config`, its current context) or in-cluster.
        #[arg(long, conflicts_with = "coordinator")]
        kubernetes: bool,
        /// With --kubernetes: this namespace only (default: the kubeconfig context's).
        #[arg(
            short = 'n',
            long,
            requires = "kubernetes",
            conflicts_with = "all_namespaces"
        )]
        namespace: Option<String>,
        /// With --kubernetes: every namespace.
        #[arg(short = 'A', long, requires = "kubernetes")]
        all_namespaces: bool,
        #[command(flatten)]
        etcd: EtcdArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Start three local redis-servers, run the controller, kill the master, and measure.
    Demo {
        /// How many failovers to run and measure.
        #[arg(long, default_value_t = 1)]
        trials: usize,
        /// The servers: redis-servers, or postgres servers under node agents.
        #[arg(long, value_enum, default_value_t = crate::demo::DemoEngine::Redis)]
        engine: crate::demo::DemoEngine,
        /// Replication mode: with sync, a write is acknowledged once a replica holds it.
        #[arg(long, value_enum, default_value_t = DemoMode::Async)]
        mode: DemoMode,
    },
    /// Copy this binary into a directory (made if missing) as `replicant`, executable: how an
    /// init container from the replicant image, which has no shell, gives a database pod its
    /// node agent.
    CopyBinary {
        /// The directory, usually an `emptyDir` volume shared with the database container.
        dir: PathBuf,
    },
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Where etcd is and how to reach it, for `run` and `status`.
#[derive(clap::Args, Debug)]
struct EtcdArgs {
    /// Coordinate with the other hosts through etcd: `etcd://h1:2379,h2:2379,h3:2379`, or
    /// `etcds://` for TLS; a path (`etcd://h1:2379/prod`) sets the key prefix (`/replicant`).
    #[arg(long)]
    coordinator: Option<String>,
    /// The CA that signed the etcd members' certificates (etcds://).
    #[arg(long, requires = "coordinator")]
    etcd_ca: Option<PathBuf>,
    /// This host's client certificate, where etcd asks for one.
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert.
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// The etcd user; the password comes from --etcd-password-file or REPLICANT_ETCD_PASSWORD.
    #[arg(long, requires = "coordinator")]
    etcd_user: Option<String>,
    /// A file holding the etcd user's password (one line).
    #[arg(long, requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// Every etcd request gives up after this long.
    #[arg(long, default_value = "1s")]
    etcd_timeout: crate::api::Duration,
}

impl EtcdArgs {
    fn coordinator(&self) -> Result<Option<crate::runtime::etcd::Coordinator>, CliError> {
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
struct HostsArgs {
    #[command(flatten)]
    etcd: EtcdArgs,
    /// This host's name among the others: unique and stable (default: the hostname).
    #[arg(long, requires = "coordinator")]
    identity: Option<String>,
    /// The etcd session lease, in whole seconds: a dead leader is replaced within about this
    /// long, and a proxy cut off from etcd stops routing within it (a fifth of it sooner).
    #[arg(long, default_value = "5s")]
    lease: crate::api::Duration,
    /// Bind this host's proxies to this address, keeping the port of each name's `listen`.
    #[arg(long, requires = "coordinator")]
    proxy_host: Option<String>,
}

/// This host's name in etcd keys: the hostname unless given.
fn host_identity(given: Option<String>) -> Result<String, CliError> {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "replicant".into())
}

/// `replicant operator` flags; each can also be set from the environment (as the chart does).
#[derive(clap::Args, Debug)]
struct OperatorArgs {
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Serve /metrics and /healthz here, e.g. 0.0.0.0:8080.
    #[arg(long, env = "REPLICANT_ADMIN")]
    admin: Option<std::net::SocketAddr>,
    /// Act without a leader lease (only safe with a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "replicant-leader")]
    lease_name: String,
    /// How long a silent leader keeps the lease.
    #[arg(long, default_value = "15s")]
    lease_duration: crate::api::Duration,
    /// The leader steps down after failing to renew for this long (less than the lease duration).
    #[arg(long, default_value = "10s")]
    renew_deadline: crate::api::Duration,
    /// Pause between attempts to acquire or renew the lease.
    #[arg(long, default_value = "2s")]
    retry_period: crate::api::Duration,
    /// This replica's name in the lease and in Events (defaults to host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "REPLICANT_LOG_FORMAT")]
    log_format: LogFormat,
}

/// The demo's replication mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DemoMode {
    Async,
    Sync,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// The data directory of the postgres the agent runs.
    #[arg(long)]
    data: PathBuf,
    /// The port postgres listens on.
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// PostgreSQL's binaries (default: REPLICANT_PG_BIN, the newest /usr/lib/postgresql/*/bin,
    /// or the PATH).
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// A postgres setting as name=value (repeatable), e.g. listen_addresses=10.0.0.5.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// The address of the agent's API, e.g. 10.0.0.5:8008.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// A file holding the bearer token the controller presents.
    #[arg(
        long,
        conflicts_with = "token_env",
        required_unless_present = "token_env"
    )]
    token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[arg(long)]
    token_env: Option<String>,
    /// The agent's state file: the highest epoch seen, and whether it is fenced.
    #[arg(long)]
    state: PathBuf,
    /// Serve the API over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The user this host replicates and copies as.
    #[arg(long, default_value = "replicator")]
    replication_user: String,
    /// A file holding that user's password (none: trust or a .pgpass file).
    #[arg(long, conflicts_with = "replication_password_env")]
    replication_password_file: Option<PathBuf>,
    /// An environment variable holding that user's password.
    #[arg(long)]
    replication_password_env: Option<String>,
    /// The superuser a new data set is created with, when the controller asks this host to
    /// create the first primary of a cluster.
    #[arg(long, default_value = "postgres")]
    superuser: String,
    /// A file holding that superuser's password (without one, this host cannot create a data
    /// set).
    #[arg(long, conflicts_with = "superuser_password_env")]
    superuser_password_file: Option<PathBuf>,
    /// An environment variable holding that superuser's password.
    #[arg(long)]
    superuser_password_env: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(format!("{name:?} is not a setting name"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// A secret from a file (its last line break dropped) or else an environment variable, or none
/// when neither is given; `env_flag` names the flag in the error when the variable is unset.
fn secret(
    file: Option<&Path>,
    env: Option<&str>,
    env_flag: &str,
) -> Result<Option<String>, CliError> {
    match (file, env) {
        (Some(file), _) => Ok(Some(read(file)?.trim_end_matches(['\n', '\r']).to_string())),
        (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
            CliError::Invalid(format!("{env_flag}: environment variable {var} is not set"))
        }),
        (None, None) => Ok(None),
    }
}

impl NodeArgs {
    fn options(self) -> Result<crate::node::Options, CliError> {
        let token = secret(
            self.token_file.as_deref(),
            self.token_env.as_deref(),
            "--token-env",
        )?
        .expect("clap requires --token-file or --token-env");
        if token.len() < 16 {
            return Err(CliError::Invalid(
                "the token must be at least 16 characters".into(),
            ));
        }
        let bin = self
            .pg_bin
            .or_else(crate::node::default_bin_dir)
            .ok_or_else(|| {
                CliError::Invalid("PostgreSQL's binaries not found: give --pg-bin".into())
            })?;
        let password = secret(
            self.replication_password_file.as_deref(),
            self.replication_password_env.as_deref(),
            "--replication-password-env",
        )?;
        let superuser_password = secret(
            self.superuser_password_file.as_deref(),
            self.superuser_password_env.as_deref(),
            "--superuser-password-env",
        )?;
        Ok(crate::node::Options {
            superuser: crate::node::Superuser {
                name: self.superuser,
                password: superuser_password.map(crate::engine::Secret::new),
            },
            tls: self.tls_cert.zip(self.tls_key),
            replication: crate::node::Replication {
                user: self.replication_user,
                password: password.map(crate::engine::Secret::new),
            },
            data: self.data,
            bin,
            port: self.port,
            settings: self.settings,
            listen: self.listen,
            token: crate::engine::Secret::new(token),
            state: self.state,
        })
    }
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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Encode(String),
    #[error(transparent)]
    Run(#[from] crate::runtime::files::RunError),
    #[error(transparent)]
    Hosts(#[from] crate::runtime::etcd::run::EtcdRunError),
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    #[error(transparent)]
    Operator(#[from] crate::runtime::kubernetes::OperatorError),
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
}

/// Parse the command line and run it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Some(faults) = faults::from_environment() {
        crate::runtime::reconciler::install_fault_points(Box::new(faults));
    }
    match cli.execute() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    pub fn execute(self) -> Result<ExitCode, CliError> {
        match self.command {
            Command::Validate { files } => Ok(validate_command(&files)),
            Command::Plan {
                specs,
                observed,
                cluster,
                now,
                format,
            } => plan_command(&specs, &observed, cluster.as_deref(), now, format),
            Command::Crd { dir } => crd_command(dir.as_deref()),
            Command::CopyBinary { dir } => copy_binary(&dir),
            Command::Run {
                specs,
                state,
                admin,
                rescan,
                zone,
                log_format,
                hosts,
                handover_wait,
                drain_grace,
            } => {
                init_logging(log_format);
                let rescan = rescan.std();
                if rescan < std::time::Duration::from_millis(100) {
                    return Err(CliError::Invalid(format!(
                        "--rescan {rescan:?} is too short: at least 100ms"
                    )));
                }
                if let Some(problem) = zone.as_deref().and_then(crate::validate::zone_problem) {
                    return Err(CliError::Invalid(format!("--zone: {problem}")));
                }
                if let Some(coordinator) = hosts.etcd.coordinator()? {
                    let lease = hosts.lease.std();
                    if lease < std::time::Duration::from_secs(2) || lease.subsec_nanos() != 0 {
                        return Err(CliError::Invalid(format!(
                            "--lease {} must be whole seconds, at least 2s (etcd counts leases in seconds)",
                            hosts.lease
                        )));
                    }
                    let options = crate::runtime::etcd::run::EtcdOptions {
                        specs,
                        admin,
                        rescan,
                        coordinator,
                        identity: host_identity(hosts.identity)?,
                        lease,
                        proxy_host: hosts.proxy_host,
                        zone,
                    };
                    runtime()?
                        .block_on(crate::runtime::etcd::run::run(options, shutdown_signal()))?;
                    return Ok(ExitCode::SUCCESS);
                }
                let Some(state) = state else {
                    return Err(CliError::Invalid(
                        "--state is needed without --coordinator".into(),
                    ));
                };
                runtime()?.block_on(async {
                    let options = crate::runtime::files::Options {
                        specs,
                        state,
                        admin,
                        rescan,
                        zone,
                        handover_wait: handover_wait.std(),
                        drain_grace: drain_grace.std(),
                    };
                    crate::runtime::files::run(options, shutdown_signal).await
                })?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Node(args) => {
                init_logging(args.log_format);
                let options = args.options()?;
                runtime()?.block_on(crate::node::run(options, shutdown_signal()))?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Operator(args) => {
                init_logging(args.log_format);
                let options = args.options()?;
                runtime()?.block_on(crate::runtime::kubernetes::run(options, shutdown_signal()))?;
                Ok(ExitCode::SUCCESS)
            }
            // clap keeps --kubernetes apart from --state and --coordinator.
            Command::Status {
                kubernetes: true,
                namespace,
                all_namespaces,
                format,
                ..
            } => kubernetes_status_command(namespace, all_namespaces, format),
            Command::Status {
                state,
                etcd,
                format,
                ..
            } => match (etcd.coordinator()?, state) {
                (Some(coordinator), _) => hosts_status_command(&coordinator, format),
                (None, Some(state)) => status_command(&state, format),
                (None, None) => Err(CliError::Invalid(
                    "give --state, or --coordinator for hosts coordinated through etcd".into(),
                )),
            },
            Command::Demo {
                trials,
                engine,
                mode,
            } => {
                init_logging_filtered(LogFormat::Text, "warn");
                let agent = std::env::current_exe().map_err(|e| {
                    CliError::Invalid(format!("cannot find the replicant executable: {e}"))
                })?;
                let options = crate::demo::DemoOptions {
                    engine,
                    sync: mode == DemoMode::Sync,
                    trials,
                    agent,
                    work: None,
                };
                let results = runtime()?.block_on(crate::demo::run(options))?;
                print!("{}", render::demo_summary(&results));
                let clean = results.iter().all(|t| t.lost == 0);
                Ok(if clean {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    }
}

fn validate_command(files: &[PathBuf]) -> ExitCode {
    let report = validate::validate_files(files);
    for (file, what) in &report.skipped {
        eprintln!("{file}: skipped {what} (not a replicant resource)");
    }
    if report.is_valid() {
        let count = report.documents.len();
        println!("{count} resource(s) valid in {} file(s)", files.len());
        ExitCode::SUCCESS
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
        eprintln!("{} problem(s) found", report.problems.len());
        ExitCode::FAILURE
    }
}

/// Load, validate and assemble the desired state of one cluster from spec files.
pub fn load_desired(specs: &[PathBuf], cluster: Option<&str>) -> Result<Desired, CliError> {
    let report = validate::validate_files(specs);
    if !report.is_valid() {
        let lines: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        return Err(CliError::Invalid(format!(
            "the spec is invalid; nothing planned:\n{}",
            lines.join("\n")
        )));
    }
    let clusters: Vec<_> = report
        .documents
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::Cluster(c) if cluster.is_none_or(|name| d.resource.name() == name) => {
                Some((d, c))
            }
            _ => None,
        })
        .collect();
    let (doc, chosen) = match clusters.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::Invalid(
                "no matching ReplicationCluster in the spec files".into(),
            ));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(d, _)| d.resource.name()).collect();
            return Err(CliError::Invalid(format!(
                "the spec files hold several clusters ({}); choose one with --cluster",
                names.join(", ")
            )));
        }
    };
    let name = doc.resource.name().to_string();
    let namespace = doc.resource.namespace();
    let virtual_names = report.documents.iter().filter_map(|d| match &d.resource {
        Resource::VirtualName(vn)
            if vn.spec.cluster == name && d.resource.namespace() == namespace =>
        {
            Some((d.resource.name().to_string(), vn.spec.clone()))
        }
        _ => None,
    });
    Ok(Desired::new(
        name.clone(),
        chosen.spec.clone(),
        virtual_names,
    ))
}

/// Read a text file of at most [`validate::MAX_FILE_BYTES`]: a larger one is refused, not read.
fn read(path: &Path) -> Result<String, CliError> {
    use std::io::Read;
    let io = |source| CliError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(validate::MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > validate::MAX_FILE_BYTES {
        return Err(CliError::Invalid(format!(
            "{}: larger than {} bytes; refused unread",
            path.display(),
            validate::MAX_FILE_BYTES
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        CliError::Invalid(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Read an observation file (YAML or JSON), naming the field that is wrong.
pub fn load_observed(path: &Path) -> Result<Observed, CliError> {
    observed_from_str(&path.display().to_string(), &read(path)?)
}

/// Parse observations read from `file`, within the same bounds as spec files.
pub fn observed_from_str(file: &str, text: &str) -> Result<Observed, CliError> {
    validate::check_bounds(text, &validate::Limits::default())
        .map_err(|e| CliError::Invalid(format!("{file}: {e}")))?;
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        CliError::Invalid(bounded::message(format!(
            "{file}: {}: {}",
            bounded::value(&path),
            e.inner()
        )))
    })
}

fn plan_command(
    specs: &[PathBuf],
    observed: &Path,
    cluster: Option<&str>,
    now: Option<jiff::Timestamp>,
    format: Format,
) -> Result<ExitCode, CliError> {
    let desired = load_desired(specs, cluster)?;
    let observed = load_observed(observed)?;
    let now = now.unwrap_or_else(jiff::Timestamp::now);
    let plan = plan::plan(&desired, &observed, now);
    print_as(format, &plan, || {
        render::plan_table(&desired, &observed, &plan)
    })
}

/// Print `value` in `format`: `table` renders it for people, JSON and YAML serialise it.
fn print_as(
    format: Format,
    value: &impl serde::Serialize,
    table: impl FnOnce() -> String,
) -> Result<ExitCode, CliError> {
    let encode = |e: &dyn std::fmt::Display| CliError::Encode(e.to_string());
    let text = match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(value).map_err(|e| encode(&e))? + "\n",
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| encode(&e))?,
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            path: "tokio runtime".into(),
            source,
        })
}

fn init_logging(format: LogFormat) {
    init_logging_filtered(format, "info");
}

fn init_logging_filtered(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours for a person at a terminal, never escape codes in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn status_command(state: &Path, format: Format) -> Result<ExitCode, CliError> {
    let io = |source| CliError::Io {
        path: state.display().to_string(),
        source,
    };
    let reports = crate::runtime::files::state::read_reports(state).map_err(io)?;
    let specs = crate::runtime::files::state::read_specs_report(state).map_err(io)?;
    if format != Format::Table {
        // The machine formats keep their shape (a list of clusters); problems go to stderr.
        for problem in &specs.problems {
            eprintln!("spec problem: {problem}");
        }
    }
    print_as(format, &reports, || {
        render::specs_table(&specs) + &render::status_table(&reports)
    })
}

fn hosts_status_command(
    coordinator: &crate::runtime::etcd::Coordinator,
    format: Format,
) -> Result<ExitCode, CliError> {
    use crate::runtime::etcd::{Keys, status};
    let overview = runtime()?.block_on(async {
        let client = coordinator
            .connect()
            .await
            .map_err(|e| CliError::Etcd(e.to_string()))?;
        status::overview(
            &client,
            &Keys::new(&coordinator.prefix),
            coordinator.timeout,
        )
        .await
        .map_err(CliError::Etcd)
    })?;
    print_as(format, &overview, || {
        render::hosts_table(&overview) + &render::status_table(&overview.clusters)
    })
}

fn kubernetes_status_command(
    namespace: Option<String>,
    all_namespaces: bool,
    format: Format,
) -> Result<ExitCode, CliError> {
    let reports = runtime()?.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| CliError::Kubernetes(format!("no Kubernetes client: {e}")))?;
        let namespace = match (all_namespaces, namespace) {
            (true, _) => None,
            (false, Some(ns)) => Some(ns),
            (false, None) => Some(client.default_namespace().to_string()),
        };
        crate::runtime::kubernetes::overview::overview(client, namespace.as_deref())
            .await
            .map_err(|e| CliError::Kubernetes(e.to_string()))
    })?;
    print_as(format, &reports, || render::status_table(&reports))
}

fn copy_binary(dir: &Path) -> Result<ExitCode, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CliError::Io { path, source }
    };
    let exe = std::env::current_exe().map_err(io(Path::new("the running binary")))?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    // Written beside, then renamed: a pod never sees half a binary.
    let partial = dir.join(".replicant.partial");
    let target = dir.join("replicant");
    fs::copy(&exe, &partial).map_err(io(&partial))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).map_err(io(&partial))?;
    fs::rename(&partial, &target).map_err(io(&target))?;
    println!("{}", target.display());
    Ok(ExitCode::SUCCESS)
}

fn crd_command(dir: Option<&Path>) -> Result<ExitCode, CliError> {
    match dir {
        None => print!("{}", crate::crd::all_yaml()),
        Some(dir) => {
            for (file, crd) in crate::crd::all() {
                let path = dir.join(file);
                fs::write(&path, crate::crd::to_yaml(&crd)).map_err(|source| CliError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
