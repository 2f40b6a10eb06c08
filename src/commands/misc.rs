//! `lightgen demo`, `doctor` and `schema`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{DistillArgs, StageArgs};
use lightgen::config::{Overrides, Plan};

/// `lightgen demo`: distill the shapes demo, then train and evaluate the tiny student.
pub fn demo(n: usize, steps: Option<u64>, progress: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let config = Path::new("configs/shapes-demo.toml").to_path_buf();
    anyhow::ensure!(config.exists(), "{}: run `lightgen demo` from the repository root", config.display());
    let stage = StageArgs {
        config,
        count: None,
        output_dir: None,
        show_config: false,
        force: false,
        json: false,
        threads: 0,
        wait: false,
    };
    let plan = Plan::load(&stage.config, &Overrides { count: None, output_dir: None })?;
    let run_dir = plan.run_dir.clone();
    let distill = DistillArgs { stage, store: None, worker: None, workers: None, allow_empty: false };
    super::data::distill_cmd(distill, progress)?;
    super::train::demo_rest(&run_dir, n, steps, progress, t0)?;
    Ok(())
}

/// `lightgen doctor`: what this binary can use here.
pub fn doctor() -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    outln!("lightgen  {} ({})", lightgen::VERSION, env!("LIGHTGEN_GIT_COMMIT"));
    outln!("cores     {cores} (image stages use one worker each unless --threads)");
    outln!("teachers  {}", lightgen::config::TEACHERS.join(", "));
    outln!("scorers   {}", lightgen::config::SCORERS.join(", "));
    outln!("tokenizer pixels; text encoder vocab");
    let builtins: Vec<String> = lightgen::taxonomy::BUILTIN.iter().map(|(n, _)| format!("builtin:{n}")).collect();
    outln!("taxonomies {}", builtins.join(", "));
    let cuda = lightgen::student::train::load_cuda_backend();
    outln!(
        "libtorch  {} from {}; {} threads; CUDA {}{}; CPU bf16 matmuls {}",
        env!("LIGHTGEN_LIBTORCH_VERSION"),
        env!("LIGHTGEN_LIBTORCH_PATH"),
        tch::get_num_threads(),
        if tch::Cuda::is_available() {
            format!("yes ({} devices, cuDNN {})", tch::Cuda::device_count(), tch::utils::version_cudnn())
        } else {
            format!("no ({})", cuda.err().unwrap_or_else(|| "no driver or no GPU".into()))
        },
        if tch::Cuda::is_available() { ", bf16 autocast" } else { "" },
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            "native (AVX-512 BF16)"
        } else {
            "without native support (no AVX-512 BF16)"
        }
    );
    match lightgen::onnx::runtime::get(None) {
        Ok(rt) => outln!(
            "onnx      ONNX Runtime {} from {}; execution providers: {}",
            rt.version,
            rt.library.display(),
            rt.providers.join(", ")
        ),
        Err(e) => outln!("onnx      unavailable: {e}"),
    }
    Ok(())
}

/// `lightgen schema`: the JSON Schemas of the config and manifest files.
pub fn schema(out: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, text) in lightgen::schema::all() {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        outln!("wrote {}", path.display());
    }
    Ok(())
}
