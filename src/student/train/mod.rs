//! Training the student on a manifest: [`data`] (batches from the shards), [`schedule`]
//! (learning rate, mask ratio, per-step random streams), [`optim`] (AdamW, clipping, EMA),
//! [`checkpoint`] (atomic safetensors + state), [`trainer`] (one step), [`draws`] (its random
//! choices), [`run`] (the loop around it), [`metrics`] (metrics.jsonl and its plots) and
//! [`config`].

pub mod checkpoint;
pub mod codes;
pub mod config;
pub mod data;
pub mod dpo;
pub mod draws;
pub mod fused;
pub mod init;
pub mod labels;
pub mod metrics;
pub mod objects;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod timesteps;
pub mod trainer;

#[cfg(test)]
mod binding_tests;
#[cfg(test)]
mod learning_tests;

pub use config::TrainConfig;
pub use run::{train, TrainOptions, TrainSummary};
pub use trainer::Trainer;

/// libtorch's CUDA backend registers itself when `libtorch_cuda.so` loads. The binary does
/// not link it, since a CPU machine lacks the CUDA libraries it needs; it is loaded here, from
/// the loader path (the rpath, or `LD_LIBRARY_PATH` pointing at a GPU machine's torch/lib),
/// when CUDA is asked for. Returns why it could not be loaded.
pub fn load_cuda_backend() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
            let built = concat!(env!("LIGHTGEN_LIBTORCH_PATH"), "/lib/libtorch_cuda.so");
            let mut why = Vec::new();
            for name in ["libtorch_cuda.so", built] {
                // SAFETY: loading libtorch's own CUDA library runs its static initialisers,
                // which register the CUDA hooks with the libtorch_cpu already loaded.
                match unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) } {
                    Ok(lib) => {
                        std::mem::forget(lib); // stays loaded for the process
                        return Ok(());
                    }
                    Err(e) => why.push(std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())),
                }
            }
            Err(why.join("; "))
        })
        .clone()
}

/// `cpu`, `cuda` or `cuda:N` (CUDA when libtorch sees a GPU: the CUDA library of libtorch on a
/// machine with a driver).
pub fn device(name: &str) -> crate::error::Result<tch::Device> {
    let bad = |m: String| crate::error::Error::invalid("--device", m);
    match name {
        "cpu" => Ok(tch::Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ord: usize =
                n.strip_prefix("cuda:").map_or(Ok(0), str::parse).map_err(|_| bad(format!("{n}: expected cuda:N")))?;
            let loaded = load_cuda_backend();
            if !tch::Cuda::is_available() {
                let why = loaded.err().unwrap_or_else(|| "no driver or no GPU".into());
                return Err(bad(format!("{n}: libtorch sees no CUDA device here ({why})")));
            }
            let count = tch::Cuda::device_count() as usize;
            if ord >= count {
                return Err(bad(format!("{n}: only {count} CUDA device(s)")));
            }
            Ok(tch::Device::Cuda(ord))
        }
        other => Err(bad(format!("{other}: expected cpu, cuda or cuda:N"))),
    }
}
