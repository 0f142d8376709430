//! `tablegen lookup --director`: where the director on this host sends a flow now. Reads the
//! table its kernel holds for the flow's service (the pinned `director_tables_fixed` /
//! `director_tables` maps under `<bpffs_dir>/director`, read only) and the director's state file
//! (service ids, the published checksum and the demoted backends), then compares with the
//! published table of `--config` through [`tablegen::installed`].
//!
//! Only reads: nothing of the director is changed, and it works whether or not its daemon runs
//! (the kernel forwards by the pinned tables either way).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use tablegen::config::Config;
use tablegen::installed::{self, DirectorLookup, Installed};
use tablegen::report::{self, FlowSpec};
use tablegen::table::Table;

/// The director's pinned outer maps of tables (map names: docs/setup/director.md).
const MAP_TABLES_FIXED: &str = "director_tables_fixed";
const MAP_TABLES: &str = "director_tables";

pub fn lookup(
    config: &Config,
    tables: &[Table],
    spec: &FlowSpec,
    bpffs_dir: &Path,
    state_dir: &Path,
) -> Result<DirectorLookup> {
    let published = report::lookup(config, tables, spec)?;
    let checksum = config
        .services
        .iter()
        .zip(tables)
        .find(|(s, _)| s.name == published.service)
        .map(|(_, t)| t.checksum)
        .expect("the lookup's service is in the config");

    let state_path = state_dir.join("director-state.json");
    let text = std::fs::read_to_string(&state_path).with_context(|| {
        format!(
            "reading {}: no director state here (is xdplb-director running on this host? --state-dir is director.yaml's state_dir)",
            state_path.display()
        )
    })?;
    let st: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", state_path.display()))?;
    let name = &published.service;
    let Some(id) = st["ids"]["services"][name].as_u64() else {
        let known: Vec<&str> = st["ids"]["services"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        bail!(
            "the director ({}) serves no service `{name}` (it serves: {}); its config is not --config's",
            state_path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let pid = st["pid"].as_u64().unwrap_or(0);
    let daemon_running = pid != 0 && Path::new(&format!("/proc/{pid}")).exists();

    let pin_dir = bpffs_dir.join("director");
    let (hdr_bytes, inner) = read_table(&pin_dir, id as u32).ok_or_else(|| {
        anyhow!("the director has no table of `{name}` in its kernel (slot {id})")
    })??;
    let hdr = installed::parse_hdr(&hdr_bytes)?;
    let (hash, row) = hdr.row_of(&spec.flow);
    let row_bytes = inner
        .lookup(&(1 + row).to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading row {row} of `{name}`'s installed table"))?
        .ok_or_else(|| anyhow!("row {row} of `{name}`'s installed table is missing"))?;
    let hops = hdr.parse_row(&row_bytes)?;

    // A checked service's state records the published table it was built from; an unchecked
    // one is installed as published.
    let health = &st["health"]["services"][name];
    let published_checksum = health["published_checksum"]
        .as_u64()
        .unwrap_or(hdr.checksum);
    let demoted = health["demoted"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(installed::compare(
        config,
        published,
        checksum,
        Installed {
            hdr,
            hash,
            row,
            hops,
            published_checksum,
            demoted,
            daemon_running,
        },
    )?)
}

/// The header bytes and the inner map of service slot `id`: the fixed-size kind first, as the
/// program looks. `None` when neither holds one.
fn read_table(pin_dir: &Path, id: u32) -> Option<Result<(Vec<u8>, MapHandle)>> {
    let open = |name: &str| {
        let path = pin_dir.join(name);
        MapHandle::from_pinned_path(&path).map_err(|e| {
            anyhow!(
                "opening {}: {e} (no director pinned there? --bpffs-dir is director.yaml's bpffs_dir; reading pins needs root)",
                path.display()
            )
        })
    };
    let sized = match open(MAP_TABLES) {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    // Absent in pins of a version without it.
    let fixed = open(MAP_TABLES_FIXED).ok();
    let slot = |m: &MapHandle| -> Option<u32> {
        let v = m.lookup(&id.to_ne_bytes(), MapFlags::ANY).ok()??;
        Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
    };
    let inner_id = fixed.as_ref().and_then(slot).or_else(|| slot(&sized))?;
    Some((|| {
        let inner = MapHandle::from_map_id(inner_id)
            .with_context(|| format!("opening the table map (id {inner_id})"))?;
        let hdr = inner
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading the table header")?
            .ok_or_else(|| anyhow!("the table has no header"))?;
        Ok((hdr, inner))
    })())
}

/// `lookup --director` for people.
pub fn print(l: &DirectorLookup) {
    let hops = |a: &[std::net::IpAddr], n: &[String]| -> String {
        a.iter()
            .zip(n)
            .map(|(a, n)| format!("{a} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("service {}, hash {}, row {}", l.service, l.hash, l.row);
    println!(
        "director: primary {} ({}), hops: {}",
        l.hops[0],
        l.names[0],
        hops(&l.hops, &l.names)
    );
    println!(
        "published: primary {} ({}), hops: {}",
        l.published.hops[0],
        l.published.names[0],
        hops(&l.published.hops, &l.published.names)
    );
    let verdict = match (l.changed_by_health, l.primary_changed) {
        (false, _) => "same as published".to_string(),
        (true, true) => format!(
            "CHANGED BY HEALTH: new flows go to {} instead of {} (demoted: {})",
            l.names[0],
            l.published.names[0],
            l.demoted.join(", ")
        ),
        (true, false) => format!(
            "CHANGED BY HEALTH: same primary, other hops (demoted: {})",
            l.demoted.join(", ")
        ),
    };
    println!("health: {verdict}");
    println!(
        "installed table: version {} checksum {}{}",
        l.installed_version,
        l.installed_checksum,
        if l.daemon_running {
            ""
        } else {
            " (daemon not running; the kernel forwards by this table)"
        }
    );
    if !l.published_matches {
        println!(
            "warning: the director serves another published table than --config builds: the difference may be the version, not health"
        );
    }
}
