//! Data-driven director.yaml error tests: every `tests/data/config-errors/NAME.yaml` must fail
//! with exactly the lines in `NAME.expected` (`file:line:col: message`, one per error, all of
//! them). Regenerate after an intended message change with `UPDATE_GOLDENS=1 cargo test -p
//! xdplb-director --test config_errors`, then review the diff: the messages are what operators
//! read.

use std::path::Path;

use director::config::DirectorConfig;

#[test]
fn every_error_is_reported_at_its_position_and_all_at_once() {
    yaml::golden::check_goldens(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config-errors"),
        10,
        |path, text| {
            DirectorConfig::parse(path, text)
                .err()
                .map(|e| e.to_string())
        },
    );
}
