//! Packaging tests: the four packages as an operator meets them.
//!
//! Builds xdplb-director and xdplb-redirector as `.deb` and `.rpm` once per run, with
//! `packaging/build.sh --quick` (revision 1, then revision 2 of the same binaries for the upgrade),
//! then, per package: inspects metadata, files, conffiles, dependencies and maintainer scripts;
//! lints the `.deb`s; installs each package into a throwaway Debian root (debootstrap minbase,
//! cached by `debian-root.sh` under /var/cache/xdplb-test), runs the installed binaries there,
//! verifies the installed unit with `systemd-analyze verify`, upgrades to revision 2 with a locally
//! edited config, removes and purges, and checks that nothing is left but what policy keeps.
//! Finally boots the installed units under systemd (systemd-nspawn) to check what only a running
//! systemd shows: readiness, the sandbox, reload, hitless stop/start, detach on removal.
//!
//! Needs root (chroot, dpkg and rpm on a root directory, nspawn) and the tools
//! `scripts/setup.sh` installs. Nothing here touches the host's own package state, network or
//! bpffs: the roots are plain directories, and the booted container has its own network
//! namespace and a bpffs this test mounts (under /run) and unmounts.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What one package must contain, as installed paths.
#[derive(Debug)]
struct Pkg {
    name: &'static str,
    /// (installed path, manual section) of every executable.
    binaries: &'static [(&'static str, &'static str)],
    /// Configuration files: dpkg conffiles and rpm %config(noreplace).
    conffiles: &'static [&'static str],
    /// Subcommands of the daemon that must have their own man page (git style) and appear in
    /// its `--help`. Other subcommand pages (tablegen's, say) may come and go with the CLIs.
    subcommand_pages: &'static [&'static str],
    /// Documents under /usr/share/doc/<package>/ besides install.md and the licences.
    docs: &'static [&'static str],
    /// Units besides the package's own (`<name>.service`): installed, verified, not enabled.
    extra_units: &'static [&'static str],
}

const DIRECTOR: Pkg = Pkg {
    name: "xdplb-director",
    binaries: &[
        ("/usr/sbin/xdplb-director", "8"),
        ("/usr/bin/tablegen", "1"),
        ("/usr/sbin/xdplb-controller", "8"),
    ],
    // director.yaml last: the upgrade test edits the last one.
    conffiles: &[
        "/etc/xdplb/backends.yaml",
        "/etc/xdplb/controller.yaml",
        "/etc/xdplb/director.yaml",
    ],
    subcommand_pages: &["run", "detach", "status"],
    // BGP: how to announce the VIPs, and the BIRD 2 example to merge into bird.conf; the
    // load-aware controller's control law and parameters.
    docs: &["bgp.md", "examples/bird.conf", "load-controller.md"],
    // The load-aware controller, off until the operator enables it.
    extra_units: &["xdplb-controller"],
};

const REDIRECTOR: Pkg = Pkg {
    name: "xdplb-redirector",
    binaries: &[("/usr/sbin/xdplb-redirector", "8")],
    conffiles: &["/etc/xdplb/redirector.yaml"],
    subcommand_pages: &["run", "setup", "detach", "status"],
    docs: &[],
    extra_units: &[],
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Deb,
    Rpm,
}

impl Pkg {
    fn daemon(&self) -> &'static str {
        self.binaries[0].0
    }

    /// Both formats install units in the merged-/usr location.
    fn unit(&self) -> String {
        format!("/usr/lib/systemd/system/{}.service", self.name)
    }

    /// Every unit the package installs: its own first.
    fn units(&self) -> Vec<String> {
        let mut units = vec![self.unit()];
        for u in self.extra_units {
            units.push(format!("/usr/lib/systemd/system/{u}.service"));
        }
        units
    }

    /// Every file the package must ship (it may ship more directories, and more subcommand
    /// pages: see [`Pkg::without_subcommand_pages`]).
    fn files(&self, format: Format) -> BTreeSet<String> {
        let mut files: BTreeSet<String> = self.conffiles.iter().map(|s| s.to_string()).collect();
        files.extend(self.units());
        files.insert(format!("/usr/share/doc/{}/install.md", self.name));
        for doc in self.docs {
            files.insert(format!("/usr/share/doc/{}/{doc}", self.name));
        }
        // The Grafana dashboard and its metrics reference (docs/setup/metrics.md).
        files.insert(format!("/usr/share/doc/{}/metrics.md", self.name));
        files.insert(format!("/usr/share/{}/grafana/xdplb.json", self.name));
        for (path, section) in self.binaries {
            let bin = path.rsplit('/').next().unwrap();
            files.insert(path.to_string());
            files.insert(format!("/usr/share/man/man{section}/{bin}.{section}.gz"));
            files.insert(format!("/usr/share/bash-completion/completions/{bin}"));
            files.insert(format!("/usr/share/fish/vendor_completions.d/{bin}.fish"));
            files.insert(match format {
                Format::Deb => format!("/usr/share/zsh/vendor-completions/_{bin}"),
                Format::Rpm => format!("/usr/share/zsh/site-functions/_{bin}"),
            });
        }
        for sub in self.subcommand_pages {
            let (path, section) = self.binaries[0];
            let bin = path.rsplit('/').next().unwrap();
            files.insert(format!(
                "/usr/share/man/man{section}/{bin}-{sub}.{section}.gz"
            ));
        }
        // The license, where each format puts it: Debian's machine-readable copyright file
        // (pointing at /usr/share/common-licenses), rpm's %license directory (the full text).
        match format {
            Format::Deb => {
                for doc in [
                    "copyright",
                    "changelog.Debian.gz",
                    "third-party-licenses.txt.gz",
                ] {
                    files.insert(format!("/usr/share/doc/{}/{doc}", self.name));
                }
                files.insert(format!("/usr/share/lintian/overrides/{}", self.name));
            }
            Format::Rpm => {
                for text in [
                    "LICENSE",
                    "GPL-2.0-only.txt",
                    "BSD-2-Clause.txt",
                    "third-party-licenses.txt",
                ] {
                    files.insert(format!("/usr/share/licenses/{}/{text}", self.name));
                }
            }
        }
        files
    }

    /// `files` without the pages of subcommands not named in `subcommand_pages`.
    fn without_subcommand_pages(&self, files: &BTreeSet<String>) -> BTreeSet<String> {
        let listed = self.files(Format::Deb);
        files
            .iter()
            .filter(|f| {
                listed.contains(*f)
                    || !self.binaries.iter().any(|(path, section)| {
                        let bin = path.rsplit('/').next().unwrap();
                        f.starts_with(&format!("/usr/share/man/man{section}/{bin}-"))
                            && f.ends_with(&format!(".{section}.gz"))
                    })
            })
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running things

/// Runs `cmd`, fails the test with its output unless it exits 0, returns stdout + stderr.
/// Runs `cmd`, asserts success and returns its transcript: stdout and stderr joined, for
/// assertions that search what a command said and for failure messages. Never parse a value out
/// of it (stderr's progress lines land anywhere in it): that is what [`query`] is for.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Runs `cmd`, asserts success and returns its stdout alone: for commands whose output is
/// parsed. stderr goes into the failure message only.
fn query(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).env("LC_ALL", "C");
    c
}

/// Maintainer-script output that means a script is broken even though dpkg or rpm carried on.
fn assert_scripts_clean(what: &str, output: &str) {
    for bad in [
        "not found",
        "syntax error",
        "warning: %",
        "detach failed",
        "Permission denied",
    ] {
        assert!(
            !output.contains(bad),
            "{what}: {bad:?} in the output:\n{output}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The build, once per run

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The target dir this test was built in (`<target>/<profile>/deps/<test>`): the packaging build
/// shares it, so its dependencies are compiled once for both.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// The directory holding all four packages, revisions 1 and 2.
/// A failed build is remembered, so the other tests fail at once instead of rebuilding.
fn packages() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = target_dir().join("packaging-test").join("packages");
        let _ = fs::remove_dir_all(&out);
        let build = workspace().join("packaging/build.sh");
        for extra in [
            &["--revision", "1"][..],
            &["--revision", "2", "--no-build"][..],
        ] {
            let mut c = cmd(
                "bash",
                &[
                    build.to_str().unwrap(),
                    "--quick",
                    "--out",
                    out.to_str().unwrap(),
                ],
            );
            c.args(extra)
                .env("CARGO_TARGET_DIR", target_dir())
                .stdin(Stdio::null());
            let result = c.output().map_err(|e| format!("spawning {c:?}: {e}"))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            );
            if !result.status.success() {
                return Err(format!("{c:?} failed ({}):\n{text}", result.status));
            }
            eprintln!("{text}");
        }
        Ok(out)
    });
    match built {
        Ok(dir) => dir,
        Err(e) => panic!("packaging/build.sh failed:\n{e}"),
    }
}

fn package(pkg: &Pkg, format: Format, revision: u32) -> PathBuf {
    let dir = packages();
    let (prefix, suffix) = match format {
        Format::Deb => (format!("{}_", pkg.name), format!("-{revision}_amd64.deb")),
        Format::Rpm => (format!("{}-", pkg.name), format!("-{revision}.x86_64.rpm")),
    };
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            // "xdplb-director-" must not match "xdplb-director-foo": versions start with a digit.
            n.starts_with(&prefix)
                && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
                && n.ends_with(&suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{suffix} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Throwaway roots

/// A fresh minimal Debian root in a temporary directory, removed on drop.
#[derive(Debug)]
struct Root {
    path: PathBuf,
}

impl Root {
    fn new(name: &str) -> Root {
        // The script prints the tarball's path and nothing else on stdout; its progress
        // (a first run debootstraps into the cache) goes to stderr.
        let stdout = query(&mut cmd(
            "bash",
            &[workspace()
                .join("packaging/tests/debian-root.sh")
                .to_str()
                .unwrap()],
        ));
        let tarball = stdout.trim_end_matches('\n');
        assert!(
            !tarball.contains('\n') && Path::new(tarball).is_file(),
            "debian-root.sh printed {stdout:?} on stdout, not the path of one tarball"
        );
        let path = target_dir()
            .join("packaging-test")
            .join(format!("root-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        run(&mut cmd(
            "tar",
            &["-C", path.to_str().unwrap(), "-xf", tarball],
        ));
        Root { path }
    }

    /// A command run inside the root, with a clean environment.
    fn chroot(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.path)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn file(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    fn exists(&self, path: &str) -> bool {
        self.file(path).symlink_metadata().is_ok()
    }

    /// Every path in the root, except the package managers' own state, scratch space and /run
    /// (tmpfs on a real host).
    fn snapshot(&self) -> BTreeSet<String> {
        const SKIP: [&str; 9] = [
            "/dev",
            "/proc",
            "/run",
            "/sys",
            "/tmp",
            "/var/lib/dpkg",
            "/var/log",
            "/var/lib/rpm",
            "/usr/lib/sysimage",
        ];
        fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let rel = format!("/{}", entry.path().strip_prefix(base).unwrap().display());
                if SKIP.contains(&rel.as_str()) {
                    continue;
                }
                let is_dir = entry.file_type().unwrap().is_dir();
                out.insert(rel);
                if is_dir {
                    walk(base, &entry.path(), out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.path, &self.path, &mut out);
        out
    }

    /// Mount points under the root (there must be none: nothing we run may mount anything).
    fn mounts(&self) -> Vec<String> {
        let root = self.path.to_str().unwrap().to_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Never recurse into a mount (a bpffs, say) that something left behind.
        for m in self.mounts().iter().rev() {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Inspecting the packages

fn deb_field(deb: &Path, field: &str) -> String {
    query(&mut cmd("dpkg-deb", &["-f", deb.to_str().unwrap(), field]))
        .trim()
        .to_owned()
}

/// Files (not directories) of a .deb, as absolute paths.
fn deb_files(deb: &Path) -> BTreeSet<String> {
    query(&mut cmd("dpkg-deb", &["-c", deb.to_str().unwrap()]))
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let path = l.split_whitespace().nth(5).unwrap();
            path.trim_start_matches('.').to_owned()
        })
        .collect()
}

fn deb_control(deb: &Path, member: &str) -> String {
    let out = Command::new("dpkg-deb")
        .args(["-I", deb.to_str().unwrap(), member])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rpm_query(rpm: &Path, args: &[&str]) -> String {
    let mut c = cmd("rpm", &["-qp"]);
    c.args(args).arg(rpm);
    query(&mut c)
}

/// NEEDED sonames of the package's binaries, read from the files inside the .deb.
fn needed_sonames(pkg: &Pkg, deb: &Path) -> BTreeSet<String> {
    let dir = target_dir().join("packaging-test").join(format!(
        "extract-{}-{}",
        pkg.name,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    run(&mut cmd(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), dir.to_str().unwrap()],
    ));
    let mut sonames = BTreeSet::new();
    for (bin, _) in pkg.binaries {
        let path = dir.join(bin.trim_start_matches('/'));
        let dynamic = query(&mut cmd("readelf", &["-d", path.to_str().unwrap()]));
        for line in dynamic.lines().filter(|l| l.contains("(NEEDED)")) {
            let soname = line.split('[').nth(1).unwrap().trim_end_matches(']');
            sonames.insert(soname.to_owned());
        }
        // Stripped: no symbol table left (the BPF objects live in .rodata, not as symbols).
        let sections = query(&mut cmd("readelf", &["-S", "-W", path.to_str().unwrap()]));
        assert!(!sections.contains(" .symtab "), "{bin} is not stripped");
        assert!(
            !sections.contains(" .debug_info "),
            "{bin} carries debug info"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
    sonames
}

/// The Debian package that ships `soname` on this (build) host, for amd64 (the multiarch
/// directory keeps out the i386/x32 copies gcc-multilib brings).
fn debian_package_of(soname: &str) -> String {
    let out = query(&mut cmd(
        "dpkg",
        &["-S", &format!("*/x86_64-linux-gnu/{soname}")],
    ));
    let first = out.lines().find(|l| !l.starts_with("diversion")).unwrap();
    first.split(':').next().unwrap().to_owned()
}

fn check_deb_metadata(pkg: &Pkg) {
    let deb = package(pkg, Format::Deb, 1);
    assert_eq!(deb_field(&deb, "Package"), pkg.name);
    assert_eq!(
        deb_field(&deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(deb_field(&deb, "Architecture"), "amd64");
    assert_eq!(deb_field(&deb, "Section"), "net");

    let files = deb_files(&deb);
    assert_eq!(
        pkg.without_subcommand_pages(&files),
        pkg.files(Format::Deb),
        "files of {}",
        deb.display()
    );

    let conffiles: BTreeSet<String> = deb_control(&deb, "conffiles")
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = pkg.conffiles.iter().map(|s| s.to_string()).collect();
    assert_eq!(conffiles, expected, "conffiles of {}", deb.display());

    // Dependencies: every shared library the binaries link, by the package that ships it, and
    // nothing that is only needed to build.
    let depends = deb_field(&deb, "Depends");
    let names: BTreeSet<&str> = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap())
        .collect();
    for soname in needed_sonames(pkg, &deb) {
        let provider = debian_package_of(&soname);
        // cargo-deb leaves out libgcc-s1 on purpose: libc6 depends on it.
        if provider.starts_with("libgcc-s") {
            continue;
        }
        let provider = provider.split(':').next().unwrap().to_owned();
        assert!(
            names.contains(provider.as_str()),
            "{soname} ({provider}) missing from Depends: {depends}"
        );
    }
    assert!(
        names.contains("procps"),
        "/bin/kill (ExecReload) comes from procps: {depends}"
    );
    for name in &names {
        let build_only = name.ends_with("-dev")
            || [
                "clang",
                "llvm",
                "gcc",
                "cargo",
                "rustc",
                "bpftool",
                "make",
                "pkg-config",
            ]
            .contains(name);
        assert!(!build_only, "build tool {name} in Depends: {depends}");
    }

    // Maintainer scripts: never start or enable on a fresh install; restart on upgrade only if
    // running; on removal (not upgrade) stop, then detach.
    let postinst = deb_control(&deb, "postinst");
    assert!(postinst.contains("try-restart"), "postinst:\n{postinst}");
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "postinst starts the unit:\n{postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "postinst:\n{postinst}");
    let prerm = deb_control(&deb, "prerm");
    let stop = prerm
        .find("deb-systemd-invoke stop")
        .unwrap_or_else(|| panic!("prerm:\n{prerm}"));
    let detach = prerm
        .find(&format!("{} detach", pkg.daemon()))
        .unwrap_or_else(|| panic!("prerm does not detach:\n{prerm}"));
    assert!(
        stop < detach,
        "prerm must stop the unit before detaching:\n{prerm}"
    );
    // Hitless upgrades: the unit is stopped on removal only, never for an upgrade.
    let stop_line = prerm[..stop].lines().last().unwrap_or_default().to_owned()
        + prerm[stop..].lines().next().unwrap_or_default();
    let guard = prerm[..stop]
        .lines()
        .rev()
        .find(|l| l.contains("if "))
        .unwrap_or_default();
    assert!(
        guard.contains("\"$1\" = remove"),
        "prerm stops the unit outside removal ({stop_line}):\n{prerm}"
    );
    assert!(
        prerm.contains("if [ \"$1\" = remove ]"),
        "detach on removal only:\n{prerm}"
    );
    let postrm = deb_control(&deb, "postrm");
    assert!(
        postrm.contains("deb-systemd-helper purge"),
        "postrm:\n{postrm}"
    );
    for (name, script) in [
        ("postinst", &postinst),
        ("prerm", &prerm),
        ("postrm", &postrm),
    ] {
        let path = target_dir()
            .join("packaging-test")
            .join(format!("{}.{name}", pkg.name));
        fs::write(&path, script).unwrap();
        run(&mut cmd("sh", &["-n", path.to_str().unwrap()]));
        fs::remove_file(path).unwrap();
    }
}

fn check_rpm_metadata(pkg: &Pkg) {
    let rpm = package(pkg, Format::Rpm, 1);
    let version = rpm_query(&rpm, &["--qf", "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}"]);
    assert_eq!(
        version,
        format!("{} {}-1 x86_64", pkg.name, env!("CARGO_PKG_VERSION"))
    );

    let entries = rpm_query(&rpm, &["--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]"]);
    let (dirs, files): (Vec<&str>, Vec<&str>) = entries.lines().partition(|l| l.starts_with('d'));
    let files: BTreeSet<String> = files
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect();
    assert_eq!(
        pkg.without_subcommand_pages(&files),
        pkg.files(Format::Rpm),
        "files of {}",
        rpm.display()
    );
    // It owns its directories, so erasing the last owner removes them.
    let dirs: BTreeSet<&str> = dirs.iter().map(|l| l.split_once(' ').unwrap().1).collect();
    for dir in [
        "/etc/xdplb".to_owned(),
        format!("/usr/share/doc/{}", pkg.name),
        format!("/usr/share/licenses/{}", pkg.name),
    ] {
        assert!(dirs.contains(dir.as_str()), "{dir} not owned: {dirs:?}");
    }

    // %config(noreplace): rpm prints the flags as "cn".
    let flags = rpm_query(&rpm, &["--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]);
    for conf in pkg.conffiles {
        let line = flags
            .lines()
            .find(|l| l.starts_with(&format!("{conf} ")))
            .unwrap();
        assert!(
            line.ends_with(" cn"),
            "{conf} is not %config(noreplace): {line}"
        );
    }

    // The license: the tag, and the text marked %license (rpm prints the flag as "l"), which
    // rpm installs even with --excludedocs.
    assert_eq!(
        rpm_query(&rpm, &["--qf", "%{LICENSE}"]),
        "Apache-2.0 AND (GPL-2.0-only OR BSD-2-Clause)"
    );
    for text in [
        "LICENSE",
        "GPL-2.0-only.txt",
        "BSD-2-Clause.txt",
        "third-party-licenses.txt",
    ] {
        let license = format!("/usr/share/licenses/{}/{text}", pkg.name);
        assert!(
            flags.lines().any(|l| l == format!("{license} l")),
            "{license} is not %license:\n{flags}"
        );
    }

    let requires = rpm_query(&rpm, &["--requires"]);
    let deb = package(pkg, Format::Deb, 1);
    for soname in needed_sonames(pkg, &deb) {
        let wanted = format!("{soname}()(64bit)");
        assert!(
            requires.lines().any(|l| l.trim() == wanted),
            "{wanted} missing from Requires:\n{requires}"
        );
    }
    assert!(
        requires.lines().any(|l| l.trim() == "/usr/bin/kill"),
        "Requires:\n{requires}"
    );
    // The oldest C library the targets have: RHEL 9 ships glibc 2.34 (Ubuntu 22.04 2.35,
    // Debian 12 2.36). A newer symbol version would make the packages uninstallable there.
    let newest = requires
        .lines()
        .filter_map(|l| l.trim().strip_prefix("libc.so.6(GLIBC_"))
        .filter_map(|v| v.strip_suffix(")(64bit)"))
        .map(|v| {
            v.split('.')
                .map(|n| n.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap();
    assert!(
        newest <= vec![2, 34],
        "needs glibc {newest:?}, newer than RHEL 9's 2.34:\n{requires}"
    );
    assert!(!requires.contains("-devel"), "Requires:\n{requires}");

    let scripts = rpm_query(&rpm, &["--scripts"]);
    let preun = scripts
        .split("preuninstall scriptlet")
        .nth(1)
        .unwrap_or_else(|| panic!("{scripts}"));
    assert!(
        preun.contains(&format!("{} detach", pkg.daemon())),
        "scripts:\n{scripts}"
    );
    assert!(
        preun.contains("if [ \"$1\" -eq 0 ]"),
        "detach on erase only:\n{scripts}"
    );
    assert!(
        scripts.contains("systemctl try-restart"),
        "scripts:\n{scripts}"
    );
    for line in scripts
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("systemctl"))
    {
        let starts =
            line.contains(" enable") || line.contains(" start ") || line.contains(" preset");
        assert!(!starts, "a scriptlet enables or starts the unit: {line}");
    }
}

#[test]
fn director_deb_metadata() {
    check_deb_metadata(&DIRECTOR);
}

#[test]
fn redirector_deb_metadata() {
    check_deb_metadata(&REDIRECTOR);
}

#[test]
fn director_rpm_metadata() {
    check_rpm_metadata(&DIRECTOR);
}

#[test]
fn redirector_rpm_metadata() {
    check_rpm_metadata(&REDIRECTOR);
}

#[test]
fn debs_are_lintian_clean() {
    for pkg in [&DIRECTOR, &REDIRECTOR] {
        let deb = package(pkg, Format::Deb, 1);
        // Errors and warnings fail; every override in packaging/lintian/ says why it applies.
        let out = run(&mut cmd(
            "lintian",
            &[
                "--fail-on",
                "error,warning",
                "--display-info",
                "--allow-root",
                deb.to_str().unwrap(),
            ],
        ));
        eprintln!("lintian {}:\n{out}", pkg.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Installing, upgrading, removing

/// Checks that hold in a root where `pkg` is installed (either format).
fn check_installed(root: &Root, pkg: &Pkg) {
    for (file, _) in pkg.binaries {
        let version = run(&mut root.chroot(&[file, "--version"]));
        assert!(
            version.contains(env!("CARGO_PKG_VERSION")),
            "{file} --version: {version}"
        );
        let help = run(&mut root.chroot(&[file, "--help"]));
        assert!(help.contains("Usage"), "{file} --help: {help}");
    }
    let daemon_help = run(&mut root.chroot(&[pkg.daemon(), "--help"]));
    for sub in pkg.subcommand_pages {
        assert!(
            daemon_help.contains(sub),
            "{} --help lacks {sub}: {daemon_help}",
            pkg.daemon()
        );
    }
    // The units as installed, against the installed binaries (man pages checked elsewhere).
    for unit in pkg.units() {
        let verify = run(&mut root.chroot(&["systemd-analyze", "verify", "--man=no", &unit]));
        assert!(
            verify.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{verify}"
        );
    }
    // Completions parse.
    for (bin, _) in pkg.binaries {
        let name = bin.rsplit('/').next().unwrap();
        run(&mut root.chroot(&[
            "bash",
            "-n",
            &format!("/usr/share/bash-completion/completions/{name}"),
        ]));
    }
    // Safe as shipped: the director's example defines no service (nothing to steer), and it
    // is valid, so enabling the unit early does no harm.
    if pkg.name == DIRECTOR.name {
        run(&mut root.chroot(&["tablegen", "check"]));
        // Reads the shipped director.yaml (all defaults: no interface) and finds nothing
        // loaded: there is no bpffs in the root.
        let status = run(&mut root.chroot(&["xdplb-director", "status"]));
        assert!(
            status.contains("not loaded"),
            "xdplb-director status: {status}"
        );
        // The shipped controller.yaml is valid as it is.
        run(&mut root.chroot(&["xdplb-controller", "check"]));
    }
    // Installed, not enabled.
    for name in std::iter::once(pkg.name).chain(pkg.extra_units.iter().copied()) {
        let wants = format!("/etc/systemd/system/multi-user.target.wants/{name}.service");
        assert!(
            !root.exists(&wants),
            "{wants} exists: the unit was enabled on install"
        );
    }
}

const LOCAL_EDIT: &str = "\n# edited by the operator\n";

fn edit_config(root: &Root, pkg: &Pkg) -> String {
    let conf = pkg.conffiles.last().unwrap();
    let mut text = fs::read_to_string(root.file(conf)).unwrap();
    text.push_str(LOCAL_EDIT);
    fs::write(root.file(conf), &text).unwrap();
    text
}

fn deb_lifecycle(pkg: &Pkg) {
    let root = Root::new(&format!("{}-deb", pkg.name));
    let before = root.snapshot();
    let rev1 = package(pkg, Format::Deb, 1);
    let rev2 = package(pkg, Format::Deb, 2);
    for deb in [&rev1, &rev2] {
        fs::copy(deb, root.file("/tmp").join(deb.file_name().unwrap())).unwrap();
    }
    let in_root = |deb: &Path| format!("/tmp/{}", deb.file_name().unwrap().to_str().unwrap());

    // Install: dpkg itself checks that the Depends are satisfiable from Debian's own packages.
    let out = run(&mut root.chroot(&["dpkg", "-i", &in_root(&rev1)]));
    assert_scripts_clean("install", &out);
    assert!(out.contains("installed, not enabled"), "install:\n{out}");
    check_installed(&root, pkg);
    check_license(&root, pkg, Format::Deb);

    // The operator edits a config and enables the unit; an upgrade keeps both.
    let edited = edit_config(&root, pkg);
    run(&mut root.chroot(&["systemctl", "enable", pkg.name]));
    let out = run(&mut root.chroot(&["dpkg", "-i", &in_root(&rev2)]));
    assert_scripts_clean("upgrade", &out);
    let version = query(&mut root.chroot(&["dpkg-query", "-W", "-f", "${Version}", pkg.name]));
    assert_eq!(version, format!("{}-2", env!("CARGO_PKG_VERSION")));
    let conf = pkg.conffiles.last().unwrap();
    assert_eq!(
        fs::read_to_string(root.file(conf)).unwrap(),
        edited,
        "{conf} after upgrade"
    );
    assert!(
        !root.exists(&format!("{conf}.dpkg-new")) && !root.exists(&format!("{conf}.dpkg-dist"))
    );
    let wants = format!(
        "/etc/systemd/system/multi-user.target.wants/{}.service",
        pkg.name
    );
    assert!(root.exists(&wants), "upgrade disabled the unit");
    check_installed_after_upgrade(&root, pkg);

    // Remove: binaries and unit go, the configuration stays (policy), detach ran.
    let out = run(&mut root.chroot(&["dpkg", "-r", pkg.name]));
    assert_scripts_clean("remove", &out);
    for (bin, _) in pkg.binaries {
        assert!(!root.exists(bin), "{bin} left after remove");
    }
    for unit in pkg.units() {
        assert!(!root.exists(&unit), "{unit} left after remove");
    }
    for conf in pkg.conffiles {
        assert!(root.exists(conf), "{conf} removed before purge");
    }

    // Purge: nothing left but the package managers' own records.
    let out = run(&mut root.chroot(&["dpkg", "-P", pkg.name]));
    assert_scripts_clean("purge", &out);
    for deb in [&rev1, &rev2] {
        fs::remove_file(root.file(&in_root(deb))).unwrap();
    }
    let after = root.snapshot();
    let left: Vec<_> = after.difference(&before).collect();
    let gone: Vec<_> = before.difference(&after).collect();
    assert!(
        left.is_empty() && gone.is_empty(),
        "after purge: left {left:?}, removed {gone:?}"
    );
    assert!(
        root.mounts().is_empty(),
        "mounts left in the root: {:?}",
        root.mounts()
    );
}

/// The license as installed: a .deb's machine-readable (DEP-5) copyright file names it and points
/// at the text in /usr/share/common-licenses (Debian policy 12.5); an .rpm ships the text itself.
fn check_license(root: &Root, pkg: &Pkg, format: Format) {
    match format {
        Format::Deb => {
            let path = format!("/usr/share/doc/{}/copyright", pkg.name);
            let copyright = fs::read_to_string(root.file(&path)).unwrap();
            assert!(
                copyright.starts_with(
                    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                ),
                "{path} is not DEP-5:\n{copyright}"
            );
            for line in [
                "Files: *",
                "License: Apache-2.0",
                " can be found in \"/usr/share/common-licenses/Apache-2.0\".",
                // the BPF programs built into the binaries
                "Files: bpf/*",
                "License: GPL-2 or BSD-2-clause",
                " in \"/usr/share/common-licenses/GPL-2\".",
                "License: BSD-2-clause",
            ] {
                assert!(
                    copyright.lines().any(|l| l == line),
                    "{path} lacks {line:?}:\n{copyright}"
                );
            }
            assert!(root.exists("/usr/share/common-licenses/Apache-2.0"));
            assert!(root.exists("/usr/share/common-licenses/GPL-2"));
            let path = format!("/usr/share/doc/{}/third-party-licenses.txt.gz", pkg.name);
            let out = run(&mut cmd("zcat", &[root.file(&path).to_str().unwrap()]));
            check_third_party(&path, &out);
        }
        Format::Rpm => {
            for (installed, source) in [
                ("LICENSE", "LICENSE"),
                ("GPL-2.0-only.txt", "LICENSES/GPL-2.0-only.txt"),
                ("BSD-2-Clause.txt", "LICENSES/BSD-2-Clause.txt"),
            ] {
                let path = format!("/usr/share/licenses/{}/{installed}", pkg.name);
                assert_eq!(
                    fs::read_to_string(root.file(&path)).unwrap(),
                    fs::read_to_string(workspace().join(source)).unwrap(),
                    "{path}"
                );
            }
            let path = format!("/usr/share/licenses/{}/third-party-licenses.txt", pkg.name);
            check_third_party(&path, &fs::read_to_string(root.file(&path)).unwrap());
        }
    }
}

/// The licences of the crates a package's binaries link: libbpf-rs (every binary loads BPF
/// with it) with its licence and the texts.
fn check_third_party(path: &str, text: &str) {
    assert!(
        text.starts_with("Third-party software in xdplb-"),
        "{path}:\n{}",
        &text[..text.len().min(300)]
    );
    let at = text
        .find("\nlibbpf-rs ")
        .unwrap_or_else(|| panic!("{path} does not list libbpf-rs"));
    assert!(
        text[at..].lines().nth(2) == Some("  License: LGPL-2.1-only OR BSD-2-Clause"),
        "{path}: libbpf-rs's licence"
    );
    assert!(
        text.contains("\n======== text 1 ========\n"),
        "{path}: no licence texts"
    );
}

fn check_installed_after_upgrade(root: &Root, pkg: &Pkg) {
    let version = run(&mut root.chroot(&[pkg.daemon(), "--version"]));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

fn rpm_lifecycle(pkg: &Pkg) {
    // rpm into a Debian root: there is no RHEL root here, and the scriptlets need a shell.
    // --nodeps since the root's rpm database knows none of Debian's libraries; the
    // Requires themselves are checked by check_rpm_metadata.
    let root = Root::new(&format!("{}-rpm", pkg.name));
    let before = root.snapshot();
    let rpm = |args: &[&str]| {
        // Debian's rpm keeps its database in ~/.rpmdb; put it where RHEL does.
        let mut c = cmd(
            "rpm",
            &[
                "--root",
                root.path.to_str().unwrap(),
                "--dbpath",
                "/var/lib/rpm",
            ],
        );
        c.args(args);
        c
    };
    run(&mut rpm(&["--initdb"]));
    let rev1 = package(pkg, Format::Rpm, 1);
    let rev2 = package(pkg, Format::Rpm, 2);

    let out = run(&mut rpm(&["-i", "--nodeps", rev1.to_str().unwrap()]));
    assert_scripts_clean("install", &out);
    assert!(out.contains("installed, not enabled"), "install:\n{out}");
    run(&mut rpm(&["-V", "--nodeps", pkg.name]));
    check_installed(&root, pkg);
    check_license(&root, pkg, Format::Rpm);

    let edited = edit_config(&root, pkg);
    let out = run(&mut rpm(&["-U", "--nodeps", rev2.to_str().unwrap()]));
    assert_scripts_clean("upgrade", &out);
    let version = query(&mut rpm(&["-q", "--qf", "%{VERSION}-%{RELEASE}", pkg.name]));
    assert_eq!(version, format!("{}-2", env!("CARGO_PKG_VERSION")));
    let conf = pkg.conffiles.last().unwrap();
    assert_eq!(
        fs::read_to_string(root.file(conf)).unwrap(),
        edited,
        "{conf} after upgrade"
    );
    assert!(!root.exists(&format!("{conf}.rpmnew")));
    check_installed_after_upgrade(&root, pkg);

    // Erase: everything goes but the edited config, kept as .rpmsave (rpm's policy).
    let out = run(&mut rpm(&["-e", "--nodeps", pkg.name]));
    assert_scripts_clean("erase", &out);
    let after = root.snapshot();
    let left: BTreeSet<String> = after.difference(&before).cloned().collect();
    let gone: Vec<_> = before.difference(&after).collect();
    let kept: BTreeSet<String> = ["/etc/xdplb".to_owned(), format!("{conf}.rpmsave")].into();
    assert!(
        left == kept && gone.is_empty(),
        "after erase: left {left:?} (allowed {kept:?}), removed {gone:?}"
    );
    assert!(
        root.mounts().is_empty(),
        "mounts left in the root: {:?}",
        root.mounts()
    );
}

#[test]
fn director_deb_install_upgrade_remove_purge() {
    deb_lifecycle(&DIRECTOR);
}

#[test]
fn redirector_deb_install_upgrade_remove_purge() {
    deb_lifecycle(&REDIRECTOR);
}

#[test]
fn director_rpm_install_upgrade_erase() {
    rpm_lifecycle(&DIRECTOR);
}

#[test]
fn redirector_rpm_install_upgrade_erase() {
    rpm_lifecycle(&REDIRECTOR);
}

// ---------------------------------------------------------------------------------------------
// The units under a real systemd

/// A bpffs of our own under /run, unmounted on drop: the container's /sys/fs/bpf. Never the
/// host's, so nothing here can touch a real deployment's pins.
#[derive(Debug)]
struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    fn new() -> Bpffs {
        let dir = PathBuf::from(format!(
            "/run/xdplb-packaging-test-{}/bpffs",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        run(&mut cmd(
            "mount",
            &["-t", "bpf", "bpf", dir.to_str().unwrap()],
        ));
        Bpffs { dir }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_dir(self.dir.parent().unwrap());
    }
}

/// What runs inside the container once both daemons are up; every line it prints is checked.
const UNIT_CHECKS: &str = r#"#!/bin/sh
exec >/xdplb-check.log 2>&1
for u in xdplb-director xdplb-redirector; do
  echo "$u start: $(systemctl is-active $u) $(systemctl show -p Type --value $u)"
  systemctl reload $u
  echo "$u reload: $(systemctl is-active $u)"
done
systemctl stop xdplb-director xdplb-redirector
for d in director redirector; do
  [ -e /sys/fs/bpf/xdplb/$d/prog ] && echo "$d pinned after stop"
done
xdplb-director status | grep -q 'interface lo' && echo "director attached after stop"
xdplb-redirector status | grep -q 'interface lo: attached' && echo "redirector attached after stop"
systemctl start xdplb-director xdplb-redirector
for u in xdplb-director xdplb-redirector; do
  echo "$u restart: $(systemctl is-active $u)"
done
DEBIAN_FRONTEND=noninteractive dpkg -r xdplb-director xdplb-redirector
for d in director redirector; do
  [ -e /sys/fs/bpf/xdplb/$d ] || echo "$d detached on remove"
done
for u in xdplb-director xdplb-redirector; do
  echo "$u journal:"
  journalctl -b -u $u --no-pager -o cat
done
systemctl poweroff
"#;

/// Boots the installed packages' units under systemd (systemd-nspawn, own network namespace:
/// the programs attach to the container's `lo`), and checks what only a real systemd shows:
/// `Type=notify` readiness, the sandbox letting the daemons pin and attach, reload, a stop that
/// leaves the programs attached and pinned, a start that adopts them, and a removal that
/// detaches them.
#[test]
fn units_run_under_systemd() {
    let root = Root::new("nspawn");
    for pkg in [&DIRECTOR, &REDIRECTOR] {
        let deb = package(pkg, Format::Deb, 1);
        let inside = format!("/tmp/{}", deb.file_name().unwrap().to_str().unwrap());
        fs::copy(&deb, root.file(&inside)).unwrap();
        run(&mut root.chroot(&["dpkg", "-i", &inside]));
        fs::remove_file(root.file(&inside)).unwrap();
    }
    fs::write(
        root.file("/etc/xdplb/director.yaml"),
        "interfaces: [lo]\nxdp_mode: generic\n",
    )
    .unwrap();
    fs::write(
        root.file("/etc/xdplb/redirector.yaml"),
        "interfaces: [lo]\nallowed_sources: [127.0.0.0/8]\n",
    )
    .unwrap();
    fs::write(root.file("/xdplb-check.sh"), UNIT_CHECKS).unwrap();
    fs::write(
        root.file("/etc/systemd/system/xdplb-check.service"),
        "[Unit]\nAfter=xdplb-director.service xdplb-redirector.service\n\
         [Service]\nType=oneshot\nExecStart=/bin/sh /xdplb-check.sh\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    run(&mut root.chroot(&[
        "systemctl",
        "enable",
        "xdplb-director",
        "xdplb-redirector",
        "xdplb-check",
    ]));

    let bpffs = Bpffs::new();
    let machine = format!("xdplb-pkgtest-{}", std::process::id());
    let boot = run(&mut cmd(
        "timeout",
        &[
            "180",
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--private-network",
            &format!("--machine={machine}"),
            &format!("--directory={}", root.path.display()),
            &format!("--bind={}:/sys/fs/bpf", bpffs.dir.display()),
            "--capability=CAP_BPF,CAP_PERFMON,CAP_SYS_ADMIN,CAP_NET_ADMIN",
            "--system-call-filter=bpf perf_event_open",
        ],
    ));
    let log = fs::read_to_string(root.file("/xdplb-check.log"))
        .unwrap_or_else(|e| panic!("no check log ({e}); the boot said:\n{boot}"));
    for expected in [
        "xdplb-director start: active notify",
        "xdplb-redirector start: active notify",
        "xdplb-director reload: active",
        "xdplb-redirector reload: active",
        "director pinned after stop",
        "redirector pinned after stop",
        "director attached after stop",
        "redirector attached after stop",
        "xdplb-director restart: active",
        "xdplb-redirector restart: active",
        "director detached on remove",
        "redirector detached on remove",
    ] {
        assert!(
            log.lines().any(|l| l == expected),
            "{expected:?} missing from:\n{log}"
        );
    }
    assert_scripts_clean("remove under systemd", &log);
    drop(bpffs);
}
