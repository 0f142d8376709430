//! The host side of Direct Server Return: VIPs on a local interface, no ARP answers for them,
//! a reverse-path filter that accepts decapsulated packets. Idempotent, and reversible: every
//! change is recorded before it is made, so `detach` undoes exactly what `setup` did (even
//! after a crash part way) and nothing the operator set up by hand. The interface and
//! addresses are recorded in `<state_dir>/redirector-setup.json`, the sysctls in the sysctl
//! journal `<state_dir>/redirector-sysctls.json` (`daemon_support::sysctl`), whose restore
//! leaves a value the operator changed since as it is.
//!
//! Also, for `run` whatever the config says: the interface features under which GRO merges GUE
//! datagrams into one skb ([`keep_gue_unmerged`], recorded in the same file and turned back on
//! by `detach`).
//!
//! Uses `ip` (iproute2), `ethtool` and `/proc/sys`; touches nothing outside what the config
//! names.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_support::sysctl::{conf_path, Journal, SysctlChange};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Config;
use crate::Error;

/// What `setup` changed on this host, oldest first (what the `setup` command prints).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// A dummy interface we created for the VIPs.
    pub created_interface: Option<String>,
    /// `(interface, address/prefix)` we added.
    pub addresses: Vec<(String, String)>,
    /// The sysctls we changed, from the journal.
    pub sysctls: Vec<SysctlChange>,
    /// `(interface, feature)` we turned off ([`keep_gue_unmerged`]).
    #[serde(default)]
    pub features: Vec<(String, String)>,
}

/// `redirector-setup.json`: the interface and addresses.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    created_interface: Option<String>,
    addresses: Vec<(String, String)>,
    /// `(interface, feature)` turned off by [`keep_gue_unmerged`], turned on again by `undo`.
    #[serde(default)]
    features: Vec<(String, String)>,
    /// `(sysctl path, value before)`, as versions before the journal kept them: read once and
    /// moved into the journal.
    #[serde(default, skip_serializing)]
    sysctls: Vec<(PathBuf, String)>,
}

fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("redirector-setup.json")
}

/// The sysctl journal of `setup`.
pub fn journal(state_dir: &Path) -> Journal {
    Journal::new(state_dir.join("redirector-sysctls.json"))
}

/// Read the record of earlier changes (empty when there is none), moving sysctls recorded by
/// an earlier version into the journal.
fn load_record(state_dir: &Path) -> Result<Record, Error> {
    let path = state_file(state_dir);
    let mut record: Record = match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|source| Error::ParseState { path, source })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
        Err(source) => return Err(Error::LoadState { path, source }),
    };
    if !record.sysctls.is_empty() {
        let journal = journal(state_dir);
        for (path, before) in record.sysctls.drain(..) {
            // What the earlier version wrote, known from the key: the journal needs it to
            // tell our value from the operator's.
            let set = match path.file_name().and_then(|n| n.to_str()) {
                Some("arp_ignore") => "1",
                Some("arp_announce" | "rp_filter") => "2",
                _ => continue,
            };
            journal.record(SysctlChange {
                path,
                before,
                set: set.into(),
            })?;
        }
        save_record(state_dir, &record)?;
    }
    Ok(record)
}

/// The changes recorded so far.
pub fn load_changes(state_dir: &Path) -> Result<Changes, Error> {
    let record = load_record(state_dir)?;
    Ok(Changes {
        created_interface: record.created_interface,
        addresses: record.addresses,
        sysctls: journal(state_dir).changes()?,
        features: record.features,
    })
}

/// Write the record whole ([`daemon_support::write_atomic`]): a crash never leaves half a one.
fn save_record(state_dir: &Path, record: &Record) -> Result<(), Error> {
    let path = state_file(state_dir);
    let text = serde_json::to_vec_pretty(record).expect("plain data serializes");
    daemon_support::write_atomic(&path, &text, 0o644)
        .map_err(|source| Error::SaveState { path, source })
}

fn ip(args: &[&str]) -> Result<String, Error> {
    command("ip", args)
}

fn command(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: format!("{program} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The interface features under which the kernel's GRO merges GUE datagrams (same addresses
/// and ports, same size) into one skb before tc sees it: UDP GRO for traffic no local socket
/// takes (the GUE port has none: the program decapsulates), and fraglist GRO. The program
/// strips one outer header; it cannot take a merged skb apart, so such a packet would be
/// dropped (`gro_merged`). docs/development/second-chance.md, "GRO".
pub const GRO_MERGING_FEATURES: [&str; 2] = ["rx-udp-gro-forwarding", "rx-gro-list"];

/// Turn off [`GRO_MERGING_FEATURES`] where they are on (and can be changed) on each of
/// `interfaces`, each recorded in `state_dir` before it is changed so `detach` turns it on
/// again. Returns the `(interface, feature)` pairs turned off now.
pub fn keep_gue_unmerged(
    state_dir: &Path,
    interfaces: &[String],
) -> Result<Vec<(String, String)>, Error> {
    let mut record = load_record(state_dir)?;
    let mut turned_off = Vec::new();
    for ifc in interfaces {
        let shown = command("ethtool", &["-k", ifc])?;
        for feature in GRO_MERGING_FEATURES {
            let on = shown.lines().any(|l| {
                l.trim()
                    .strip_prefix(feature)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|v| v.trim() == "on")
            });
            if !on {
                continue; // off, fixed, or unknown to this kernel
            }
            let pair = (ifc.clone(), feature.to_string());
            if !record.features.contains(&pair) {
                record.features.push(pair.clone());
                save_record(state_dir, &record)?;
            }
            command("ethtool", &["-K", ifc, feature, "off"])?;
            info!(interface = %ifc, feature, "turned off: GRO would merge GUE datagrams");
            turned_off.push(pair);
        }
    }
    Ok(turned_off)
}

fn host_prefix(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// Apply the DSR prerequisites for `config`. Safe to run again: only missing changes are made.
pub fn apply(config: &Config) -> Result<Changes, Error> {
    let mut record = load_record(&config.state_dir)?;
    apply_into(config, &mut record, &journal(&config.state_dir))?;
    load_changes(&config.state_dir)
}

fn apply_into(config: &Config, record: &mut Record, journal: &Journal) -> Result<(), Error> {
    let state_dir = config.state_dir.as_path();
    let vif = config.vip_interface.as_str();
    if crate::datapath::ifindex(vif).is_err() {
        // Recorded first: a crash after `ip link add` must not leave an interface nobody
        // removes.
        record.created_interface = Some(vif.to_string());
        save_record(state_dir, record)?;
        ip(&["link", "add", vif, "type", "dummy"])?;
        info!(interface = vif, "created dummy interface for the VIPs");
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
        if !record.addresses.iter().any(|(i, c)| i == vif && *c == cidr) {
            record.addresses.push((vif.to_string(), cidr.clone()));
            save_record(state_dir, record)?;
        }
        ip(&args)?;
        info!(vip = %vip, interface = vif, "added VIP");
    }

    // Answer ARP only for addresses on the receiving interface, and never source ARP from a
    // VIP: the VIPs belong to the directors as far as the network is concerned.
    let mut ifaces: Vec<&str> = vec!["all"];
    ifaces.extend(config.interfaces.iter().map(String::as_str));
    for ifc in &ifaces {
        journal.set_if(
            &conf_path("ipv4", ifc, "arp_ignore"),
            |v| v.parse::<u32>().unwrap_or(0) < 1,
            "1",
        )?;
        journal.set_if(
            &conf_path("ipv4", ifc, "arp_announce"),
            |v| v.parse::<u32>().unwrap_or(0) < 2,
            "2",
        )?;
    }
    // Strict reverse-path filtering drops decapsulated packets whenever the client's route
    // points out of another interface (asymmetric routing is normal with DSR): use loose.
    // The kernel applies max(all, interface), so both must be at most 2 and strict is 1.
    for ifc in &ifaces {
        journal.set_if(&conf_path("ipv4", ifc, "rp_filter"), |v| v == "1", "2")?;
    }
    Ok(())
}

/// Undo everything recorded, newest first, and forget the record. A sysctl the operator
/// changed since `setup` keeps the operator's value. Steps that fail are reported after the
/// others have been tried.
pub fn undo(state_dir: &Path) -> Result<(), Error> {
    let record = load_record(state_dir)?;
    let mut first_error = None;
    if let Err(e) = journal(state_dir).restore(|_| true) {
        first_error.get_or_insert(e.into());
    }
    for (ifc, cidr) in record.addresses.iter().rev() {
        match ip(&["addr", "del", cidr, "dev", ifc]) {
            Ok(_) => info!(address = %cidr, interface = %ifc, "removed VIP"),
            // Already gone (removed by hand, interface deleted, or never added: recorded
            // before a crash): nothing to undo.
            Err(Error::Command { message, .. })
                if message.contains("Cannot assign") || message.contains("Cannot find device") => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for (ifc, feature) in record.features.iter().rev() {
        if crate::datapath::ifindex(ifc).is_err() {
            continue; // the interface is gone, and its settings with it
        }
        match command("ethtool", &["-K", ifc, feature, "on"]) {
            Ok(_) => info!(interface = %ifc, feature = %feature, "turned back on"),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(ifc) = &record.created_interface {
        match ip(&["link", "del", ifc]) {
            Ok(_) => info!(interface = %ifc, "removed dummy interface"),
            Err(Error::Command { message, .. }) if message.contains("Cannot find device") => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if first_error.is_none() {
        let _ = std::fs::remove_file(state_file(state_dir));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record written by the version before the journal kept `(path, before)` pairs in
    /// `redirector-setup.json`; they move into the journal with the value that version wrote,
    /// so `detach` can still tell its value from an operator's.
    #[test]
    fn sysctls_recorded_by_the_previous_version_move_into_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            state_file(dir.path()),
            r#"{"created_interface": null,
                "addresses": [["lo", "198.51.100.20/32"]],
                "sysctls": [["/proc/sys/net/ipv4/conf/all/rp_filter", "1"],
                            ["/proc/sys/net/ipv4/conf/v0/arp_ignore", "0"]]}"#,
        )
        .unwrap();
        let changes = load_changes(dir.path()).unwrap();
        assert_eq!(
            changes.addresses,
            [("lo".into(), "198.51.100.20/32".into())]
        );
        assert_eq!(
            changes.sysctls,
            [
                SysctlChange {
                    path: "/proc/sys/net/ipv4/conf/all/rp_filter".into(),
                    before: "1".into(),
                    set: "2".into(),
                },
                SysctlChange {
                    path: "/proc/sys/net/ipv4/conf/v0/arp_ignore".into(),
                    before: "0".into(),
                    set: "1".into(),
                },
            ]
        );
        let rewritten = std::fs::read_to_string(state_file(dir.path())).unwrap();
        assert!(!rewritten.contains("rp_filter"), "{rewritten}");
        // Read again: nothing moves twice.
        assert_eq!(load_changes(dir.path()).unwrap(), changes);
    }
}
