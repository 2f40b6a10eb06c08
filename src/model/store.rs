//! Named, seeded parameters. candle's own initialisers draw from an unseeded generator, so
//! the model is initialised here from an explicit ChaCha stream: the same seed gives the same
//! weights on every machine. Names mirror the PyTorch modules (`encoder_blocks.0.attn.qkv`).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

pub struct ParamStore {
    pub vars: BTreeMap<String, Var>,
    pub device: Device,
    rng: ChaCha8Rng,
}

impl ParamStore {
    pub fn new(seed: u64, device: &Device) -> ParamStore {
        ParamStore { vars: BTreeMap::new(), device: device.clone(), rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn root(&mut self) -> Scope<'_> {
        Scope { store: self, prefix: String::new() }
    }

    /// Tensors by name (the model's state dict), detached.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
    }

    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Overwrites every parameter from `tensors`; names and shapes must match exactly.
    pub fn load(&self, tensors: &BTreeMap<String, Tensor>) -> std::result::Result<(), String> {
        for (name, var) in &self.vars {
            let t = tensors.get(name).ok_or_else(|| format!("missing weight `{name}`"))?;
            if t.dims() != var.dims() {
                return Err(format!("weight `{name}` has shape {:?}, the model expects {:?}", t.dims(), var.dims()));
            }
            let t = t.to_dtype(var.dtype()).and_then(|t| t.to_device(var.device())).map_err(|e| e.to_string())?;
            var.set(&t).map_err(|e| e.to_string())?;
        }
        if let Some(extra) = tensors.keys().find(|k| !self.vars.contains_key(*k)) {
            return Err(format!("unexpected weight `{extra}` (a different architecture?)"));
        }
        Ok(())
    }
}

/// A name prefix inside a store, like candle's `VarBuilder::pp`.
pub struct Scope<'a> {
    store: &'a mut ParamStore,
    prefix: String,
}

impl Scope<'_> {
    pub fn pp(&mut self, name: impl std::fmt::Display) -> Scope<'_> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Scope { store: self.store, prefix }
    }

    fn add(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> Result<Tensor> {
        let full = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        let t = Tensor::from_vec(values, dims, &self.store.device)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        assert!(self.store.vars.insert(full.clone(), var).is_none(), "parameter {full} created twice");
        Ok(out)
    }

    /// A parameter with the given initial values.
    pub fn values(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> Result<Tensor> {
        self.add(name, dims, values)
    }

    pub fn zeros(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        self.add(name, dims, vec![0.0; dims.iter().product()])
    }

    pub fn ones(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        self.add(name, dims, vec![1.0; dims.iter().product()])
    }

    pub fn normal(&mut self, name: &str, dims: &[usize], std: f32) -> Result<Tensor> {
        let n = Normal::new(0.0f32, std).expect("finite std");
        let v = (0..dims.iter().product::<usize>()).map(|_| n.sample(&mut self.store.rng)).collect();
        self.add(name, dims, v)
    }

    /// `xavier_uniform_` for a (out, in) weight: U(±sqrt(6 / (in + out))).
    pub fn xavier(&mut self, name: &str, out: usize, inp: usize) -> Result<Tensor> {
        let bound = (6.0 / (inp + out) as f64).sqrt() as f32;
        let v = (0..out * inp).map(|_| self.store.rng.random_range(-bound..bound)).collect();
        self.add(name, &[out, inp], v)
    }

    pub fn dtype(&self) -> DType {
        DType::F32
    }
}
