//! Which cluster of a directory of spec files a backup command works on, with the secrets its
//! spec names, and which of its repositories. Reads spec files and secrets; opens the
//! repository.

use std::path::PathBuf;

use super::CliError;
use crate::{
    api::{ReplicationClusterSpec, Repository as RepositorySpec},
    repository::Repository,
    runtime::reconciler::ClusterSecrets,
};

/// Which cluster, and which of its repositories.
#[derive(clap::Args, Debug)]
pub(super) struct Which {
    /// Spec files, or directories of them (as `replicant run --specs` reads them).
    #[arg(long, required = true, num_args = 1..)]
    specs: Vec<PathBuf>,
    /// The cluster, when the files hold several.
    #[arg(long)]
    cluster: Option<String>,
    /// The repository (`spec.backup.repositories[].name`); default: the one WAL is archived
    /// to, else the first.
    #[arg(long)]
    repository: Option<String>,
}

/// A cluster as its spec files describe it.
pub(super) struct Cluster {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) spec: ReplicationClusterSpec,
    pub(super) secrets: ClusterSecrets,
}

impl Which {
    pub(super) fn cluster(&self) -> Result<Cluster, CliError> {
        // A directory holds specs as `replicant run --specs` reads them.
        let files: Vec<PathBuf> = self
            .specs
            .iter()
            .flat_map(|path| match path.is_dir() {
                true => crate::runtime::spec_loop::specs::spec_files(path),
                false => vec![path.clone()],
            })
            .collect();
        let report = super::specs::valid_report(&files, "the spec is invalid")?;
        let (doc, cluster) = super::specs::one_cluster(&report, self.cluster.as_deref())?;
        let secrets = crate::runtime::spec_loop::secrets::local_secrets(&cluster.spec)
            .map_err(|e| CliError::Invalid(e.to_string()))?;
        Ok(Cluster {
            namespace: doc.resource.namespace().to_string(),
            name: doc.resource.name().to_string(),
            spec: cluster.spec.clone(),
            secrets,
        })
    }

    pub(super) fn repository<'a>(
        &self,
        cluster: &'a Cluster,
    ) -> Result<&'a RepositorySpec, CliError> {
        let repositories = cluster.spec.repositories();
        let chosen = match &self.repository {
            Some(name) => repositories.iter().find(|r| &r.name == name),
            None => cluster
                .spec
                .backup
                .as_ref()
                .and_then(|b| b.archive_repository())
                .or(repositories.first()),
        };
        chosen.ok_or_else(|| {
            CliError::Invalid(match &self.repository {
                Some(name) => format!("no repository {name} in spec.backup.repositories"),
                None => "the cluster has no repository (spec.backup.repositories)".into(),
            })
        })
    }

    pub(super) fn open(&self, cluster: &Cluster) -> Result<Repository, CliError> {
        let spec = self.repository(cluster)?;
        Repository::open(spec, cluster.secrets.repository_keys.get(&spec.name))
            .map_err(|e| CliError::Invalid(e.to_string()))
    }
}
