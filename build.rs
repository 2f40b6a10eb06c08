//! Records the git commit the binary was built from (for manifest lineage), and where libtorch
//! is: the binaries get an rpath to its libraries (and to the CUDA runtime and CUPTI that the
//! PyPI build of libtorch needs even on a CPU), so they run without LD_LIBRARY_PATH.
use std::path::{Path, PathBuf};

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LIGHTGEN_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(torch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:rustc-env=LIGHTGEN_LIBTORCH_VERSION=unknown");
        println!("cargo:rustc-env=LIGHTGEN_LIBTORCH_PATH=unknown");
        return;
    };
    // The real folder, so the rpath survives the target/libtorch symlink being re-pointed.
    let torch = torch.canonicalize().unwrap_or(torch);
    let version = std::fs::read_to_string(torch.join("version.py"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches('\'').to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LIGHTGEN_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=LIGHTGEN_LIBTORCH_PATH={}", torch.display());
    let mut dirs = vec![torch.join("lib")];
    if let Some(site) = torch.parent() {
        dirs.push(site.join("nvidia/cu13/lib"));
    }
    for d in dirs.iter().filter(|d| Path::new(d).is_dir()) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", d.display());
    }
    c10d_shim(&torch);
}

/// Compiles the C ABI over libtorch's c10d (TCPStore, ProcessGroupGloo) that data-parallel
/// training calls. The wheel has libtorch's c10d headers but not Gloo's: every `<gloo/*.h>`
/// that `ProcessGroupGloo.hpp` includes is pointed at the shim's own declarations.
fn c10d_shim(torch: &Path) {
    let shim = Path::new("src/student/dist");
    println!("cargo:rerun-if-changed={}", shim.join("c10d.cpp").display());
    println!("cargo:rerun-if-changed={}", shim.join("gloo_decls.h").display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let inc = out.join("gloo-include");
    let decls = shim.join("gloo_decls.h").canonicalize().expect("src/student/dist/gloo_decls.h exists");
    for h in ["algorithm.h", "config.h", "context.h", "common/error.h", "rendezvous/store.h", "transport/device.h"] {
        let p = inc.join("gloo").join(h);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("OUT_DIR is writable");
        std::fs::write(&p, format!("#include \"{}\"\n", decls.display())).expect("OUT_DIR is writable");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(shim.join("c10d.cpp"))
        .include(&inc)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("lightgen_c10d");
    fused_shim(torch);
}

/// Compiles the C ABI over libtorch's fused optimizer kernels (`_fused_adamw_`, `_foreach_*`),
/// which tch does not bind.
fn fused_shim(torch: &Path) {
    let src = Path::new("src/student/train/fused.cpp");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=src/student/ffi/shim.h");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(src)
        .include(torch.join("include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("lightgen_fused");
}
