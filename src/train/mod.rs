//! Training the student on a manifest: [`data`] (batches from the shards), [`schedule`]
//! (learning rate, mask ratio, per-step random streams), [`optim`] (AdamW, clipping, EMA),
//! [`checkpoint`] (atomic safetensors + state), [`trainer`] (the loop) and [`config`].

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{train, TrainOptions, TrainSummary, Trainer};

/// `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
pub fn device(name: &str) -> crate::error::Result<candle_core::Device> {
    let bad = |m: String| crate::error::Error::invalid("--device", m);
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ord: usize =
                n.strip_prefix("cuda:").map_or(Ok(0), str::parse).map_err(|_| bad(format!("{n}: expected cuda:N")))?;
            if !candle_core::utils::cuda_is_available() {
                return Err(bad(format!("{n}: this build has no CUDA support (rebuild with --features cuda)")));
            }
            candle_core::Device::new_cuda(ord).map_err(|e| bad(format!("{n}: {e}")))
        }
        other => Err(bad(format!("{other}: expected cpu, cuda or cuda:N"))),
    }
}
