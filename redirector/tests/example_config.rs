//! The shipped example config parses, and is inert: no interface means `run` refuses to start.

use std::path::Path;

use redirector::config::Config;

#[test]
fn shipped_example_is_valid_yaml_and_refuses_to_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/redirector.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let err = Config::parse(&path, &text).unwrap_err().to_string();
    assert!(
        err.contains("interfaces: list at least one interface"),
        "{err}"
    );
    // Filled in as the comments suggest, it is a working config.
    let filled = text
        .replace("interfaces: []", "interfaces: [eth0]")
        .replace("allowed_sources: []\n#  - ", "allowed_sources:\n  - ")
        .replace("vips: []\n#  - ", "vips:\n  - ");
    let c = Config::parse(&path, &filled).unwrap();
    assert_eq!(c.interfaces, ["eth0"]);
    assert_eq!(c.allowed_sources.len(), 1);
    assert_eq!(c.vips.len(), 1);
    assert!(!c.setup_on_run);
}
