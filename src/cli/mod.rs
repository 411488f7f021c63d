//! The command line: `main` is wiring and this is what it calls. Each command's flags live in
//! its own module, which checks them while turning them into the options of the room that runs
//! the command; this module parses, dispatches, and holds what the commands share (output
//! formats, logging, signals, the async runtime). Prints to stdout/stderr; reads only the files
//! named.

mod artifacts;
mod backup;
mod demo;
mod faults;
mod node;
mod operator;
pub mod reference;
mod render;
mod run;
mod snapshot;
mod specs;
mod status;
mod which;

use std::{fs, path::Path, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

pub use self::specs::{load_desired, load_observed, observed_from_str};
use crate::validate;

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
    Validate(specs::ValidateArgs),
    /// Dry run: print what the controller would do for a cluster, and why.
    Plan(specs::PlanArgs),
    /// Reconcile every cluster in a directory of specs, continuously, with built-in proxies.
    Run(run::RunArgs),
    /// Run the PostgreSQL node agent on a database host: the parent of its postgres, serving
    /// the controller start, stop, status and the self-fencing lease.
    Node(node::NodeArgs),
    /// PostgreSQL's `archive_command` under a node agent (which sets it): store one finished
    /// WAL file in the cluster's repository, once.
    ArchiveWal(node::ArchiveWalArgs),
    /// Base backups of a PostgreSQL cluster: take one now, list them, verify one.
    Backup(backup::BackupArgs),
    /// Point-in-time recovery: restore a cluster's data from its repository into an empty
    /// directory, set to replay archived WAL to a time, a position, a transaction, a restore
    /// point or the latest, and promote.
    Restore(backup::RestoreArgs),
    /// PostgreSQL's `restore_command` in a directory `replicant restore` filled: hand it one
    /// archived WAL file, checked.
    RestoreWal(backup::RestoreWalArgs),
    /// Run as a Kubernetes operator: reconcile ReplicationClusters and VirtualNames in the cluster.
    Operator(operator::OperatorArgs),
    /// Show what the controller last saw and did, per cluster: from a `replicant run`'s state
    /// directory, from etcd, or from a Kubernetes cluster's resources and Events.
    Status(status::StatusArgs),
    /// Start three local redis-servers, run the controller, kill the master, and measure.
    Demo(demo::DemoArgs),
    /// Copy this binary into a directory (made if missing) as `replicant`, executable: how an
    /// init container from the replicant image, which has no shell, gives a database pod its
    /// node agent.
    CopyBinary(artifacts::CopyBinaryArgs),
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crd(artifacts::CrdArgs),
    /// Print the field and flag reference (Markdown) generated from the CRD schema and from
    /// this command line: the book's reference pages.
    Reference(reference::ReferenceArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
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
    Coordinator(#[from] crate::runtime::etcd::CoordinatorError),
    #[error(transparent)]
    EtcdStatus(#[from] crate::runtime::etcd::status::StatusError),
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
    crate::runtime::install_tls_provider();
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
            Command::Validate(args) => Ok(specs::validate(args)),
            Command::Plan(args) => specs::plan(args),
            Command::Run(args) => run::run(args),
            Command::Node(args) => node::run(args),
            Command::ArchiveWal(args) => node::archive_wal(args),
            Command::Backup(args) => backup::run(args),
            Command::Restore(args) => backup::restore(args),
            Command::RestoreWal(args) => backup::restore_wal(args),
            Command::Operator(args) => operator::run(args),
            Command::Status(args) => status::run(args),
            Command::Demo(args) => demo::run(args),
            Command::CopyBinary(args) => artifacts::copy_binary(args),
            Command::Crd(args) => artifacts::crd(args),
            Command::Reference(args) => reference::reference(args),
        }
    }
}

/// Read a text file of at most [`validate::MAX_FILE_BYTES`]: a larger one is refused, not read.
pub(super) fn read(path: &Path) -> Result<String, CliError> {
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

/// Print `value` in `format`: `table` renders it for people, JSON and YAML serialise it.
pub(super) fn print_as(
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

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            path: "tokio runtime".into(),
            source,
        })
}

/// For the commands PostgreSQL runs once per WAL file (`archive-wal`, `restore-wal`): one
/// thread, started fast, with the working directory they are run in (the data directory).
pub(super) fn in_data_directory() -> Result<(tokio::runtime::Runtime, std::path::PathBuf), CliError>
{
    let data = std::env::current_dir().map_err(|source| CliError::Io {
        path: ".".into(),
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    Ok((runtime, data))
}

pub(super) fn init_logging(format: LogFormat) {
    init_logging_filtered(format, "info");
}

pub(super) fn init_logging_filtered(format: LogFormat, default: &str) {
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
pub(super) async fn shutdown_signal() {
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
