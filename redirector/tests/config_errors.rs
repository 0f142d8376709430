//! Data-driven redirector.yaml error tests: every `tests/data/config-errors/NAME.yaml` must fail
//! with exactly the lines in `NAME.expected` (`file:line:col: message`, one per error, all of
//! them). Regenerate after an intended message change with `UPDATE_GOLDENS=1 cargo test -p
//! xdplb-redirector --test config_errors`, then review the diff: the messages are what operators
//! read.

use std::fs;
use std::path::{Path, PathBuf};

use redirector::config::Config;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config-errors")
}

#[test]
fn every_error_is_reported_at_its_position_and_all_at_once() {
    let update = std::env::var_os("UPDATE_GOLDENS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the error corpus, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap();
        let text = fs::read_to_string(case).unwrap();
        // The path in messages is the bare file name, so goldens do not depend on the checkout.
        let got = match Config::parse(Path::new(name), &text) {
            Ok(_) => "(no error)\n".to_string(),
            Err(e) => format!("{e}\n"),
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
