//! `lightgen manifest subset`: a new manifest over some rows of an existing one — by count or
//! fraction, within strata, filtered on family or slot values, drawn at random or so as to keep
//! the taxonomy's coverage — with no data copied. Its lineage names its parent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::formats::commit;
use crate::formats::manifest::{root_of, selection_rows, Manifest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Uniformly at random.
    Random,
    /// First every slot value and every pair of values across slots that the candidates have,
    /// then at random.
    Coverage,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "random" => Ok(Strategy::Random),
            "coverage" => Ok(Strategy::Coverage),
            other => Err(format!("\"{other}\": expected random or coverage")),
        }
    }
}

/// What to keep.
#[derive(Debug, Clone)]
pub struct Rule {
    pub count: Option<u64>,
    pub fraction: Option<f64>,
    pub strategy: Strategy,
    /// (key, allowed values): key `family` or `slot:<name>`; a sample passes if it has any
    /// (or, with `only_allowed`, if every value it has is allowed).
    pub filters: Vec<(String, Vec<String>)>,
    pub only_allowed: bool,
    /// Apply count/fraction within each stratum (`family` or `slot:<name>`).
    pub stratum: Option<String>,
    pub seed: u64,
}

impl Rule {
    /// Parses `key=v1,v2` filters.
    pub fn parse_filter(s: &str) -> Result<(String, Vec<String>)> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Error::invalid("--where", format!("\"{s}\": expected key=value[,value…]")))?;
        if k != "family" && !k.starts_with("slot:") {
            return Err(Error::invalid("--where", format!("\"{k}\": expected family or slot:<name>")));
        }
        Ok((k.to_string(), v.split(',').map(str::to_string).collect()))
    }

    pub fn describe(&self) -> String {
        let mut parts = vec![format!("strategy={:?}", self.strategy).to_lowercase(), format!("seed={}", self.seed)];
        if let Some(c) = self.count {
            parts.push(format!("count={c}"));
        }
        if let Some(f) = self.fraction {
            parts.push(format!("fraction={f}"));
        }
        if let Some(s) = &self.stratum {
            parts.push(format!("per={s}"));
        }
        let word = if self.only_allowed { "only" } else { "where" };
        for (k, v) in &self.filters {
            parts.push(format!("{word} {k}={}", v.join(",")));
        }
        parts.join(" ")
    }
}

struct Candidate {
    shard: usize,
    row: u32,
    family: String,
    prompt: usize,
}

/// Rows to keep per shard of `m` (ascending), by `rule`.
pub fn select(manifest_path: &Path, m: &Manifest, rule: &Rule) -> Result<Vec<Vec<u32>>> {
    let root = root_of(manifest_path);
    let mut cands = Vec::new();
    let mut prompt_ix: HashMap<String, usize> = HashMap::new();
    for (k, s) in m.shards.iter().enumerate() {
        let path = root.join(&s.index);
        let f = crate::formats::frame::Frame::read(&path, None)?;
        let (rows, pids, fams) = (f.u32("row")?, f.str("prompt_id")?, f.str("family")?);
        let df = &f.df;
        let allowed: Option<HashSet<u32>> = match s.selection.as_ref() {
            Some(sel) => {
                let p = root.join(&sel.path);
                Some(selection_rows(&std::fs::read(&p).map_err(|e| Error::io(&p, e))?).into_iter().collect())
            }
            None => None,
        };
        for i in 0..df.height() {
            let row = f.required("row", i, rows.get(i))?;
            if allowed.as_ref().is_some_and(|a| !a.contains(&row)) {
                continue;
            }
            let pid = pids.get(i).unwrap_or_default().to_string();
            let n = prompt_ix.len();
            let prompt = *prompt_ix.entry(pid).or_insert(n);
            cands.push(Candidate { shard: k, row, family: fams.get(i).unwrap_or_default().to_string(), prompt });
        }
    }
    // Slot values of the prompts involved, from the expand stage beside the manifest.
    let mut slots: Vec<BTreeMap<String, Vec<String>>> = vec![BTreeMap::new(); prompt_ix.len()];
    for p in commit::committed_parts(&root.join("expand"))? {
        for row in crate::formats::prompt_rows::read_prompts(&p)? {
            if let Some(&i) = prompt_ix.get(&row.prompt_id) {
                slots[i] = row.slots;
            }
        }
    }
    let key_values = |c: &Candidate, key: &str| -> Vec<String> {
        match key.strip_prefix("slot:") {
            Some(slot) => slots[c.prompt].get(slot).cloned().unwrap_or_default(),
            None => vec![c.family.clone()],
        }
    };
    cands.retain(|c| {
        rule.filters.iter().all(|(k, vals)| {
            let have = key_values(c, k);
            match rule.only_allowed {
                true => have.iter().all(|v| vals.contains(v)),
                false => have.iter().any(|v| vals.contains(v)),
            }
        })
    });

    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in cands.iter().enumerate() {
        let key = rule.stratum.as_deref().map(|k| key_values(c, k).join("+")).unwrap_or_default();
        groups.entry(key).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(rule.seed);
    let mut chosen: Vec<usize> = Vec::new();
    for (_, mut members) in groups {
        let n = match (rule.count, rule.fraction) {
            (Some(c), _) => c as usize,
            (None, Some(f)) => (f * members.len() as f64).round() as usize,
            (None, None) => members.len(),
        }
        .min(members.len());
        members.shuffle(&mut rng);
        if rule.strategy == Strategy::Coverage {
            members = coverage_order(&members, n, |i| slots[cands[i].prompt].clone());
        }
        chosen.extend(members.into_iter().take(n));
    }
    let mut rows = vec![Vec::new(); m.shards.len()];
    for i in chosen {
        rows[cands[i].shard].push(cands[i].row);
    }
    for r in &mut rows {
        r.sort_unstable();
    }
    Ok(rows)
}

/// Orders `members` so that the first `n` cover as much as they can: first samples that bring
/// a slot value not yet seen (the one bringing most, among a look-ahead window), then samples
/// that bring an unseen pair of values across slots, then the rest in their given order.
fn coverage_order(
    members: &[usize],
    n: usize,
    slots_of: impl Fn(usize) -> BTreeMap<String, Vec<String>>,
) -> Vec<usize> {
    let singles = |i: usize| -> Vec<String> {
        slots_of(i).iter().flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}"))).collect()
    };
    let pairs = |i: usize| -> Vec<String> {
        let s = singles(i);
        let mut out = Vec::new();
        for (a, x) in s.iter().enumerate() {
            for y in &s[a + 1..] {
                if x.split('=').next() != y.split('=').next() {
                    out.push(format!("{x}|{y}"));
                }
            }
        }
        out
    };
    let mut taken = vec![false; members.len()];
    let mut order = Vec::with_capacity(members.len());
    for features in [&singles as &dyn Fn(usize) -> Vec<String>, &pairs] {
        let mut seen: HashSet<String> = order.iter().flat_map(|&i| features(i)).collect();
        // Greedy by gain over a window of the (shuffled) remaining candidates: near-optimal
        // coverage without scanning everything for every pick.
        const WINDOW: usize = 256;
        loop {
            if order.len() >= n {
                break;
            }
            let window: Vec<usize> = (0..members.len()).filter(|&j| !taken[j]).take(WINDOW).collect();
            let best = window
                .iter()
                .map(|&j| (features(members[j]).iter().filter(|f| !seen.contains(*f)).count(), j))
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            match best {
                Some((gain, j)) if gain > 0 => {
                    taken[j] = true;
                    seen.extend(features(members[j]));
                    order.push(members[j]);
                }
                _ => break,
            }
        }
    }
    order.extend((0..members.len()).filter(|&j| !taken[j]).map(|j| members[j]));
    order
}
