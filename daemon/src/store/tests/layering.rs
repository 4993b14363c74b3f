//! The store is a lower layer: outside its tests, its files name nothing of the daemon but
//! `crate::metrics` (the bottom floor) and the store itself: never `config.rs`, `ingest/`,
//! `accounting/`, `api/` or `lib.rs`.

use std::path::Path;

/// Every `crate::<module>` a source file names, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push((i + 1, name));
            rest = &rest[at + 7..];
        }
    }
    out
}

fn visit(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "tests" {
                visit(&path, found);
            }
        } else if name.ends_with(".rs") && !name.ends_with("_tests.rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // A file's own unit tests (after `#[cfg(test)]`) may use what they like.
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            for (line, module) in crate_paths(text) {
                if module != "metrics" && module != "store" {
                    found.push(format!("{}:{line}: crate::{module}", path.display()));
                }
            }
        }
    }
}

#[test]
fn the_store_imports_nothing_above_it() {
    // The scanner itself, on a table of lines worked by hand.
    let cases = [
        ("use crate::metrics::Metrics;", vec!["metrics"]),
        ("use crate::config::InfluxRead; // crate::api", vec!["config"]),
        ("let x = crate::accounting::rollup::hour_of(crate::store::t());", vec!["accounting", "store"]),
        ("// use crate::ingest::lineproto;", vec![]),
    ];
    for (line, want) in cases {
        let got: Vec<String> = crate_paths(line).into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, want, "{line}");
    }
    let mut found = Vec::new();
    visit(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store"), &mut found);
    assert!(found.is_empty(), "the store names modules above it:\n{}", found.join("\n"));
}
