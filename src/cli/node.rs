//! `replicant node`: the agent's flags checked and turned into its options, then run.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::{CliError, LogFormat, init_logging, read, runtime, shutdown_signal};

#[derive(clap::Args, Debug)]
pub(super) struct NodeArgs {
    /// The data directory of the postgres the agent runs.
    #[arg(long)]
    pub(super) data: PathBuf,
    /// The port postgres listens on.
    #[arg(long, default_value_t = 5432)]
    pub(super) port: u16,
    /// PostgreSQL's binaries (default: REPLICANT_PG_BIN, the newest /usr/lib/postgresql/*/bin,
    /// or the PATH).
    #[arg(long)]
    pub(super) pg_bin: Option<PathBuf>,
    /// A postgres setting as name=value (repeatable), e.g. listen_addresses=10.0.0.5.
    #[arg(long = "set", value_parser = parse_setting)]
    pub(super) settings: Vec<(String, String)>,
    /// The address of the agent's API, e.g. 10.0.0.5:8008.
    #[arg(long)]
    pub(super) listen: std::net::SocketAddr,
    /// A file holding the bearer token the controller presents.
    #[arg(
        long,
        conflicts_with = "token_env",
        required_unless_present = "token_env"
    )]
    pub(super) token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[arg(long)]
    pub(super) token_env: Option<String>,
    /// The agent's state file: the highest epoch seen, and whether it is fenced.
    #[arg(long)]
    pub(super) state: PathBuf,
    /// Serve the API over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// The user this host replicates and copies as.
    #[arg(long, default_value = "replicator")]
    pub(super) replication_user: String,
    /// A file holding that user's password (none: trust or a .pgpass file).
    #[arg(long, conflicts_with = "replication_password_env")]
    pub(super) replication_password_file: Option<PathBuf>,
    /// An environment variable holding that user's password.
    #[arg(long)]
    pub(super) replication_password_env: Option<String>,
    /// The superuser a new data set is created with, when the controller asks this host to
    /// create the first primary of a cluster.
    #[arg(long, default_value = "postgres")]
    pub(super) superuser: String,
    /// A file holding that superuser's password (without one, this host cannot create a data
    /// set).
    #[arg(long, conflicts_with = "superuser_password_env")]
    pub(super) superuser_password_file: Option<PathBuf>,
    /// An environment variable holding that superuser's password.
    #[arg(long)]
    pub(super) superuser_password_env: Option<String>,
    /// Logs on stderr: `text` for people, `json` (one object per line) for collectors; `RUST_LOG` sets the level.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
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

pub(super) fn run(args: NodeArgs) -> Result<ExitCode, CliError> {
    init_logging(args.log_format);
    let options = args.options()?;
    runtime()?.block_on(crate::node::run(options, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// `replicant archive-wal`: PostgreSQL's `archive_command` under a node agent, which sets it.
#[derive(clap::Args, Debug)]
pub(super) struct ArchiveWalArgs {
    /// The node agent's state file: its archive settings and record sit beside it.
    #[arg(long)]
    state: PathBuf,
    /// The WAL file PostgreSQL names (`%p`), relative to the data directory, which is the
    /// working directory PostgreSQL runs the command in.
    wal: PathBuf,
}

/// Exit 0 once the file is archived (or, past the host's bound, let go with the gap recorded);
/// exit 1, saying why on stderr (PostgreSQL's log), to have PostgreSQL keep it and retry.
pub(super) fn archive_wal(args: ArchiveWalArgs) -> Result<ExitCode, CliError> {
    use crate::node::archive::{Outcome, archive};
    let (runtime, data) = super::in_data_directory()?;
    match runtime.block_on(archive(&args.state, &data, &args.wal)) {
        Outcome::Archived | Outcome::Off => Ok(ExitCode::SUCCESS),
        Outcome::LetGo => {
            eprintln!(
                "replicant archive-wal: {} let go unarchived: the repository cannot take it and the host's bound is reached; the gap is recorded",
                args.wal.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Retry(why) => {
            eprintln!("replicant archive-wal: {}: {why}", args.wal.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
