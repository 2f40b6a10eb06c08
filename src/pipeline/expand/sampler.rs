//! Coverage-first sampling of one template's assignments.
//!
//! Each var draws from a shuffled *deck* holding every allowed value (in proportion to its
//! weight), so every value comes up once per deck before any repeats: with N draws over k
//! equally weighted values each value appears ⌊N/k⌋ or ⌈N/k⌉ times. Pairs are balanced
//! greedily: a var looks ahead a window of its deck and takes the card whose pairs with the
//! vars already chosen have been seen least. Cards only move within a deck, so value
//! balance is kept. When the template is nearly exhausted, the remaining assignments are
//! enumerated instead, so a capacity-limited template ends with every prompt, never repeats.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::taxonomy::{Taxonomy, Template};

/// How far ahead in its deck a var looks for a better-balanced card.
const WINDOW: usize = 32;
/// Pair tables larger than this many cells are not kept (no pair balancing for that pair).
const MAX_PAIR_CELLS: usize = 1 << 22;
/// Templates with at most this many assignments can be enumerated when sampling stalls.
pub const ENUMERATE_LIMIT: f64 = 2_000_000.0;

struct Deck {
    cards: Vec<u32>,
    pos: usize,
}

struct PairTable {
    a: usize,
    b: usize,
    /// counts[va * k_b + vb], local value indices.
    counts: Vec<u32>,
}

/// Draws assignments (local indices into each var's `allowed`) for one template.
pub struct TemplateSampler {
    rng: ChaCha8Rng,
    probs: Vec<Vec<f64>>,
    /// Interned value ids per var and local index, for `distinct`.
    ids: Vec<Vec<u32>>,
    /// For var j: the vars it must differ from.
    differ: Vec<Vec<usize>>,
    decks: Vec<Deck>,
    /// pair_of[i][j]: index into `pairs` of the table for vars i and j (either order).
    pair_of: Vec<Vec<Option<usize>>>,
    pairs: Vec<PairTable>,
    /// Draws so far; rotates which var chooses first, so every pair gets balanced both ways.
    draws: usize,
    fallback: Option<std::vec::IntoIter<Vec<u32>>>,
}

/// Marks a var not chosen yet within a draw.
const UNSET: u32 = u32::MAX;

impl TemplateSampler {
    pub fn new(tax: &Taxonomy, t: &Template, seed: u64) -> TemplateSampler {
        let n = t.vars.len();
        let ids: Vec<Vec<u32>> = t
            .vars
            .iter()
            .map(|v| v.allowed.iter().map(|&i| tax.slots[v.slot].values[i as usize].id).collect())
            .collect();
        let mut differ = vec![Vec::new(); n];
        for &(a, b) in &t.distinct {
            differ[b].push(a);
            differ[a].push(b);
        }
        let mut pairs = Vec::new();
        let mut pair_of = vec![vec![None; n]; n];
        for b in 0..n {
            for a in 0..b {
                let cells = ids[a].len() * ids[b].len();
                if cells <= MAX_PAIR_CELLS {
                    pair_of[a][b] = Some(pairs.len());
                    pair_of[b][a] = Some(pairs.len());
                    pairs.push(PairTable { a, b, counts: vec![0; cells] });
                }
            }
        }
        let key = blake3::hash(format!("{seed}:{}", t.id).as_bytes());
        let rng = ChaCha8Rng::from_seed(*key.as_bytes());
        TemplateSampler {
            rng,
            probs: t.vars.iter().map(|v| v.probs.clone()).collect(),
            ids,
            differ,
            decks: (0..n).map(|_| Deck { cards: Vec::new(), pos: 0 }).collect(),
            pair_of,
            pairs,
            draws: 0,
            fallback: None,
        }
    }

    /// The next candidate assignment, or `None` when the template has nothing left.
    pub fn next(&mut self) -> Option<Vec<u32>> {
        if let Some(it) = &mut self.fallback {
            return it.next();
        }
        let n = self.decks.len();
        let mut chosen = vec![UNSET; n];
        let first = self.draws % n.max(1);
        self.draws += 1;
        for k in 0..n {
            let j = (first + k) % n;
            chosen[j] = self.draw(j, &chosen)?;
        }
        Some(chosen)
    }

    /// Records an assignment that was kept, for pair balancing.
    pub fn accept(&mut self, chosen: &[u32]) {
        for p in &mut self.pairs {
            let kb = self.ids[p.b].len();
            p.counts[chosen[p.a] as usize * kb + chosen[p.b] as usize] += 1;
        }
    }

    /// Switches to enumerating every valid assignment not rejected by `keep`, shuffled.
    pub fn enumerate_rest(&mut self, mut keep: impl FnMut(&[u32]) -> bool) {
        let sizes: Vec<usize> = self.ids.iter().map(Vec::len).collect();
        let mut all = Vec::new();
        let mut cur = vec![0u32; sizes.len()];
        'outer: loop {
            let valid = (0..cur.len())
                .all(|j| self.differ[j].iter().all(|&i| self.ids[i][cur[i] as usize] != self.ids[j][cur[j] as usize]));
            if valid && keep(&cur) {
                all.push(cur.clone());
            }
            for j in (0..cur.len()).rev() {
                cur[j] += 1;
                if (cur[j] as usize) < sizes[j] {
                    continue 'outer;
                }
                cur[j] = 0;
            }
            break;
        }
        all.shuffle(&mut self.rng);
        self.fallback = Some(all.into_iter());
    }

    fn draw(&mut self, j: usize, chosen: &[u32]) -> Option<u32> {
        if self.decks[j].pos >= self.decks[j].cards.len() {
            self.refill(j);
        }
        let end = (self.decks[j].pos + WINDOW).min(self.decks[j].cards.len());
        let mut best: Option<(u32, usize)> = None;
        for idx in self.decks[j].pos..end {
            let card = self.decks[j].cards[idx];
            if self.conflicts(j, card, chosen) {
                continue;
            }
            let score = self.pair_score(j, card, chosen);
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, idx));
                if score == 0 {
                    break;
                }
            }
        }
        let deck = &mut self.decks[j];
        if let Some((_, idx)) = best {
            deck.cards.swap(deck.pos, idx);
            deck.pos += 1;
            return Some(deck.cards[deck.pos - 1]);
        }
        // Every card in the window clashes with a `distinct` partner: take any value that does not.
        let k = self.ids[j].len() as u32;
        let start = self.rng.random_range(0..k);
        (0..k).map(|o| (start + o) % k).find(|&c| !self.conflicts(j, c, chosen))
    }

    /// How often the pairs of `card` (for var j) with the vars chosen so far were seen.
    fn pair_score(&self, j: usize, card: u32, chosen: &[u32]) -> u32 {
        let mut score = 0;
        for (i, &c) in chosen.iter().enumerate() {
            if c == UNSET {
                continue;
            }
            if let Some(p) = self.pair_of[i][j] {
                let t = &self.pairs[p];
                let kb = self.ids[t.b].len();
                let (va, vb) = if t.a == i { (c, card) } else { (card, c) };
                score += t.counts[va as usize * kb + vb as usize];
            }
        }
        score
    }

    fn conflicts(&self, j: usize, card: u32, chosen: &[u32]) -> bool {
        let id = self.ids[j][card as usize];
        self.differ[j].iter().any(|&i| chosen[i] != UNSET && self.ids[i][chosen[i] as usize] == id)
    }

    /// A new shuffled deck: each value once when weights are equal, else about 2k cards
    /// in proportion to the weights (randomised rounding keeps the expectation exact).
    fn refill(&mut self, j: usize) {
        let probs = &self.probs[j];
        let k = probs.len();
        let equal = probs.iter().all(|&p| (p - probs[0]).abs() < 1e-12);
        let deck = &mut self.decks[j];
        deck.cards.clear();
        deck.pos = 0;
        if equal {
            deck.cards.extend(0..k as u32);
        } else {
            let size = 2.0 * k as f64;
            for (c, &p) in probs.iter().enumerate() {
                let m = p * size;
                let mut copies = m.floor() as usize;
                if self.rng.random::<f64>() < m - m.floor() {
                    copies += 1;
                }
                deck.cards.extend(std::iter::repeat_n(c as u32, copies));
            }
            if deck.cards.is_empty() {
                deck.cards.push(sample_weighted(&mut self.rng, probs) as u32);
            }
        }
        deck.cards.shuffle(&mut self.rng);
    }
}

fn sample_weighted(rng: &mut impl Rng, probs: &[f64]) -> usize {
    let mut x: f64 = rng.random();
    for (i, &p) in probs.iter().enumerate() {
        if x < p {
            return i;
        }
        x -= p;
    }
    probs.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taxonomy::Taxonomy;

    fn tax(slot_values: usize, distinct: bool) -> Taxonomy {
        let values: Vec<String> = (0..slot_values).map(|i| format!("\"v{i}\"")).collect();
        let text = format!(
            r#"
[taxonomy]
name = "t"
version = "1"
[slots.x]
values = [{}]
[slots.y]
values = ["p", "q", "r", "s", "t"]
[[families]]
name = "f"
[[families.templates]]
id = "t"
text = "{{a}} {{b}} {{c}}"
vars = {{ a = "x", b = "x", c = "y" }}
distinct = {}
"#,
            values.join(", "),
            if distinct { r#"[["a", "b"]]"# } else { "[]" }
        );
        Taxonomy::parse("t.toml", &text).unwrap()
    }

    fn draw(tax: &Taxonomy, n: usize, seed: u64) -> Vec<Vec<u32>> {
        let mut s = TemplateSampler::new(tax, &tax.templates[0], seed);
        (0..n)
            .map(|_| {
                let a = s.next().unwrap();
                s.accept(&a);
                a
            })
            .collect()
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let t = tax(7, true);
        assert_eq!(draw(&t, 50, 1), draw(&t, 50, 1));
        assert_ne!(draw(&t, 50, 1), draw(&t, 50, 2));
    }

    #[test]
    fn every_value_appears_at_least_floor_n_over_k_times() {
        // Coverage property: N draws over k equally weighted values.
        let t = tax(7, false);
        for n in [7, 20, 100, 333] {
            let draws = draw(&t, n, 3);
            for var in 0..3 {
                let k = t.templates[0].vars[var].allowed.len();
                let mut counts = vec![0; k];
                draws.iter().for_each(|d| counts[d[var] as usize] += 1);
                let min = *counts.iter().min().unwrap();
                assert!(min >= n / k, "var {var}, n {n}: counts {counts:?}");
            }
        }
    }

    #[test]
    fn pairs_are_covered_before_they_repeat_much() {
        // 7 × 5 = 35 (a, c) pairs. Independent uniform draws would cover 35·(1 − e^−1) ≈ 22
        // of them in 35 draws; the greedy look-ahead must do much better, on every seed.
        let t = tax(7, false);
        let mut worst = 35;
        let mut total = 0;
        for seed in 0..20 {
            let draws = draw(&t, 35, seed);
            let seen: std::collections::HashSet<(u32, u32)> = draws.iter().map(|d| (d[0], d[2])).collect();
            worst = worst.min(seen.len());
            total += seen.len();
        }
        eprintln!("pairs covered after 35 draws: worst {worst}, mean {}", total as f64 / 20.0);
        assert!(worst >= 27, "worst seed covers only {worst} of 35 pairs");
        assert!(total >= 30 * 20, "mean coverage {} below 30 of 35", total as f64 / 20.0);
        // And after 3 × 35 draws, all of them, on every seed.
        for seed in 0..20 {
            let seen: std::collections::HashSet<(u32, u32)> =
                draw(&t, 105, seed).iter().map(|d| (d[0], d[2])).collect();
            assert_eq!(seen.len(), 35, "seed {seed}");
        }
    }

    #[test]
    fn distinct_vars_never_collide() {
        let t = tax(3, true);
        for d in draw(&t, 200, 9) {
            assert_ne!(d[0], d[1]);
        }
    }

    #[test]
    fn enumeration_yields_every_valid_assignment_once() {
        let t = tax(3, true);
        let mut s = TemplateSampler::new(&t, &t.templates[0], 0);
        s.enumerate_rest(|_| true);
        let mut all = Vec::new();
        while let Some(a) = s.next() {
            all.push(a);
        }
        assert_eq!(all.len() as f64, t.templates[0].capacity);
        all.sort();
        all.dedup();
        assert_eq!(all.len() as f64, t.templates[0].capacity);
    }
}
