//! xdplb packaging helpers: man pages and shell completions for the `.deb` and `.rpm` packages.
//!
//! Everything here is rendered from the tools' own clap definitions (exported by the `tablegen`,
//! `director`, `controller` and `redirector` libraries), so a man page can never disagree with `--help`.
//! This crate owns no behaviour of those tools and must not grow any: it only renders their
//! definitions into files that `packaging/build.sh` hands to cargo-deb and cargo-generate-rpm.
//!
//! The crate's integration test (`tests/packages.rs`) is the packaging test: it builds the four
//! packages, lints and inspects them, and installs, upgrades and removes them in throwaway roots.

pub mod licenses;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;

/// Manual section a tool's pages go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// 1: commands any user may run (`tablegen check` needs no privilege).
    User,
    /// 8: system administration commands and daemons.
    Admin,
}

impl Section {
    /// The section as it appears in file names and `.TH`.
    pub fn number(self) -> &'static str {
        match self {
            Section::User => "1",
            Section::Admin => "8",
        }
    }
}

/// One shipped executable: its CLI definition, named as the installed binary.
#[derive(Debug, Clone)]
pub struct Tool {
    command: Command,
    section: Section,
}

impl Tool {
    /// `binary` is the installed file name; it overrides whatever name the definition carries,
    /// since pages and completions must match what the user types.
    pub fn new(command: Command, binary: &'static str, section: Section) -> Self {
        let mut command = command.name(binary).bin_name(binary);
        // Fills in the subcommands' display names ("xdplb-director-run") and bin names
        // ("xdplb-director run"), which the subcommand pages use for their titles and synopses.
        command.build();
        Tool { command, section }
    }

    /// The installed binary name.
    pub fn binary(&self) -> &str {
        self.command.get_name()
    }
}

/// What went wrong while writing the assets, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory under the output directory could not be written.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The shells we ship completions for, and where each file goes under `completions/`.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// Writes, for every tool, under `out`:
///
/// - `man/man<S>/<bin>.<S>` and one `man/man<S>/<bin>-<sub>.<S>` per visible subcommand
///   (recursively, git style), uncompressed (the build script gzips them);
/// - `completions/bash/<bin>`, `completions/zsh/_<bin>`, `completions/fish/<bin>.fish`: the
///   names each shell's loader looks for.
///
/// Returns the files written, sorted. Output is deterministic (no date in the pages), so two
/// builds of one version give the same packages.
pub fn write_assets(out: &Path, tools: &[Tool]) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for tool in tools {
        let section = tool.section.number();
        let man_dir = out.join("man").join(format!("man{section}"));
        for page in pages(&tool.command) {
            let title = page
                .get_display_name()
                .unwrap_or_else(|| page.get_name())
                .to_owned();
            let mut text = Vec::new();
            clap_mangen::Man::new(page)
                .section(section)
                .manual("xdplb")
                .render(&mut text)
                .map_err(|source| Error::Write {
                    path: man_dir.clone(),
                    source,
                })?;
            written.push(write(&man_dir.join(format!("{title}.{section}")), &text)?);
        }
        for (shell, dir) in SHELLS {
            let bin = tool.binary().to_owned();
            let file = match shell {
                Shell::Zsh => format!("_{bin}"),
                Shell::Fish => format!("{bin}.fish"),
                _ => bin.clone(),
            };
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut tool.command.clone(), bin, &mut text);
            written.push(write(&out.join("completions").join(dir).join(file), &text)?);
        }
    }
    written.sort();
    Ok(written)
}

/// The command and all its visible subcommands, depth first: one man page each.
fn pages(command: &Command) -> Vec<Command> {
    let mut all = vec![command.clone()];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            // clap's implicit `help`: the parent page lists it, so it gets a page, but its
            // mirror of every subcommand ("help run") would only repeat the real pages.
            all.push(sub.clone());
        } else {
            all.extend(pages(sub));
        }
    }
    all
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .and_then(|()| fs::write(path, bytes))
        .map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn daemon() -> Command {
        Command::new("whatever-the-crate-calls-it")
            .version("1.2.3")
            .about("a daemon")
            .subcommand_required(true)
            .arg(
                Arg::new("config")
                    .long("config")
                    .global(true)
                    .help("config file"),
            )
            .subcommand(Command::new("run").about("run in the foreground"))
            .subcommand(
                Command::new("detach")
                    .about("detach everything")
                    .arg(Arg::new("force").long("force").action(ArgAction::SetTrue)),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn writes_a_page_per_visible_subcommand_and_a_completion_per_shell() {
        let dir =
            std::env::temp_dir().join(format!("xdplb-packaging-assets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let tools = [Tool::new(daemon(), "xdplb-demo", Section::Admin)];
        let files = write_assets(&dir, &tools).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "completions/bash/xdplb-demo",
                "completions/fish/xdplb-demo.fish",
                "completions/zsh/_xdplb-demo",
                "man/man8/xdplb-demo-detach.8",
                "man/man8/xdplb-demo-help.8",
                "man/man8/xdplb-demo-run.8",
                "man/man8/xdplb-demo.8",
            ]
        );
        let top = fs::read_to_string(dir.join("man/man8/xdplb-demo.8")).unwrap();
        assert!(top.contains(".TH xdplb-demo 8"), "{top}");
        assert!(
            top.contains("xdplb\\-demo\\-run(8)"),
            "subcommands are cross-referenced: {top}"
        );
        assert!(
            !top.contains("secret"),
            "hidden subcommands stay hidden: {top}"
        );
        assert!(
            !dir.join("man/man8/xdplb-demo-help-run.8").exists(),
            "no pages for `help run`"
        );
        let detach = fs::read_to_string(dir.join("man/man8/xdplb-demo-detach.8")).unwrap();
        assert!(
            detach.contains("xdplb\\-demo detach"),
            "synopsis names the real command: {detach}"
        );
        assert!(detach.contains("\\-\\-force"), "{detach}");
        let zsh = fs::read_to_string(dir.join("completions/zsh/_xdplb-demo")).unwrap();
        assert!(zsh.starts_with("#compdef xdplb-demo"), "{zsh}");
        // Deterministic: a second run writes the same bytes.
        let again = dir.join("again");
        write_assets(&again, &tools).unwrap();
        assert_eq!(
            top,
            fs::read_to_string(again.join("man/man8/xdplb-demo.8")).unwrap()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
