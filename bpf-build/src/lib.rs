//! What the build scripts (`director/build.rs`, `redirector/build.rs`, `lab/build.rs`) share to
//! compile BPF C with clang: where the target's `<asm/types.h>` lives, and the flags every
//! object is built with. A build-dependency only: no dependencies of its own, nothing at run
//! time.

use std::env;

/// Debian/Ubuntu's multiarch directory under /usr/include for a Rust target (its
/// `CARGO_CFG_TARGET_ARCH` and `CARGO_CFG_TARGET_ENDIAN`). The uapi headers the BPF programs
/// include need `<asm/types.h>`, which lives there; RHEL keeps it in /usr/include, which clang
/// searches anyway. None for an architecture we know no directory for.
pub fn multiarch_for(arch: &str, endian: &str) -> Option<&'static str> {
    Some(match (arch, endian) {
        ("x86_64", _) => "x86_64-linux-gnu",
        ("aarch64", _) => "aarch64-linux-gnu",
        ("riscv64", _) => "riscv64-linux-gnu",
        ("powerpc64", "little") => "powerpc64le-linux-gnu",
        ("powerpc64", _) => "powerpc64-linux-gnu",
        ("s390x", _) => "s390x-linux-gnu",
        _ => return None,
    })
}

/// `/usr/include/<multiarch>` for the target cargo is building for. Panics (the build script's
/// way of failing) on an architecture without a known directory.
pub fn multiarch_include() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_else(|_| "little".into());
    match multiarch_for(&arch, &endian) {
        Some(dir) => format!("/usr/include/{dir}"),
        None => panic!("no multiarch include directory known for {arch} ({endian} endian)"),
    }
}

/// The clang flags for a BPF object: `includes` first, then the target's multiarch directory,
/// optimised (the verifier needs it), with BTF (`-g`), all warnings. BPF ISA v3 (kernel 5.1+):
/// 32-bit subregisters and jumps. Clang 14 defaults to v1, whose code zero-extends every 32-bit
/// value with two shifts and compares in 64 bits: v3 is 2 to 3 ns less per packet in the
/// director (docs/development/director-datapath.md).
pub fn clang_args(includes: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = includes.iter().map(|i| format!("-I{i}")).collect();
    args.push(format!("-I{}", multiarch_include()));
    args.extend(["-O2", "-g", "-Wall", "-mcpu=v3"].map(String::from));
    args
}

#[cfg(test)]
mod tests {
    use super::multiarch_for;

    #[test]
    fn known_targets_and_the_endianness_of_powerpc() {
        assert_eq!(multiarch_for("x86_64", "little"), Some("x86_64-linux-gnu"));
        assert_eq!(
            multiarch_for("aarch64", "little"),
            Some("aarch64-linux-gnu")
        );
        assert_eq!(
            multiarch_for("powerpc64", "little"),
            Some("powerpc64le-linux-gnu")
        );
        assert_eq!(
            multiarch_for("powerpc64", "big"),
            Some("powerpc64-linux-gnu")
        );
        assert_eq!(multiarch_for("mips", "big"), None);
    }
}
