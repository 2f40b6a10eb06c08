//! The expand stage's prompt rows (`expand/part-*.parquet`) and reading them back: by index,
//! one part in memory at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::commit;

/// A prompt as the teacher sees it: text, and for structured worlds the spec and slot values.
#[derive(Debug, Clone)]
pub struct PromptRow {
    pub index: u64,
    pub prompt_id: String,
    pub text: String,
    pub family: String,
    /// GenEval-style spec (JSON), when the taxonomy declares one.
    pub spec: Option<String>,
    /// slot → values taken, from the `slot_*` columns.
    pub slots: BTreeMap<String, Vec<String>>,
}

/// Reads prompts by index from the expand parts, one part in memory at a time.
pub struct PromptCursor {
    parts: Vec<PathBuf>,
    /// (first index, rows) of the loaded part.
    loaded: Option<(usize, u64, Vec<PromptRow>)>,
    starts: Vec<u64>,
}

impl PromptCursor {
    pub fn new(parts: Vec<PathBuf>) -> PromptCursor {
        PromptCursor { parts, loaded: None, starts: Vec::new() }
    }

    /// Total prompts (from the parts' markers), and each part's first index.
    pub fn count(&mut self) -> Result<u64> {
        let mut n = 0;
        self.starts.clear();
        for p in &self.parts {
            let stats_path = p
                .with_file_name(p.file_name().unwrap_or_default().to_string_lossy().replace(".parquet", "_stats.json"));
            let bytes = std::fs::read(&stats_path).map_err(|e| Error::io(&stats_path, e))?;
            let st: commit::PartStats = serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(stats_path.display().to_string(), format!("unreadable part marker: {e}"))
            })?;
            self.starts.push(n);
            n += st.rows;
        }
        Ok(n)
    }

    pub fn get(&mut self, index: u64) -> Result<PromptRow> {
        let part = self.starts.partition_point(|&s| s <= index).saturating_sub(1);
        if self.loaded.as_ref().is_none_or(|(p, _, _)| *p != part) {
            let rows = read_prompts(&self.parts[part])?;
            self.loaded = Some((part, self.starts[part], rows));
        }
        let (_, first, rows) = self.loaded.as_ref().expect("loaded");
        rows.get((index - first) as usize).cloned().ok_or_else(|| {
            Error::invalid(self.parts[part].display().to_string(), format!("prompt {index} is missing from its part"))
        })
    }
}

/// The prompt rows of one expand part.
pub fn read_prompts(path: &Path) -> Result<Vec<PromptRow>> {
    let pe = |e| Error::polars(path, e);
    let f = crate::formats::frame::Frame::read(path, None)?;
    let df = &f.df;
    let slot_cols: Vec<String> =
        df.get_column_names().iter().filter(|n| n.starts_with("slot_")).map(|n| n.to_string()).collect();
    let index = f.u64("index")?;
    let (ids, prompts, families, specs) = (f.str("prompt_id")?, f.str("prompt")?, f.str("family")?, f.str("spec")?);
    let mut lists = Vec::new();
    for c in &slot_cols {
        lists.push((c.trim_start_matches("slot_").to_string(), f.list(c)?));
    }
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut slots = BTreeMap::new();
        for (name, l) in &lists {
            if let Some(s) = l.get_as_series(i) {
                let vals: Vec<String> = s.str().map_err(pe)?.iter().flatten().map(str::to_string).collect();
                if !vals.is_empty() {
                    slots.insert(name.clone(), vals);
                }
            }
        }
        out.push(PromptRow {
            index: index.get(i).unwrap_or(i as u64),
            prompt_id: ids.get(i).unwrap_or_default().to_string(),
            text: prompts.get(i).unwrap_or_default().to_string(),
            family: families.get(i).unwrap_or_default().to_string(),
            spec: specs.get(i).map(str::to_string),
            slots,
        });
    }
    Ok(out)
}
