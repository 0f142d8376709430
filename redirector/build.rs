//! Compiles `bpf/redirector.bpf.c` into a libbpf-rs skeleton in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "../bpf/redirector.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    // <asm/types.h> and friends live in the target's multiarch directory on Debian/Ubuntu;
    // RHEL keeps them in /usr/include, which clang searches anyway.
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("no multiarch include directory known for {other}"),
    };
    SkeletonBuilder::new()
        .source(SRC)
        // The object itself too: a test reads its BTF (src/counters.rs).
        .obj(out.join("redirector.bpf.o"))
        .clang_args([
            "-I../bpf/include",
            &format!("-I/usr/include/{multiarch}"),
            "-O2",
            "-g",
            "-Wall",
            // BPF ISA v3 (kernel 5.1+), as the director (see director/build.rs).
            "-mcpu=v3",
        ])
        .build_and_generate(out.join("redirector.skel.rs"))
        .expect("compile bpf/redirector.bpf.c (needs clang and libbpf-dev headers)");
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=../bpf/include");
}
