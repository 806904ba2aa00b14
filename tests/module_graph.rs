//! The module graph stays one-way (docs/architecture.md): no cycle between the
//! top-level modules or between `sd`'s submodules. The graph is read from the
//! `crate::` (and, inside `sd`, `super::`) paths of the sources, as
//! `scripts/module-graph.py` prints it; test code is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `cli`, `sd::unet`, … for a source file.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [] => None,
        [one] if one == "lib" || one == "main" => None,
        [sd, sub, ..] if sd == "sd" => Some(format!("sd::{sub}")),
        [top, ..] => Some(top.clone()),
    }
}

/// The identifiers after `prefix` in `text` (`crate::sd::unet` → `sd`, `unet`).
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<(&'a str, Option<&'a str>)> {
    let ident = |s: &'a str| -> &'a str {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let first = ident(after);
        let second = after[first.len()..]
            .strip_prefix("::")
            .map(ident)
            .filter(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
        if !first.is_empty() {
            out.push((first, second));
        }
        rest = after;
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(here) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut to = BTreeSet::new();
        for (top, sub) in paths_after(text, "crate::") {
            match (top, sub) {
                ("sd", Some(sub)) => {
                    to.insert(format!("sd::{sub}"));
                }
                // The sd root only re-exports its own submodules.
                ("sd", None) if here.starts_with("sd::") => {}
                (top, _) => {
                    to.insert(top.to_string());
                }
            }
        }
        if here.starts_with("sd::") && !f.ends_with("sd/mod.rs") {
            for (m, _) in paths_after(text, "super::") {
                if m != "super" && m != "self" {
                    to.insert(format!("sd::{m}"));
                }
            }
        }
        to.remove(&here);
        edges.entry(here).or_default().extend(to);
    }
    // `crate::sd::StableDiffusion` goes through the root's re-exports.
    let root = std::fs::read_to_string(src.join("sd/mod.rs")).unwrap();
    let reexports: BTreeSet<String> = root
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use "))
        .filter_map(|l| l.split("::").next())
        .map(|m| format!("sd::{m}"))
        .collect();
    edges.insert("sd".into(), reexports);
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(v: &str, s: &mut State) {
        let n = s.index.len();
        s.index.insert(v.to_string(), n);
        s.low.insert(v.to_string(), n);
        s.stack.push(v.to_string());
        s.on.insert(v.to_string());
        let next: Vec<String> = s.edges.get(v).into_iter().flatten().cloned().collect();
        for w in next {
            if !s.index.contains_key(&w) {
                visit(&w, s);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(v, &mut s);
        }
    }
    s.out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    // The reader itself: a graph it cannot see would pass trivially.
    assert!(edges["cli"].contains("engine"), "{edges:?}");
    assert!(edges["sd::model"].contains("sd::single_file"), "{edges:?}");
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "module cycles (see docs/architecture.md): {found:?}"
    );
}

#[test]
fn a_cycle_is_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

#[test]
fn the_leaves_stay_leaves() {
    let edges = graph();
    for leaf in ["torchfile", "fsutil", "rng"] {
        let out = edges.get(leaf).cloned().unwrap_or_default();
        assert!(out.is_empty(), "{leaf} depends on {out:?}");
    }
}
