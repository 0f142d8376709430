//! Data-driven config error tests: every `tests/data/config-errors/NAME.yaml` must fail with
//! exactly the lines in `NAME.expected` (`file:line:col: message`, one per error).
//! Regenerate the goldens after an intended message change with `UPDATE_GOLDENS=1 cargo test`,
//! then review the diff: the messages are what operators read.

use std::fs;
use std::path::{Path, PathBuf};

use tablegen::config::Config;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config-errors")
}

#[test]
fn every_error_class_is_reported_with_its_position() {
    yaml::golden::check_goldens(&data_dir(), 16, |path, text| {
        Config::parse(path, text).err().map(|e| e.to_string())
    });
}

#[test]
fn the_shipped_example_is_safe_and_its_commented_example_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/backends.yaml");
    let text = fs::read_to_string(&example).unwrap();
    let shipped = Config::parse(&example, &text).unwrap();
    assert!(
        shipped.services.is_empty(),
        "the shipped file must not forward anything"
    );
    // The commented example between the markers must be valid once uncommented.
    let mut inside = false;
    let mut body = String::new();
    for line in text.lines() {
        match line.trim() {
            "# --- example start ---" => inside = true,
            "# --- example end ---" => inside = false,
            _ if inside => {
                body.push_str(
                    line.strip_prefix("# ")
                        .or(line.strip_prefix('#'))
                        .unwrap_or(line),
                );
                body.push('\n');
            }
            _ => {}
        }
    }
    let c = Config::parse(Path::new("example"), &body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert!(!c.services.is_empty());
}
