//! Links the binary so that it finds libtorch (and its CUDA half) with no `LD_LIBRARY_PATH`.
//!
//! rustc passes `--as-needed` to the linker, which drops `libtorch.so` (and with it
//! `libtorch_cuda.so`) because no symbol is taken from it directly; CUDA is then never
//! found at run time. `--no-as-needed -ltorch` keeps it, and an rpath to libtorch's `lib`
//! folder lets the loader find it.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(libtorch) = env::var("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
