//! The layering of the source tree, checked: each crate's import graph has no cycles, and in the
//! daemon every module imports only from the floors below it (ARCHITECTURE.md, "Layers").
//!
//! The graph is read from the code as text, without a compiler: every `use crate::..`,
//! `use super::..` (and `pub use`) and every inline `crate::a::b` path in a file is an arrow from
//! that file to the file that defines the module the path names (the longest prefix of the path
//! that is a module file; `crate::store::Store` points to `store/mod.rs`, the store's facade). A
//! module's own sub-modules are part of it: the arrows from `store/mod.rs` into `store/*.rs`
//! (declarations and re-exports) are containment, not imports, and are not counted; the arrows back
//! (a sub-module that uses what its facade defines) are. Test code is left out: files named
//! `tests.rs` or `*_tests.rs`, and everything from a file's first top-level `#[cfg(test)]` on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The daemon's top-level modules by floor, bottom first. A module may import from its own floor's
/// other modules only where the pair is listed in `SAME_FLOOR`; otherwise only from floors below.
const DAEMON_FLOORS: &[&[&str]] = &[
    &["time", "metrics"],
    &["registry"],
    &["auth", "audit"],
    &["store"],
    &["ingest", "accounting", "savings"],
    &["reports", "alerts", "collector"],
    &["api"],
    // The page: sessions and HTML over the API's state and scoping, calling the domain services.
    &["web"],
    &["serve"],
    &["config"],
    &["lib"],
    // The demo is a command that runs the daemon (lib's `Daemon`) with simulated meters.
    &["demo"],
];

/// Pairs (from, to) on one floor where the arrow is allowed (and its reverse is then not).
const SAME_FLOOR: &[(&str, &str)] = &[("audit", "auth")];

#[derive(Debug)]
struct Module {
    /// Path segments below the crate root: `store/writer.rs` is `["store", "writer"]`,
    /// `store/mod.rs` is `["store"]`, `lib.rs` is `[]`.
    path: Vec<String>,
    file: PathBuf,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs") || p.components().any(|c| c.as_os_str() == "tests")
}

fn modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        if is_test_file(rel) || rel == Path::new("main.rs") || rel.starts_with("bin") {
            continue;
        }
        let mut path: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let last = path.pop().expect("a file name");
        let stem = last.trim_end_matches(".rs");
        if !(stem == "mod" || (path.is_empty() && stem == "lib")) {
            path.push(stem.to_string());
        }
        out.push(Module { path, file: f });
    }
    out
}

/// The code of a file without comments, without the contents of string and character literals,
/// and without its test module(s) (from the first line that starts with `#[cfg(test)]`).
fn code_of(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut line_start = true;
    while i < c.len() {
        if line_start && c[i..].starts_with(&['#', '[', 'c', 'f', 'g', '(', 't', 'e', 's', 't', ')', ']']) {
            break;
        }
        let ch = c[i];
        line_start = ch == '\n';
        let prev_ident = i > 0 && is_ident_char(c[i - 1]);
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        // Raw strings: r"..", r#".."#, br#".."#.
        if ch == 'r' && !prev_ident || (ch == 'b' && c.get(i + 1) == Some(&'r') && !prev_ident) {
            let mut j = if ch == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        if ch == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
            continue;
        }
        // Character literals ('x', '\n', '\u{..}', '"'); a lifetime ('a) is kept.
        if ch == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
                continue;
            }
            if c.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
                continue;
            }
        }
        out.push(ch);
        i += 1;
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, ch) in s.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
    let t: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    for part in split_top(&t) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let segments = |s: &str| -> Vec<String> { s.split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect() };
        if let Some(open) = part.find('{') {
            let prefix = segments(&part[..open]);
            let close = part.rfind('}').filter(|&e| e > open).unwrap_or(part.len());
            let inner = &part[open + 1..close];
            for sub in expand_use(inner) {
                let mut p = prefix.clone();
                p.extend(sub);
                if p.len() > 1 && p.last().map(String::as_str) == Some("self") {
                    p.pop();
                }
                out.push(p);
            }
        } else {
            let path = part.split(" as ").next().unwrap_or(part);
            let mut p = segments(path);
            // `a::{self, ..}` names `a`.
            if p.len() > 1 && p.last().map(String::as_str) == Some("self") {
                p.pop();
            }
            out.push(p);
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every module path a file refers to: from `use` trees and inline paths, starting with `crate`,
/// `super` or `self`.
fn references(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = String::new();
    // `use` statements: from `use ` to `;`.
    let mut s = code;
    while let Some(i) = s.find("use ") {
        let boundary = i == 0 || !is_ident_char(s[..i].chars().next_back().unwrap_or(' '));
        if !boundary {
            rest.push_str(&s[..i + 4]);
            s = &s[i + 4..];
            continue;
        }
        rest.push_str(&s[..i]);
        let after = &s[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = &after[..end];
        let first = tree.trim_start();
        if first.starts_with("crate::") || first.starts_with("super::") || first.starts_with("self::") || first.starts_with('{') {
            out.extend(expand_use(tree));
        }
        s = &after[(end + 1).min(after.len())..];
    }
    rest.push_str(s);
    // Inline paths.
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = rest[from..].find(root) {
            let at = from + i;
            from = at + root.len();
            if at > 0 && is_ident_char(rest[..at].chars().next_back().unwrap_or(' ')) {
                continue;
            }
            let tail: String = rest[at..].chars().take_while(|c| is_ident_char(*c) || *c == ':').collect();
            out.push(tail.split("::").filter(|s| !s.is_empty()).map(String::from).collect());
        }
    }
    out
}

/// The absolute module path (below the crate root) a reference from module `here` names.
fn absolute(here: &[String], is_facade: bool, r: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = here.to_vec();
    // Inside `x.rs`, `self` is `x` and `super` its parent; inside `x/mod.rs` the same.
    let _ = is_facade;
    let mut i = 0;
    match r.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            i = 1;
        }
        Some("self") => i = 1,
        Some("super") => {
            while r.get(i).map(String::as_str) == Some("super") {
                base.pop()?;
                i += 1;
            }
        }
        _ => return None,
    }
    base.extend(r[i..].iter().cloned());
    Some(base)
}

struct Graph {
    /// file index -> file index -> names taken.
    edges: BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>>,
    modules: Vec<Module>,
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let by_path: BTreeMap<Vec<String>, usize> = modules.iter().enumerate().map(|(i, m)| (m.path.clone(), i)).collect();
    let mut edges: BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>> = BTreeMap::new();
    for (i, m) in modules.iter().enumerate() {
        let text = std::fs::read_to_string(&m.file).unwrap_or_else(|e| panic!("{}: {e}", m.file.display()));
        let facade = m.file.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        for r in references(&code_of(&text)) {
            let Some(abs) = absolute(&m.path, facade, &r) else { continue };
            // The longest prefix that is a module file.
            let mut k = abs.len();
            let target = loop {
                if let Some(&t) = by_path.get(&abs[..k]) {
                    break Some(t);
                }
                if k == 0 {
                    break None;
                }
                k -= 1;
            };
            let Some(t) = target else { continue };
            if t == i {
                continue;
            }
            // Containment: a module's arrows into its own sub-modules.
            if modules[t].path.starts_with(&m.path) {
                continue;
            }
            let name = abs.get(k).cloned().unwrap_or_else(|| "*".into());
            edges.entry(i).or_default().entry(t).or_default().insert(name);
        }
    }
    Graph { edges, modules }
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<usize>> {
    struct St<'a> {
        g: &'a Graph,
        index: usize,
        idx: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        out: Vec<Vec<usize>>,
    }
    fn visit(st: &mut St<'_>, v: usize) {
        st.idx[v] = Some(st.index);
        st.low[v] = st.index;
        st.index += 1;
        st.stack.push(v);
        st.on[v] = true;
        let next: Vec<usize> = st.g.edges.get(&v).map(|m| m.keys().copied().collect()).unwrap_or_default();
        for w in next {
            match st.idx[w] {
                None => {
                    visit(st, w);
                    st.low[v] = st.low[v].min(st.low[w]);
                }
                Some(iw) if st.on[w] => st.low[v] = st.low[v].min(iw),
                _ => {}
            }
        }
        if Some(st.low[v]) == st.idx[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                st.out.push(comp);
            }
        }
    }
    let n = g.modules.len();
    let mut st = St { g, index: 0, idx: vec![None; n], low: vec![0; n], on: vec![false; n], stack: Vec::new(), out: Vec::new() };
    for v in 0..n {
        if st.idx[v].is_none() {
            visit(&mut st, v);
        }
    }
    st.out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn describe_cycles(g: &Graph, src: &Path) -> String {
    let name = |i: usize| g.modules[i].file.strip_prefix(src).map(|p| p.display().to_string()).unwrap_or_default();
    let mut msg = String::new();
    for comp in cycles(g) {
        let set: BTreeSet<usize> = comp.iter().copied().collect();
        msg.push_str(&format!("cycle of {} files:\n", comp.len()));
        for &a in &set {
            for (b, names) in g.edges.get(&a).into_iter().flatten() {
                if set.contains(b) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    msg.push_str(&format!("  {} -> {}: {}\n", name(a), name(*b), names.join(", ")));
                }
            }
        }
    }
    msg
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut failures = String::new();
    for krate in ["wire", "gateway", "daemon"] {
        let src = root().join(krate).join("src");
        let g = graph(&src);
        assert!(g.modules.len() > 3, "{krate}: found only {} source files in {}", g.modules.len(), src.display());
        let msg = describe_cycles(&g, &src);
        if !msg.is_empty() {
            failures.push_str(&format!("{krate}/src:\n{msg}"));
        }
    }
    assert!(failures.is_empty(), "import cycles (ARCHITECTURE.md, Layers):\n{failures}");
}

#[test]
fn daemon_modules_import_only_from_floors_below() {
    let src = root().join("daemon").join("src");
    let g = graph(&src);
    let floor_of = |top: &str| DAEMON_FLOORS.iter().position(|f| f.contains(&top));
    let top = |i: usize| g.modules[i].path.first().cloned().unwrap_or_else(|| "lib".into());
    let mut wrong = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for (&a, targets) in &g.edges {
        for (&b, names) in targets {
            let (ta, tb) = (top(a), top(b));
            if ta == tb {
                continue;
            }
            let (Some(fa), Some(fb)) = (floor_of(&ta), floor_of(&tb)) else {
                if floor_of(&ta).is_none() {
                    unplaced.insert(ta.clone());
                }
                if floor_of(&tb).is_none() {
                    unplaced.insert(tb.clone());
                }
                continue;
            };
            let allowed = fb < fa || (fb == fa && SAME_FLOOR.contains(&(ta.as_str(), tb.as_str())));
            if !allowed {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                wrong.insert(format!(
                    "{} (floor {fa}) -> {} (floor {fb}): {}",
                    g.modules[a].file.strip_prefix(&src).map(|p| p.display().to_string()).unwrap_or_default(),
                    g.modules[b].file.strip_prefix(&src).map(|p| p.display().to_string()).unwrap_or_default(),
                    names.join(", ")
                ));
            }
        }
    }
    // Every top-level module must have a floor, so that a new one is placed deliberately.
    for m in &g.modules {
        let t = m.path.first().cloned().unwrap_or_else(|| "lib".into());
        if floor_of(&t).is_none() {
            unplaced.insert(t);
        }
    }
    assert!(unplaced.is_empty(), "daemon modules without a floor in DAEMON_FLOORS (tests/tests/layers.rs): {unplaced:?}");
    assert!(wrong.is_empty(), "arrows that run up or sideways (ARCHITECTURE.md, Layers):\n{}", wrong.into_iter().collect::<Vec<_>>().join("\n"));
}

/// The reader itself, on hand-made sources: a check that cannot fail would be no check.
#[test]
fn the_reader_finds_arrows_and_cycles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("store")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod store;\npub mod api;\npub mod registry;\n").expect("write");
    // store/mod.rs re-exports its writer (containment) and defines Store, which the writer uses.
    std::fs::write(src.join("store/mod.rs"), "mod writer;\npub use writer::Writer;\npub struct Store;\n").expect("write");
    std::fs::write(src.join("store/writer.rs"), "use super::Store;\n// use crate::api::Nope;\npub struct Writer(Store);\n").expect("write");
    // registry <-> api: a cycle through a grouped use tree and an inline path.
    std::fs::write(src.join("registry.rs"), "use crate::{store::Store, api::{self as a, Shared}};\n").expect("write");
    std::fs::write(src.join("api.rs"), "pub struct Shared;\nfn f() { let _ = crate::registry::load(); }\n#[cfg(test)]\nmod tests { use crate::store::Nope; }\n").expect("write");
    let g = graph(src);
    let file = |name: &str| g.modules.iter().position(|m| m.file.ends_with(name)).expect(name);
    let arrows = |a: &str| -> BTreeSet<String> {
        g.edges.get(&file(a)).into_iter().flatten().map(|(b, _)| g.modules[*b].file.strip_prefix(src).expect("under src").display().to_string()).collect()
    };
    // By hand: writer -> store/mod.rs (super::Store); the comment is not an arrow.
    assert_eq!(arrows("store/writer.rs"), BTreeSet::from(["store/mod.rs".to_string()]));
    // store/mod.rs -> writer is containment: no arrow.
    assert!(arrows("store/mod.rs").is_empty());
    // registry -> store/mod.rs and api.rs; api -> registry (the test module is not read).
    assert_eq!(arrows("registry.rs"), BTreeSet::from(["api.rs".to_string(), "store/mod.rs".to_string()]));
    assert_eq!(arrows("api.rs"), BTreeSet::from(["registry.rs".to_string()]));
    let c = cycles(&g);
    assert_eq!(c.len(), 1, "one cycle: {c:?}");
    let mut names: Vec<String> = c[0].iter().map(|&i| g.modules[i].file.strip_prefix(src).expect("under src").display().to_string()).collect();
    names.sort();
    assert_eq!(names, ["api.rs", "registry.rs"]);
}
