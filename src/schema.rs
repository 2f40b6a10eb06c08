//! JSON Schemas of the file formats, generated from the Rust types (`schemas/*.json`).

use crate::config::RunConfig;
use crate::taxonomy::format::TaxonomyFile;

/// (file name, schema JSON) for every format in `schemas/`.
pub fn all() -> Vec<(&'static str, String)> {
    let pretty = |s: schemars::Schema| serde_json::to_string_pretty(&s).expect("schema serialises") + "\n";
    vec![
        ("run-config.schema.json", pretty(schemars::schema_for!(RunConfig))),
        ("taxonomy.schema.json", pretty(schemars::schema_for!(TaxonomyFile))),
        ("manifest.schema.json", pretty(schemars::schema_for!(crate::formats::manifest::Manifest))),
        ("train-config.schema.json", pretty(schemars::schema_for!(crate::student::train::TrainConfig))),
    ]
}
