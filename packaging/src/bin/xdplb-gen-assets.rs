//! `xdplb-gen-assets OUT_DIR [CARGO_METADATA_JSON]`: writes the man pages and shell
//! completions of every binary the packages ship (see [`packaging::write_assets`] for the
//! layout) and, given `cargo metadata --format-version 1` output, each package's third-party
//! licence file, `OUT_DIR/licenses/<package>.txt` ([`packaging::licenses`]). Run by
//! `packaging/build.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use packaging::{Section, Tool};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), metadata, None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: xdplb-gen-assets OUT_DIR [CARGO_METADATA_JSON]");
        return ExitCode::from(2);
    };
    if let Some(m) = metadata {
        if let Err(e) = write_licenses(&PathBuf::from(&out), &PathBuf::from(m)) {
            eprintln!("xdplb-gen-assets: {e}");
            return ExitCode::FAILURE;
        }
    }
    let tools = [
        Tool::new(tablegen::cli::Cli::command(), "tablegen", Section::User),
        Tool::new(
            director::cli::Cli::command(),
            "xdplb-director",
            Section::Admin,
        ),
        Tool::new(
            controller::cli::Cli::command(),
            "xdplb-controller",
            Section::Admin,
        ),
        Tool::new(
            redirector::cli::Cli::command(),
            "xdplb-redirector",
            Section::Admin,
        ),
    ];
    match packaging::write_assets(&PathBuf::from(out), &tools) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let source = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("xdplb-gen-assets: {e}{source}");
            ExitCode::FAILURE
        }
    }
}

/// Each package's third-party licence file: the crates its binaries link.
fn write_licenses(out: &std::path::Path, metadata: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read(metadata).map_err(|e| format!("{}: {e}", metadata.display()))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", metadata.display()))?;
    let packages: [(&str, &[&str]); 2] = [
        (
            "xdplb-director",
            &["xdplb-director", "xdplb-tablegen", "xdplb-controller"],
        ),
        ("xdplb-redirector", &["xdplb-redirector"]),
    ];
    let dir = out.join("licenses");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (package, roots) in packages {
        let file = dir.join(format!("{package}.txt"));
        let body = packaging::licenses::third_party(&meta, package, roots)?;
        std::fs::write(&file, body).map_err(|e| format!("{}: {e}", file.display()))?;
        println!("{}", file.display());
    }
    Ok(())
}
