//! `replicant status`: what the controller last saw and did, read from a state directory, from
//! etcd, or from Kubernetes, and printed as a table, JSON or YAML.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::{CliError, Format, print_as, render, run::EtcdArgs, runtime};

/// `replicant status` flags.
#[derive(clap::Args, Debug)]
pub(super) struct StatusArgs {
    /// The state directory of a `replicant run` on its own.
    #[arg(
        long,
        required_unless_present_any = ["coordinator", "kubernetes"],
        conflicts_with_all = ["coordinator", "kubernetes"]
    )]
    pub(super) state: Option<PathBuf>,
    /// Read ReplicationClusters, VirtualNames and Events from Kubernetes, through the
    /// kubeconfig (`KUBECONFIG`, `~/.kube/config`, its current context) or in-cluster.
    #[arg(long, conflicts_with = "coordinator")]
    pub(super) kubernetes: bool,
    /// With --kubernetes: this namespace only (default: the kubeconfig context's).
    #[arg(
        short = 'n',
        long,
        requires = "kubernetes",
        conflicts_with = "all_namespaces"
    )]
    pub(super) namespace: Option<String>,
    /// With --kubernetes: every namespace.
    #[arg(short = 'A', long, requires = "kubernetes")]
    pub(super) all_namespaces: bool,
    #[command(flatten)]
    pub(super) etcd: EtcdArgs,
    /// `table` for people; `json` and `yaml` for machines, with the same content.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub(super) format: Format,
}

pub(super) fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    // clap keeps --kubernetes apart from --state and --coordinator.
    if args.kubernetes {
        return kubernetes_status_command(args.namespace, args.all_namespaces, args.format);
    }
    match (args.etcd.coordinator()?, args.state) {
        (Some(coordinator), _) => hosts_status_command(&coordinator, args.format),
        (None, Some(state)) => status_command(&state, args.format),
        (None, None) => Err(CliError::Invalid(
            "give --state, or --coordinator for hosts coordinated through etcd".into(),
        )),
    }
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
        let client = coordinator.connect().await?;
        Ok::<_, CliError>(
            status::overview(
                &client,
                &Keys::new(&coordinator.prefix),
                coordinator.timeout,
            )
            .await?,
        )
    })?;
    print_as(format, &overview, || {
        render::instances_table(&overview) + &render::status_table(&overview.clusters)
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
