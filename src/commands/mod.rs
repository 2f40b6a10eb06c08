//! The commands on the binary side: argument handling, progress and one-screen summaries
//! around the library (`data`: the pipeline's stages, manifests, reports; the others: the
//! student's; `misc`: demo, doctor, schema; `output`: what the data commands print).

pub mod data;
pub mod dpo;
pub mod misc;
pub mod output;
pub mod sample;
pub mod study;
pub mod train;
