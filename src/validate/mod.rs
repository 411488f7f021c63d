//! Checks specs before anything is applied: parsing with field paths, then the rules a schema cannot express.
//!
//! Reads only the files it is given; never panics on input. Every problem names the file, the
//! object and the field, so `replicant validate` output can be acted on line by line.

mod load;
pub mod rules;
mod suggest;

use std::{fmt, path::Path};

pub use load::{Document, MAX_FILE_BYTES, Resource, load_file, load_str};
pub use rules::check;

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
#[derive(Debug, Default)]
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
    let mut report = Report::default();
    for path in paths {
        load_file(path.as_ref(), &mut report);
    }
    report.problems.extend(check(&report.documents));
    report
}
