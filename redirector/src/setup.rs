//! The host side of Direct Server Return: VIPs on a local interface, no ARP answers for them,
//! a reverse-path filter that accepts decapsulated packets. Idempotent, and reversible: every
//! change is recorded in `<state_dir>/redirector-setup.json` so `detach` undoes exactly what
//! `setup` did and nothing the operator set up by hand.
//!
//! Uses `ip` (iproute2) and `/proc/sys`; touches nothing outside what the config names.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Config;
use crate::Error;

/// What `setup` changed on this host, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// A dummy interface we created for the VIPs.
    pub created_interface: Option<String>,
    /// `(interface, address/prefix)` we added.
    pub addresses: Vec<(String, String)>,
    /// `(sysctl path, value before we changed it)`.
    pub sysctls: Vec<(PathBuf, String)>,
}

fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("redirector-setup.json")
}

/// Read the record of earlier changes (empty when there is none).
pub fn load_changes(state_dir: &Path) -> Result<Changes, Error> {
    let path = state_file(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|source| Error::ParseState { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Changes::default()),
        Err(source) => Err(Error::LoadState { path, source }),
    }
}

/// Write the record atomically (temp file + rename): a crash never leaves half a record.
fn save_changes(state_dir: &Path, changes: &Changes) -> Result<(), Error> {
    let path = state_file(state_dir);
    let err = |source| Error::SaveState {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(changes).expect("plain data serializes");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

fn ip(args: &[&str]) -> Result<String, Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: format!("ip {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read_sysctl(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Sysctl {
            path: path.to_path_buf(),
            source,
        })
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|source| Error::Sysctl {
        path: path.to_path_buf(),
        source,
    })
}

/// Set a sysctl when `wanted(current)` says it needs changing, recording the old value once.
fn ensure_sysctl(
    changes: &mut Changes,
    key: &str,
    needs_change: impl Fn(&str) -> bool,
    value: &str,
) -> Result<(), Error> {
    let path = sysctl_path(key);
    let old = read_sysctl(&path)?;
    if !needs_change(&old) {
        return Ok(());
    }
    write_sysctl(&path, value)?;
    info!(sysctl = key, old = %old, new = value, "changed");
    if !changes.sysctls.iter().any(|(p, _)| *p == path) {
        changes.sysctls.push((path, old));
    }
    Ok(())
}

fn host_prefix(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// Apply the DSR prerequisites for `config`. Safe to run again: only missing changes are made.
pub fn apply(config: &Config) -> Result<Changes, Error> {
    let mut changes = load_changes(&config.state_dir)?;
    let result = apply_into(config, &mut changes);
    // Record whatever did happen, even when a later step failed, so detach can undo it.
    save_changes(&config.state_dir, &changes)?;
    result.map(|()| changes)
}

fn apply_into(config: &Config, changes: &mut Changes) -> Result<(), Error> {
    let vif = config.vip_interface.as_str();
    if crate::datapath::ifindex(vif).is_err() {
        ip(&["link", "add", vif, "type", "dummy"])?;
        info!(interface = vif, "created dummy interface for the VIPs");
        changes.created_interface = Some(vif.to_string());
    }
    ip(&["link", "set", vif, "up"])?;

    let present = ip(&["-o", "addr", "show", "dev", vif])?;
    for vip in &config.vips {
        let cidr = host_prefix(vip);
        if present.split_whitespace().any(|w| w == cidr) {
            continue;
        }
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", vif];
        if vip.is_ipv6() {
            // A VIP is shared by every backend: duplicate address detection would disable it.
            args.push("nodad");
        }
        ip(&args)?;
        info!(vip = %vip, interface = vif, "added VIP");
        changes.addresses.push((vif.to_string(), cidr));
    }

    // Answer ARP only for addresses on the receiving interface, and never source ARP from a
    // VIP: the VIPs belong to the directors as far as the network is concerned.
    let mut ifaces: Vec<&str> = vec!["all"];
    ifaces.extend(config.interfaces.iter().map(String::as_str));
    for ifc in &ifaces {
        ensure_sysctl(
            changes,
            &format!("net.ipv4.conf.{ifc}.arp_ignore"),
            |v| v.parse::<u32>().unwrap_or(0) < 1,
            "1",
        )?;
        ensure_sysctl(
            changes,
            &format!("net.ipv4.conf.{ifc}.arp_announce"),
            |v| v.parse::<u32>().unwrap_or(0) < 2,
            "2",
        )?;
    }
    // Strict reverse-path filtering drops decapsulated packets whenever the client's route
    // points out of another interface (asymmetric routing is normal with DSR): use loose.
    // The kernel applies max(all, interface), so both must be at most 2 and strict is 1.
    for ifc in &ifaces {
        ensure_sysctl(
            changes,
            &format!("net.ipv4.conf.{ifc}.rp_filter"),
            |v| v == "1",
            "2",
        )?;
    }
    Ok(())
}

/// Undo everything recorded, newest first, and forget the record. Steps that fail are reported
/// after the others have been tried.
pub fn undo(state_dir: &Path) -> Result<(), Error> {
    let changes = load_changes(state_dir)?;
    let mut first_error = None;
    for (path, old) in changes.sysctls.iter().rev() {
        if let Err(e) = write_sysctl(path, old) {
            first_error.get_or_insert(e);
        }
    }
    for (ifc, cidr) in changes.addresses.iter().rev() {
        match ip(&["addr", "del", cidr, "dev", ifc]) {
            Ok(_) => info!(address = %cidr, interface = %ifc, "removed VIP"),
            // Already gone (removed by hand, interface deleted): nothing to undo.
            Err(Error::Command { message, .. }) if message.contains("Cannot assign") => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(ifc) = &changes.created_interface {
        if let Err(e) = ip(&["link", "del", ifc]) {
            first_error.get_or_insert(e);
        }
    }
    let _ = std::fs::remove_file(state_file(state_dir));
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
