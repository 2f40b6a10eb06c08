//! DPO pairs, as LightGen builds them (`lightgen.md` §6): for each prompt of the pair set the
//! winner is the teacher's image that passed curation (a training sample of the manifest), the
//! loser is the base student's own sample for the same caption; or (`winner = self`, not in
//! LightGen) a sample of the student that the analyzer passes against one it rejects. Built
//! once, stored in parts (`pairs/part-NNNNN.safetensors` with both latents and the caption,
//! then its `_stats.json` marker, last), so a killed build resumes where it stopped.

use std::collections::HashMap;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::formats::commit;
use crate::formats::manifest::Manifest;
use crate::student::dist::Dist;
use crate::student::model::layers::{tensor_f32, to_host};
use crate::student::model::sampler::{sample_tokens, Canvas, SampleOptions};
use crate::student::model::text::TextInput;
use crate::student::sample::{Decoder, Student};
use crate::student::train::data::Dataset;
use crate::world::analyze::Analyzer;
use crate::world::Spec;

/// Where a pair's winner comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Winner {
    /// The teacher's curated image, against the base student's sample (LightGen's pairs).
    /// Once the two are told apart (a clean image against a lumpy one) nothing is left to
    /// learn about what makes a sample pass.
    #[default]
    #[serde(rename = "teacher")]
    Teacher,
    /// The base student's own sample that the shapes analyzer passes, against one of its
    /// samples for the same caption that it rejects: on-policy pairs that differ in what is
    /// judged (shapes world only; prompts whose draws all pass or all fail give no pair).
    #[serde(rename = "self")]
    OwnSample,
}

impl Winner {
    fn is_teacher(&self) -> bool {
        *self == Winner::Teacher
    }
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// How the pair set is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairsConfig {
    /// Candidate prompts (training samples drawn without replacement).
    pub count: usize,
    pub seed: u64,
    /// Keep a pair only when the analyzer rejects the loser (the winner passed curation), so
    /// every pair teaches something; shapes world only.
    pub loser_must_fail: bool,
    pub part_size: usize,
    /// How the student's samples are drawn.
    pub sample: SampleOptions,
    /// Left out of the serialized config at its default, so pair sets made before keep their id.
    #[serde(default, skip_serializing_if = "Winner::is_teacher")]
    pub winner: Winner,
    /// Samples drawn per prompt (`winner = self` needs at least 2: one to pass, one to fail).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub draws: usize,
    /// `winner = self`: a prompt whose draws all fail (or all pass) still gives a pair when
    /// their alignments differ by at least this much: the best-aligned draw against the
    /// best-aligned one at least `margin` below it. 0 = pass against fail only. Position and
    /// counting prompts pass in ~2% of draws, so without it they give almost no pairs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub margin: f32,
    /// Pair only images in which the analyzer finds the same number of objects. `winner =
    /// self`: a failing draw is most often one with objects missing, so unmatched pairs teach
    /// "draw more" (which the GenEval-style pass rewards). Teacher pairs: the student's draws
    /// hold more objects than the teacher's image, so unmatched pairs teach "draw fewer"; the
    /// loser is then a draw with the teacher's count. Matched pairs differ only in the
    /// classes, colours and places of what is drawn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_count: bool,
    /// Draw the candidate prompts from these families only (the shards' `family` column);
    /// empty = every family. The families a student fails most give few pairs otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<String>,
}

/// `pairs/pairs.json`: what the set is made of; a folder made otherwise is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairsPlan {
    pub config: PairsConfig,
    pub base_checkpoint: String,
    /// blake3 of the base weights the losers came from.
    pub base_weights: String,
    pub manifest_id: String,
}

impl PairsPlan {
    pub fn id(&self) -> String {
        blake3::hash(serde_json::to_string(self).expect("plan serialises").as_bytes()).to_hex().to_string()
    }
}

/// All pairs, host-side.
pub struct Pairs {
    pub n: usize,
    /// (N, L, C) each.
    pub winner: Vec<f32>,
    pub loser: Vec<f32>,
    /// (N, T) ids or (N, T, Ct) features.
    pub ids: Vec<u32>,
    pub feats: Vec<f32>,
    pub candidates: usize,
    pub id: String,
}

/// Captions by training sample, and their specs when the run's expand parts are beside the
/// manifest (to judge the losers).
fn captions(root: &Path, m: &Manifest, ds: &Dataset, picked: &[usize]) -> Result<Vec<(String, Option<Spec>)>> {
    let mut by_shard: HashMap<usize, Vec<(String, String)>> = HashMap::new();
    let mut specs: HashMap<String, Spec> = HashMap::new();
    if let Ok(parts) = commit::committed_parts(&root.join("expand")) {
        for p in parts {
            for row in crate::formats::prompt_rows::read_prompts(&p)? {
                if let Some(s) = row.spec.as_deref().and_then(|s| serde_json::from_str::<Spec>(s).ok()) {
                    specs.insert(row.prompt_id, s);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(picked.len());
    for &i in picked {
        let (k, r) = ds.locate(i);
        if let std::collections::hash_map::Entry::Vacant(e) = by_shard.entry(k) {
            let f = crate::formats::frame::Frame::read(&root.join(&m.shards[k].index), Some(&["prompt_id", "prompt"]))?;
            let (ids, texts) = (f.str("prompt_id")?, f.str("prompt")?);
            e.insert(
                ids.iter()
                    .zip(texts.iter())
                    .map(|(a, b)| (a.unwrap_or_default().to_string(), b.unwrap_or_default().to_string()))
                    .collect(),
            );
        }
        let (id, text) = by_shard[&k][r].clone();
        out.push((text, specs.get(&id).cloned()));
    }
    Ok(out)
}

/// Builds (or finishes) the pair set in `dir`, this rank's parts of it in a data-parallel
/// job; returns it loaded.
#[allow(clippy::too_many_arguments)]
pub fn build(
    base: &Student,
    decoder: &Decoder,
    manifest_path: &Path,
    m: &Manifest,
    ds: &Dataset,
    plan: &PairsPlan,
    dir: &Path,
    dist: &Dist,
    mut progress: impl FnMut(usize),
) -> Result<Pairs> {
    let cfg = &plan.config;
    let id = plan.id();
    let mut all: Vec<usize> = match cfg.families.is_empty() {
        true => (0..ds.len()).collect(),
        false => {
            ds.of_families(manifest_path, m, &cfg.families, "dpo --families")?.into_iter().map(|i| i as usize).collect()
        }
    };
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    all.truncate(cfg.count.min(ds.len()));
    let root = manifest_path.parent().unwrap_or(Path::new("."));
    let caps = captions(root, m, ds, &all)?;
    let own = cfg.winner == Winner::OwnSample;
    if own && cfg.draws < 2 {
        return Err(Error::invalid(
            "dpo --draws",
            format!(
                "{}: --winner self needs at least 2 samples per prompt, one that passes and one that fails",
                cfg.draws
            ),
        ));
    }
    if (cfg.loser_must_fail || own || cfg.same_count) && caps.iter().all(|(_, s)| s.is_none()) {
        let flag = match (own, cfg.same_count) {
            (true, _) => "dpo --winner self",
            (false, true) => "dpo --same-count",
            _ => "dpo --loser-must-fail",
        };
        return Err(Error::invalid(
            flag,
            "no prompt specs beside the manifest (expand/ parts): the student's samples cannot be judged",
        ));
    }

    // Rank 0 checks or writes the plan and clears stale temporaries before any rank builds.
    let plan_path = dir.join("pairs.json");
    if dist.is_main() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if std::fs::metadata(&plan_path).is_err() {
            commit::write_atomic(&plan_path, &serde_json::to_vec_pretty(plan).expect("plan serialises"))?;
        }
        commit::clean_temporaries(dir)?;
    }
    dist.barrier()?;
    let bytes = std::fs::read(&plan_path).map_err(|e| Error::io(&plan_path, e))?;
    let old: PairsPlan =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(plan_path.display().to_string(), e.to_string()))?;
    if &old != plan {
        return Err(Error::Conflict {
            path: dir.to_path_buf(),
            message: "holds pairs made from another base checkpoint, manifest or pair config; use another --out".into(),
        });
    }

    let judge = Analyzer::new();
    let dev = base.model.device();
    let grid = base.state.grid;
    let (l, c) = (grid * grid, base.model.cfg.token_dim);
    let sample = base.with_token_channels(&cfg.sample);
    for (k, chunk) in all.chunks(cfg.part_size.max(1)).enumerate() {
        let k = k as u64;
        // In a data-parallel job each rank builds every world-th part (a part's losers depend
        // on the part alone), then all wait for the set to be complete.
        if done(dir, k, &id).is_some() || k % dist.world as u64 != dist.rank as u64 {
            progress(chunk.len());
            continue;
        }
        let examples: Vec<_> = chunk.iter().map(|&i| ds.example(i)).collect();
        let winner: Vec<f32> = examples.iter().flat_map(|e| e.tokens.iter().copied()).collect();
        let ids: Vec<u32> = examples.iter().flat_map(|e| e.ids.iter().copied()).collect();
        let feats: Vec<f32> = examples.iter().flat_map(|e| e.feats.iter().copied()).collect();
        let text = TextInput::from_host(&ids, &feats, chunk.len(), ds.text_len, ds.text_channels, dev);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // (draws, chunk, L, C): the student's samples, each draw its own stretch of the stream.
        let draws: Vec<Vec<f32>> = (0..cfg.draws.max(1))
            .map(|_| sample_tokens(&base.model, &text, Canvas::blank(chunk.len(), l, c), grid, &sample, &mut rng))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::invalid("dpo pairs", e))?;
        let w = l * c;
        // The kept pairs, and the analyzer's verdicts on the samples.
        let (mut keep, mut failed, mut judged) = (Vec::<Kept>::new(), 0u64, 0u64);
        let first = k as usize * cfg.part_size.max(1);
        for j in 0..chunk.len() {
            let (_, spec) = &caps[first + j];
            // (pass, alignment) of each draw.
            let judged_draws: Vec<Option<(bool, f32, usize)>> = draws
                .iter()
                .map(|d| {
                    spec.as_ref().map(|s| {
                        let g = judge.judge(&decoder.decode(&d[j * w..(j + 1) * w]), s);
                        (g.verdict.pass, g.score, g.detections.len())
                    })
                })
                .collect();
            let passes: Vec<Option<(bool, f32)>> = judged_draws.iter().map(|p| p.map(|p| (p.0, p.1))).collect();
            let counts: Vec<Option<usize>> = judged_draws.iter().map(|p| p.map(|p| p.2)).collect();
            judged += passes.iter().flatten().count() as u64;
            failed += passes.iter().flatten().filter(|p| !p.0).count() as u64;
            let pair = match (cfg.same_count, own) {
                (false, _) => choose(&passes, cfg),
                (true, true) => choose_matched(&passes, &counts, cfg),
                (true, false) => {
                    // the teacher's image, judged as the draws are
                    let teacher = spec
                        .as_ref()
                        .map(|s| judge.judge(&decoder.decode(&winner[j * w..(j + 1) * w]), s).detections.len());
                    choose_teacher_matched(&passes, &counts, teacher, cfg)
                }
            };
            if let Some((win, lose)) = pair {
                keep.push((j, win, lose));
            }
        }
        let wins = rows(&keep, w, |p| p.1.map_or(&winner[..], |d| &draws[d][..]));
        let losses = rows(&keep, w, |p| &draws[p.2][..]);
        let n = keep.len();
        let tl = ds.text_len;
        let mut t = std::collections::BTreeMap::new();
        let cpu = Device::Cpu;
        t.insert("winner".to_string(), tensor_f32(&wins, &[n, l, c], cpu));
        t.insert("loser".to_string(), tensor_f32(&losses, &[n, l, c], cpu));
        let kept_ids: Vec<i64> =
            keep.iter().flat_map(|&(j, ..)| ids[j * tl..(j + 1) * tl].iter().map(|&i| i64::from(i))).collect();
        t.insert("ids".to_string(), Tensor::from_slice(&kept_ids).view([n as i64, tl as i64]));
        if ds.text_channels > 0 {
            let w = tl * ds.text_channels;
            t.insert("feats".to_string(), tensor_f32(&rows(&keep, w, |_| &feats[..]), &[n, tl, ds.text_channels], cpu));
        }
        let path = dir.join(part_file(k));
        let tmp = dir.join(format!("{}.tmp-{}", part_file(k), std::process::id()));
        crate::student::train::checkpoint::save_tensors(&tmp, &t)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        let extra = serde_json::json!({ "candidates": chunk.len(), "losers_judged": judged, "losers_failed": failed });
        commit(dir, k, n as u64, &id, extra)?;
        if k == 0 {
            grid_png(decoder, &wins, &losses, n.min(16), w, &dir.join("pairs.png"))?;
        }
        progress(chunk.len());
    }
    dist.barrier()?;
    load(dir, &id, all.len(), all.len().div_ceil(cfg.part_size.max(1)) as u64)
}

/// A kept pair: (prompt in the part, the winner's draw or None for the teacher's image, the
/// loser's draw).
type Kept = (usize, Option<usize>, usize);

/// Each kept pair's prompt row (`w` values) of the array `from` names for it.
fn rows<'a>(keep: &[Kept], w: usize, from: impl Fn(&Kept) -> &'a [f32]) -> Vec<f32> {
    keep.iter().flat_map(|p| from(p)[p.0 * w..(p.0 + 1) * w].iter().copied()).collect()
}

/// The pair a prompt gives, from the analyzer's (pass, alignment) on each of its draws (None:
/// no spec to judge by): (the winner's draw, or None for the teacher's image; the loser's).
/// Own samples: the passing draw with the best alignment (the cleanest pass: the GenEval-style
/// pass ignores extra objects of other classes, the alignment counts them) against the failing
/// draw with the best alignment (the nearest miss); the first of equals. A failing draw is
/// most often one with objects missing, so the first miss instead taught the curriculum
/// student to add objects (2.6 → 3.2 found per image; docs/student.md, "DPO helps once").
fn choose(passes: &[Option<(bool, f32)>], cfg: &PairsConfig) -> Option<(Option<usize>, usize)> {
    let best = |pass: bool| {
        best_aligned(passes.iter().enumerate().filter_map(|(d, p)| p.filter(|p| p.0 == pass).map(|p| (d, p.1))))
            .map(|(d, _)| d)
    };
    match cfg.winner {
        Winner::OwnSample => match (best(true), best(false)) {
            (Some(w), Some(l)) => Some((Some(w), l)),
            _ if cfg.margin > 0.0 => graded(passes, cfg.margin),
            _ => None,
        },
        Winner::Teacher => (!cfg.loser_must_fail || passes[0].is_some_and(|p| !p.0)).then_some((None, 0)),
    }
}

/// The teacher's image against a draw with as many objects found as in it (`teacher`; None:
/// not judged, no pair): the best-aligned failing such draw (the nearest miss), else, unless
/// the loser must fail, the best-aligned such draw.
fn choose_teacher_matched(
    passes: &[Option<(bool, f32)>],
    counts: &[Option<usize>],
    teacher: Option<usize>,
    cfg: &PairsConfig,
) -> Option<(Option<usize>, usize)> {
    let k = teacher?;
    let best = |fails_only: bool| {
        let ok = |d: usize, p: &(bool, f32)| counts[d] == Some(k) && (!fails_only || !p.0);
        best_aligned(passes.iter().enumerate().filter_map(|(d, p)| p.filter(|p| ok(d, p)).map(|p| (d, p.1))))
            .map(|(d, _)| d)
    };
    best(true).or_else(|| if cfg.loser_must_fail { None } else { best(false) }).map(|l| (None, l))
}

/// [`choose`] among draws with the same number of objects found, the best-aligned draw's
/// count first, then the others from the fewest up.
fn choose_matched(
    passes: &[Option<(bool, f32)>],
    counts: &[Option<usize>],
    cfg: &PairsConfig,
) -> Option<(Option<usize>, usize)> {
    let mut ks: Vec<usize> = counts.iter().flatten().copied().collect();
    ks.sort_unstable();
    ks.dedup();
    let top = best_aligned(passes.iter().enumerate().filter_map(|(d, p)| p.map(|p| (d, p.1))));
    if let Some(k) = top.and_then(|(d, _)| counts[d]) {
        ks.sort_by_key(|&x| x != k); // stable: the rest keep their order
    }
    ks.into_iter().find_map(|k| {
        let only: Vec<Option<(bool, f32)>> =
            passes.iter().zip(counts).map(|(p, c)| p.filter(|_| *c == Some(k))).collect();
        choose(&only, cfg)
    })
}

/// Draws that the pass alone cannot tell apart: the best-aligned draw against the best-aligned
/// draw at least `margin` below it (the nearest miss by alignment); the first of equals.
fn graded(passes: &[Option<(bool, f32)>], margin: f32) -> Option<(Option<usize>, usize)> {
    let scored: Vec<(usize, f32)> = passes.iter().enumerate().filter_map(|(d, p)| p.map(|p| (d, p.1))).collect();
    let top = |below: f32| best_aligned(scored.iter().copied().filter(|s| s.1 <= below));
    let (w, a) = top(f32::INFINITY)?;
    let (l, _) = top(a - margin)?;
    Some((Some(w), l))
}

/// The (draw, alignment) with the highest alignment; the first of equals.
fn best_aligned(scored: impl Iterator<Item = (usize, f32)>) -> Option<(usize, f32)> {
    scored.fold(None, |acc, (d, a)| match acc {
        Some((_, b)) if b >= a => acc,
        _ => Some((d, a)),
    })
}

fn part_file(k: u64) -> String {
    format!("part-{k:05}.safetensors")
}

/// Part `k`'s marker if the part is complete: written for set `id`, file size and hash as recorded.
fn done(dir: &Path, k: u64, id: &str) -> Option<commit::PartStats> {
    let st: commit::PartStats = serde_json::from_slice(&std::fs::read(dir.join(commit::stats_name(k))).ok()?).ok()?;
    let (hash, bytes) = commit::hash_file(&dir.join(part_file(k))).ok()?;
    (st.plan == id && st.part == k && st.blake3 == hash && st.bytes == bytes).then_some(st)
}

/// Writes part `k`'s marker, after its file.
fn commit(dir: &Path, k: u64, rows: u64, id: &str, extra: serde_json::Value) -> Result<()> {
    let path = dir.join(part_file(k));
    let (blake3, bytes) = commit::hash_file(&path).map_err(|e| Error::io(&path, e))?;
    let st = commit::PartStats { part: k, rows, bytes, blake3, plan: id.into(), extra };
    commit::write_atomic(&dir.join(commit::stats_name(k)), &serde_json::to_vec_pretty(&st).expect("stats serialise"))
}

/// How many losers were judged and failed, over the committed parts.
pub fn verdicts(dir: &Path, id: &str, parts: u64) -> (u64, u64) {
    (0..parts).filter_map(|k| done(dir, k, id)).fold((0, 0), |(j, f), st| {
        (j + st.extra["losers_judged"].as_u64().unwrap_or(0), f + st.extra["losers_failed"].as_u64().unwrap_or(0))
    })
}

/// Winner and loser side by side for the first pairs: `pairs.png`.
fn grid_png(decoder: &Decoder, winner: &[f32], loser: &[f32], n: usize, w: usize, path: &Path) -> Result<()> {
    let mut cells = Vec::new();
    for j in 0..n {
        cells.push((decoder.decode(&winner[j * w..(j + 1) * w]), true));
        cells.push((decoder.decode(&loser[j * w..(j + 1) * w]), false));
    }
    crate::report::chart::grid(&cells).save(path).map_err(|e| Error::Image { path: path.to_path_buf(), source: e })
}

/// Loads the `parts` parts of the set `id` in `dir` (all must be complete).
pub fn load(dir: &Path, id: &str, candidates: usize, parts: u64) -> Result<Pairs> {
    let mut p = Pairs { n: 0, winner: vec![], loser: vec![], ids: vec![], feats: vec![], candidates, id: id.into() };
    for k in 0..parts {
        let path = dir.join(part_file(k));
        if done(dir, k, id).is_none() {
            return Err(Error::invalid(path.display().to_string(), "missing, or does not match its marker"));
        }
        let t = crate::student::train::checkpoint::load_tensors(&path)?;
        let bad = |what: &str| Error::invalid(path.display().to_string(), format!("no `{what}` tensor"));
        let f32s = |name: &str| -> Vec<f32> { t.get(name).map(to_host).unwrap_or_default() };
        p.winner.extend(f32s("winner"));
        p.loser.extend(f32s("loser"));
        p.feats.extend(f32s("feats"));
        let ids = t.get("ids").ok_or_else(|| bad("ids"))?.to_kind(Kind::Int64).contiguous().view(-1);
        let ids = Vec::<i64>::try_from(&ids).map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
        p.ids.extend(ids.into_iter().map(|i| i as u32));
        p.n += t.get("winner").ok_or_else(|| bad("winner"))?.size()[0] as usize;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(winner: Winner, loser_must_fail: bool) -> PairsConfig {
        PairsConfig {
            count: 1,
            seed: 0,
            loser_must_fail,
            part_size: 1,
            sample: SampleOptions::default(),
            winner,
            draws: 4,
            margin: 0.0,
            same_count: false,
            families: Vec::new(),
        }
    }

    #[test]
    fn a_self_pair_is_the_cleanest_pass_against_the_nearest_miss() {
        let own = cfg(Winner::OwnSample, false);
        let (t, f) = (|a| Some((true, a)), |a| Some((false, a)));
        // A pass with an extra object (alignment 0.5) loses to a clean one (1.0); of the
        // misses, the one that got most right is the loser.
        assert_eq!(choose(&[f(0.2), t(0.5), f(0.6), t(1.0)], &own), Some((Some(3), 2)));
        assert_eq!(choose(&[t(0.5), f(0.0), f(0.0), t(0.5)], &own), Some((Some(0), 1)), "the first of equals");
        assert_eq!(choose(&[t(1.0), t(0.5)], &own), None, "all pass: nothing to prefer");
        assert_eq!(choose(&[f(0.5), f(0.2)], &own), None, "all fail: no winner");
        assert_eq!(choose(&[None, None], &own), None, "no spec: cannot judge");
        // With a margin, draws that all fail (or all pass) pair by alignment: the best against
        // the best at least the margin below it; a pass/fail split still decides first.
        let graded = PairsConfig { margin: 0.25, ..own.clone() };
        assert_eq!(choose(&[f(0.5), f(0.2), f(0.7), f(0.4), f(0.0)], &graded), Some((Some(2), 3)));
        assert_eq!(choose(&[t(1.0), t(0.5)], &graded), Some((Some(0), 1)));
        assert_eq!(choose(&[f(0.5), f(0.3)], &graded), None, "closer than the margin");
        assert_eq!(choose(&[f(0.2), t(0.5), f(0.6), t(1.0)], &graded), Some((Some(3), 2)));
        assert_eq!(choose(&[None, f(0.9), f(0.1)], &graded), Some((Some(1), 2)), "unjudged draws skipped");
        // The teacher's image wins against the first draw, which must fail only when asked.
        assert_eq!(choose(&[t(1.0)], &cfg(Winner::Teacher, false)), Some((None, 0)));
        assert_eq!(choose(&[None], &cfg(Winner::Teacher, false)), Some((None, 0)));
        assert_eq!(choose(&[t(1.0)], &cfg(Winner::Teacher, true)), None);
        assert_eq!(choose(&[f(0.5)], &cfg(Winner::Teacher, true)), Some((None, 0)));
    }

    #[test]
    fn matched_pairs_have_the_same_number_of_objects() {
        let own = PairsConfig { same_count: true, ..cfg(Winner::OwnSample, false) };
        let (t, f) = (|a| Some((true, a)), |a| Some((false, a)));
        // The cleanest pass (draw 3, 2 objects) and the nearest miss (draw 2, 1 object) differ
        // in count; the miss with 2 objects (draw 0) is taken instead.
        let passes = [f(0.2), t(0.5), f(0.6), t(1.0)];
        assert_eq!(choose(&passes, &own), Some((Some(3), 2)), "unmatched rule");
        assert_eq!(choose_matched(&passes, &[Some(2), Some(3), Some(1), Some(2)], &own), Some((Some(3), 0)));
        // No miss with the best draw's count: the next count that has both, fewest first.
        let c = [Some(1), Some(3), Some(2), Some(4)];
        assert_eq!(choose_matched(&passes, &c, &own), None, "no count has a pass and a miss");
        let c = [Some(3), Some(3), Some(1), Some(2)];
        assert_eq!(choose_matched(&passes, &c, &own), Some((Some(1), 0)));
        // Unjudged draws (no count) are never paired; the margin applies within a count.
        assert_eq!(choose_matched(&[None, t(1.0), f(0.0)], &[None, Some(2), Some(2)], &own), Some((Some(1), 2)));
        let graded = PairsConfig { margin: 0.25, ..own.clone() };
        assert_eq!(
            choose_matched(&[f(0.9), f(0.1), f(0.5)], &[Some(1), Some(2), Some(1)], &graded),
            Some((Some(0), 2))
        );
    }

    #[test]
    fn matched_teacher_pairs_take_a_draw_with_the_teachers_count() {
        let teacher = PairsConfig { same_count: true, ..cfg(Winner::Teacher, false) };
        let (t, f) = (|a| Some((true, a)), |a| Some((false, a)));
        let passes = [f(0.2), t(0.5), f(0.6), t(1.0)];
        let counts = [Some(2), Some(2), Some(4), Some(2)];
        // The teacher's image holds 2: of the draws with 2, the nearest miss (draw 0); draw 2
        // is a closer miss but holds 4.
        assert_eq!(choose_teacher_matched(&passes, &counts, Some(2), &teacher), Some((None, 0)));
        // No miss with its count: the best-aligned draw with it, unless the loser must fail.
        assert_eq!(choose_teacher_matched(&passes, &counts, Some(4), &teacher), Some((None, 2)));
        let c = [Some(1), Some(3), Some(1), Some(3)];
        assert_eq!(choose_teacher_matched(&passes, &c, Some(3), &teacher), Some((None, 3)));
        let must = PairsConfig { loser_must_fail: true, ..teacher.clone() };
        assert_eq!(choose_teacher_matched(&passes, &c, Some(3), &must), None);
        assert_eq!(choose_teacher_matched(&passes, &counts, Some(5), &teacher), None, "no draw has its count");
        assert_eq!(choose_teacher_matched(&passes, &counts, None, &teacher), None, "teacher not judged");
    }

    #[test]
    fn the_default_winner_leaves_the_pair_set_id_of_earlier_sets_unchanged() {
        let v = serde_json::to_value(cfg(Winner::Teacher, false)).unwrap();
        let mut c = cfg(Winner::Teacher, false);
        c.draws = 1;
        let v1 = serde_json::to_value(&c).unwrap();
        assert!(v.get("winner").is_none() && v1.get("draws").is_none(), "{v1}");
        let own = serde_json::to_value(cfg(Winner::OwnSample, false)).unwrap();
        assert_eq!((own["winner"].as_str(), own["draws"].as_u64()), (Some("self"), Some(4)));
        assert!(own.get("margin").is_none(), "no margin: self-pair sets keep their id too");
        assert!(own.get("same_count").is_none(), "unmatched: the same");
        assert!(own.get("families").is_none(), "every family: the same");
        let graded = serde_json::to_value(PairsConfig { margin: 0.25, ..cfg(Winner::OwnSample, false) }).unwrap();
        assert_eq!(graded["margin"].as_f64(), Some(0.25));
    }
}
