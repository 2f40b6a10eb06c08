//! The decisions: every sample ends kept, or rejected with one reason. Pure functions over the
//! per-sample records, so a rerun decides the same.
//!
//! Order: samples the earlier stages could not give (generate, decode or score failures) →
//! size and aspect → exact duplicates → near duplicates (pHash and dHash both within the
//! distance) → the GenEval verdict → the score policy. Duplicate groups keep their best
//! member (highest score, or first seen).

use std::collections::{BTreeMap, HashMap};

use super::hashes::NearIndex;
use crate::config::{CurateConfig, FilterPolicy, KeepRule};

/// What the decisions need of a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub sample_id: String,
    pub prompt_id: String,
    pub prompt_index: u64,
    pub family: String,
    /// ok | generate_failed | decode_failed | score_failed
    pub status: String,
    pub error: Option<String>,
    pub width: u32,
    pub height: u32,
    pub exact: Option<String>,
    pub phash: Option<u64>,
    pub dhash: Option<u64>,
    pub score: Option<f32>,
    pub verdict_pass: Option<bool>,
    pub verdict_reason: Option<String>,
    /// Unit image embedding (CLIP scorer), for semantic deduplication.
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kept: bool,
    /// kept, generate_failed, decode_failed, score_failed, too_small, bad_aspect, exact_dup,
    /// near_dup, semantic_dup, failed_verdict, low_score.
    pub reason: String,
    pub detail: String,
    pub dup_of: Option<String>,
    pub distance: Option<u32>,
}

impl Decision {
    fn reject(reason: &str, detail: String) -> Option<Decision> {
        Some(Decision { kept: false, reason: reason.into(), detail, dup_of: None, distance: None })
    }
}

/// Decides every record. `strata[i]` is record i's stratum (for the per-stratum policy).
pub fn decide(records: &[Record], cfg: &CurateConfig, strata: &[String]) -> Vec<Decision> {
    let f = &cfg.filter;
    let mut out: Vec<Option<Decision>> = records
        .iter()
        .map(|r| {
            if r.status != "ok" {
                return Decision::reject(&r.status, r.error.clone().unwrap_or_default());
            }
            let (lo, hi) = (r.width.min(r.height), r.width.max(r.height));
            if lo < f.min_size {
                return Decision::reject("too_small", format!("{}x{} below {} px", r.width, r.height, f.min_size));
            }
            if hi as f64 > f.max_aspect * lo.max(1) as f64 {
                return Decision::reject(
                    "bad_aspect",
                    format!("{}x{} beyond aspect {}", r.width, r.height, f.max_aspect),
                );
            }
            None
        })
        .collect();

    // Duplicates: visit in keep order; a sample is a duplicate of an earlier kept one.
    let mut order: Vec<usize> = (0..records.len()).filter(|&i| out[i].is_none()).collect();
    if cfg.keep == KeepRule::HighestScore {
        order.sort_by(|&a, &b| {
            let s = |i: usize| records[i].score.unwrap_or(f32::NEG_INFINITY);
            s(b).total_cmp(&s(a)).then(a.cmp(&b))
        });
    }
    let mut exact: HashMap<&str, usize> = HashMap::new();
    let mut near = NearIndex::new(cfg.near_dup_distance);
    for &i in &order {
        let r = &records[i];
        if let Some(e) = r.exact.as_deref() {
            if let Some(&j) = exact.get(e) {
                out[i] = Some(Decision {
                    kept: false,
                    reason: "exact_dup".into(),
                    detail: format!("same pixels as {}", records[j].sample_id),
                    dup_of: Some(records[j].sample_id.clone()),
                    distance: Some(0),
                });
                continue;
            }
        }
        if let (true, Some(p), Some(d)) = (cfg.near_dup, r.phash, r.dhash) {
            let close =
                |j: u32| records[j as usize].dhash.is_some_and(|dj| (dj ^ d).count_ones() <= cfg.near_dup_distance);
            if let Some((j, dist)) = near.nearest(p, close) {
                let other = &records[j as usize];
                out[i] = Some(Decision {
                    kept: false,
                    reason: "near_dup".into(),
                    detail: format!("pHash distance {dist} to {}", other.sample_id),
                    dup_of: Some(other.sample_id.clone()),
                    distance: Some(dist),
                });
                continue;
            }
            near.insert(p, i as u32);
        }
        if let Some(e) = r.exact.as_deref() {
            exact.insert(e, i);
        }
    }

    // Semantic duplicates (SemDeDup) among what is left, in the same keep order.
    if let Some(sd) = &cfg.semdedup {
        let with: Vec<usize> =
            order.iter().copied().filter(|&i| out[i].is_none() && records[i].embedding.is_some()).collect();
        let points: Vec<&[f32]> = with.iter().map(|&i| records[i].embedding.as_deref().expect("filtered")).collect();
        let k = if sd.clusters == 0 { points.len().div_ceil(100) } else { sd.clusters as usize };
        let local: Vec<usize> = (0..with.len()).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (li, v) in
            super::semdedup::semdedup(&points, &local, k, sd.eps, sd.iterations, threads).into_iter().enumerate()
        {
            if let Some((lj, cos)) = v {
                let (i, j) = (with[li], with[lj]);
                out[i] = Some(Decision {
                    kept: false,
                    reason: "semantic_dup".into(),
                    detail: format!("image cosine {cos:.4} > {:.4} to {}", 1.0 - sd.eps, records[j].sample_id),
                    dup_of: Some(records[j].sample_id.clone()),
                    distance: None,
                });
            }
        }
    }

    // The verdict, then the score policy, over what is left.
    for (i, r) in records.iter().enumerate() {
        if out[i].is_none() && f.require_verdict && r.verdict_pass == Some(false) {
            out[i] = Decision::reject("failed_verdict", r.verdict_reason.clone().unwrap_or_default());
        }
    }
    let left: Vec<usize> = (0..records.len()).filter(|&i| out[i].is_none()).collect();
    let score = |i: usize| records[i].score.unwrap_or(f32::NEG_INFINITY);
    match f.policy {
        FilterPolicy::Threshold => {
            let t = f.threshold.unwrap_or(0.0) as f32;
            for &i in &left {
                if score(i) < t {
                    out[i] = Decision::reject("low_score", format!("score {:.4} < threshold {t}", score(i)));
                }
            }
        }
        FilterPolicy::TopFraction | FilterPolicy::TopFractionPerStratum => {
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for &i in &left {
                let key = if f.policy == FilterPolicy::TopFraction { "" } else { strata[i].as_str() };
                groups.entry(key).or_default().push(i);
            }
            let fraction = f.fraction.unwrap_or(1.0);
            for (stratum, mut members) in groups {
                members.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
                let k = ((fraction * members.len() as f64).round() as usize).clamp(1, members.len());
                // DataComp's cut: the k-th best score; ties at the cut stay.
                let cut = score(members[k - 1]);
                for &i in &members {
                    if score(i) < cut {
                        let within = if stratum.is_empty() { String::new() } else { format!(" of stratum {stratum}") };
                        out[i] = Decision::reject(
                            "low_score",
                            format!("score {:.4} below the top-{fraction} cut {cut:.4}{within}", score(i)),
                        );
                    }
                }
            }
        }
    }
    out.into_iter()
        .map(|d| {
            d.unwrap_or(Decision {
                kept: true,
                reason: "kept".into(),
                detail: String::new(),
                dup_of: None,
                distance: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;

    fn rec(i: usize, score: f32, phash: u64, exact: &str) -> Record {
        Record {
            sample_id: format!("s{i}"),
            prompt_id: format!("p{i}"),
            prompt_index: i as u64,
            family: if i % 2 == 0 { "even".into() } else { "odd".into() },
            status: "ok".into(),
            error: None,
            width: 64,
            height: 64,
            exact: Some(exact.into()),
            phash: Some(phash),
            dhash: Some(phash),
            score: Some(score),
            verdict_pass: Some(true),
            verdict_reason: None,
            embedding: None,
        }
    }

    fn cfg(policy: FilterPolicy, threshold: Option<f64>, fraction: Option<f64>) -> CurateConfig {
        CurateConfig {
            scorer: "builtin:shapes".into(),
            near_dup: true,
            near_dup_distance: 4,
            keep: KeepRule::HighestScore,
            filter: FilterConfig { policy, threshold, fraction, ..FilterConfig::default() },
            clip: None,
            semdedup: None,
        }
    }

    #[test]
    fn duplicates_keep_the_best_member() {
        let recs = vec![
            rec(0, 0.5, 0xFFFF_0000_FFFF_0000, "a"),
            rec(1, 0.9, 0xFFFF_0000_FFFF_0000, "a"), // exact copy of 0, better score
            rec(2, 0.8, 0xFFFF_0000_FFFF_0007, "b"), // 3 bits from 0/1: near duplicate
            rec(3, 0.7, 0x0000_FFFF_0000_FFFF, "c"), // far from all
        ];
        let d = decide(&recs, &cfg(FilterPolicy::Threshold, Some(0.0), None), &[]);
        assert!(d[1].kept && d[3].kept);
        assert_eq!((d[0].reason.as_str(), d[0].dup_of.as_deref()), ("exact_dup", Some("s1")));
        assert_eq!((d[2].reason.as_str(), d[2].distance), ("near_dup", Some(3)));
        let mut first = cfg(FilterPolicy::Threshold, Some(0.0), None);
        first.keep = KeepRule::FirstSeen;
        let d = decide(&recs, &first, &[]);
        assert!(d[0].kept);
        assert_eq!(d[1].dup_of.as_deref(), Some("s0"));
    }

    #[test]
    fn threshold_verdict_and_failures() {
        let mut recs: Vec<Record> =
            (0..4).map(|i| rec(i, i as f32 / 4.0, (i as u64) << 40 | 0xABCDEF, &format!("{i}"))).collect();
        recs[3].verdict_pass = Some(false);
        recs[3].verdict_reason = Some("expected 2 star, found 1".into());
        recs[0].status = "decode_failed".into();
        recs[0].error = Some("truncated PNG".into());
        let mut c = cfg(FilterPolicy::Threshold, Some(0.5), None);
        c.near_dup = false; // these made-up hashes are close to each other
        let d = decide(&recs, &c, &[]);
        let reasons: Vec<&str> = d.iter().map(|x| x.reason.as_str()).collect();
        assert_eq!(reasons, vec!["decode_failed", "low_score", "kept", "failed_verdict"]);
        assert_eq!(d[3].detail, "expected 2 star, found 1");
    }

    #[test]
    fn top_fraction_per_stratum_keeps_every_stratum() {
        // Stratum "odd" scores low everywhere: a global top half would drop it entirely.
        let recs: Vec<Record> = (0..20)
            .map(|i| {
                rec(
                    i,
                    if i % 2 == 0 { 0.9 } else { 0.1 } + i as f32 * 0.001,
                    (i as u64) << 44 | i as u64,
                    &format!("{i}"),
                )
            })
            .collect();
        let strata: Vec<String> = recs.iter().map(|r| r.family.clone()).collect();
        let no_dups = |mut c: CurateConfig| {
            c.near_dup = false;
            c
        };
        let global = decide(&recs, &no_dups(cfg(FilterPolicy::TopFraction, None, Some(0.5))), &strata);
        assert_eq!(global.iter().filter(|d| d.kept).count(), 10);
        assert!(global.iter().enumerate().all(|(i, d)| d.kept == (i % 2 == 0)));
        let per = decide(&recs, &no_dups(cfg(FilterPolicy::TopFractionPerStratum, None, Some(0.5))), &strata);
        let kept_odd = per.iter().enumerate().filter(|(i, d)| d.kept && i % 2 == 1).count();
        assert_eq!(kept_odd, 5);
    }
}
