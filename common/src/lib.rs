//! What the director and the redirector daemons share: the check that their pins land on a
//! bpffs, and the position and message of an error in their YAML config files.

use std::path::{Path, PathBuf};

/// Why a daemon may not pin under a directory.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// Never mounted by a daemon: under systemd a bpffs it mounted would live only in the
    /// unit's private mount namespace, and the pins (hence forwarding across restarts) would
    /// vanish with the service.
    #[error("{path} is not on a bpffs; mount one (mount -t bpf bpf {mount_point})")]
    NotBpffs { path: PathBuf, mount_point: PathBuf },
    #[error("checking the file system of {path}")]
    Statfs { path: PathBuf, source: nix::Error },
}

/// `pin_dir` (`<bpffs_dir>/<daemon>`) is, or can be created, on a bpffs: its nearest existing
/// ancestor is on one. Creates nothing.
pub fn check_bpffs(pin_dir: &Path) -> Result<(), BpffsError> {
    let bpffs_dir = pin_dir.parent().unwrap_or(pin_dir);
    // `ancestors` ends with "" for a relative path: that is the working directory.
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new(if pin_dir.is_absolute() { "/" } else { "." }));
    let fs = nix::sys::statfs::statfs(existing).map_err(|source| BpffsError::Statfs {
        path: existing.into(),
        source,
    })?;
    if fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC {
        return Ok(());
    }
    Err(BpffsError::NotBpffs {
        path: bpffs_dir.into(),
        mount_point: if bpffs_dir.starts_with("/sys/fs/bpf") {
            "/sys/fs/bpf".into()
        } else {
            bpffs_dir.into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemons' tests pin on bpffs mounts of their own (accepted) and refuse a tmpfs.
    #[test]
    fn a_path_whose_nearest_existing_ancestor_is_not_a_bpffs_is_refused() {
        match check_bpffs(Path::new("/proc/xdplb-test/director")) {
            Err(BpffsError::NotBpffs { path, mount_point }) => {
                assert_eq!(path, Path::new("/proc/xdplb-test"));
                assert_eq!(mount_point, Path::new("/proc/xdplb-test"));
            }
            other => panic!("{other:?}"),
        }
    }
}
