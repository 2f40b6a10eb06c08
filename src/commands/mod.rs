//! The student's commands on the binary side: argument handling, progress and one-screen
//! summaries around the library's `student` module.

pub mod dpo;
pub mod sample;
pub mod study;
pub mod train;
