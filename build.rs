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
}
