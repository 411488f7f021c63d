//! The spec directory: every `*.yaml`/`*.yml` below it, validated together; invalid objects keep their last good version.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::{
    api::{ReplicationClusterSpec, VirtualNameSpec},
    desired::{Desired, NamedVirtualName},
    validate::{self, Problem, Resource},
};

/// `(namespace, name)` of a cluster.
pub type ClusterKey = (String, String);

#[derive(Clone, Debug, PartialEq)]
enum Spec {
    Cluster(Box<ReplicationClusterSpec>),
    Name(VirtualNameSpec),
}

/// An object as last accepted, and the file it came from.
#[derive(Clone, Debug, PartialEq)]
struct Accepted {
    file: String,
    spec: Spec,
}

/// The specs in force: the newest valid version of every object.
#[derive(Clone, Debug, Default)]
pub struct SpecSet {
    /// Keyed by (kind, namespace, name).
    objects: BTreeMap<(&'static str, String, String), Accepted>,
    /// Problems of the last load, each with its file.
    pub problems: Vec<Problem>,
}

impl SpecSet {
    /// Load `dir` again. An object whose document has a problem, or whose file cannot be read
    /// at all, keeps the version accepted before; an object gone from a clean file is removed.
    pub fn reload(&self, dir: &Path) -> SpecSet {
        let files = spec_files(dir);
        let report = validate::validate_files(&files);
        let troubled_files: BTreeSet<&str> =
            report.problems.iter().map(|p| p.file.as_str()).collect();
        let troubled_objects: BTreeSet<(&str, String)> = report
            .problems
            .iter()
            .filter_map(|p| p.object.clone().map(|o| (p.file.as_str(), o)))
            .collect();

        let mut objects = BTreeMap::new();
        for doc in &report.documents {
            if troubled_objects.contains(&(doc.file.as_str(), doc.label())) {
                continue;
            }
            let spec = match &doc.resource {
                Resource::Cluster(c) => Spec::Cluster(Box::new(c.spec.clone())),
                Resource::VirtualName(v) => Spec::Name(v.spec.clone()),
            };
            let key = (
                doc.resource.kind(),
                doc.resource.namespace().to_string(),
                doc.resource.name().to_string(),
            );
            objects.insert(
                key,
                Accepted {
                    file: doc.file.clone(),
                    spec,
                },
            );
        }
        for (key, previous) in &self.objects {
            if !objects.contains_key(key) && troubled_files.contains(previous.file.as_str()) {
                objects.insert(key.clone(), previous.clone());
            }
        }
        SpecSet {
            objects,
            problems: report.problems,
        }
    }

    /// The desired state of every cluster, with its virtual names.
    pub fn desired(&self) -> BTreeMap<ClusterKey, Desired> {
        let mut clusters: BTreeMap<ClusterKey, Desired> = self
            .objects
            .iter()
            .filter_map(|((_, ns, name), accepted)| match &accepted.spec {
                Spec::Cluster(spec) => Some((
                    (ns.clone(), name.clone()),
                    Desired {
                        name: name.clone(),
                        spec: (**spec).clone(),
                        virtual_names: Vec::new(),
                    },
                )),
                Spec::Name(_) => None,
            })
            .collect();
        for ((_, ns, name), accepted) in &self.objects {
            if let Spec::Name(spec) = &accepted.spec
                && let Some(cluster) = clusters.get_mut(&(ns.clone(), spec.cluster.clone()))
            {
                cluster.virtual_names.push(NamedVirtualName {
                    name: name.clone(),
                    spec: spec.clone(),
                });
            }
        }
        clusters
    }

    /// Problems in files that define (or last defined) this cluster or its names.
    pub fn problems_for(&self, key: &ClusterKey) -> Vec<String> {
        let files: BTreeSet<&str> = self
            .objects
            .iter()
            .filter(|((_, ns, name), accepted)| {
                ns == &key.0
                    && (name == &key.1
                        || matches!(&accepted.spec, Spec::Name(vn) if vn.cluster == key.1))
            })
            .map(|(_, accepted)| accepted.file.as_str())
            .collect();
        self.problems
            .iter()
            .filter(|p| files.contains(p.file.as_str()))
            .map(|p| p.to_string())
            .collect()
    }
}

/// Spec files under `dir`, sorted; hidden folders (such as `.git`) are skipped.
pub fn spec_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const CLUSTER: &str = "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {name: orders}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {name: a, address: \"127.0.0.1:1\"}\n    - {name: b, address: \"127.0.0.1:2\"}\n";

    #[test]
    fn an_invalid_edit_keeps_the_last_good_version_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("team")).unwrap();
        let file = dir.path().join("team/orders.yaml");
        fs::write(&file, CLUSTER).unwrap();
        let first = SpecSet::default().reload(dir.path());
        assert!(first.problems.is_empty(), "{:?}", first.problems);
        let key = ("default".to_string(), "orders".to_string());
        assert_eq!(first.desired()[&key].spec.primary, "a");

        fs::write(&file, CLUSTER.replace("primary: a", "primary: zz")).unwrap();
        let second = first.reload(dir.path());
        assert_eq!(
            second.desired()[&key].spec.primary,
            "a",
            "last good version kept"
        );
        assert_eq!(second.problems.len(), 1);
        assert!(second.problems_for(&key)[0].contains("spec.primary: unknown member \"zz\""));

        fs::write(&file, "::: not yaml [").unwrap();
        let third = second.reload(dir.path());
        assert_eq!(
            third.desired()[&key].spec.primary,
            "a",
            "unreadable file: still the last good version"
        );

        fs::write(&file, CLUSTER.replace("primary: a", "primary: b")).unwrap();
        let fourth = third.reload(dir.path());
        assert_eq!(fourth.desired()[&key].spec.primary, "b");
        assert!(fourth.problems.is_empty());

        fs::remove_file(&file).unwrap();
        assert!(
            fourth.reload(dir.path()).desired().is_empty(),
            "deleted from git: no longer managed"
        );
    }

    #[test]
    fn hidden_folders_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".git/x.yaml"), "garbage: [").unwrap();
        fs::write(dir.path().join("orders.yml"), CLUSTER).unwrap();
        let set = SpecSet::default().reload(dir.path());
        assert!(set.problems.is_empty());
        assert_eq!(set.desired().len(), 1);
    }
}
