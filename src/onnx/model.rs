//! One ONNX model file as a checked session: its inputs and outputs must carry the names (and
//! ranks) the caller expects, or loading fails with an error naming the file, the expected and
//! the found names and shapes. Feeds and results are f32/i64 on our side; conversion to the
//! model's own types (f16, i32, …) happens here.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::f16;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType};

use super::runtime::Runtime;

/// A tensor as the caller sees it: shape and values.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    F32(Vec<i64>, Vec<f32>),
    I64(Vec<i64>, Vec<i64>),
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
        Ok(Model { path: path.to_path_buf(), inputs: ins, outputs: outs, session: Mutex::new(session) })
    }

    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|p| p.name == name)
    }

    pub fn input(&self, name: &str) -> Option<&Port> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// Runs the model; returns the named outputs as f32 (shape, values).
    pub fn run(&self, feeds: Vec<(&str, Feed)>, want: &[&str]) -> Result<Vec<Tensor32>, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", self.path.display());
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(feeds.len());
        for (name, feed) in feeds {
            let port = self.input(name).ok_or_else(|| fail(&format!("the model has no input \"{name}\"")))?;
            values.push((name.to_string(), to_value(feed, port.ty).map_err(|e| fail(&format!("input {name}: {e}")))?));
        }
        let mut session = self.session.lock().expect("session lock");
        let outputs = session.run(values).map_err(|e| fail(&e))?;
        want.iter()
            .map(|name| {
                let v = outputs.get(*name).ok_or_else(|| fail(&format!("no output \"{name}\"")))?;
                from_value(v).map_err(|e| fail(&format!("output {name}: {e}")))
            })
            .collect()
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
