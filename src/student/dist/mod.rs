//! Data-parallel training on libtorch's own distributed engine (c10d, Gloo), launched as
//! PyTorch jobs are (torchrun, Slurm, or `lightgen train --nproc N`).
//!
//! Each step's global batch is `train.batch_size × world × train.accumulate` samples, cut into
//! `world × accumulate` equal shares; rank r computes shares `k·world + r` for k < accumulate.
//! The step's random draws (mask orders, caption drops, timesteps, noise) are drawn for the
//! whole global batch and each share takes its slice, so a job computes the same step for any
//! world size. Every sample masks the same number of tokens, so the mean of the shares' mean
//! losses is the global mean: gradients are summed over a rank's shares and averaged across
//! ranks in one flat all-reduce after backward.

pub mod c10d;
pub mod launch;
pub mod spawn;

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

pub use c10d::{Group, Rendezvous};
pub use launch::Launch;

use crate::error::Result;

/// This process's place in a data-parallel job (a world of one without a group).
pub struct Dist {
    pub group: Option<Group>,
    pub rank: usize,
    pub world: usize,
}

impl Dist {
    /// A single process.
    pub fn single() -> Dist {
        Dist { group: None, rank: 0, world: 1 }
    }

    /// Joins the job `launch` describes (blocks until every rank has arrived).
    pub fn join(launch: &Launch) -> Result<Dist> {
        let g = Group::join(&launch.rendezvous)?;
        Ok(Dist { rank: g.rank, world: g.world, group: Some(g) })
    }

    /// Rank 0 writes checkpoints, metrics and plots.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The shares of a step's global batch this rank computes, given `accumulate` micro-batches.
    pub fn shares(&self, accumulate: usize) -> Vec<usize> {
        (0..accumulate.max(1)).map(|k| k * self.world + self.rank).collect()
    }

    /// Averages `grads` and `stats` (the loss and other per-step means) across ranks in
    /// place: one flat f32 host buffer, one all-reduce (Gloo reduces host memory; CUDA
    /// gradients are staged through it).
    pub fn average(&self, grads: &mut BTreeMap<String, Tensor>, stats: &mut [&mut Tensor]) -> Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        let _guard = tch::no_grad_guard();
        let parts: Vec<Tensor> = grads
            .values()
            .chain(stats.iter().map(|t| &**t))
            .map(|t| t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))
            .collect();
        let flat = Tensor::cat(&parts, 0); // (P + S,)
        g.all_reduce_sum(&[&flat])?;
        let flat = flat / self.world as f64;
        let mut at = 0i64;
        let mut unflatten = |t: &mut Tensor| {
            let n = t.numel() as i64;
            *t = flat.narrow(0, at, n).view_as(t).to_kind(t.kind()).to_device(t.device());
            at += n;
        };
        grads.values_mut().for_each(&mut unflatten);
        stats.iter_mut().for_each(|t| unflatten(t));
        Ok(())
    }

    /// Makes every rank's tensors rank 0's (the weights at start, so the ranks begin equal).
    pub fn broadcast(&self, ts: &[&Tensor]) -> Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        let _guard = tch::no_grad_guard();
        for t in ts {
            if t.device() == Device::Cpu {
                g.broadcast(&[t], 0)?;
            } else {
                let host = t.to_device(Device::Cpu);
                g.broadcast(&[&host], 0)?;
                t.shallow_clone().copy_(&host);
            }
        }
        Ok(())
    }

    pub fn barrier(&self) -> Result<()> {
        match &self.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }
}
