//! The gateway's import graph has no circles: no file imports, directly or through others, a
//! file that imports it (ARCHITECTURE.md, "The gateway", "Layers").
//!
//! Reads every file of the library under `gateway/src` (the binary's `main.rs` and
//! `commands.rs` import the library by its crate name, from above), takes the paths it names
//! outside comments and test modules (`use` trees, and inline `crate::`/`super::` paths; a
//! module's `pub use` of its own children only shows what they define and is not counted), resolves
//! each to the file that defines what it names (the longest module prefix, or the file a
//! re-exported name comes from), and looks for a circle among the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["poll", "schedule"]`) and the file that holds it.
type Modules = BTreeMap<Vec<String>, PathBuf>;

fn modules(src: &Path) -> Modules {
    let mut out = Modules::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut segs: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            match segs.last().map(String::as_str) {
                Some("main" | "commands") if segs.len() == 1 => continue,
                // Test modules in their own file import what they test.
                Some("tests") => continue,
                Some("lib") if segs.len() == 1 => segs.clear(),
                Some("mod") => {
                    segs.pop();
                }
                _ => {}
            }
            out.insert(segs, p);
        }
    }
    out
}

/// The code of a file without comments and without what follows a `#[cfg(test)]` at the start
/// of a line (test modules close the files here).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path a `use` tree names, e.g. `a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn use_paths(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let prefix = [prefix, head].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let (mut depth, mut start) = (0, 0);
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_paths(&inner[start..i], &prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        use_paths(&inner[start..], &prefix, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push([prefix, path].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("::"));
    }
}

/// The paths a file's code names: its `use` trees and the inline `crate::` and `super::` paths;
/// `true` for those a `pub use` re-exports.
fn named_paths(code: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let (tree, reexport) = match ["pub use ", "pub(crate) use ", "pub(super) use "].iter().find_map(|k| t.strip_prefix(k)) {
            Some(tree) => (tree, true),
            None => match t.strip_prefix("use ") {
                Some(tree) => (tree, false),
                None => continue,
            },
        };
        let mut stmt = tree.to_string();
        while !stmt.contains(';') {
            match lines.next() {
                Some(l) => stmt.push_str(l),
                None => break,
            }
        }
        let mut paths = Vec::new();
        use_paths(stmt.split(';').next().unwrap_or(""), "", &mut paths);
        out.extend(paths.into_iter().map(|p| (p, reexport)));
    }
    for root in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(root) {
            let start = at + i;
            let ok_before = code[..start].chars().last().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let len = code[start..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(code.len() - start);
            if ok_before {
                out.push((code[start..start + len].trim_end_matches(':').to_string(), false));
            }
            at = start + len.max(1);
        }
    }
    out
}

/// Names a module re-exports (`pub use`), and the file that defines each.
type Reexports = BTreeMap<(Vec<String>, String), PathBuf>;

/// The file a path names from module `at`, or `None` for another crate. A name a module
/// re-exports resolves to the file it comes from.
fn resolve(path: &str, at: &[String], mods: &Modules, reexports: &Reexports) -> Option<PathBuf> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match segs.first().copied() {
        Some("crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some("self") => {
            segs.remove(0);
            at.to_vec()
        }
        Some("super") => {
            let mut b = at.to_vec();
            while segs.first() == Some(&"super") {
                segs.remove(0);
                b.pop();
            }
            b
        }
        Some(first) => {
            // A child module, named without `self::`.
            let mut child = at.to_vec();
            child.push(first.to_string());
            if !mods.contains_key(&child) {
                return None;
            }
            at.to_vec()
        }
        None => return None,
    };
    let mut best = mods.get(&base).cloned();
    for s in segs {
        if let Some(f) = reexports.get(&(base.clone(), s.to_string())) {
            return Some(f.clone());
        }
        base.push(s.to_string());
        match mods.get(&base) {
            Some(f) => best = Some(f.clone()),
            None => break,
        }
    }
    best
}

/// A circle in the graph, if there is one (depth-first search; the circle's files in order).
fn find_circle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        n: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                1 => {
                    let from = stack.iter().position(|x| x == m).unwrap_or(0);
                    return Some(stack[from..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn import_graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mods = modules(src);
    let named: BTreeMap<Vec<String>, Vec<(String, bool)>> =
        mods.iter().map(|(at, file)| (at.clone(), named_paths(&code(&std::fs::read_to_string(file).unwrap())))).collect();
    let mut reexports = Reexports::new();
    for (at, paths) in &named {
        for (p, _) in paths.iter().filter(|(_, r)| *r) {
            let name = p.rsplit("::").next().unwrap_or(p).to_string();
            if let Some(f) = resolve(p, at, &mods, &Reexports::new()) {
                reexports.insert((at.clone(), name), f);
            }
        }
    }
    let mut graph = BTreeMap::new();
    for (at, file) in &mods {
        let own_children = |t: &PathBuf| mods.iter().any(|(m, f)| f == t && m.len() > at.len() && m.starts_with(at));
        let targets: BTreeSet<PathBuf> = named[at]
            .iter()
            // A module re-exporting its children shows what they define; it does not use them.
            .filter_map(|(p, reexport)| resolve(p, at, &mods, &reexports).filter(|t| !(*reexport && own_children(t))))
            .filter(|t| t != file)
            .collect();
        graph.insert(file.clone(), targets);
    }
    graph
}

#[test]
fn the_gateway_imports_have_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    // The graph is really read: the scheduler takes the transport's ReadError, and the transport
    // takes nothing of the scheduler.
    let file = |p: &str| src.join(p);
    assert!(graph[&file("poll/schedule.rs")].contains(&file("transport.rs")), "{:?}", graph[&file("poll/schedule.rs")]);
    assert!(graph[&file("field/poll.rs")].contains(&file("poll/schedule.rs")), "{:?}", graph[&file("field/poll.rs")]);
    assert!(graph[&file("config.rs")].contains(&file("poll/settings.rs")), "{:?}", graph[&file("config.rs")]);
    assert!(graph[&file("transport.rs")].is_empty(), "{:?}", graph[&file("transport.rs")]);
    if let Some(circle) = find_circle(&graph) {
        let names: Vec<String> = circle.iter().map(|p| p.strip_prefix(&src).unwrap_or(p).display().to_string()).collect();
        panic!("the gateway's imports run in a circle: {} -> back to the first", names.join(" -> "));
    }
}

#[test]
fn a_circle_is_found_and_named() {
    let g: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (PathBuf::from(k), v.into_iter().map(PathBuf::from).collect()))
    .collect();
    let c = find_circle(&g).unwrap();
    assert_eq!(c.len(), 3);
    let mut no_back: BTreeMap<PathBuf, BTreeSet<PathBuf>> = g.clone();
    no_back.insert(PathBuf::from("c"), BTreeSet::new());
    assert_eq!(find_circle(&no_back), None);
    // Use trees and relative paths resolve to the module files they name.
    let mut paths = Vec::new();
    use_paths("super::{frame::Scan, link::{connect, FieldLink}}", "", &mut paths);
    assert_eq!(paths, ["super::frame::Scan", "super::link::connect", "super::link::FieldLink"]);
}
