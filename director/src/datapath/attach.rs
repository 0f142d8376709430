//! Attaching: XDP links pinned under `<pin_dir>/links/<ifname>`, kept across restarts and
//! updated in place to a new program; detaching one interface or everything.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;

use super::{cpath, last_os_error, Datapath};
use crate::error::DatapathError;

/// XDP attachment mode actually in use on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Native,
    Generic,
    /// Found pinned from an earlier run; the mode was chosen then.
    Kept,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            _ => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Kept => "kept",
        }
    }
}

impl Datapath {
    /// Attach to `iface` (or move an existing pinned link of it to this program). With
    /// `want = None` the mode is native, falling back to generic if the driver refuses.
    pub fn attach(
        &self,
        iface: &str,
        want: Option<AttachMode>,
    ) -> Result<AttachMode, DatapathError> {
        let path = self.pin_dir.join("links").join(iface);
        if path.exists() {
            let link = open_pinned(&path)?;
            let rc = unsafe {
                // SAFETY: valid fds; NULL opts means "replace whatever program is there".
                libbpf_sys::bpf_link_update(link.as_raw_fd(), self.prog_fd(), std::ptr::null())
            };
            if rc == 0 {
                return Ok(AttachMode::Kept);
            }
            // The link's interface went away (or was re-created): start over.
            tracing::warn!(iface, error = %last_os_error(rc), "stale pinned link, re-attaching");
            let _ = fs::remove_file(&path);
        }
        let ifindex =
            nix::net::if_::if_nametoindex(iface).map_err(|source| DatapathError::Interface {
                name: iface.into(),
                source,
            })?;
        let modes = match want {
            Some(m) => vec![m],
            None => vec![AttachMode::Native, AttachMode::Generic],
        };
        let mut last = None;
        for mode in modes {
            // SAFETY: zeroed is a valid bpf_link_create_opts; sz tells libbpf its version.
            let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
            opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
            opts.flags = mode.flags();
            let fd = unsafe {
                // SAFETY: valid program fd, an ifindex, initialised opts.
                libbpf_sys::bpf_link_create(
                    self.prog_fd(),
                    ifindex as i32,
                    libbpf_sys::BPF_XDP,
                    &opts,
                )
            };
            if fd < 0 {
                let e = last_os_error(fd);
                tracing::info!(iface, mode = mode.as_str(), error = %e, "xdp attach refused");
                last = Some((mode, e));
                continue;
            }
            // SAFETY: a fresh fd we own.
            let link = unsafe { OwnedFd::from_raw_fd(fd) };
            let rc = unsafe {
                // SAFETY: valid link fd and path.
                libbpf_sys::bpf_obj_pin(link.as_raw_fd(), cpath(&path).as_ptr())
            };
            if rc != 0 {
                return Err(DatapathError::Pin {
                    path,
                    source: last_os_error(rc),
                });
            }
            return Ok(mode);
        }
        let (mode, source) = last.expect("at least one mode was tried");
        Err(DatapathError::Attach {
            iface: iface.into(),
            mode: mode.as_str(),
            source,
        })
    }

    /// Interfaces with a pinned link.
    pub fn attached(&self) -> Vec<String> {
        attached_in(&self.pin_dir)
    }

    /// Detach and unpin the link of one interface.
    pub fn detach_iface(&self, iface: &str) -> Result<(), DatapathError> {
        detach_link(&self.pin_dir.join("links").join(iface))
    }
}

fn open_pinned(path: &Path) -> Result<OwnedFd, DatapathError> {
    let fd = unsafe {
        // SAFETY: NUL-terminated path.
        libbpf_sys::bpf_obj_get(cpath(path).as_ptr())
    };
    if fd < 0 {
        return Err(DatapathError::OpenPinned {
            path: path.into(),
            source: last_os_error(fd),
        });
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn attached_in(pin_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(pin_dir.join("links"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn detach_link(path: &Path) -> Result<(), DatapathError> {
    let link = open_pinned(path)?;
    let rc = unsafe {
        // SAFETY: a valid link fd.
        libbpf_sys::bpf_link_detach(link.as_raw_fd())
    };
    // ENOLINK: already detached (interface gone); the pin still has to go.
    if rc != 0 && last_os_error(rc).raw_os_error() != Some(libc::ENOLINK) {
        return Err(DatapathError::Detach {
            path: path.into(),
            source: last_os_error(rc),
        });
    }
    fs::remove_file(path).map_err(|source| DatapathError::Detach {
        path: path.into(),
        source,
    })
}

/// Whether an XDP program is attached to `iface` now (in any mode), as the kernel says: an
/// operator may have taken it away by hand (`bpftool link detach`) behind the daemon's back.
pub fn xdp_attached(iface: &str) -> Result<bool, std::io::Error> {
    let index = nix::net::if_::if_nametoindex(iface).map_err(std::io::Error::from)?;
    let mut id: u32 = 0;
    let rc = unsafe {
        // SAFETY: a valid out pointer; flags 0 asks for whatever single mode is attached.
        libbpf_sys::bpf_xdp_query_id(index as i32, 0, &mut id)
    };
    if rc != 0 {
        // EINVAL with flags 0: programs in more than one mode, so attached.
        return match std::io::Error::from_raw_os_error(-rc) {
            e if e.raw_os_error() == Some(libc::EINVAL) => Ok(true),
            e => Err(e),
        };
    }
    Ok(id != 0)
}

/// Remove everything the director attached and pinned under `pin_dir`. Idempotent.
pub fn detach_all(pin_dir: &Path) -> Result<Vec<String>, DatapathError> {
    let ifaces = attached_in(pin_dir);
    for i in &ifaces {
        detach_link(&pin_dir.join("links").join(i))?;
    }
    if let Ok(rd) = fs::read_dir(pin_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                let _ = fs::remove_dir(&p);
            } else {
                fs::remove_file(&p).map_err(|source| DatapathError::Detach {
                    path: p.clone(),
                    source,
                })?;
            }
        }
    }
    let _ = fs::remove_dir(pin_dir);
    Ok(ifaces)
}
