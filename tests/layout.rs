//! The layout DESIGN.md draws, checked from the sources: rooms import only rooms below them,
//! the resources and the core import nothing from runtimes, engines, proxies or the command
//! line, and no modules that sit side by side import each other in a circle.
//!
//! Reads `src/` as text: every `crate::`, `super::` and `self::` path, in `use` trees and inline.
//! Test modules (`#[cfg(test)] mod ...`) are left out: a test may reach anywhere.
//! `cargo test --test layout -- --nocapture` prints the picture.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The rooms of `src/`, lowest first: each may import only rooms before it. DESIGN.md's
/// "Layout" section says why each is where it is.
const LAYERS: &[&str] = &[
    "bounded",
    "api",
    "crd",
    "core",
    "validate",
    "repository",
    "engine",
    "durable",
    "accept",
    "metrics",
    "node",
    "proxy",
    "runtime",
    "demo",
    "cli",
];

/// What the resources and the core may import, and nothing more.
const ALLOWED: &[(&str, &[&str])] = &[("api", &["bounded"]), ("core", &["api", "bounded"])];

type Module = Vec<String>;

struct Source {
    module: Module,
    /// Module paths this file's non-test code names.
    imports: BTreeSet<Module>,
}

#[test]
fn rooms_import_only_downwards_and_no_siblings_form_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&root);
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut edges: BTreeSet<(Module, Module)> = BTreeSet::new();
    for source in &sources {
        for path in &source.imports {
            if let Some(target) = longest_module(&modules, path)
                && target != source.module
            {
                edges.insert((source.module.clone(), target));
            }
        }
    }
    let rooms = room_graph(&edges);
    println!("rooms and what they import:");
    for (room, imports) in &rooms {
        println!(
            "  {room} -> {}",
            imports.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }

    let mut problems = Vec::new();
    for (room, imports) in &rooms {
        let Some(level) = LAYERS.iter().position(|l| l == room) else {
            problems.push(format!(
                "room {room} is not in LAYERS (and DESIGN.md's layout)"
            ));
            continue;
        };
        for import in imports {
            match LAYERS.iter().position(|l| l == import) {
                Some(below) if below < level => {}
                _ => problems.push(format!("{room} imports {import}, which is not below it")),
            }
        }
    }
    for (room, allowed) in ALLOWED {
        for import in rooms.get(*room).into_iter().flatten() {
            if !allowed.contains(&import.as_str()) {
                problems.push(format!(
                    "{room} may import only {allowed:?}, yet imports {import}"
                ));
            }
        }
    }
    for circle in sibling_circles(&modules, &edges) {
        problems.push(format!(
            "modules side by side import each other: {}",
            circle.join(" -> ")
        ));
    }
    assert!(
        problems.is_empty(),
        "the layout is broken:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker finds what it must: a circle between siblings, and an upward import.
#[test]
fn the_check_sees_circles_and_upward_imports() {
    let module = |p: &str| p.split("::").map(str::to_string).collect::<Module>();
    let modules: BTreeSet<Module> = ["core", "core::a", "core::b", "core::c", "api"]
        .into_iter()
        .map(module)
        .collect();
    let edges: BTreeSet<(Module, Module)> = [
        ("core::a", "core::b"),
        ("core::b", "core::c"),
        ("core::c", "core::a"),
        ("api", "core::a"),
    ]
    .into_iter()
    .map(|(a, b)| (module(a), module(b)))
    .collect();
    assert_eq!(
        sibling_circles(&modules, &edges),
        vec![vec!["core::a", "core::b", "core::c", "core::a"]]
    );
    assert_eq!(
        room_graph(&edges)["api"],
        BTreeSet::from(["core".to_string()])
    );
    let source = "use crate::{a::{b::C, d}, e};\nfn f() { super::g::h(); crate::i::J::new() }\n\
                  #[cfg(test)]\nmod tests { use crate::k::L; }\n";
    let imports = paths_named(&strip_tests(source), &module("x::y"));
    let joined: BTreeSet<String> = imports.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        BTreeSet::from(["a::b::C", "a::d", "e", "x::g::h", "i::J::new"].map(String::from))
    );
}

fn read_sources(root: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    collect_files(root, &mut files);
    files
        .into_iter()
        .map(|file| {
            let module = module_of(root, &file);
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            let imports = paths_named(&strip_tests(&strip_comments(&text)), &module);
            Source { module, imports }
        })
        .collect()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/core/plan/mod.rs` is `core::plan`; `src/lib.rs` and `src/main.rs` are the root.
fn module_of(root: &Path, file: &Path) -> Module {
    let relative = file
        .strip_prefix(root)
        .expect("under src/")
        .with_extension("");
    let mut module: Module = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if matches!(
        module.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        module.pop();
    }
    module
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without its `#[cfg(test)] mod name { ... }` blocks.
fn strip_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("mod ") {
            rest = after;
            continue;
        }
        let Some(open) = trimmed.find(['{', ';']) else {
            return out;
        };
        if trimmed.as_bytes()[open] == b';' {
            rest = &trimmed[open + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = trimmed.len();
        for (i, c) in trimmed[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &trimmed[end..];
    }
    out.push_str(rest);
    out
}

/// Every path `text` names from the crate root, from `self` or from `super`, made absolute.
fn paths_named(text: &str, module: &Module) -> BTreeSet<Module> {
    let mut paths = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let before_ok = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before_ok {
            for path in expand_tree(&after[..end]) {
                if let Some(absolute) = absolute(&path, module) {
                    paths.insert(absolute);
                }
            }
        }
        rest = &after[end..];
    }
    // Inline paths: `crate::a::b`, `super::a`, `self::a` outside `use` trees.
    let bytes = text.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':')
            {
                continue;
            }
            let tail: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path: Vec<String> = tail
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(absolute) = absolute(&path, module) {
                paths.insert(absolute);
            }
        }
    }
    paths
}

/// `a::{b::C, d}` as `[a, b, C]` and `[a, d]`.
fn expand_tree(tree: &str) -> Vec<Vec<String>> {
    fn parse(chars: &[char], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut segment = String::new();
        let mut path = prefix.to_vec();
        while *at < chars.len() {
            let c = chars[*at];
            *at += 1;
            match c {
                '{' => {
                    push_segment(&mut path, &mut segment);
                    loop {
                        parse(chars, at, &path, out);
                        if *at >= chars.len() || chars[*at - 1] == '}' {
                            break;
                        }
                    }
                    // Whatever follows the group up to the next separator belongs to nobody.
                    while *at < chars.len() && !matches!(chars[*at], ',' | '}') {
                        *at += 1;
                    }
                    if *at < chars.len() {
                        *at += 1;
                    }
                    return;
                }
                ',' | '}' => break,
                ':' => push_segment(&mut path, &mut segment),
                c if c.is_whitespace() && segment.ends_with("as") => segment.push(' '),
                c if c.is_whitespace() => {}
                c => segment.push(c),
            }
        }
        push_segment(&mut path, &mut segment);
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
    fn push_segment(path: &mut Vec<String>, segment: &mut String) {
        let name = segment.split(" as").next().unwrap_or("").trim().to_string();
        if !name.is_empty() {
            path.push(name);
        }
        segment.clear();
    }
    let chars: Vec<char> = tree.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        parse(&chars, &mut at, &[], &mut out);
    }
    out
}

/// `path` from the crate root, when it starts at `crate`, `self` or `super`.
fn absolute(path: &[String], module: &Module) -> Option<Module> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() && first == "crate" {
        return None;
    }
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let mut rest = rest;
    while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
        base.pop();
        rest = tail;
    }
    base.extend(rest.iter().filter(|s| *s != "self" && *s != "*").cloned());
    Some(base)
}

/// The deepest module `path` lies in.
fn longest_module(modules: &BTreeSet<Module>, path: &Module) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Top-level rooms and the other rooms each imports.
fn room_graph(edges: &BTreeSet<(Module, Module)>) -> BTreeMap<String, BTreeSet<String>> {
    let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        let entry = rooms.entry(a.clone()).or_default();
        if a != b {
            entry.insert(b.clone());
        }
    }
    rooms
}

/// Circles among the children of any one module: a child stands for everything under it, and
/// imports of the parent itself (the room's front door) do not count.
fn sibling_circles(
    modules: &BTreeSet<Module>,
    edges: &BTreeSet<(Module, Module)>,
) -> Vec<Vec<String>> {
    let parents: BTreeSet<Module> = modules
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let mut circles = Vec::new();
    for parent in parents {
        let depth = parent.len();
        let child = |m: &Module| -> Option<Module> {
            (m.len() > depth && m[..depth] == parent[..]).then(|| m[..=depth].to_vec())
        };
        let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (from, to) in edges {
            if let (Some(a), Some(b)) = (child(from), child(to))
                && a != b
            {
                graph.entry(a).or_default().insert(b);
            }
        }
        if let Some(circle) = find_circle(&graph) {
            circles.push(circle.iter().map(|m| m.join("::")).collect());
        }
    }
    circles
}

/// One circle in `graph`, first node repeated at the end; depth-first.
fn find_circle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|m| m == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.clone());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
