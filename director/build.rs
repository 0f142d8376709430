//! Compiles bpf/director.bpf.c into a libbpf skeleton in OUT_DIR, and the bench-only
//! bpf/bench/director_bench.bpf.c and bpf/bench/bare_forwarder.bpf.c and the test-only
//! bpf/test/director_paths.bpf.c into objects beside it.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let src = "../bpf/director.bpf.c";
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("director.skel.rs");
    let clang_args = bpf_build::clang_args(&["../bpf/include"]);
    SkeletonBuilder::new()
        .source(src)
        // The object itself too: the daemon loads it with ObjectBuilder (owned, no lifetimes).
        .obj(out_dir.join("director.bpf.o"))
        .clang_args(clang_args.clone())
        .build_and_generate(&out)
        .expect("compile bpf/director.bpf.c (clang and libbpf headers must be installed)");
    // The bench-only entry points (benches/datapath.rs): the same program plus a frame restore.
    let bench = "../bpf/bench/director_bench.bpf.c";
    SkeletonBuilder::new()
        .source(bench)
        .obj(out_dir.join("director_bench.bpf.o"))
        .clang_args(clang_args.clone())
        .build()
        .expect("compile bpf/bench/director_bench.bpf.c");
    // The bench's yardstick: a bare keyed-hash GUE forwarder (see the file).
    let bare = "../bpf/bench/bare_forwarder.bpf.c";
    SkeletonBuilder::new()
        .source(bare)
        .obj(out_dir.join("bare_forwarder.bpf.o"))
        .clang_args(clang_args.clone())
        .build()
        .expect("compile bpf/bench/bare_forwarder.bpf.c");
    // The test-only entry points (tests/fast_path.rs): the fast path held to the general one.
    let paths = "../bpf/test/director_paths.bpf.c";
    SkeletonBuilder::new()
        .source(paths)
        .obj(out_dir.join("director_paths.bpf.o"))
        .clang_args(clang_args)
        .build()
        .expect("compile bpf/test/director_paths.bpf.c");
    println!("cargo:rerun-if-changed=../bpf/bench");
    println!("cargo:rerun-if-changed=../bpf/test");
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=../bpf/include");
}
