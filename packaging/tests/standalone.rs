//! The source tree stands alone: no tracked file cites a document or an issue tracker that is
//! not part of the repository.
//!
//! What the code and docs rely on lives in docs/ (the wire format, the benchmark method and the
//! performance targets in docs/development/, the invariants in ARCHITECTURE.md). A reference to
//! a planning document outside the tree (by its file name, a section-sign number, a path under
//! a shared directory) or to an issue number with no repository named sends the reader
//! somewhere they cannot follow. Another project's public issue is fine when its repository is
//! named, in the `owner/repo#N` form.
//!
//! The files are the ones `git ls-files` lists (so this test needs a git checkout); binary files
//! are skipped, and so are Cargo.lock (generated) and the licence texts (not ours to edit).
//!
//! The patterns below are built from pieces so that this file does not match itself.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the packaging crate is one level below the workspace root")
        .to_path_buf()
}

/// Tracked files, relative to the root.
fn tracked_files(root: &Path) -> Vec<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .expect("run git ls-files (this test needs git and a git checkout)");
    assert!(
        out.status.success(),
        "git ls-files in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("tracked file names are UTF-8")
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Files whose text is not ours to word.
fn exempt(path: &str) -> bool {
    path == "Cargo.lock" || path == "LICENSE" || path.starts_with("LICENSES/")
}

/// Words that cite a tracker entry when a number follows (after optional spaces and `#`).
const TRACKER_WORDS: &[&str] = &["issue", "issues", "ticket", "pr", "pull request"];

/// The outside reference in `line`, if any, as the text that matched.
fn outside_reference(line: &str) -> Option<String> {
    let lower = line.to_lowercase();
    let literals = [
        ["design", ".md"].concat(),
        ["design ", "\u{a7}"].concat(),
        "\u{a7}".to_string(),
        ["shared", "/"].concat(),
        ["the ", "brief"].concat(),
        ["design ", "brief"].concat(),
        ["issue", "'s"].concat(),
    ];
    for l in &literals {
        if lower.contains(l.as_str()) {
            return Some(l.clone());
        }
    }
    let b = lower.as_bytes();
    let word_start = |i: usize| i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    // A tracker word, then a number, with spaces or a `#` (or both) between them.
    for w in TRACKER_WORDS {
        for (i, _) in lower.match_indices(w) {
            if !word_start(i) {
                continue;
            }
            let mut j = i + w.len();
            let spaces = b[j..].iter().take_while(|c| **c == b' ').count();
            j += spaces;
            if b.get(j) == Some(&b'#') {
                j += 1;
            } else if spaces == 0 {
                continue;
            }
            let digits = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 {
                return Some(lower[i..j + digits].to_string());
            }
        }
    }
    // A `#` and a number after a space or a bracket: no repository named before the `#`.
    for (i, _) in lower.match_indices('#') {
        let bare = i == 0 || matches!(b[i - 1], b' ' | b'(' | b'[' | b'\t');
        if bare && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let end = i + 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            return Some(lower[i..end].to_string());
        }
    }
    None
}

#[test]
fn no_tracked_file_cites_what_is_not_in_the_repository() {
    let root = repo_root();
    let files = tracked_files(&root);
    assert!(
        files.iter().any(|f| f == "README.md"),
        "git ls-files in {} lists no README.md: not this repository",
        root.display()
    );
    let mut found = Vec::new();
    let mut checked = 0;
    for path in files.iter().filter(|p| !exempt(p)) {
        // Listed but deleted in the working tree: nothing to read.
        let Ok(bytes) = std::fs::read(root.join(path)) else {
            continue;
        };
        if bytes.contains(&0) {
            continue;
        }
        checked += 1;
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if let Some(m) = outside_reference(line) {
                found.push(format!("{path}:{}: `{m}`: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(checked > 100, "only {checked} text files checked");
    assert!(
        found.is_empty(),
        "{} line(s) cite something outside the repository; put what they rely on in docs/ and \
         point there (another project's issue: name its repository, `owner/repo#N`):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The matcher itself, on lines built at run time (written out, they would trip the check
/// above).
#[test]
fn the_matcher_finds_outside_references_and_leaves_ordinary_text() {
    let hits = [
        format!("see {}.md {}11", "design", '\u{a7}'),
        format!("as the design {}4 says", '\u{a7}'),
        format!("read /work/{}/conventions.md", "shared"),
        format!("{} 6's targets", "issue"),
        format!("the table invariants ({} {}2)", "issue", '#'),
        format!("{} 3's targets, 60 ns", "Issue"),
        format!("that is the {}'s target", "issue"),
        format!("fixed in {}#12", "PR "),
        format!("the property of ({}2)", '#'),
        format!("as {} says", ["the ", "brief"].concat()),
    ];
    for h in &hits {
        assert!(outside_reference(h).is_some(), "not caught: {h}");
    }
    let clean = [
        "a backend could be (github/glb-director#77)",
        "#[derive(Debug)]",
        "#include <linux/bpf.h>",
        "# a shell comment with 2 numbers",
        "the issues raised by fragments",
        "tissue 4",
        "expression 0x1f#2",
    ];
    for c in &clean {
        assert_eq!(outside_reference(c), None, "caught wrongly: {c}");
    }
}
