//! The frame stays layered: each module of `src/` imports only modules of
//! its own layer or below (docs/internals.md, *Layers*), and no two
//! modules import each other, directly or round a circle.
//!
//! Read from the source's own `crate::` paths (and `use crate::{...}`
//! groups), comments excluded; test code counts like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first. A module may import its own layer and those
/// after it.
const LAYERS: &[(&str, &[&str])] = &[
    ("test tools", &["fuzz"]),
    ("master", &["master"]),
    ("front-ends", &["server"]),
    ("service", &["service", "router"]),
    ("handlers", &["cgi", "wsgi", "proxy"]),
    ("handlers the others use", &["static_files", "uwsgi"]),
    ("request vocabulary", &["request"]),
    (
        "between master and workers",
        &["recycle", "scoreboard", "shm", "signals"],
    ),
    ("config and logs", &["config", "log"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, members)| members.contains(&module))
}

/// The top-level modules `source` names through `crate::`.
fn imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_members(group));
        } else {
            found.extend(ident(rest));
        }
    }
    found
}

/// The first identifiers of each path in a `{a, b::c, d::{e, f}}` group.
fn group_members(group: &str) -> Vec<String> {
    let mut members = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if at_start && !c.is_whitespace() => {
                at_start = false;
                members.extend(ident(&group[i..]));
            }
            _ => {}
        }
    }
    members
}

fn ident(text: &str) -> Option<String> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| text[..end].to_string())
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the other modules it imports, from the files of `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.iter().next().unwrap().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "main" | "lib" | "bin") {
            continue; // the entry points may use anything
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let names: Vec<String> = imports(&text)
            .into_iter()
            .filter(|m| *m != module)
            .collect();
        graph.entry(module).or_default().extend(names);
    }
    graph
}

/// What breaks the rules: an unknown module, an import upwards, a circle.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (module, names) in graph {
        let Some(own) = layer_of(module) else {
            found.push(format!(
                "src/{module}: in no layer; add it to LAYERS in tests/layers.rs"
            ));
            continue;
        };
        for name in names {
            match layer_of(name) {
                Some(theirs) if theirs < own => found.push(format!(
                    "{module} ({}) imports {name} ({}), a layer above it",
                    LAYERS[own].0, LAYERS[theirs].0
                )),
                _ => {}
            }
        }
    }
    found.extend(circles(graph));
    found
}

/// Each module that can reach itself through others' imports.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(&String, Vec<&String>)> = vec![(start, vec![start])];
        while let Some((at, path)) = todo.pop() {
            for next in graph.get(at).into_iter().flatten() {
                if next == start {
                    let names: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                    found.push(format!("circle: {} -> {start}", names.join(" -> ")));
                } else if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    todo.push((next, longer));
                }
            }
        }
    }
    found.dedup();
    found
}

#[test]
fn every_module_imports_only_its_layer_and_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.contains_key("service") && graph.contains_key("request"));
    let found = violations(&graph);
    assert!(
        found.is_empty(),
        "the layers are broken:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_imports_upwards_and_circles() {
    let mut graph = BTreeMap::new();
    let mut add = |from: &str, text: &str| {
        graph.insert(from.to_string(), imports(text));
    };
    add(
        "request",
        "use crate::server::Peer; // crate::wsgi in a comment",
    );
    add(
        "cgi",
        "use crate::{config::CgiOptions, request::{body::Body, Peer}, wsgi};",
    );
    add("wsgi", "let x = crate::cgi::run();");
    add("mystery", "");
    let found = violations(&graph);
    let has = |needle: &str| found.iter().any(|f| f.contains(needle));
    assert!(
        has("request (request vocabulary) imports server"),
        "{found:?}"
    );
    assert!(has("circle: cgi -> wsgi -> cgi"), "{found:?}");
    assert!(has("src/mystery: in no layer"), "{found:?}");
    assert!(
        !has("request (request vocabulary) imports wsgi"),
        "{found:?}"
    );
    assert_eq!(
        graph["cgi"],
        ["config", "request", "wsgi"].map(String::from).into()
    );
}
