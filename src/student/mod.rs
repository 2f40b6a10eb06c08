//! The student: LightGen's text-to-image MAR on libtorch (`tch`) and everything done with it.
//!
//! - [`model`]: the architecture (Fluid backbone, text aligner, DiffLoss head, sampler).
//! - [`train`]: batches from the shards, the optimiser, checkpoints, the loop, and
//!   [`train::dpo`] (Diffusion-DPO post-training).
//! - [`sample`]: a checkpoint plus the manifest's text encoder and image tokenizer → images.
//! - [`eval`] (GenEval-style on the shapes world), [`inpaint`], [`probe`] and [`study`].
//!
//! Reference: LightGen's released PyTorch code; `tests/it/parity.rs` holds the port to it.

pub mod completion;
pub mod dist;
pub mod eval;
pub mod ffi;
pub mod host_alloc;
pub mod inpaint;
pub mod model;
pub mod probe;
pub mod sample;
pub mod study;
pub mod train;
