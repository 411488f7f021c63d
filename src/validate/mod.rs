//! Checks specs before anything is applied: parsing with field paths, then the rules a schema cannot express.
//!
//! Reads only the files it is given; never panics on input. Every problem names the file, the
//! object and the field, so `replicant validate` output can be acted on line by line.

mod backup;
mod bootstrap;
mod bounds;
mod load;
pub mod rules;
mod suggest;
mod zones;

use std::{collections::BTreeMap, fmt, path::Path};

use crate::bounded;

pub use bounds::{Exceeded, Limits, check as check_bounds};
pub use load::{Document, MAX_FILE_BYTES, Resource, load_file, load_str};
pub use rules::check;
pub use zones::zone_problem;

/// One thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// `Kind/name`, or `document N` when the document has no usable identity.
    pub object: Option<String>,
    /// Dotted field path such as `spec.members[1].upstream`.
    pub path: Option<String>,
    pub message: String,
}

/// Most problems listed per file: past it, one line says how many more there are.
pub const MAX_PROBLEMS_PER_FILE: usize = 100;

impl Problem {
    /// The same problem with every part cut to a bounded length: object and path echo names
    /// and keys from the file, and messages may quote its values.
    pub fn bounded(self) -> Self {
        Self {
            file: self.file,
            // Labels are made of a kind and a cut name: room for both, so they still match.
            object: self
                .object
                .map(|o| bounded::clip(&o, 2 * bounded::VALUE_BYTES).into_owned()),
            path: self
                .path
                .map(|p| bounded::clip(&p, bounded::VALUE_BYTES).into_owned()),
            message: bounded::message(self.message),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What loading and checking a set of files found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Documents that parsed into replicant resources (valid or not).
    pub documents: Vec<Document>,
    /// Documents of other APIs, left alone: `(file, "apiVersion/kind name")`.
    pub skipped: Vec<(String, String)>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Load every file and check the resources together (a VirtualName may name a cluster in another file).
pub fn validate_files<P: AsRef<Path>>(paths: &[P]) -> Report {
    check_together(paths.iter().map(|p| load_one(p.as_ref())))
}

/// One file loaded on its own, not yet checked against the others.
pub fn load_one(path: &Path) -> Report {
    let mut report = Report::default();
    load_file(path, &mut report);
    report
}

/// Files loaded one by one (see [`load_one`]), checked together as [`validate_files`] does.
pub fn check_together(files: impl IntoIterator<Item = Report>) -> Report {
    let mut report = Report::default();
    for file in files {
        report.documents.extend(file.documents);
        report.skipped.extend(file.skipped);
        report.problems.extend(file.problems);
    }
    report.problems.extend(check(&report.documents));
    report.problems = at_most_per_file(std::mem::take(&mut report.problems));
    report
}

/// The first [`MAX_PROBLEMS_PER_FILE`] problems of each file, then one that counts the rest.
fn at_most_per_file(problems: Vec<Problem>) -> Vec<Problem> {
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept = Vec::new();
    for problem in problems {
        let count = per_file.entry(problem.file.clone()).or_default();
        *count += 1;
        if *count <= MAX_PROBLEMS_PER_FILE {
            kept.push(problem);
        }
    }
    for (file, count) in per_file {
        if count > MAX_PROBLEMS_PER_FILE {
            kept.push(Problem {
                file,
                object: None,
                path: None,
                message: format!(
                    "{} more problem(s) not listed (the first {MAX_PROBLEMS_PER_FILE} are)",
                    count - MAX_PROBLEMS_PER_FILE
                ),
            });
        }
    }
    kept
}

/// Where the rules put what they find: problems of one document, each with its field path.
struct Out<'a> {
    doc: &'a Document,
    problems: &'a mut Vec<Problem>,
}

impl Out<'_> {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(
            Problem {
                file: self.doc.file.clone(),
                object: Some(self.doc.label()),
                path: Some(path.into()),
                message: message.into(),
            }
            .bounded(),
        );
    }
}
