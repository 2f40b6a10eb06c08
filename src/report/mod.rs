//! Reports over a run folder: readable tables, JSON for machines, PNG charts for people.

pub mod chart;
pub mod curate;
pub mod generate;
pub mod prompts;
