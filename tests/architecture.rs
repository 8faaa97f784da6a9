//! The layering rules of ARCHITECTURE.md, checked on the source: no file
//! imports another that imports it back, `session/` knows neither HTTP nor
//! the key ring, the cookie codec knows nothing of stores or sessions, and
//! other modules reach the layer's settings through the request context,
//! never through the session's own handle on the layer.
//!
//! "Imports" are `use` items and `crate::`/`super::` paths outside test
//! modules; a folder's `mod.rs` may re-export its children (`pub use`),
//! which is how such a folder presents itself, not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`session::commit`) to its source text, tests cut off.
fn sources() -> BTreeMap<String, (PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).expect("below src");
                let module = relative
                    .with_extension("")
                    .to_string_lossy()
                    .trim_end_matches("/mod")
                    .replace('/', "::");
                let text = std::fs::read_to_string(&path).expect("a source file");
                let code = text
                    .split("#[cfg(test)]\nmod tests")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                found.insert(module, (path, code));
            }
        }
    }
    found
}

/// The module a path names: its longest prefix that is a module.
fn module_of(path: &[&str], modules: &BTreeMap<String, (PathBuf, String)>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// Every path a file's `use` items and qualified paths name, made absolute.
fn imports(module: &str, code: &str, is_folder_root: bool) -> Vec<Vec<String>> {
    let here: Vec<String> = module.split("::").map(str::to_owned).collect();
    let absolute = |path: &str| -> Option<Vec<String>> {
        let mut parts = path.split("::");
        let mut out = match parts.next()? {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            _ => return None,
        };
        for part in parts {
            match part {
                "super" => {
                    out.pop();
                }
                "" => {}
                name => out.push(name.to_owned()),
            }
        }
        Some(out)
    };
    let mut found = Vec::new();
    for statement in code.split(';') {
        let statement = statement.trim();
        let Some(at) = statement.find("use ") else {
            continue;
        };
        let reexport = statement[..at].contains("pub");
        if reexport && is_folder_root {
            continue;
        }
        let tree = &statement[at + 4..];
        // The prefix before any brace names the module imported from.
        let prefix = tree.split('{').next().unwrap_or_default();
        let prefix = prefix.trim().trim_end_matches("::");
        if let Some(path) = absolute(prefix) {
            found.push(path);
        }
    }
    for marker in ["crate::", "super::"] {
        for (at, _) in code.match_indices(marker) {
            let rest = &code[at..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            if let Some(path) = absolute(&rest[..end]) {
                found.push(path);
            }
        }
    }
    found
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let modules = sources();
    let mut graph = BTreeMap::new();
    for (module, (path, code)) in &modules {
        let folder_root = path.ends_with("mod.rs") || path.ends_with("lib.rs");
        let mut deps = BTreeSet::new();
        for import in imports(module, code, folder_root) {
            let parts: Vec<&str> = import.iter().map(String::as_str).collect();
            if let Some(target) = module_of(&parts, &modules) {
                if target != *module && target != "lib" {
                    deps.insert(target);
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let graph = dependencies();
    assert!(graph.len() > 20, "the source tree was found: {graph:?}");
    let mut cycles = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if module < dep && graph.get(dep).is_some_and(|back| back.contains(module)) {
                cycles.push(format!("{module} <-> {dep}"));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn the_session_knows_neither_http_nor_the_key_ring() {
    for (module, (path, code)) in sources() {
        if !module.starts_with("session") {
            continue;
        }
        for forbidden in ["http::", "use http", "KeyRing", "crate::key"] {
            assert!(
                !code.contains(forbidden),
                "{} mentions {forbidden}",
                path.display()
            );
        }
    }
}

#[test]
fn the_cookie_codec_knows_nothing_of_stores_or_sessions() {
    let graph = dependencies();
    let deps = &graph["cookie"];
    for forbidden in ["store", "session", "core"] {
        assert!(
            !deps
                .iter()
                .any(|d| d == forbidden || d.starts_with(&format!("{forbidden}::"))),
            "cookie.rs depends on {forbidden}: {deps:?}"
        );
    }
}

#[test]
fn stores_know_nothing_of_http_or_cookies() {
    for (module, (path, code)) in sources() {
        if !module.starts_with("store") {
            continue;
        }
        for forbidden in ["use http", "http::", "crate::cookie", "crate::session"] {
            assert!(
                !code.contains(forbidden),
                "{} mentions {forbidden}",
                path.display()
            );
        }
    }
}

#[test]
fn other_modules_reach_the_layers_settings_through_the_request_context_only() {
    let modules = sources();
    let (_, state) = &modules["session::state"];
    let core_accessor = state
        .lines()
        .find(|line| line.contains("fn core(&self)"))
        .expect("Session keeps a handle on the layer");
    assert!(
        core_accessor.trim_start().starts_with("pub(super) fn core"),
        "Session::core must stay private to session/: {core_accessor}"
    );
    for (module, (path, code)) in &modules {
        if module.starts_with("session") || module == "context" {
            continue;
        }
        for forbidden in [
            "session.core()",
            ".shared.context",
            ".shared.state",
            "session::state::Shared",
        ] {
            assert!(
                !code.contains(forbidden),
                "{} reaches past the request context: {forbidden}",
                path.display()
            );
        }
    }
}
