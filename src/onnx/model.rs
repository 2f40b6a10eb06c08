//! One ONNX model file as a checked session: its inputs and outputs must carry the names (and
//! ranks) the caller expects, or loading fails with an error naming the file, the expected and
//! the found names and shapes. Feeds and results are f32/i64 on our side; conversion to the
//! model's own types (f16, i32, …) happens here.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::f16;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorElementType};

use super::runtime::Runtime;

/// A tensor as the caller sees it: shape and values.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    F32(Vec<i64>, Vec<f32>),
    I64(Vec<i64>, Vec<i64>),
}

/// A model input: a tensor to convert now, or one converted before (see [`Model::value`]) and
/// reused across calls, e.g. the text conditioning of every denoising step.
pub enum Arg<'v> {
    Feed(Feed),
    Ready(&'v DynValue),
}

impl From<Feed> for Arg<'_> {
    fn from(f: Feed) -> Self {
        Arg::Feed(f)
    }
}

/// A float tensor read back from a model: (shape, values).
pub type Tensor32 = (Vec<i64>, Vec<f32>);

/// What a port must look like.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub name: &'static str,
    /// Tensor rank; 0 = any.
    pub rank: usize,
}

pub const fn port(name: &'static str, rank: usize) -> Expect {
    Expect { name, rank }
}

/// A port as the model declares it.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub ty: TensorElementType,
    /// -1 for a dynamic axis.
    pub shape: Vec<i64>,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| if *d < 0 { "?".into() } else { d.to_string() }).collect();
        write!(f, "{}: {:?}[{}]", self.name, self.ty, dims.join(", "))
    }
}

pub struct Model {
    pub path: PathBuf,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    session: Mutex<Session>,
    /// Nanoseconds spent inside `Session::run`.
    run_ns: std::sync::atomic::AtomicU64,
}

fn ports(outlets: &[ort::value::Outlet]) -> Vec<Port> {
    outlets
        .iter()
        .map(|o| Port {
            name: o.name().to_string(),
            ty: o.dtype().tensor_type().unwrap_or(TensorElementType::Float32),
            shape: o.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default(),
        })
        .collect()
}

fn check(path: &Path, what: &str, found: &[Port], want: &[Expect]) -> Result<(), String> {
    let ok = want.iter().all(|w| found.iter().any(|p| p.name == w.name && (w.rank == 0 || p.shape.len() == w.rank)));
    if ok {
        return Ok(());
    }
    let expected: Vec<String> = want
        .iter()
        .map(|w| if w.rank == 0 { w.name.to_string() } else { format!("{} (rank {})", w.name, w.rank) })
        .collect();
    let got: Vec<String> = found.iter().map(Port::to_string).collect();
    Err(format!(
        "{}: the model's {what} do not match: expected {}; found {}",
        path.display(),
        expected.join(", "),
        if got.is_empty() { "none".to_string() } else { got.join(", ") }
    ))
}

impl Model {
    /// Loads `path` on `device` (`auto`, `cuda` or `cpu`) and checks its ports.
    pub fn load(
        rt: &Runtime,
        path: &Path,
        device: &str,
        inputs: &[Expect],
        outputs: &[Expect],
    ) -> Result<Model, String> {
        if !path.is_file() {
            return Err(format!("{}: missing (expected an ONNX model file here)", path.display()));
        }
        let fail = |e: &dyn std::fmt::Display| format!("{}: cannot load: {e}", path.display());
        let mut b = Session::builder(&rt.env).map_err(|e| fail(&e))?;
        if device != "cpu" && rt.providers.contains(&"CUDA") {
            b = b.with_execution_providers([ort::ep::CUDA::default().build()]).map_err(|e| fail(&e))?;
        } else if device == "cuda" {
            return Err(format!(
                "{}: device = \"cuda\", but ONNX Runtime at {} has no CUDA execution provider (it has: {})",
                path.display(),
                rt.library.display(),
                rt.providers.join(", ")
            ));
        }
        let session = b.commit_from_file(path).map_err(|e| fail(&e))?;
        let (ins, outs) = (ports(session.inputs()), ports(session.outputs()));
        check(path, "inputs", &ins, inputs)?;
        check(path, "outputs", &outs, outputs)?;
        Ok(Model {
            path: path.to_path_buf(),
            inputs: ins,
            outputs: outs,
            session: Mutex::new(session),
            run_ns: Default::default(),
        })
    }

    /// Seconds spent inside ONNX Runtime's `run` so far.
    pub fn run_seconds(&self) -> f64 {
        self.run_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
    }

    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|p| p.name == name)
    }

    pub fn input(&self, name: &str) -> Option<&Port> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// Converts a feed to the input's own type once, for reuse with [`Arg::Ready`].
    pub fn value(&self, name: &str, feed: Feed) -> Result<DynValue, String> {
        let port =
            self.input(name).ok_or_else(|| format!("{}: the model has no input \"{name}\"", self.path.display()))?;
        to_value(feed, port.ty).map_err(|e| format!("{}: input {name}: {e}", self.path.display()))
    }

    /// Runs the model; returns the named outputs as f32 (shape, values).
    pub fn run(&self, args: Vec<(&str, Arg<'_>)>, want: &[&str]) -> Result<Vec<Tensor32>, String> {
        self.run_then(args, |outputs| {
            want.iter()
                .map(|name| {
                    let v = self.output(outputs, name)?;
                    from_value(v).map_err(|e| format!("{}: output {name}: {e}", self.path.display()))
                })
                .collect()
        })
    }

    /// Runs the model and hands one f32 output to `f` in place (no copy of a large result,
    /// such as the VAE's pixels; f16 outputs are converted first).
    pub fn run_with<R>(
        &self,
        args: Vec<(&str, Arg<'_>)>,
        name: &str,
        f: impl FnOnce(&[i64], &[f32]) -> R,
    ) -> Result<R, String> {
        self.run_then(args, |outputs| {
            let v = self.output(outputs, name)?;
            let fail = |e: ort::Error| format!("{}: output {name}: {e}", self.path.display());
            if v.dtype().tensor_type() == Some(TensorElementType::Float32) {
                let (shape, data) = v.try_extract_tensor::<f32>().map_err(fail)?;
                let shape: Vec<i64> = shape.iter().copied().collect();
                return Ok(f(&shape, data));
            }
            let (shape, data) = from_value(v).map_err(|e| format!("{}: output {name}: {e}", self.path.display()))?;
            Ok(f(&shape, &data))
        })
    }

    fn output<'o>(&self, outputs: &'o SessionOutputs<'_>, name: &str) -> Result<&'o DynValue, String> {
        outputs.get(name).ok_or_else(|| format!("{}: no output \"{name}\"", self.path.display()))
    }

    fn run_then<R>(
        &self,
        args: Vec<(&str, Arg<'_>)>,
        then: impl FnOnce(&SessionOutputs<'_>) -> Result<R, String>,
    ) -> Result<R, String> {
        let mut owned: Vec<(&str, DynValue)> = Vec::new();
        let mut ready: Vec<(&str, &DynValue)> = Vec::new();
        for (name, arg) in args {
            match arg {
                Arg::Feed(feed) => owned.push((name, self.value(name, feed)?)),
                Arg::Ready(v) => ready.push((name, v)),
            }
        }
        let inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> = owned
            .iter()
            .map(|(n, v)| (std::borrow::Cow::Borrowed(*n), SessionInputValue::from(v)))
            .chain(ready.into_iter().map(|(n, v)| (std::borrow::Cow::Borrowed(n), SessionInputValue::from(v))))
            .collect();
        let mut session = self.session.lock().expect("session lock");
        let t = std::time::Instant::now();
        let outputs = session.run(inputs).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.run_ns.fetch_add(t.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        then(&outputs)
    }
}

fn to_value(feed: Feed, ty: TensorElementType) -> Result<DynValue, String> {
    let e = |e: ort::Error| e.to_string();
    Ok(match (feed, ty) {
        (Feed::F32(s, d), TensorElementType::Float32) => Tensor::from_array((s, d)).map_err(e)?.into_dyn(),
        (Feed::F32(s, d), TensorElementType::Float16) => {
            Tensor::from_array((s, d.into_iter().map(f16::from_f32).collect::<Vec<_>>())).map_err(e)?.into_dyn()
        }
        (Feed::F32(s, d), TensorElementType::Float64) => {
            Tensor::from_array((s, d.into_iter().map(f64::from).collect::<Vec<_>>())).map_err(e)?.into_dyn()
        }
        (Feed::F32(s, d), TensorElementType::Int64) => {
            Tensor::from_array((s, d.into_iter().map(|x| x.round() as i64).collect::<Vec<_>>())).map_err(e)?.into_dyn()
        }
        (Feed::I64(s, d), TensorElementType::Int64) => Tensor::from_array((s, d)).map_err(e)?.into_dyn(),
        (Feed::I64(s, d), TensorElementType::Int32) => {
            Tensor::from_array((s, d.into_iter().map(|x| x as i32).collect::<Vec<_>>())).map_err(e)?.into_dyn()
        }
        (Feed::I64(s, d), TensorElementType::Float32) => {
            Tensor::from_array((s, d.into_iter().map(|x| x as f32).collect::<Vec<_>>())).map_err(e)?.into_dyn()
        }
        (Feed::I64(s, d), TensorElementType::Float16) => {
            Tensor::from_array((s, d.into_iter().map(|x| f16::from_f32(x as f32)).collect::<Vec<_>>()))
                .map_err(e)?
                .into_dyn()
        }
        (_, ty) => return Err(format!("the model wants {ty:?}, which lightgen does not feed")),
    })
}

fn from_value(v: &DynValue) -> Result<Tensor32, String> {
    let ty = v.dtype().tensor_type();
    let e = |e: ort::Error| e.to_string();
    match ty {
        Some(TensorElementType::Float32) => {
            let (s, d) = v.try_extract_tensor::<f32>().map_err(e)?;
            Ok((s.iter().copied().collect(), d.to_vec()))
        }
        Some(TensorElementType::Float16) => {
            let (s, d) = v.try_extract_tensor::<f16>().map_err(e)?;
            Ok((s.iter().copied().collect(), d.iter().map(|x| x.to_f32()).collect()))
        }
        other => Err(format!("expected a float tensor, got {other:?}")),
    }
}
