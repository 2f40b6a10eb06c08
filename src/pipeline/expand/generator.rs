//! The prompt stream: allocates the requested count over templates by weight (capped at
//! each template's capacity), interleaves templates so any prefix is a representative mix,
//! renders text, drops exact duplicates and assigns stable prompt ids.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::sampler::{TemplateSampler, ENUMERATE_LIMIT};
use crate::taxonomy::{Taxonomy, Template};

/// Consecutive duplicate draws after which a template switches to enumeration (or is exhausted).
const MAX_MISSES: u32 = 64;

/// One expanded prompt.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub index: u64,
    pub prompt_id: String,
    pub text: String,
    pub template: usize,
    /// Value index into each var's slot.
    pub values: Vec<u32>,
}

/// Splits `target` over items with weights `share` and limits `cap`, by largest remainder,
/// redistributing what a capped item cannot take (water-filling).
pub fn allocate(target: u64, share: &[f64], cap: &[f64]) -> Vec<u64> {
    let mut quota = vec![0u64; share.len()];
    let mut open: Vec<usize> = (0..share.len()).filter(|&i| cap[i] >= 1.0 && share[i] > 0.0).collect();
    let mut left = target;
    while left > 0 && !open.is_empty() {
        let total: f64 = open.iter().map(|&i| share[i]).sum();
        let exact: Vec<f64> = open.iter().map(|&i| left as f64 * share[i] / total).collect();
        let mut give: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
        let mut rest = left - give.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..open.len()).collect();
        order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
        for &o in order.iter().cycle().take(open.len().max(rest as usize)) {
            if rest == 0 {
                break;
            }
            give[o] += 1;
            rest -= 1;
        }
        let mut still = Vec::new();
        for (o, &i) in open.iter().enumerate() {
            let room = (cap[i] - quota[i] as f64).max(0.0);
            let g = (give[o] as f64).min(room) as u64;
            quota[i] += g;
            left -= g;
            if (quota[i] as f64) < cap[i] {
                still.push(i);
            }
        }
        if still.len() == open.len() && left > 0 && give.iter().all(|&g| g == 0) {
            break;
        }
        open = still;
    }
    quota
}

#[derive(PartialEq)]
struct Due(f64, usize);
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // Min-heap on progress (produced / quota), ties by template index.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// Streams the prompts of a taxonomy, deterministically for a seed.
pub struct Generator<'a> {
    tax: &'a Taxonomy,
    samplers: Vec<TemplateSampler>,
    quota: Vec<u64>,
    produced: Vec<u64>,
    exhausted: Vec<bool>,
    heap: BinaryHeap<Due>,
    seen: HashSet<u64>,
    target: u64,
    emitted: u64,
    /// Draws dropped because their text had been produced already.
    pub duplicates: u64,
}

impl<'a> Generator<'a> {
    /// `count` is capped at the taxonomy's capacity: check [`Generator::target`].
    pub fn new(tax: &'a Taxonomy, count: u64, seed: u64) -> Generator<'a> {
        let share: Vec<f64> = tax.templates.iter().map(|t| t.share).collect();
        let cap: Vec<f64> = tax.templates.iter().map(|t| t.capacity).collect();
        let quota = allocate(count, &share, &cap);
        let target = quota.iter().sum();
        let n = tax.templates.len();
        let mut g = Generator {
            tax,
            samplers: tax.templates.iter().map(|t| TemplateSampler::new(tax, t, seed)).collect(),
            quota,
            produced: vec![0; n],
            exhausted: vec![false; n],
            heap: BinaryHeap::new(),
            seen: HashSet::with_capacity(target as usize),
            target,
            emitted: 0,
            duplicates: 0,
        };
        g.rebuild_heap();
        g
    }

    /// How many prompts this generator will produce at most.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Prompts produced per template so far.
    pub fn produced(&self) -> &[u64] {
        &self.produced
    }

    fn rebuild_heap(&mut self) {
        self.heap = (0..self.quota.len())
            .filter(|&t| !self.exhausted[t] && self.produced[t] < self.quota[t])
            .map(|t| Due((self.produced[t] as f64 + 0.5) / self.quota[t] as f64, t))
            .collect();
    }

    /// A template ran dry below its quota: give its deficit to the others.
    fn reallocate(&mut self) {
        let left = self.target - self.emitted;
        let share: Vec<f64> = self
            .tax
            .templates
            .iter()
            .enumerate()
            .map(|(t, tp)| if self.exhausted[t] { 0.0 } else { tp.share })
            .collect();
        let cap: Vec<f64> = self
            .tax
            .templates
            .iter()
            .enumerate()
            .map(|(t, tp)| if self.exhausted[t] { 0.0 } else { (tp.capacity - self.produced[t] as f64).max(0.0) })
            .collect();
        let extra = allocate(left, &share, &cap);
        for t in 0..self.quota.len() {
            self.quota[t] = self.produced[t] + extra[t];
        }
        self.target = self.emitted + extra.iter().sum::<u64>();
        self.rebuild_heap();
    }

    fn text_key(text: &str) -> u64 {
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    }

    /// Renders an assignment given as local indices into each var's allowed values.
    fn assemble(&self, t: &Template, local: &[u32]) -> (Vec<u32>, String) {
        let values: Vec<u32> = local.iter().zip(&t.vars).map(|(&l, v)| v.allowed[l as usize]).collect();
        let mut text = String::with_capacity(64);
        self.tax.render(t, &t.pieces, &values, &mut text);
        (values, text)
    }

    /// Tries template `ti` until it yields a new prompt; `None` if it is exhausted.
    fn draw_from(&mut self, ti: usize) -> Option<(Vec<u32>, String)> {
        let t = &self.tax.templates[ti];
        let mut misses = 0;
        loop {
            let local = self.samplers[ti].next()?;
            let (values, text) = self.assemble(t, &local);
            if self.seen.insert(Self::text_key(&text)) {
                self.samplers[ti].accept(&local);
                return Some((values, text));
            }
            self.duplicates += 1;
            misses += 1;
            if misses >= MAX_MISSES {
                if t.capacity > ENUMERATE_LIMIT {
                    return None;
                }
                let seen = &self.seen;
                let tax = self.tax;
                self.samplers[ti].enumerate_rest(|l| {
                    let values: Vec<u32> = l.iter().zip(&t.vars).map(|(&x, v)| v.allowed[x as usize]).collect();
                    let mut text = String::new();
                    tax.render(t, &t.pieces, &values, &mut text);
                    !seen.contains(&Self::text_key(&text))
                });
                misses = 0;
            }
        }
    }

    /// Stable id: blake3 over taxonomy name and version, template id and the assignment.
    pub fn prompt_id(tax: &Taxonomy, t: &Template, values: &[u32]) -> String {
        let mut h = blake3::Hasher::new();
        h.update(tax.name.as_bytes()).update(b"\0").update(tax.version.as_bytes()).update(b"\0");
        h.update(t.id.as_bytes());
        for (v, &i) in t.vars.iter().zip(values) {
            h.update(b"\0").update(v.name.as_bytes()).update(b"=");
            h.update(tax.slots[v.slot].values[i as usize].text.as_bytes());
        }
        h.finalize().to_hex()[..32].to_string()
    }
}

impl Iterator for Generator<'_> {
    type Item = Prompt;

    fn next(&mut self) -> Option<Prompt> {
        loop {
            let Due(_, ti) = self.heap.pop()?;
            match self.draw_from(ti) {
                Some((values, text)) => {
                    self.produced[ti] += 1;
                    if self.produced[ti] < self.quota[ti] {
                        self.heap.push(Due((self.produced[ti] as f64 + 0.5) / self.quota[ti] as f64, ti));
                    }
                    let t = &self.tax.templates[ti];
                    let prompt = Prompt {
                        index: self.emitted,
                        prompt_id: Self::prompt_id(self.tax, t, &values),
                        text,
                        template: ti,
                        values,
                    };
                    self.emitted += 1;
                    return Some(prompt);
                }
                None => {
                    self.exhausted[ti] = true;
                    self.reallocate();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_follows_weights_and_caps() {
        assert_eq!(allocate(10, &[0.5, 0.5], &[1e9, 1e9]), vec![5, 5]);
        assert_eq!(allocate(10, &[0.5, 0.5], &[2.0, 1e9]), vec![2, 8]);
        assert_eq!(allocate(100, &[0.5, 0.5], &[2.0, 3.0]), vec![2, 3]);
        let q = allocate(7, &[0.2, 0.3, 0.5], &[1e9; 3]);
        assert_eq!(q.iter().sum::<u64>(), 7);
        assert_eq!(q, vec![1, 2, 4]);
    }

    #[test]
    fn capped_template_gives_all_its_prompts_and_no_duplicates() {
        let tax = Taxonomy::parse(
            "t.toml",
            r#"
[taxonomy]
name = "t"
version = "1"
[slots.x]
values = ["a", "b", "c"]
[slots.y]
values = ["p", "q", "r", "s", "t", "u", "v", "w"]
[[families]]
name = "small"
[[families.templates]]
id = "one"
text = "only {x}"
vars = { x = "x" }
[[families]]
name = "big"
[[families.templates]]
id = "two"
text = "{x} with {y} and {z}"
vars = { x = "x", y = "y", z = "y" }
"#,
        )
        .unwrap();
        let prompts: Vec<Prompt> = Generator::new(&tax, 100, 1).collect();
        assert_eq!(prompts.len(), 100);
        assert_eq!(prompts.iter().filter(|p| p.template == 0).count(), 3);
        let texts: HashSet<&str> = prompts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts.len(), 100);
        // Asking for more than exists stops at the maximum (3 + 3·8·8 = 195).
        let all: Vec<Prompt> = Generator::new(&tax, 1000, 1).collect();
        assert_eq!(all.len(), 195);
        assert_eq!(all.iter().map(|p| &p.text).collect::<HashSet<_>>().len(), 195);
    }

    #[test]
    fn ids_are_stable_and_depend_on_assignment() {
        let tax = Taxonomy::load("builtin:shapes", std::path::Path::new(".")).unwrap();
        let a: Vec<Prompt> = Generator::new(&tax, 20, 7).collect();
        let b: Vec<Prompt> = Generator::new(&tax, 20, 7).collect();
        assert_eq!(
            a.iter().map(|p| &p.prompt_id).collect::<Vec<_>>(),
            b.iter().map(|p| &p.prompt_id).collect::<Vec<_>>()
        );
        let ids: HashSet<&String> = a.iter().map(|p| &p.prompt_id).collect();
        assert_eq!(ids.len(), 20);
        let t = &tax.templates[a[0].template];
        assert_eq!(Generator::prompt_id(&tax, t, &a[0].values), a[0].prompt_id);
    }
}
