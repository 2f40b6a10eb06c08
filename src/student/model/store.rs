//! Named, seeded parameters. Every weight is drawn on the host from an explicit ChaCha stream
//! (libtorch's initialisers use its global generator), so the same seed gives the same weights
//! on every machine and device; then it lives on the device as a libtorch leaf that requires
//! grad. Names mirror the PyTorch modules (`encoder_blocks.0.attn.qkv.weight`).

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Device, Kind, Tensor};

pub struct ParamStore {
    /// Leaf tensors (f32, requires grad), by name.
    pub vars: BTreeMap<String, Tensor>,
    pub device: Device,
    rng: ChaCha8Rng,
}

impl ParamStore {
    pub fn new(seed: u64, device: Device) -> ParamStore {
        ParamStore { vars: BTreeMap::new(), device, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn root(&mut self) -> Scope<'_> {
        Scope { store: self, prefix: String::new() }
    }

    /// The model's state dict: detached copies, so later updates do not show through.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars.iter().map(|(k, v)| (k.clone(), v.detach().copy())).collect()
    }

    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.numel()).sum()
    }

    /// Overwrites every parameter from `tensors` in place; names and shapes must match, except
    /// that a positional table of another square grid (the reference keeps 16×16 slots) is
    /// resampled bicubically to the model's, as the reference does at every forward.
    pub fn load(&self, tensors: &BTreeMap<String, Tensor>) -> std::result::Result<(), String> {
        for (name, var) in &self.vars {
            let t = tensors.get(name).ok_or_else(|| format!("missing weight `{name}`"))?;
            let resized;
            let t = match (name.ends_with("pos_embed_learned"), square(t), square(var)) {
                (true, Some(from), Some(to)) if from != to && t.size()[2] == var.size()[2] => {
                    resized = super::positions::resize_positions(t, from, to);
                    &resized
                }
                _ => t,
            };
            if t.size() != var.size() {
                return Err(format!("weight `{name}` has shape {:?}, the model expects {:?}", t.size(), var.size()));
            }
            let mut dst = var.shallow_clone();
            tch::no_grad(|| dst.copy_(&t.to_kind(Kind::Float).to_device(self.device)));
        }
        if let Some(extra) = tensors.keys().find(|k| !self.vars.contains_key(*k)) {
            return Err(format!("unexpected weight `{extra}` (a different architecture?)"));
        }
        Ok(())
    }

    /// d loss / d parameter for every parameter, by name: fresh tensors from autograd
    /// (`torch.autograd.grad`), never accumulated into `.grad`. So a step's gradients are the
    /// same whether or not a step ran before it in this process, which keeps `--resume`
    /// bit-exact (accumulating into a zeroed `.grad` keeps an earlier step's memory layout, and
    /// reductions over it round differently). A parameter the loss does not reach (the encoder
    /// when every token is masked) gets a zero gradient: the reference runs it on zero tokens
    /// and AdamW still decays and moves it.
    pub fn grads(&self, loss: &Tensor) -> BTreeMap<String, Tensor> {
        let vars: Vec<&Tensor> = self.vars.values().collect();
        let grads = Tensor::run_backward(&[loss], &vars, false, false);
        self.vars
            .iter()
            .zip(grads)
            .map(|((k, v), g)| (k.clone(), if g.defined() { g } else { v.zeros_like() }))
            .collect()
    }
}

/// The grid side of a (1, g², D) positional table.
fn square(t: &Tensor) -> Option<usize> {
    let s = t.size();
    let g = (s.get(1).copied()? as f64).sqrt().round() as i64;
    (s.len() == 3 && s[0] == 1 && g * g == s[1]).then_some(g as usize)
}

/// A name prefix inside a store, like tch's `nn::Path`.
pub struct Scope<'a> {
    store: &'a mut ParamStore,
    prefix: String,
}

impl Scope<'_> {
    pub fn pp(&mut self, name: impl std::fmt::Display) -> Scope<'_> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Scope { store: self.store, prefix }
    }

    fn add(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> Tensor {
        let full = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        let shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let t = Tensor::from_slice(&values).reshape(shape).to_device(self.store.device).set_requires_grad(true);
        let out = t.shallow_clone();
        assert!(self.store.vars.insert(full.clone(), t).is_none(), "parameter {full} created twice");
        out
    }

    /// A parameter with the given initial values.
    pub fn values(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> Tensor {
        self.add(name, dims, values)
    }

    pub fn zeros(&mut self, name: &str, dims: &[usize]) -> Tensor {
        self.add(name, dims, vec![0.0; dims.iter().product()])
    }

    pub fn ones(&mut self, name: &str, dims: &[usize]) -> Tensor {
        self.add(name, dims, vec![1.0; dims.iter().product()])
    }

    pub fn normal(&mut self, name: &str, dims: &[usize], std: f32) -> Tensor {
        let n = Normal::new(0.0f32, std).expect("finite std");
        let v = (0..dims.iter().product::<usize>()).map(|_| n.sample(&mut self.store.rng)).collect();
        self.add(name, dims, v)
    }

    /// `xavier_uniform_` for a (out, in) weight: U(±sqrt(6 / (in + out))).
    pub fn xavier(&mut self, name: &str, out: usize, inp: usize) -> Tensor {
        let bound = (6.0 / (inp + out) as f64).sqrt() as f32;
        let v = (0..out * inp).map(|_| self.store.rng.random_range(-bound..bound)).collect();
        self.add(name, &[out, inp], v)
    }
}
