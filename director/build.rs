//! Compiles bpf/director.bpf.c into a libbpf skeleton in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let src = "../bpf/director.bpf.c";
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("director.skel.rs");
    // The multiarch include dir holds <asm/types.h> for the target, which the uapi headers need.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => panic!("no multiarch include dir known for {other}"),
    };
    SkeletonBuilder::new()
        .source(src)
        // The object itself too: the daemon loads it with ObjectBuilder (owned, no lifetimes).
        .obj(out_dir.join("director.bpf.o"))
        .clang_args([
            "-I../bpf/include".to_string(),
            format!("-I/usr/include/{multiarch}"),
            "-O2".into(),
            "-g".into(),
            "-Wall".into(),
        ])
        .build_and_generate(&out)
        .expect("compile bpf/director.bpf.c (clang and libbpf headers must be installed)");
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=../bpf/include");
}
