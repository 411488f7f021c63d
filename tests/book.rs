//! The book under `docs/` and the README: the generated reference pages match the binary,
//! every page is reachable and every internal link resolves, every command shown with its
//! output prints that output, every `replicant` command shown names real flags, and the book
//! builds with mdBook.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    root().join("docs/src")
}

/// The README and every page of the book, with `{{#include}}`s expanded as mdBook expands them.
fn documents() -> Vec<(PathBuf, String)> {
    let mut documents = vec![(root().join("README.md"), read(&root().join("README.md")))];
    let mut pages: Vec<PathBuf> = Vec::new();
    collect_markdown(&book_src(), &mut pages);
    pages.sort();
    for page in pages {
        let text = expand_includes(&page, &read(&page));
        documents.push((page, text));
    }
    documents
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_markdown(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expand_includes(page: &Path, text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line
            .trim()
            .strip_prefix("{{#include ")
            .and_then(|l| l.strip_suffix("}}"))
        {
            Some(target) => out.push_str(&read(&page.parent().unwrap().join(target.trim()))),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The fenced blocks of one language, each as its lines.
fn blocks<'a>(text: &'a str, language: &str) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            if fenced {
                if let Some(block) = current.take() {
                    found.push(block);
                }
            } else if info.trim() == language {
                current = Some(Vec::new());
            }
            fenced = !fenced;
            continue;
        }
        if let Some(block) = current.as_mut() {
            block.push(line);
        }
    }
    found
}

/// The anchor mdBook (and GitHub) gives a heading.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|line| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            (hashes > 0 && line[hashes..].starts_with(' ')).then(|| slug(line[hashes..].trim()))
        })
        .collect()
}

/// Every `[text](target)` in prose, targets without a scheme only.
fn internal_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    for line in prose(text) {
        // Inline code is not a link, whatever it holds.
        let line: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = &after[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                links.push(target.to_string());
            }
            rest = &after[end..];
        }
    }
    links
}

#[test]
fn the_reference_pages_are_what_replicant_generates() {
    // Written by the command the pages name, as a person regenerating them would.
    let written = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["reference", "--dir"])
        .arg(written.path())
        .output()
        .expect("run replicant");
    assert!(output.status.success(), "{output:?}");
    for (file, generated) in [
        ("fields.md", replicant::cli::reference::fields()),
        ("flags.md", replicant::cli::reference::flags()),
    ] {
        assert!(read(&written.path().join(file)) == generated, "{file}");
        let path = book_src().join("reference").join(file);
        assert!(
            read(&path) == generated,
            "{} is out of date: run `cargo run -- reference --dir docs/src/reference`",
            path.display()
        );
    }
}

#[test]
fn every_page_is_reachable_and_every_internal_link_resolves() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "the README is the front page: {lines} lines, at most 250"
    );

    let summary = book_src().join("SUMMARY.md");
    let listed: BTreeSet<PathBuf> = internal_links(&read(&summary))
        .iter()
        .map(|target| book_src().join(target))
        .collect();
    let documents = documents();
    for (page, _) in &documents {
        if page.starts_with(book_src()) && *page != summary {
            assert!(
                listed.contains(page),
                "{} is not in SUMMARY.md, so no reader reaches it",
                page.display()
            );
        }
    }

    let anchors_of: BTreeMap<PathBuf, BTreeSet<String>> = documents
        .iter()
        .map(|(path, text)| (path.clone(), anchors(text)))
        .chain(["DESIGN.md", "BENCHMARKS.md", "CHANGELOG.md"].map(|file| {
            let path = root().join(file);
            let text = read(&path);
            (path, anchors(&text))
        }))
        .collect();
    let mut checked = 0;
    for (page, text) in &documents {
        for target in internal_links(text) {
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            assert!(
                resolved.exists(),
                "{}: the link ({target}) leads nowhere",
                page.display()
            );
            if let Some(anchor) = anchor {
                let known = anchors_of
                    .get(&resolved.canonicalize().unwrap_or(resolved.clone()))
                    .or_else(|| anchors_of.get(&resolved));
                assert!(
                    known.is_some_and(|a| a.contains(anchor)),
                    "{}: the link ({target}) names a heading its page lacks",
                    page.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} links checked");
}

/// The lines a console block shows for each command: `$ command`, then what it prints.
fn shown_commands(block: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for line in block {
        if let Some(command) = line.strip_prefix("$ ") {
            commands.push((command.to_string(), Vec::new()));
        } else if let Some((_, output)) = commands.last_mut() {
            output.push(line.to_string());
        } else {
            panic!("a console block must begin with `$ command`: {line}");
        }
    }
    commands
}

#[test]
fn every_command_shown_with_its_output_prints_that_output() {
    let binary = env!("CARGO_BIN_EXE_replicant");
    let mut run = 0;
    for (page, text) in documents() {
        for block in blocks(&text, "console") {
            for (command, expected) in shown_commands(&block) {
                let words: Vec<&str> = command.split_whitespace().collect();
                assert_eq!(
                    words.first(),
                    Some(&"replicant"),
                    "{}: `$ {command}` is shown with its output, and only replicant's commands \
                     are run by this test: show it in a `sh` block instead",
                    page.display()
                );
                let output = Command::new(binary)
                    .args(&words[1..])
                    .current_dir(root())
                    .output()
                    .expect("run replicant");
                let printed = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                assert!(
                    output.status.success() || !expected.is_empty(),
                    "{}: `$ {command}` failed and the page shows no output: {printed}",
                    page.display()
                );
                // The page may leave lines out, never change or reorder them.
                let mut lines = printed.lines();
                for want in &expected {
                    assert!(
                        lines.any(|got| got.trim_end() == want.trim_end()),
                        "{}: `$ {command}` is shown printing\n  {want}\nwhich it does not (in this order):\n{printed}",
                        page.display()
                    );
                }
                run += 1;
            }
        }
    }
    assert!(
        run >= 5,
        "only {run} commands run: the check would check little"
    );
}

/// Flags of each command, and of `replicant` itself, from the generated flag reference.
fn known_flags() -> BTreeMap<String, BTreeSet<String>> {
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut command = String::new();
    for line in read(&book_src().join("reference/flags.md")).lines() {
        if let Some(name) = line.strip_prefix("## replicant ") {
            command = name.trim().to_string();
            known.entry(command.clone()).or_default();
        } else if line.starts_with("| `") && !command.is_empty() {
            let cell = line.split('|').nth(1).unwrap_or_default();
            for word in cell.split([' ', ',', '`']) {
                if word.starts_with('-') {
                    known.get_mut(&command).unwrap().insert(word.to_string());
                }
            }
        }
    }
    known
}

#[test]
fn every_replicant_command_shown_names_a_real_command_and_real_flags() {
    let known = known_flags();
    assert!(known.contains_key("run") && known["run"].contains("--specs"));
    let mut checked = 0;
    for (page, text) in documents() {
        for language in ["sh", "ini"] {
            for block in blocks(&text, language) {
                // Join continued lines, drop comments.
                let joined = block.join("\n").replace("\\\n", " ");
                for line in joined.lines() {
                    let line = line.split(" #").next().unwrap_or_default();
                    if line.trim_start().starts_with('#') {
                        continue;
                    }
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let Some(at) = words
                        .iter()
                        .position(|w| *w == "replicant" || w.ends_with("/replicant") || *w == "--")
                    else {
                        continue;
                    };
                    // `cargo run -q -- demo` runs replicant too.
                    if words[at] == "--" && !words[..at].contains(&"cargo") {
                        continue;
                    }
                    let Some(command) = words.get(at + 1) else {
                        continue;
                    };
                    // A command of a command (`replicant backup take`) has flags of its own.
                    let (command, first_flag) = match words.get(at + 2) {
                        Some(sub) if known.contains_key(&format!("{command} {sub}")) => {
                            (format!("{command} {sub}"), at + 3)
                        }
                        _ => (command.to_string(), at + 2),
                    };
                    let Some(flags) = known.get(&command) else {
                        // `helm install replicant charts/replicant` and the like.
                        assert!(
                            words[..at].iter().any(|w| ["helm", "install"].contains(w)),
                            "{}: `{line}` runs `replicant {command}`, which is no command",
                            page.display()
                        );
                        continue;
                    };
                    for word in &words[first_flag..] {
                        if word.starts_with("--") {
                            let flag = word.split('=').next().unwrap();
                            assert!(
                                flags.contains(flag),
                                "{}: `{line}` gives `replicant {command}` the flag {flag}, which it does not have",
                                page.display()
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} commands checked");
}

#[test]
fn the_book_builds() {
    let Some(mdbook) = support::tool(
        "mdbook",
        "MDBOOK",
        "run scripts/install-mdbook and set MDBOOK",
    ) else {
        return;
    };
    let out = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(mdbook)
        .arg("build")
        .arg(root().join("docs"))
        .arg("--dest-dir")
        .arg(out.path())
        .output()
        .expect("run mdbook");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mdbook build failed:\n{said}");
    assert!(
        !said.contains("WARN") && !said.contains("ERROR"),
        "mdbook build warned:\n{said}"
    );
    for page in [
        "index.html",
        "quick-start.html",
        "reference/fields.html",
        "design.html",
    ] {
        assert!(out.path().join(page).exists(), "{page} was not built");
    }
}
