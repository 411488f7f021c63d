//! `replicant validate` and `replicant plan`: spec files and an observation file in, problems or
//! a plan out. Reads only the files named.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::{CliError, Format, print_as, read, render};
use crate::{
    bounded,
    core::{desired::Desired, observed::Observed, plan},
    validate::{self, Resource},
};

/// `replicant validate` flags.
#[derive(clap::Args, Debug)]
pub(super) struct ValidateArgs {
    /// Spec files, checked together (a VirtualName may name a cluster in another file).
    #[arg(required = true)]
    pub(super) files: Vec<PathBuf>,
}

/// `replicant plan` flags.
#[derive(clap::Args, Debug)]
pub(super) struct PlanArgs {
    /// Spec file(s) holding the ReplicationCluster and its VirtualNames.
    #[arg(long = "spec", required = true)]
    pub(super) specs: Vec<PathBuf>,
    /// YAML or JSON file describing what was observed (members, virtual names, journal).
    #[arg(long)]
    pub(super) observed: PathBuf,
    /// Which cluster, when the spec files hold several.
    #[arg(long)]
    pub(super) cluster: Option<String>,
    /// The time to plan at (RFC 3339); defaults to the observation file's `observedAt`, else
    /// to now.
    #[arg(long, alias = "at")]
    pub(super) now: Option<jiff::Timestamp>,
    /// `table` for people; `json` and `yaml` for machines, with the same content.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub(super) format: Format,
}

pub(super) fn validate(args: ValidateArgs) -> ExitCode {
    let files = &args.files;

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

pub(super) fn plan(args: PlanArgs) -> Result<ExitCode, CliError> {
    let desired = load_desired(&args.specs, args.cluster.as_deref())?;
    let observed = load_observed(&args.observed)?;
    let now = args
        .now
        .or(observed.observed_at)
        .unwrap_or_else(jiff::Timestamp::now);
    let plan = plan::plan(&desired, &observed, now);
    print_as(args.format, &plan, || {
        render::plan_table(&desired, &observed, &plan)
    })
}

/// The spec files' report, or why they are invalid (`refusal`, then every problem).
pub(super) fn valid_report(specs: &[PathBuf], refusal: &str) -> Result<validate::Report, CliError> {
    let report = validate::validate_files(specs);
    if !report.is_valid() {
        let lines: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        return Err(CliError::Invalid(format!(
            "{refusal}:\n{}",
            lines.join("\n")
        )));
    }
    Ok(report)
}

/// The one ReplicationCluster of `report` named `cluster` (or the only one), with its document.
pub(super) fn one_cluster<'a>(
    report: &'a validate::Report,
    cluster: Option<&str>,
) -> Result<(&'a validate::Document, &'a crate::api::ReplicationCluster), CliError> {
    let clusters: Vec<_> = report
        .documents
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::Cluster(c) if cluster.is_none_or(|name| d.resource.name() == name) => {
                Some((d, &**c))
            }
            _ => None,
        })
        .collect();
    match clusters.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::Invalid(
            "no matching ReplicationCluster in the spec files".into(),
        )),
        many => {
            let names: Vec<&str> = many.iter().map(|(d, _)| d.resource.name()).collect();
            Err(CliError::Invalid(format!(
                "the spec files hold several clusters ({}); choose one with --cluster",
                names.join(", ")
            )))
        }
    }
}

/// Load, validate and assemble the desired state of one cluster from spec files.
pub fn load_desired(specs: &[PathBuf], cluster: Option<&str>) -> Result<Desired, CliError> {
    let report = valid_report(specs, "the spec is invalid; nothing planned")?;
    let (doc, chosen) = one_cluster(&report, cluster)?;
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
