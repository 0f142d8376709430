//! `xdplb-gen-assets OUT_DIR`: writes the man pages and shell completions of every binary the
//! packages ship (see [`packaging::write_assets`] for the layout). Run by `packaging/build.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use packaging::{Section, Tool};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: xdplb-gen-assets OUT_DIR");
        return ExitCode::from(2);
    };
    let tools = [
        Tool::new(tablegen::cli::Cli::command(), "tablegen", Section::User),
        Tool::new(
            director::cli::Cli::command(),
            "xdplb-director",
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
