//! Imports run one way: no module of `src/` names, through a `crate::`, `super::` or child
//! module path, a module that names it back, however many steps round. The crate root and
//! each parent module count as modules like any other. Test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module of the library and its source, without its tests and comments.
fn modules(root: &Path) -> BTreeMap<Module, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|p| p.to_string_lossy().into()).collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => continue,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            found.insert(module, code_of(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    found
}

/// The source without its test module (which comes last) and without `//` comments.
fn code_of(source: &str) -> String {
    let source = source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |at| &source[..at]);
    source
        .lines()
        .map(|line| match line.find("//") {
            // `//` inside a string (a URL) ends the line early: an edge may be missed, none
            // is made up.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths named in `code` after `prefix` (`crate::`, `super::`): `a::b::C`, and each
/// item of a group `{a::B, c}`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            paths.extend(group.split(',').map(segments));
        } else {
            paths.push(segments(rest));
        }
    }
    paths
}

/// The leading `a::b::c` of `text`.
fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    loop {
        let end = rest.find(|c| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

/// Which modules each module names.
fn imports(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let resolve = |path: Vec<String>| {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains_key(m))
    };
    modules
        .iter()
        .map(|(module, code)| {
            let parent = module[..module.len().saturating_sub(1)].to_vec();
            let mut named: Vec<Module> = Vec::new();
            for path in paths_after(code, "crate::") {
                named.extend(resolve(path));
            }
            for path in paths_after(code, "super::") {
                named.extend(resolve([parent.clone(), path].concat()));
            }
            for child in modules.keys().filter(|m| m.len() == module.len() + 1) {
                if child.starts_with(module)
                    && !paths_after(code, &format!("{}::", child[module.len()])).is_empty()
                {
                    named.push(child.clone());
                }
            }
            let named = named.into_iter().filter(|m| m != module).collect();
            (module.clone(), named)
        })
        .collect()
}

/// A chain of imports that comes back to where it started, if there is one.
fn cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        at: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(start) = path.iter().position(|m| m == at) {
            return Some(path[start..].to_vec());
        }
        if !done.insert(at.clone()) {
            return None;
        }
        path.push(at.clone());
        for next in &graph[at] {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&modules(&src));
    assert!(graph.len() > 40, "found only {} modules", graph.len());
    assert!(graph[&vec!["api".to_owned()]].contains(&vec!["api".into(), "agent".into()]));
    if let Some(cycle) = cycle(&graph) {
        let names: Vec<_> = cycle.iter().chain(&cycle[..1]).map(name).collect();
        panic!("an import cycle: {}", names.join(" -> "));
    }
}

#[test]
fn a_cycle_is_found_where_there_is_one() {
    let modules: BTreeMap<Module, String> = [
        (vec![], "mod a; mod b;".to_owned()),
        (vec!["a".into()], "use crate::b::Thing;".to_owned()),
        (vec!["b".into()], "use super::{a::Other, c};".to_owned()),
    ]
    .into();
    let graph = imports(&modules);
    assert_eq!(
        cycle(&graph).map(|c| c.iter().map(name).collect::<Vec<_>>()),
        Some(vec!["a".into(), "b".into()])
    );
}
