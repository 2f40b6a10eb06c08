//! lightgen: distill a teacher text-to-image model into a compact synthetic corpus and train
//! a small LightGen student on it.
//!
//! The data stages, each writing `runs/<name>/<stage>/` through one commit protocol
//! ([`formats::commit`]) so that any of them can be killed and rerun:
//!
//! 1. **expand** ([`pipeline::expand`]): prompt taxonomies ([`taxonomy`]) → diverse,
//!    deduplicated prompts with their slot values and GenEval-style specs.
//! 2. generate, curate, encode, manifest, then train / dpo / sample / eval: see the README and `docs/`.
//!
//! Reports ([`report`]) read a run folder and write JSON and PNG next to it.

pub mod config;
pub mod error;
pub mod formats;
pub mod onnx;
pub mod paths;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod schema;
pub mod serve;
pub mod student;
pub mod taxonomy;
pub mod world;

/// The tool's version, recorded in every artifact.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
