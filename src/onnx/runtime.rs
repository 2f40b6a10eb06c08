//! Finding and loading ONNX Runtime (`ort` with `load-dynamic`): the library named by the
//! config, else `ORT_DYLIB_PATH`, else one found next to the binary, in the system library
//! folders, or inside a Python `onnxruntime` install (the PyPI wheel ships one).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProvider;

/// The loaded runtime, once per process.
pub struct Runtime {
    pub env: Environment,
    pub library: PathBuf,
    /// e.g. `1.32.0`.
    pub version: String,
    /// Execution providers this build of ONNX Runtime has, e.g. `["CUDA", "CPU"]`.
    pub providers: Vec<&'static str>,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The runtime, loaded on first use from `configured` (or discovery). The first call decides
/// which library the process uses; a later call naming another one gets an error.
pub fn get(configured: Option<&Path>) -> Result<&'static Runtime, String> {
    let rt = RUNTIME.get_or_init(|| load(configured)).as_ref().map_err(Clone::clone)?;
    if let Some(p) = configured {
        if p != rt.library {
            return Err(format!(
                "ONNX Runtime is already loaded from {}; this process cannot also load {}",
                rt.library.display(),
                p.display()
            ));
        }
    }
    Ok(rt)
}

fn load(configured: Option<&Path>) -> Result<Runtime, String> {
    let library = match configured {
        Some(p) => p.to_path_buf(),
        None => find()?,
    };
    if !library.is_file() {
        return Err(format!("ONNX Runtime library {} does not exist", library.display()));
    }
    let builder =
        ort::init_from(&library).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?;
    let env = builder
        .with_name("lightgen")
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))?;
    let version = version_string(&library).or_else(|| version_of(ort::info())).unwrap_or_else(|| "unknown".into());
    let mut providers = Vec::new();
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        providers.push("CUDA");
    }
    providers.push("CPU");
    Ok(Runtime { env, library, version, providers })
}

/// The library's own `OrtGetApiBase()->GetVersionString()`, e.g. `1.32.0`.
fn version_string(library: &Path) -> Option<String> {
    // SAFETY: the library is ONNX Runtime (ort has just loaded it from this path, so loading it
    // again only takes a reference); OrtGetApiBase has this C signature in every release, and
    // the string it returns is static and NUL-terminated.
    unsafe {
        let lib = libloading::Library::new(library).ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase\0").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let v = ((*base).GetVersionString)();
        (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// `1.32.0` from a build-info string such as `ORT Build Info: git-branch=rel-1.32.0, …`.
fn version_of(info: &str) -> Option<String> {
    let rest = info.split("git-branch=").nth(1)?;
    let branch = rest.split([',', ' ']).next()?;
    Some(branch.trim_start_matches("rel-").to_string())
}

/// Where discovery looks, in order; the first library that exists wins.
pub fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("ORT_DYLIB_PATH={} is not a file", p.display())) };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        dirs.push(exe_dir.join("lib"));
        dirs.push(exe_dir);
    }
    for d in ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.extend(python_capi_dirs());
    for d in &dirs {
        if let Some(lib) = library_in(d) {
            return Ok(lib);
        }
    }
    Err(format!(
        "ONNX Runtime not found: set ORT_DYLIB_PATH to libonnxruntime.so, set generate.onnx.runtime, or \
         `pip install onnxruntime` (looked in {})",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    ))
}

/// `libonnxruntime.so` or its newest versioned name (`libonnxruntime.so.1.32.0`) in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join("libonnxruntime.so");
    if plain.is_file() {
        return Some(plain);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.")))
        .collect();
    found.sort();
    found.pop()
}

/// `onnxruntime/capi` of the Python installs on PATH (`python3`, then `python`).
fn python_capi_dirs() -> Vec<PathBuf> {
    let code = "import importlib.util as u, os; s = u.find_spec('onnxruntime'); \
                print(os.path.dirname(s.origin) if s and s.origin else '')";
    let mut out = Vec::new();
    for py in ["python3", "python"] {
        let Ok(o) = std::process::Command::new(py).args(["-c", code]).stderr(std::process::Stdio::null()).output()
        else {
            continue;
        };
        let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !dir.is_empty() {
            out.push(PathBuf::from(dir).join("capi"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
        assert_eq!(version_of(info).as_deref(), Some("1.32.0"));
        assert_eq!(version_of("nothing"), None);
    }

    #[test]
    fn versioned_library_names_are_found() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(library_in(d.path()), None);
        std::fs::write(d.path().join("libonnxruntime.so.1.32.0"), b"").unwrap();
        assert_eq!(library_in(d.path()), Some(d.path().join("libonnxruntime.so.1.32.0")));
    }
}
