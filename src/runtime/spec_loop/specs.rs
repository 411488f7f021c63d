//! The spec directory: every `*.yaml`/`*.yml` below it, validated together; invalid objects keep their last good version.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::{
    api::{ReplicationClusterSpec, VirtualNameSpec},
    core::desired::Desired,
    validate::{self, Problem, Report, Resource},
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

/// What a file looked like when it was loaded: a file with the same fingerprint is not read again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    inode: (u64, u64),
}

/// A file younger than this may still change within the file system's timestamp granularity
/// without its fingerprint changing, so it is read again until it is older (as git does).
const SETTLE: Duration = Duration::from_secs(2);

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Option<Fingerprint> {
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= SETTLE);
        settled.then(|| Fingerprint {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// The specs in force: the newest valid version of every object.
#[derive(Clone, Debug, Default)]
pub struct SpecSet {
    /// Keyed by (kind, namespace, name).
    objects: BTreeMap<(&'static str, String, String), Accepted>,
    /// Problems of the last load, each with its file.
    pub problems: Vec<Problem>,
    /// Each file as last loaded, so an unchanged file (a hostile one above all) is not parsed
    /// again on every rescan.
    loaded: BTreeMap<PathBuf, (Fingerprint, Report)>,
    /// Files read and parsed by the last reload (the others were unchanged).
    pub parsed: usize,
}

impl SpecSet {
    /// Load `dir` again. An object whose document has a problem, or whose file cannot be read
    /// at all, keeps the version accepted before; an object gone from a clean file is removed.
    pub fn reload(&self, dir: &Path) -> SpecSet {
        let mut loaded = BTreeMap::new();
        let mut parsed = 0;
        let mut reports = Vec::new();
        for file in spec_files(dir) {
            let meta = std::fs::metadata(&file).ok();
            let fingerprint = meta.as_ref().and_then(Fingerprint::of);
            let report = match (&fingerprint, self.loaded.get(&file)) {
                (Some(now), Some((before, report))) if now == before => report.clone(),
                // A pipe or a device in the directory could block the reader or never end.
                _ if meta.as_ref().is_some_and(|m| !m.is_file()) => not_a_file(&file),
                _ => {
                    parsed += 1;
                    validate::load_one(&file)
                }
            };
            if let Some(fingerprint) = fingerprint {
                loaded.insert(file, (fingerprint, report.clone()));
            }
            reports.push(report);
        }
        let report = validate::check_together(reports);
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
            loaded,
            parsed,
        }
    }

    /// The desired state of every cluster, with its virtual names.
    pub fn desired(&self) -> BTreeMap<ClusterKey, Desired> {
        let mut names: BTreeMap<ClusterKey, Vec<(String, VirtualNameSpec)>> = BTreeMap::new();
        for ((_, ns, name), accepted) in &self.objects {
            if let Spec::Name(spec) = &accepted.spec {
                names
                    .entry((ns.clone(), spec.cluster.clone()))
                    .or_default()
                    .push((name.clone(), spec.clone()));
            }
        }
        self.objects
            .iter()
            .filter_map(|((_, ns, name), accepted)| match &accepted.spec {
                Spec::Cluster(spec) => {
                    let key = (ns.clone(), name.clone());
                    let names = names.get(&key).cloned().unwrap_or_default();
                    Some((key, Desired::new(name.clone(), (**spec).clone(), names)))
                }
                Spec::Name(_) => None,
            })
            .collect()
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

fn not_a_file(path: &Path) -> Report {
    Report {
        problems: vec![Problem {
            file: path.display().to_string(),
            object: None,
            path: None,
            message: "is not a regular file; not read".into(),
        }],
        ..Report::default()
    }
}

/// Spec files under `dir`, sorted; hidden folders (such as `.git`) are skipped. Only real
/// folders are entered (a link to a folder could lead back up and never end); a link to a file
/// counts as that file.
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
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
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

    fn age(path: &Path) {
        let past = SystemTime::now() - Duration::from_secs(10);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    #[test]
    fn an_unchanged_file_is_not_parsed_again() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("orders.yaml");
        let bad = dir.path().join("hostile.yaml");
        fs::write(&good, CLUSTER).unwrap();
        fs::write(&bad, format!("spec: {}\n", "[".repeat(100_000))).unwrap();
        age(&good);
        age(&bad);

        let first = SpecSet::default().reload(dir.path());
        assert_eq!(first.parsed, 2);
        assert_eq!(first.problems.len(), 1, "{:?}", first.problems);
        assert!(
            first.problems[0]
                .message
                .starts_with("nesting deeper than 64 levels at line 1")
        );
        assert_eq!(first.desired().len(), 1);

        let second = first.reload(dir.path());
        assert_eq!(second.parsed, 0, "nothing changed: nothing parsed");
        assert_eq!(second.problems, first.problems);
        assert_eq!(second.desired(), first.desired());

        fs::write(&bad, CLUSTER.replace("orders", "billing")).unwrap();
        age(&bad);
        let third = second.reload(dir.path());
        assert_eq!(third.parsed, 1, "only the changed file is read");
        assert!(third.problems.is_empty(), "{:?}", third.problems);
        assert_eq!(third.desired().len(), 2);

        // A file written just now may change again within the clock's granularity unseen:
        // it is read on every reload until it has settled.
        fs::write(&good, CLUSTER.replace("primary: a", "primary: b")).unwrap();
        assert_eq!(third.reload(dir.path()).parsed, 1);
        assert_eq!(third.reload(dir.path()).reload(dir.path()).parsed, 1);
    }

    #[test]
    fn links_to_folders_are_not_followed_and_pipes_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("team")).unwrap();
        fs::write(dir.path().join("team/orders.yaml"), CLUSTER).unwrap();
        // A link back up: followed, it would never end.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("team/loop")).unwrap();
        // A pipe nobody writes to: read, it would block the controller for ever.
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let set = SpecSet::default().reload(dir.path());
        assert_eq!(set.desired().len(), 1);
        assert_eq!(set.problems.len(), 1, "{:?}", set.problems);
        assert!(
            set.problems[0]
                .to_string()
                .ends_with("pipe.yaml: is not a regular file; not read"),
            "{}",
            set.problems[0]
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
