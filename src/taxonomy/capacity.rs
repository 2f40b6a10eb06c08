//! How many distinct assignments a template admits: the product of the vars' value counts,
//! minus those that break a `distinct` pair, by inclusion–exclusion over the pairs.

use std::collections::HashSet;

use super::{Slot, Template};

/// Above this many distinct pairs, inclusion–exclusion (2^pairs terms) is skipped and the
/// plain product is returned as an upper bound.
const MAX_PAIRS: usize = 16;

/// Exact number of valid assignments of `t` (an upper bound if it has over 16 distinct pairs).
pub fn capacity(t: &Template, slots: &[Slot]) -> f64 {
    // Value ids per var, so that equality is by text across slots.
    let ids: Vec<HashSet<u32>> =
        t.vars.iter().map(|v| v.allowed.iter().map(|&i| slots[v.slot].values[i as usize].id).collect()).collect();
    let pairs: Vec<(usize, usize)> = {
        let mut p = t.distinct.clone();
        p.sort_unstable();
        p.dedup();
        p
    };
    if pairs.len() > MAX_PAIRS {
        return ids.iter().map(|s| s.len() as f64).product();
    }
    let mut total = 0.0;
    for mask in 0u32..(1 << pairs.len()) {
        // Vars joined by the pairs in `mask` must be equal: count assignments where they are.
        let mut parent: Vec<usize> = (0..ids.len()).collect();
        fn find(p: &mut [usize], x: usize) -> usize {
            let mut r = x;
            while p[r] != r {
                r = p[r];
            }
            p[x] = r;
            r
        }
        for (k, &(a, b)) in pairs.iter().enumerate() {
            if mask & (1 << k) != 0 {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra] = rb;
            }
        }
        let mut term = 1.0;
        for root in 0..ids.len() {
            if find(&mut parent, root) != root {
                continue;
            }
            let members: Vec<usize> = (0..ids.len()).filter(|&v| find(&mut parent, v) == root).collect();
            let common = ids[members[0]].iter().filter(|id| members[1..].iter().all(|&m| ids[m].contains(id))).count();
            term *= common as f64;
        }
        total += if mask.count_ones() % 2 == 0 { term } else { -term };
    }
    total.max(0.0)
}

#[cfg(test)]
mod tests {
    use crate::taxonomy::Taxonomy;

    fn tax(vars: &str, distinct: &str) -> Taxonomy {
        let text = format!(
            r#"
[taxonomy]
name = "t"
version = "1"
[slots.shape]
values = ["circle", "square", "star"]
[slots.color]
values = ["red", "blue"]
[[families]]
name = "f"
[[families.templates]]
id = "t"
text = "{{a}} {{b}} {{c}}"
vars = {vars}
distinct = {distinct}
"#
        );
        Taxonomy::parse("t.toml", &text).unwrap()
    }

    #[test]
    fn product_without_constraints() {
        let t = tax(r#"{ a = "shape", b = "shape", c = "color" }"#, "[]");
        assert_eq!(t.templates[0].capacity, 3.0 * 3.0 * 2.0);
    }

    #[test]
    fn distinct_pairs_by_inclusion_exclusion() {
        // a ≠ b among 3 shapes: 3·2 = 6, times 2 colours.
        let t = tax(r#"{ a = "shape", b = "shape", c = "color" }"#, r#"[["a", "b"]]"#);
        assert_eq!(t.templates[0].capacity, 12.0);
        // All three shapes different: 3! = 6.
        let t = tax(r#"{ a = "shape", b = "shape", c = "shape" }"#, r#"[["a", "b", "c"]]"#);
        assert_eq!(t.templates[0].capacity, 6.0);
        // Different slots share no text: the constraint removes nothing.
        let t = tax(r#"{ a = "shape", b = "color", c = "color" }"#, r#"[["a", "b"]]"#);
        assert_eq!(t.templates[0].capacity, 12.0);
    }
}
