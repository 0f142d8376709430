//! The licences of the Rust crates a package's binaries link in, from `cargo metadata`.
//!
//! Every crate from crates.io is compiled into the binaries (statically, as Rust does), so the
//! packages must carry their licences: [`third_party`] lists each crate with the licence it
//! declares and appends the licence texts it ships (each distinct text once).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::Value;

/// Crates the binaries of `roots` (workspace package names) link: the normal (not dev, not
/// build) dependencies, transitively, without the workspace's own packages.
fn linked<'a>(meta: &'a Value, roots: &[&str]) -> Result<Vec<&'a Value>, String> {
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .ok_or("cargo metadata: no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata: no resolve graph (run it without --no-deps)")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut todo: Vec<&str> = Vec::new();
    for root in roots {
        let id = members
            .iter()
            .find(|id| packages.get(*id).and_then(|p| p["name"].as_str()) == Some(root))
            .ok_or_else(|| format!("cargo metadata: no workspace package {root}"))?;
        todo.push(id);
    }
    let mut seen = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let deps = nodes.get(id).and_then(|n| n["deps"].as_array());
        for d in deps.into_iter().flatten() {
            let normal = d["dep_kinds"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k["kind"].is_null()));
            if let (true, Some(pkg)) = (normal, d["pkg"].as_str()) {
                todo.push(pkg);
            }
        }
    }
    let mut out: Vec<&Value> = seen
        .into_iter()
        .filter(|id| !members.contains(id))
        .filter_map(|id| packages.get(id).copied())
        .collect();
    out.sort_by_key(|p| (p["name"].as_str(), p["version"].as_str()));
    Ok(out)
}

/// The licence texts a crate ships: LICENSE*, LICENCE*, COPYING*, NOTICE*, UNLICENSE* at its
/// top level, and its `license-file`. (file name, text), by name.
fn texts(pkg: &Value) -> Vec<(String, String)> {
    let Some(dir) = pkg["manifest_path"]
        .as_str()
        .and_then(|m| Path::new(m).parent())
    else {
        return Vec::new();
    };
    let mut names = BTreeSet::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let lower = name.to_ascii_lowercase();
            let is_text = ["license", "licence", "copying", "notice", "unlicense"]
                .iter()
                .any(|p| lower.starts_with(p));
            if is_text && e.path().is_file() {
                names.insert(name);
            }
        }
    }
    if let Some(f) = pkg["license_file"].as_str() {
        names.insert(f.to_owned());
    }
    names
        .into_iter()
        .filter_map(|n| {
            let text = fs::read(dir.join(&n)).ok()?;
            Some((n, String::from_utf8_lossy(&text).into_owned()))
        })
        .collect()
}

/// The third-party licence file of a package whose binaries are built from the workspace
/// packages `roots`, from `cargo metadata --format-version 1` output.
pub fn third_party(meta: &Value, package: &str, roots: &[&str]) -> Result<String, String> {
    let crates = linked(meta, roots)?;
    let mut out = format!(
        "Third-party software in {package}\n\n\
         The binaries of {package} are built with the Rust crates below (from crates.io), \
         linked in\nstatically. Each is listed with the licence it declares and the licence \
         texts it ships,\nwhich follow the list (each distinct text once). xdplb's own licence: \
         see the copyright file.\n\n"
    );
    let mut distinct: Vec<String> = Vec::new();
    for pkg in &crates {
        let name = pkg["name"].as_str().unwrap_or("?");
        let version = pkg["version"].as_str().unwrap_or("?");
        let license = pkg["license"].as_str().unwrap_or("(not declared)");
        out.push_str(&format!("{name} {version}\n  License: {license}\n"));
        let ts = texts(pkg);
        if ts.is_empty() {
            out.push_str("  (the crate ships no licence text)\n");
        }
        for (file, text) in ts {
            let i = match distinct.iter().position(|t| *t == text) {
                Some(i) => i,
                None => {
                    distinct.push(text);
                    distinct.len() - 1
                }
            };
            out.push_str(&format!("  {file}: text {}\n", i + 1));
        }
    }
    for (i, text) in distinct.iter().enumerate() {
        out.push_str(&format!("\n======== text {} ========\n\n{}", i + 1, text));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As packaging/build.sh asks for it: this host's dependencies only.
    fn metadata() -> Value {
        // rustc beside the cargo that builds this test (PATH may not have it)
        let beside = Path::new(env!("CARGO")).with_file_name("rustc");
        let rustc = if beside.exists() {
            beside
        } else {
            "rustc".into()
        };
        let rustc = std::process::Command::new(rustc)
            .arg("-vV")
            .output()
            .unwrap();
        let host = String::from_utf8(rustc.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
            .unwrap();
        let out = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .args(["--filter-platform", &host])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn lists_the_linked_crates_with_their_texts_and_not_the_workspace() {
        let meta = metadata();
        let text = third_party(
            &meta,
            "xdplb-director",
            &["xdplb-director", "xdplb-tablegen"],
        )
        .unwrap();
        // Linked: libbpf-rs and its vendored libbpf (libbpf-sys), the config files' YAML parser
        // and the "did you mean" distance of the yaml crate.
        for line in ["  License: LGPL-2.1-only OR BSD-2-Clause", "  License: MIT"] {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
        for krate in ["libbpf-rs ", "libbpf-sys ", "yaml-rust2 ", "strsim "] {
            assert!(text.lines().any(|l| l.starts_with(krate)), "{krate}");
        }
        // Not linked: dev-dependencies (etherparse), build-dependencies (libbpf-cargo), and
        // our own packages.
        for krate in ["etherparse ", "libbpf-cargo ", "xdplb-", "proptest "] {
            assert!(!text.lines().any(|l| l.starts_with(krate)), "{krate}");
        }
        assert!(
            text.contains("Permission is hereby granted, free of charge"),
            "an MIT text"
        );
        assert!(text.contains("Apache License"), "an Apache text");
        // Each text once, however many crates ship it; windows-only crates left out.
        let refs = text.lines().filter(|l| l.contains(": text ")).count();
        let distinct = text.matches("\n======== text ").count();
        assert!(
            refs > distinct + distinct / 2,
            "{refs} references to {distinct} texts"
        );
        assert!(!text.lines().any(|l| l.starts_with("windows-sys ")));
    }
}
