//! The golden-file driver of every config crate's error tests: a corpus of broken files, each
//! with the exact messages an operator must read.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `dir/NAME.yaml` must give exactly the text of `dir/NAME.expected` from `check(name,
/// text)`: `Some(errors)` (one `file:line:col: message` per line) or `None` for a file that
/// passes, written `(no error)`. The path handed to `check` is the bare file name, so goldens do
/// not depend on where the checkout is. With `UPDATE_GOLDENS` set, the goldens are written
/// instead (review the diff: the messages are what operators read). Panics with every mismatch;
/// fewer than `min_cases` cases is a mismatch too (a corpus that went missing).
pub fn check_goldens(dir: &Path, min_cases: usize, check: impl Fn(&Path, &str) -> Option<String>) {
    let update = std::env::var_os("UPDATE_GOLDENS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= min_cases,
        "expected the error corpus in {}, found {} cases",
        dir.display(),
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap();
        let text = fs::read_to_string(case).unwrap();
        let got = match check(Path::new(name), &text) {
            None => "(no error)\n".to_string(),
            Some(e) => format!("{e}\n"),
        };
        let golden = case.with_extension("expected");
        if update {
            fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
