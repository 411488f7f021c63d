//! Reading spec files into typed resources, turning every parse failure into a [`Problem`] with a field path.

use std::{fs, io::Read, path::Path};

use serde::{Deserialize, de::DeserializeOwned};
use serde_yaml::Value;

use super::{
    Problem, Report,
    bounds::{self, Limits},
    suggest,
};
use crate::{
    api::{GROUP, ReplicationCluster, VERSION, VirtualName, human_bytes},
    bounded,
};

/// Larger files are refused unread: Kubernetes itself stores at most ~1.5 MiB per object.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// One replicant resource read from a file.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: String,
    /// 1-based position in the file's YAML stream.
    pub index: usize,
    pub resource: Resource,
}

#[derive(Clone, Debug)]
pub enum Resource {
    Cluster(Box<ReplicationCluster>),
    VirtualName(Box<VirtualName>),
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Cluster(_) => "ReplicationCluster",
            Resource::VirtualName(_) => "VirtualName",
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            Resource::Cluster(c) => &c.metadata,
            Resource::VirtualName(v) => &v.metadata,
        };
        meta.name.as_deref().unwrap_or("")
    }

    /// The namespace, `default` when the document names none (as `kubectl apply` would).
    pub fn namespace(&self) -> &str {
        let meta = match self {
            Resource::Cluster(c) => &c.metadata,
            Resource::VirtualName(v) => &v.metadata,
        };
        meta.namespace.as_deref().unwrap_or("default")
    }
}

impl Document {
    /// `Kind/name`, or `Kind/<document N>` when unnamed. A long name is cut (see
    /// [`bounded::value`]) the same way wherever a label is made, so labels still match.
    pub fn label(&self) -> String {
        match self.resource.name() {
            "" => format!("{}/<document {}>", self.resource.kind(), self.index),
            name => format!("{}/{}", self.resource.kind(), bounded::value(name)),
        }
    }
}

fn file_problem(file: &str, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_string(),
        object: None,
        path: None,
        message: message.into(),
    }
    .bounded()
}

/// Read one file into `report`: its resources into `documents`, anything wrong into `problems`.
pub fn load_file(path: &Path, report: &mut Report) {
    let file = path.display().to_string();
    let size = match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            report
                .problems
                .push(file_problem(&file, "is a directory, not a spec file"));
            return;
        }
        Ok(meta) => meta.len(),
        Err(e) => {
            report
                .problems
                .push(file_problem(&file, format!("cannot read: {e}")));
            return;
        }
    };
    if size > MAX_FILE_BYTES {
        report.problems.push(file_problem(
            &file,
            format!(
                "file is {}; spec files larger than {} are refused unread",
                human_bytes(size),
                human_bytes(MAX_FILE_BYTES)
            ),
        ));
        return;
    }
    let mut bytes = Vec::new();
    // The file may grow between the size check and the read: never read past the limit.
    let read =
        fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        report
            .problems
            .push(file_problem(&file, format!("cannot read: {e}")));
        return;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        report.problems.push(file_problem(
            &file,
            "file grew past the size limit while being read",
        ));
        return;
    }
    match String::from_utf8(bytes) {
        Ok(text) => load_str(&file, &text, report),
        Err(e) => report.problems.push(file_problem(
            &file,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )),
    }
}

/// Parse a YAML stream of any number of documents. Empty documents are ignored. A text beyond
/// the size limit or the [`Limits`] is refused before the YAML parser sees it.
pub fn load_str(file: &str, text: &str, report: &mut Report) {
    if text.len() as u64 > MAX_FILE_BYTES {
        report.problems.push(file_problem(
            file,
            format!(
                "text is {}; spec files larger than {} are refused unread",
                human_bytes(text.len() as u64),
                human_bytes(MAX_FILE_BYTES)
            ),
        ));
        return;
    }
    if let Err(exceeded) = bounds::check(text, &Limits::default()) {
        report
            .problems
            .push(file_problem(file, exceeded.to_string()));
        return;
    }
    let before = report.problems.len();
    let mut documents = 0;
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = match Value::deserialize(de) {
            Ok(value) => value,
            Err(e) => {
                report.problems.push(
                    Problem {
                        file: file.to_string(),
                        object: Some(format!("document {index}")),
                        path: None,
                        message: format!("not valid YAML: {e}"),
                    }
                    .bounded(),
                );
                // The parser cannot resynchronise after a syntax error.
                return;
            }
        };
        if value.is_null() {
            continue;
        }
        documents += 1;
        load_document(file, index, value, report);
    }
    if documents == 0 && report.problems.len() == before {
        report
            .problems
            .push(file_problem(file, "contains no documents"));
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn load_document(file: &str, index: usize, value: Value, report: &mut Report) {
    let name = value
        .get("metadata")
        .and_then(|m| str_at(m, "name"))
        .map(str::to_string);
    let name = name.as_deref();
    let problem = |object: String, path: Option<&str>, message: String| {
        Problem {
            file: file.to_string(),
            object: Some(object),
            path: path.map(str::to_string),
            message,
        }
        .bounded()
    };
    if !value.is_mapping() {
        let found = match &value {
            Value::Sequence(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "something else",
        };
        report.problems.push(problem(
            format!("document {index}"),
            None,
            format!("expected a mapping with apiVersion and kind, found {found}"),
        ));
        return;
    }
    let (Some(api_version), Some(kind)) = (
        str_at(&value, "apiVersion").map(str::to_string),
        str_at(&value, "kind").map(str::to_string),
    ) else {
        let missing = if str_at(&value, "apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        report.problems.push(problem(
            format!("document {index}"),
            Some(missing),
            "required (a string)".to_string(),
        ));
        return;
    };
    let object = match name {
        Some(name) => format!("{}/{}", bounded::value(&kind), bounded::value(name)),
        None => format!("{}/<document {index}>", bounded::value(&kind)),
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    if group != GROUP {
        let label = name
            .map(|n| format!(" {}", bounded::value(n)))
            .unwrap_or_default();
        let what = format!("{api_version}/{kind}{label}");
        report.skipped.push((
            file.to_string(),
            bounded::clip(&what, bounded::VALUE_BYTES).into_owned(),
        ));
        return;
    }
    if version != VERSION {
        report.problems.push(problem(
            object,
            Some("apiVersion"),
            format!(
                "{} is not served; use {GROUP}/{VERSION}",
                bounded::value(&api_version)
            ),
        ));
        return;
    }
    let parsed = match kind.as_str() {
        "ReplicationCluster" => {
            typed::<ReplicationCluster>(value).map(|(r, u)| (Resource::Cluster(Box::new(r)), u))
        }
        "VirtualName" => {
            typed::<VirtualName>(value).map(|(r, u)| (Resource::VirtualName(Box::new(r)), u))
        }
        // A Kubernetes object only: a spec directory asks for backups otherwise.
        "Backup" => {
            report.problems.push(problem(
                object,
                Some("kind"),
                "Backup objects are read by the Kubernetes operator (kubectl apply); on plain hosts and with etcd, run `replicant backup take`".into(),
            ));
            return;
        }
        other => {
            report.problems.push(problem(
                object,
                Some("kind"),
                format!(
                    "{} is not a {GROUP} kind (expected ReplicationCluster or VirtualName)",
                    bounded::value(other)
                ),
            ));
            return;
        }
    };
    match parsed {
        Ok((resource, unknown)) => {
            for path in unknown {
                let message = if path.ends_with("credentials.password") {
                    "unknown field (passwords are never written in a spec: use secretRef, passwordFile or passwordEnv)".to_string()
                } else {
                    match suggest::field(&kind, &path) {
                        Some(known) => format!("unknown field (did you mean {known}?)"),
                        None => "unknown field".to_string(),
                    }
                };
                report
                    .problems
                    .push(problem(object.clone(), Some(&path), message));
            }
            if name.is_none() {
                report.problems.push(problem(
                    object.clone(),
                    Some("metadata.name"),
                    "required".to_string(),
                ));
            }
            report.documents.push(Document {
                file: file.to_string(),
                index,
                resource,
            });
        }
        Err((path, message)) => report.problems.push(problem(object, Some(&path), message)),
    }
}

/// Deserialise with the failing field's path; also list fields the type does not know.
fn typed<T: DeserializeOwned>(value: Value) -> Result<(T, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut |path| {
            let path = suggest::render(&path);
            // The generated resource types read their type identity elsewhere and skip these.
            if path != "apiVersion" && path != "kind" {
                unknown.push(path);
            }
        }));
    match result {
        Ok(resource) => Ok((resource, unknown)),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." {
                "(document)".to_string()
            } else {
                path
            };
            Err((path, e.into_inner().to_string()))
        }
    }
}
