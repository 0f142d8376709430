//! What the director and the redirector daemons share, written once: the check that the running
//! kernel is new enough, the check that their pins land on a bpffs, interface names, the
//! defaults ([`defaults`]), systemd readiness ([`notify`]), replacing a file whole ([`fs`]), the
//! sysctl journal ([`sysctl`]), the `/metrics` endpoint ([`metrics`]) and the error chain the
//! binaries print ([`errors`]). (Their YAML error positions live in the `yaml` crate.)
//!
//! Must not know either daemon's config or maps: what is here is plumbing both use the same way.

pub mod defaults;
pub mod errors;
pub mod fs;
pub mod metrics;
pub mod netwatch;
pub mod notify;
pub mod sysctl;

pub use errors::{error_chain, exit_with, EX_CONFIG};
pub use fs::write_atomic;

use std::path::{Path, PathBuf};

/// The oldest kernel both programs load on (the kernel test matrix boots it:
/// docs/development/kernels.md).
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// The kernel is older than [`MIN_KERNEL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "Linux {release} is too old: xdplb needs 5.10 or later (bpf_redirect_neigh, inner maps \
     of varying size: BPF_F_INNER_MAP)"
)]
pub struct KernelTooOld {
    pub release: String,
}

/// The running kernel is [`MIN_KERNEL`] or newer, by its release (`uname -r`). A release that
/// does not parse passes: the program load will tell.
pub fn check_kernel() -> Result<(), KernelTooOld> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    match kernel_version(&release) {
        Some(v) if v < MIN_KERNEL => Err(KernelTooOld { release }),
        _ => Ok(()),
    }
}

/// (major, minor) of a kernel release such as "6.1.0-50-amd64" or "5.10.223".
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the kernel would accept `name` as an interface name (`dev_valid_name`): 1 to 15
/// bytes (under IFNAMSIZ, so it fits a C `ifr_name` with its NUL), not `.` or `..`, no NUL,
/// `/`, `:` or white space.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '\0' || c == '/' || c == ':' || c.is_whitespace())
}

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

    #[test]
    fn interface_names_as_the_kernel_takes_them() {
        for ok in ["eth0", "eth0.100", "lo", "a23456789012345"] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0:1",
            "a/b",
            "a b",
            "a\0b",
            "a234567890123456",
        ] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }

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

    #[test]
    fn kernel_releases_parse_and_compare() {
        assert_eq!(kernel_version("6.1.0-50-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.10.223"), Some((5, 10)));
        assert_eq!(kernel_version("6.12.95+deb12-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("weird"), None);
        assert!(kernel_version("5.4.0").unwrap() < MIN_KERNEL);
        assert!(kernel_version("5.10.0-32-amd64").unwrap() >= MIN_KERNEL);
        assert!(kernel_version("6.1.0").unwrap() >= MIN_KERNEL);
        assert!(
            check_kernel().is_ok(),
            "the tests run on a supported kernel"
        );
    }
}
