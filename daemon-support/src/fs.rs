//! Publishing a file whole: readers (the daemons, `status`, an operator's editor) see the old
//! contents or the new, never half, and after a crash or power loss the file is one of the two.
//!
//! Owns the one way this project replaces a file; must not be used for files that are appended
//! to (logs).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes`: a temporary file in the same directory (a rename is atomic
/// only within one file system), written and fsynced, renamed over `path`, then the directory
/// fsynced so the rename itself survives a crash. Creates the directory if needed.
///
/// A file that already exists keeps its mode and, where the caller may give it away (root),
/// its owner: replacing an operator's 0640 file must not publish it 0600 or 0644. A new file
/// gets `new_mode` less the umask: the caller says who may read it (0o600 for anything that
/// holds a secret such as a hash key, 0o644 for records `status` reads, 0o666 for an
/// operator's output, as `std::fs::write` would).
///
/// A symbolic link is followed and its target replaced: replacing the link itself would cut
/// an operator's link (a config kept in a checkout elsewhere) without a word.
pub fn write_atomic(path: &Path, bytes: &[u8], new_mode: u32) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let path = target.as_path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let old = std::fs::metadata(path).ok();
    let mut tmp = tempfile::Builder::new()
        .prefix(".xdplb-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(new_mode))
        .tempfile_in(dir)?;
    if let Some(m) = &old {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        // Only root can give a file away; anyone else already owns what they create.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()));
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On error the temporary file is removed (NamedTempFile's drop).
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_has_the_new_bytes_its_old_mode_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "no temporary file left behind");
    }

    #[test]
    fn a_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("link.yaml");
        std::fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new", 0o644).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old", 0o644).unwrap();
        // The target is now a non-empty directory: the rename must fail, the temp file go.
        let blocked = dir.path().join("d");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"new", 0o644).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
