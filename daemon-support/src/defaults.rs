//! Where the daemons look and keep things when the config does not say, and the GUE port:
//! one value for both, so a director and a redirector configured with nothing agree.

/// UDP destination port of GUE, as GLB Director uses it.
pub const GUE_PORT: u16 = 19523;
/// The configuration directory.
pub const CONFIG_DIR: &str = "/etc/xdplb";
/// `director.yaml` in [`CONFIG_DIR`].
pub const DIRECTOR_CONFIG: &str = "/etc/xdplb/director.yaml";
/// `backends.yaml` in [`CONFIG_DIR`].
pub const BACKENDS: &str = "/etc/xdplb/backends.yaml";
/// `redirector.yaml` in [`CONFIG_DIR`].
pub const REDIRECTOR_CONFIG: &str = "/etc/xdplb/redirector.yaml";
/// The daemons' records (ids, the sysctl journals, the host changes of `setup`): a tmpfs,
/// gone at reboot like the kernel state they describe.
pub const STATE_DIR: &str = "/run/xdplb";
/// The bpffs directory; each daemon pins under `<bpffs_dir>/<daemon>`.
pub const BPFFS_DIR: &str = "/sys/fs/bpf/xdplb";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_in_the_config_dir() {
        for f in [DIRECTOR_CONFIG, BACKENDS, REDIRECTOR_CONFIG] {
            assert_eq!(
                std::path::Path::new(f).parent().unwrap(),
                std::path::Path::new(CONFIG_DIR)
            );
        }
    }
}
