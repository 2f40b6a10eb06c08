//! What the shapes teacher draws and where: the objects a request asks for (after at most one
//! injected failure), their sizes, and a placement without overlap in which every relation
//! holds, optionally on the token grid (`generate.shapes.grid`).

use rand::{Rng, RngExt};

use super::geometry::{bbox, class_index, relations, CLASSES};
use super::render::ShapesTeacherConfig;
use super::{color, SceneRequest};

/// An object being planned: class, colour, radius in pixels, and the relation it must keep.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub class: usize,
    pub color: usize,
    pub radius: f32,
    /// (index of the object it is placed relative to, relation).
    pub anchor: Option<(usize, &'static str)>,
    pub x: f32,
    pub y: f32,
}

fn opposite(rel: &str) -> &'static str {
    match rel {
        "left of" => "right of",
        "right of" => "left of",
        "above" => "below",
        _ => "above",
    }
}

fn static_rel(rel: &str) -> &'static str {
    match rel {
        "left of" => "left of",
        "right of" => "right of",
        "above" => "above",
        _ => "below",
    }
}

/// A size name's radius in pixels: jittered ±8%, or on a grid rounded to it without the jitter
/// (the jitter is drawn either way, so a grid changes no other draw).
fn radius(name: Option<&str>, u: f32, grid: Option<Grid>, rng: &mut impl Rng) -> f32 {
    let base = match name {
        Some("small") => 6.0,
        Some("large") => 10.5,
        Some("medium") => 8.0,
        _ => [6.0, 8.0, 10.5][rng.random_range(0..3)],
    };
    let jitter = rng.random_range(0.92f32..1.08);
    grid.map_or(base * u * jitter, |g| g.radius(base * u))
}

/// `generate.shapes.grid`: objects whose bounding squares cover whole grid cells.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    step: f32,
}

impl Grid {
    pub(super) fn new(step: u32) -> Option<Grid> {
        (step > 0).then_some(Grid { step: step as f32 })
    }

    /// The radius rounded to half a step (at least half a step): the square is whole cells.
    fn radius(self, r: f32) -> f32 {
        let half = self.step / 2.0;
        ((r / half).round() * half).max(half)
    }

    /// Half a step smaller, down to one step (two cells across), for a crowded scene's retry.
    /// Never larger: an object already one cell across (a grid as coarse as the object, as 8-px
    /// cells at 32 px) keeps its size, where `max(step)` grew it to two cells and left every
    /// later grid round unable to place a relation.
    fn shrink(self, r: f32) -> f32 {
        if r <= self.step {
            r
        } else {
            (r - self.step / 2.0).max(self.step)
        }
    }

    /// The centre nearest `c` whose square's edge `c - r` lies on a grid line, kept in
    /// `lo..=hi` when such a centre exists there.
    fn centre(self, c: f32, r: f32, lo: f32, hi: f32) -> f32 {
        let mut s = ((c - r) / self.step).round() * self.step + r;
        if s < lo {
            s += self.step;
        }
        if s > hi {
            s -= self.step;
        }
        s
    }
}

/// The objects to draw, after at most one injected failure.
pub(super) fn plan(
    req: &SceneRequest,
    u: f32,
    settings: &ShapesTeacherConfig,
    grid: Option<Grid>,
    rng: &mut impl Rng,
) -> (Vec<Planned>, Option<String>) {
    let inc = &req.spec.include;
    let mut objects = Vec::new();
    let mut first = Vec::new();
    for (i, o) in inc.iter().enumerate() {
        let class = class_index(&o.class).expect("validated by SceneRequest::from_prompt");
        let size = match req.sizes.len() {
            0 => None,
            1 => Some(req.sizes[0].as_str()),
            _ => req.sizes.get(i).map(String::as_str),
        };
        first.push(objects.len());
        for _ in 0..o.count {
            let color = o.color.as_deref().and_then(color::index).unwrap_or_else(|| rng.random_range(0..10));
            objects.push(Planned { class, color, radius: radius(size, u, grid, rng), anchor: None, x: 0.0, y: 0.0 });
        }
    }
    for (i, o) in inc.iter().enumerate() {
        if let Some((rel, j)) = &o.position {
            objects[first[i]].anchor = Some((first[*j], static_rel(rel)));
        }
    }
    // Which failures would make this image wrong, and at what rate.
    let colored: Vec<usize> = (0..inc.len()).filter(|&i| inc[i].color.is_some()).collect();
    let counted: Vec<usize> = (0..inc.len()).filter(|&i| inc[i].count >= 2).collect();
    let positioned: Vec<usize> = (0..inc.len()).filter(|&i| inc[i].position.is_some()).collect();
    let mut kinds: Vec<(&str, f64)> = vec![("missing", settings.missing), ("distractor", settings.distractor)];
    if !colored.is_empty() {
        kinds.push(("wrong_color", settings.wrong_color));
    }
    if !counted.is_empty() {
        kinds.push(("count", settings.count));
    }
    if !positioned.is_empty() {
        kinds.push(("relation", settings.relation));
    }
    let mut x: f64 = rng.random();
    let chosen = kinds.iter().find(|(_, p)| {
        x -= p;
        x < 0.0
    });
    let Some(&(kind, _)) = chosen else {
        return (objects, None);
    };
    match kind {
        "wrong_color" => {
            let i = first[colored[rng.random_range(0..colored.len())]];
            let old = objects[i].color;
            objects[i].color = (old + rng.random_range(1..10)) % 10;
        }
        "count" => {
            let i = counted[rng.random_range(0..counted.len())];
            if rng.random_bool(0.5) {
                objects.remove(first[i] + 1); // never the anchor copy
            } else {
                let mut extra = objects[first[i]].clone();
                extra.anchor = None;
                objects.insert(first[i] + 1, extra);
            }
        }
        "relation" => {
            let i = first[positioned[rng.random_range(0..positioned.len())]];
            if let Some((j, rel)) = objects[i].anchor {
                objects[i].anchor = Some((j, opposite(rel)));
            }
        }
        "missing" => {
            let i = rng.random_range(0..objects.len());
            objects.remove(i);
            // An anchor that pointed past the removed object shifts down; one that pointed at it goes.
            for o in &mut objects {
                o.anchor = match o.anchor {
                    Some((j, _)) if j == i => None,
                    Some((j, r)) if j > i => Some((j - 1, r)),
                    a => a,
                };
            }
        }
        _ => {
            let used: Vec<usize> = objects.iter().map(|o| o.class).collect();
            let free: Vec<usize> = (0..CLASSES.len()).filter(|c| !used.contains(c)).collect();
            let class = free[rng.random_range(0..free.len())];
            objects.push(Planned {
                class,
                color: rng.random_range(0..10),
                radius: radius(None, u, grid, rng),
                anchor: None,
                x: 0.0,
                y: 0.0,
            });
        }
    }
    (objects, Some(kind.to_string()))
}

/// Places objects without overlap, anchors before the objects relative to them, and each
/// relation clear by GenEval's own test. Shrinks everything and retries when crowded.
///
/// On a grid, squares may reach the image's edge (the edge is a grid line), and a retry
/// shrinks by half a step down to one step; a scene that still does not fit after 8 tries is
/// placed off the grid as without one, so that no prompt becomes undrawable.
pub(super) fn place(
    objects: &mut [Planned],
    size: f32,
    u: f32,
    grid: Option<Grid>,
    rng: &mut impl Rng,
) -> Result<(), String> {
    let mut order: Vec<usize> = (0..objects.len()).filter(|&i| objects[i].anchor.is_none()).collect();
    order.extend((0..objects.len()).filter(|&i| objects[i].anchor.is_some()));
    let gap = 3.0 * u;
    // Up to 16 tries, 0.9× each: a crowded scene of large objects at object_scale 2 still fits.
    for round in 0..16 {
        let grid = grid.filter(|_| round < 8);
        let margin = if grid.is_some() { 0.0 } else { 2.0 * u };
        let mut placed: Vec<usize> = Vec::new();
        let mut ok = true;
        for &i in &order {
            let r = objects[i].radius;
            let lo = margin + r;
            let hi = size - margin - r;
            // On a grid an anchor drawn where no cell is left on its relation's side makes the
            // whole round fail (cells are few: 4 × 4 at 8 px), so it is drawn in the half that
            // leaves room: right for "left of" it, below for "above" it, and so on.
            let side = grid.and_then(|_| objects.iter().find_map(|o| o.anchor.filter(|a| a.0 == i).map(|a| a.1)));
            let half = |axis: bool| -> (f32, f32) {
                let mid = (lo + hi) / 2.0;
                match (side, axis) {
                    (Some("left of"), true) | (Some("above"), false) => (mid, hi),
                    (Some("right of"), true) | (Some("below"), false) => (lo, mid),
                    _ => (lo, hi),
                }
            };
            let ((xl, xh), (yl, yh)) = (half(true), half(false));
            let mut found = false;
            for attempt in 0..300 {
                let (mut x, mut y) = (rng.random_range(xl..xh.max(xl + 0.01)), rng.random_range(yl..yh.max(yl + 0.01)));
                // Most tries for an object with a relation start from its anchor, in the
                // relation's direction; the rest are uniform.
                if let (Some((j, rel)), true) = (objects[i].anchor, attempt % 4 != 3) {
                    let (dx, dy) = match rel {
                        "left of" => (-1.0, 0.0),
                        "right of" => (1.0, 0.0),
                        "above" => (0.0, -1.0),
                        _ => (0.0, 1.0),
                    };
                    let near = r + objects[j].radius + gap;
                    let dist = rng.random_range(near..(near + 0.5 * size).max(near + 0.01));
                    let side = rng.random_range(-0.3f32..0.3) * dist;
                    x = (objects[j].x + dx * dist + dy * side).clamp(lo, hi.max(lo));
                    y = (objects[j].y + dy * dist + dx * side).clamp(lo, hi.max(lo));
                }
                if let Some(g) = grid {
                    (x, y) = (g.centre(x, r, lo, hi), g.centre(y, r, lo, hi));
                }
                let clear = placed.iter().all(|&j| {
                    let d = ((x - objects[j].x).powi(2) + (y - objects[j].y).powi(2)).sqrt();
                    d >= r + objects[j].radius + gap
                });
                let related = match objects[i].anchor {
                    Some((j, rel)) => {
                        let a = bbox(objects[i].class, x, y, r);
                        let b = bbox(objects[j].class, objects[j].x, objects[j].y, objects[j].radius);
                        let rels = relations(a, b, 0.25);
                        rels.len() == 1 && rels[0] == rel
                    }
                    None => true,
                };
                if clear && related {
                    objects[i].x = x;
                    objects[i].y = y;
                    placed.push(i);
                    found = true;
                    break;
                }
            }
            if !found {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(());
        }
        for o in objects.iter_mut() {
            o.radius = grid.filter(|_| round < 7).map_or(o.radius * 0.9, |g| g.shrink(o.radius));
        }
    }
    Err(format!("could not place {} objects without overlap at {size} px", objects.len()))
}
