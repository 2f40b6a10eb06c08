//! Does the student learn which object its caption names? A toy world where the caption is
//! the only source of that: each image is grey (0) with one object token at a random place,
//! whose pattern is one of `CLASSES` fixed templates, and the caption names the class. A
//! student that binds the word draws the named template; one that learned only the marginal
//! draws a random one (chance 1/CLASSES). The shapes world's one-object-per-token corpus
//! (`grid = 8`, `patch = 8`) fails exactly this: crisp outlines of random classes. The toy
//! binds within 500 steps, so the path from caption to head works; what the shapes world adds
//! (the rest of the caption and of the task) is what delays it (docs/student.md, "Binding the
//! shape word"). The experiment adds a textured background, a second object and closer classes.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;

use super::config::TrainConfig;
use super::data::Batch;
use super::learning_tests::toy_trainer;
use crate::student::model::sampler::{sample_tokens, Canvas, SampleOptions};
use crate::student::model::text::TextInput;

const C: usize = 12;
const GRID: usize = 4;
const L: usize = GRID * GRID;
const CLASSES: usize = 6;
/// Caption: "a <class> and a <class>" as ids 2, 3 + class, 1, 2, 3 + class (one object: the
/// second half is padding, 0).
const T: usize = 5;

/// The class templates: seeded ±0.8 patterns sharing their first pixel (0.6). With `diff` > 0,
/// closer classes: one shared base pattern, each class flipping `diff` of its values.
fn templates(diff: usize) -> Vec<[f32; C]> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut sign = || if rng.random_bool(0.5) { 0.8f32 } else { -0.8 };
    let base: [f32; C] = std::array::from_fn(|_| sign());
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    (0..CLASSES)
        .map(|_| {
            if diff == 0 {
                return std::array::from_fn(|k| {
                    if k < 3 {
                        0.6
                    } else if rng.random_bool(0.5) {
                        0.8
                    } else {
                        -0.8
                    }
                });
            }
            let mut t = base;
            for _ in 0..diff {
                let k = rng.random_range(0..C);
                t[k] = -t[k];
            }
            t
        })
        .collect()
}

fn caption(classes: &[usize]) -> [u32; T] {
    let w = |k: usize| 3 + k as u32;
    match classes {
        [a] => [2, w(*a), 0, 0, 0],
        [a, b] => [2, w(*a), 1, 2, w(*b)],
        _ => unreachable!("one or two objects"),
    }
}

/// `b` images: tokens (b·L·C) and their classes. With `world.texture` > 0 the background is a
/// per-image grey level in ±texture plus per-value noise of that size (the shapes world's
/// textured backgrounds); with `world.two`, a second object of another class (the caption
/// names both).
fn draw(rng: &mut ChaCha8Rng, b: usize, tpl: &[[f32; C]], world: World) -> (Vec<f32>, Vec<Vec<usize>>) {
    let texture = world.texture;
    let mut tokens = vec![0.0f32; b * L * C];
    let mut classes = Vec::new();
    for i in 0..b {
        if texture > 0.0 {
            let level = rng.random_range(-texture..texture);
            for v in &mut tokens[i * L * C..(i + 1) * L * C] {
                *v = level + rng.random_range(-texture..texture);
            }
        }
        let first = rng.random_range(0..CLASSES);
        let mut ks = vec![first];
        if world.two {
            ks.push((first + rng.random_range(1..CLASSES)) % CLASSES);
        }
        let a = rng.random_range(0..L);
        let at = [a, (a + rng.random_range(1..L)) % L];
        for (&k, &p) in ks.iter().zip(&at) {
            tokens[(i * L + p) * C..(i * L + p + 1) * C].copy_from_slice(&tpl[k]);
        }
        classes.push(ks);
    }
    (tokens, classes)
}

/// What the toy world holds besides the one object (see [`draw`]) and how alike classes are
/// (see [`templates`]).
#[derive(Default, Clone, Copy)]
struct World {
    texture: f32,
    two: bool,
    diff: usize,
}

/// Trains `steps` (seeded) and samples 48 images from scratch: (share of drawn objects of the
/// named class, objects drawn per image). A drawn object is a token nearer a template than a
/// flat token at its own level.
fn binding(steps: u64, world: World, tweak: impl Fn(&mut TrainConfig)) -> (f64, f64) {
    // The demo's levers: a wider head than the micro one, rotary positions, the x0 read-out,
    // more context in training, caption drop for guidance.
    let mut tr = toy_trainer((64, 2, 4), steps, (C, GRID), (3 + CLASSES, T), |c| {
        c.model.diffloss_width = Some(64);
        c.model.rope = Some(true);
        c.train.text_drop_prob = 0.1;
        c.train.x0_loss_weight = 1.0;
        c.train.mask_ratio_min = 0.3;
        tweak(c);
    });
    let tpl = templates(world.diff);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for s in 0..steps {
        let (tokens, classes) = draw(&mut rng, 16, &tpl, world);
        let ids = classes.iter().flat_map(|k| caption(k)).collect();
        tr.step(&Batch { step: s, size: 16, tokens, ids, feats: vec![] }, s).unwrap();
    }
    let n = 48;
    let classes: Vec<usize> = (0..n).map(|i| i % CLASSES).collect();
    let ids: Vec<u32> = classes.iter().flat_map(|&k| caption(&[k])).collect();
    let text = TextInput::from_host(&ids, &[], n, T, 0, Device::Cpu);
    let opts = SampleOptions { steps: L, cfg: 3.0, diffusion_steps: 20, clip_x0: Some(1.0), ..Default::default() };
    let canvas = Canvas { tokens: vec![0.0; n * L * C], unknown: vec![true; n * L] };
    let out = sample_tokens(&tr.model, &text, canvas, GRID, &opts, &mut rng).unwrap();
    let (mut right, mut drawn) = (0usize, 0usize);
    for (i, &k) in classes.iter().enumerate() {
        for p in 0..L {
            let tok = &out[(i * L + p) * C..(i * L + p + 1) * C];
            let d = |t: &[f32]| tok.iter().zip(t).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
            let level = tok[3..].iter().sum::<f32>() / (C - 3) as f32;
            let grey = d(&[level; C]);
            let (best, dist) =
                tpl.iter().enumerate().map(|(j, t)| (j, d(t))).min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
            if dist < grey {
                drawn += 1;
                right += usize::from(best == k);
            }
        }
    }
    (right as f64 / drawn.max(1) as f64, drawn as f64 / n as f64)
}

fn env(k: &str, d: f64) -> f64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

#[test]
fn the_student_draws_the_object_its_caption_names() {
    // Seeded (train seed 0, data seed 1, templates seed 7). One object token on grey, six
    // classes, the demo's levers: 0.94 of the drawn objects are of the named class after 500
    // steps (chance 0.17), 1.00 after 1,000. Breaks if the caption stops reaching the head.
    let (right, drawn) = binding(500, World::default(), |_| {});
    assert!(right > 0.5 && drawn > 0.3, "class right {right:.3}, objects per image {drawn:.2}");
}

#[test]
#[ignore = "an experiment: LG_STEPS, the world (LG_TEXTURE, LG_TWO, LG_DIFF) and the levers"]
fn binding_experiment() {
    let steps = env("LG_STEPS", 300.0) as u64;
    let world = World {
        texture: env("LG_TEXTURE", 0.0) as f32,
        two: env("LG_TWO", 0.0) > 0.0,
        diff: env("LG_DIFF", 0.0) as usize,
    };
    let (right, drawn) = binding(steps, world, |c| {
        c.train.x0_loss_weight = env("LG_X0", 1.0);
        c.train.blr = env("LG_BLR", 0.05);
        c.model.width = Some(env("LG_WIDTH", 64.0) as usize);
        c.model.diffloss_width = Some(env("LG_HEADW", 64.0) as usize);
        c.model.diffloss_depth = Some(env("LG_HEADD", 1.0) as usize);
        c.train.diffusion_batch_mul = env("LG_MUL", 1.0) as usize;
        c.model.prediction = (env("LG_V", 0.0) > 0.0).then_some(crate::student::model::Prediction::V);
    });
    println!(
        "steps {steps}: class right {right:.3} (chance {:.3}), objects per image {drawn:.2}",
        1.0 / CLASSES as f64
    );
}
