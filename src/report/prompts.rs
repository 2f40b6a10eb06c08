//! `lightgen report prompts <run>`: how diverse the expanded prompts are (the statistics of
//! `pipeline::expand::stats`), as a table, `reports/prompts.json` and a PNG chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::commit;
pub use crate::pipeline::expand::stats::{
    distinct_n, possible_pairs, prompt_stats, PairStats, PromptReport, SlotStats,
};

/// Builds the report for a run folder and writes `reports/prompts.json` and
/// `reports/prompts_coverage.png`. Returns the report and the folder written.
pub fn run(run_dir: &Path) -> Result<(PromptReport, PathBuf)> {
    let report = prompt_stats(run_dir)?;
    let out = run_dir.join("reports");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    commit::write_atomic(&out.join("prompts.json"), &serde_json::to_vec_pretty(&report).expect("report serialises"))?;
    let bars: Vec<(String, Vec<f64>)> = report
        .slots
        .iter()
        .map(|s| (s.slot.clone(), vec![s.coverage, s.normalized_entropy]))
        .chain(report.pairs.iter().map(|p| (format!("{} x {}", p.a, p.b), vec![p.coverage, f64::NAN])))
        .map(|(l, v)| (l, v.into_iter().filter(|x| !x.is_nan()).collect()))
        .collect();
    let title = format!("{}: slot coverage and evenness ({} prompts)", report.taxonomy, report.rows);
    super::chart::bars(
        &out.join("prompts_coverage.png"),
        &title,
        &["value/pair coverage %", "normalised entropy %"],
        &bars,
    )?;
    Ok((report, out))
}

/// The one-screen table.
pub fn table(r: &PromptReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "prompts   {} rows, {} unique (duplicate rate {:.2}%), taxonomy {}",
        r.rows,
        r.unique_prompts,
        r.duplicate_rate * 100.0,
        r.taxonomy
    );
    let _ = writeln!(
        s,
        "text      distinct-1 {:.4}  distinct-2 {:.4}  distinct-3 {:.4}",
        r.distinct_1, r.distinct_2, r.distinct_3
    );
    let fams: Vec<String> = r.families.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "families  {}", fams.join(", "));
    let _ = writeln!(
        s,
        "\n{:<16} {:>7} {:>6} {:>9} {:>8} {:>9} {:>9}",
        "slot", "values", "seen", "coverage", "entropy", "min", "max"
    );
    for x in &r.slots {
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>6} {:>8.1}% {:>8.3} {:>9} {:>9}",
            x.slot,
            x.values_defined,
            x.values_seen,
            x.coverage * 100.0,
            x.normalized_entropy,
            x.min_count,
            x.max_count
        );
    }
    let _ = writeln!(s, "\n{:<34} {:>9} {:>9} {:>9}", "slot pair", "possible", "seen", "coverage");
    for p in &r.pairs {
        let _ = writeln!(
            s,
            "{:<34} {:>9} {:>9} {:>8.1}%",
            format!("{} x {}", p.a, p.b),
            p.possible,
            p.seen,
            p.coverage * 100.0
        );
    }
    let _ = writeln!(s, "pairwise coverage {:.1}% over {} slot pairs", r.pairwise_coverage * 100.0, r.pairs.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_n_counts_unique_ngrams() {
        // "a b a": unigrams a,b,a → 2/3; bigrams (a b),(b a) → 2/2; trigram 1/1.
        let d = distinct_n(["a b a"].into_iter());
        assert!((d[0] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(d[1], 1.0);
        assert_eq!(d[2], 1.0);
        let d = distinct_n(["A cat.", "a cat"].into_iter());
        assert_eq!(d[0], 0.5, "case and punctuation are ignored");
    }
}
