//! Does the student learn which object its caption names? A toy world where the caption is
//! the only source of that: each image is grey (0) with one object token at a random place,
//! whose pattern is one of `CLASSES` fixed templates, and the caption names the class. A
//! student that binds the word draws the named template; one that learned only the marginal
//! draws a random one (chance 1/CLASSES). The shapes world's one-object-per-token corpus
//! (`grid = 8`, `patch = 8`) fails exactly this: crisp outlines of random classes. The toy
//! binds within 500 steps, so the path from caption to head works; what the shapes world adds
//! (the rest of the caption and of the task) is what delays it (docs/student.md, "Binding the
//! shape word"). The experiment adds a textured background, a second object, closer classes,
//! wordy captions (filler words around the class word: no slower) and colours (the object is
//! its class's mask in a named colour, as a shapes object: far slower, which an MLP read-out
//! and more timesteps per z recover).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

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
/// Wordy captions (`World::wordy`): up to this many tokens, with filler words (ids after the
/// class words) before, between and after the named objects, as the shapes world's templates
/// put medium, size, background and style words around the shape word.
const TW: usize = 14;
const FILLERS: usize = 12;

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

/// What an image's caption names: its objects' classes and, in the colour world, the colour.
struct Named {
    classes: Vec<usize>,
    colour: Option<usize>,
}

/// The word id of palette colour `c` (after the class words and the fillers).
fn colour_word(c: usize) -> u32 {
    (3 + CLASSES + FILLERS + c) as u32
}

fn caption(named: &Named) -> [u32; T] {
    let w = |k: usize| 3 + k as u32;
    match (named.classes.as_slice(), named.colour) {
        ([a], None) => [2, w(*a), 0, 0, 0],
        ([a], Some(c)) => [2, colour_word(c), w(*a), 0, 0],
        ([a, b], None) => [2, w(*a), 1, 2, w(*b)],
        _ => unreachable!("one or two objects, a colour only with one"),
    }
}

/// A wordy caption: 0–3 fillers, "a <class>", (for two: 0–2 fillers, "and a <class>"), 0–3
/// fillers, padding 0.
fn wordy_caption(rng: &mut ChaCha8Rng, classes: &[usize]) -> [u32; TW] {
    let mut out = Vec::new();
    let fill = |rng: &mut ChaCha8Rng, out: &mut Vec<u32>, n: usize| {
        for _ in 0..rng.random_range(0..=n) {
            out.push(3 + CLASSES as u32 + rng.random_range(0..FILLERS as u32));
        }
    };
    fill(rng, &mut out, 3);
    for (i, &k) in classes.iter().enumerate() {
        if i > 0 {
            fill(rng, &mut out, 2);
            out.push(1);
        }
        out.extend([2, 3 + k as u32]);
    }
    fill(rng, &mut out, 3);
    let mut c = [0u32; TW];
    c[..out.len()].copy_from_slice(&out);
    c
}

/// `b` images: tokens (b·L·C) and their classes. With `world.texture` > 0 the background is a
/// per-image grey level in ±texture plus per-value noise of that size (the shapes world's
/// textured backgrounds); with `world.two`, a second object of another class (the caption
/// names both).
fn draw(rng: &mut ChaCha8Rng, b: usize, tpl: &[[f32; C]], world: World) -> (Vec<f32>, Vec<Named>) {
    let texture = world.texture;
    let mut tokens = vec![0.0f32; b * L * C];
    let mut named = Vec::new();
    let colours = palette(world.colours);
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
        let colour = (!colours.is_empty()).then(|| rng.random_range(0..colours.len()));
        for (&k, &p) in ks.iter().zip(&at) {
            let tok = colour.map_or(tpl[k], |c| coloured(&tpl[k], colours[c]));
            tokens[(i * L + p) * C..(i * L + p + 1) * C].copy_from_slice(&tok);
        }
        named.push(Named { classes: ks, colour });
    }
    (tokens, named)
}

/// What the toy world holds besides the one object (see [`draw`]) and how alike classes are
/// (see [`templates`]).
#[derive(Default, Clone, Copy)]
struct World {
    texture: f32,
    two: bool,
    diff: usize,
    wordy: bool,
    /// Colours (one object, plain captions): the object is its class's mask (the template's
    /// positive values) in one of this many palette colours on the grey background, and the
    /// caption "a <colour> <class>" names both, as the shapes world's objects.
    colours: usize,
}

/// The palette of the colour world: seeded RGB in ±0.8, repeated over a token's 4 pixels.
fn palette(n: usize) -> Vec<[f32; 3]> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    (0..n).map(|_| [0, 1, 2].map(|_| rng.random_range(-0.8f32..0.8))).collect()
}

/// Class `k` in colour `col`: the mask of the template's positive values.
fn coloured(tpl: &[f32; C], col: [f32; 3]) -> [f32; C] {
    std::array::from_fn(|v| if tpl[v] > 0.0 { col[v % 3] } else { 0.0 })
}

/// Trains `steps` (seeded) and samples 48 images from scratch: (share of drawn objects of the
/// named class, objects drawn per image). A drawn object is a token nearer a template than a
/// flat token at its own level.
fn binding(steps: u64, world: World, tweak: impl Fn(&mut TrainConfig)) -> (f64, f64) {
    // The demo's levers: a wider head than the micro one, rotary positions, the x0 read-out,
    // more context in training, caption drop for guidance.
    let t = if world.wordy { TW } else { T };
    let vocab = 3 + CLASSES + if world.wordy || world.colours > 0 { FILLERS + world.colours } else { 0 };
    let mut tr = toy_trainer((64, 2, 4), steps, (C, GRID), (vocab, t), |c| {
        c.model.diffloss_width = Some(64);
        c.model.rope = Some(true);
        c.train.text_drop_prob = 0.1;
        c.train.x0_loss_weight = 1.0;
        c.train.mask_ratio_min = 0.3;
        tweak(c);
    });
    let tpl = templates(world.diff);
    if tr.cfg.train.code_loss_weight > 0.0 {
        // The codebook from 64 images of a stream of its own (the training stream is unchanged).
        let mut r = ChaCha8Rng::seed_from_u64(2);
        let tokens: Vec<f32> = (0..4).flat_map(|_| draw(&mut r, 16, &tpl, world).0).collect();
        let x = Tensor::from_slice(&tokens).view([-1, C as i64]);
        tr.codebook = Some(super::codes::kmeans(&x, tr.cfg.train.codes, 0));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for s in 0..steps {
        let (tokens, named) = draw(&mut rng, 16, &tpl, world);
        let ids = match world.wordy {
            true => named.iter().flat_map(|n| wordy_caption(&mut rng, &n.classes)).collect(),
            false => named.iter().flat_map(caption).collect(),
        };
        tr.step(&Batch { step: s, size: 16, tokens, ids, feats: vec![] }, s).unwrap();
    }
    // Images sampled (48 unless an experiment asks for more).
    let n = env("LG_N", 48.0) as usize;
    // Every class in turn; in the colour world, every colour in turn over the rounds of classes.
    let asked: Vec<Named> = (0..n)
        .map(|i| Named {
            classes: vec![i % CLASSES],
            colour: (world.colours > 0).then(|| (i / CLASSES) % world.colours),
        })
        .collect();
    let classes: Vec<usize> = asked.iter().map(|a| a.classes[0]).collect();
    let ids: Vec<u32> = match world.wordy {
        true => classes.iter().flat_map(|&k| wordy_caption(&mut rng, &[k])).collect(),
        false => asked.iter().flat_map(caption).collect(),
    };
    // What a drawn token is matched to: every class (in every colour): (class, colour, token).
    let cands: Vec<(usize, Option<usize>, [f32; C])> = match world.colours {
        0 => tpl.iter().enumerate().map(|(k, t)| (k, None, *t)).collect(),
        _ => (0..CLASSES)
            .flat_map(|k| palette(world.colours).into_iter().enumerate().map(move |(j, c)| (k, j, c)))
            .map(|(k, j, c)| (k, Some(j), coloured(&tpl[k], c)))
            .collect(),
    };
    let mut colour_right = 0usize;
    let text = TextInput::from_host(&ids, &[], n, t, 0, Device::Cpu);
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
            let (best, colour, dist) =
                cands.iter().map(|(j, c, t)| (*j, *c, d(t))).min_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
            if dist < grey {
                drawn += 1;
                right += usize::from(best == k);
                colour_right += usize::from(colour.is_some() && colour == asked[i].colour);
            }
        }
    }
    if world.colours > 0 {
        println!(
            "colour right {:.3} (chance {:.3})",
            colour_right as f64 / drawn.max(1) as f64,
            1.0 / world.colours as f64
        );
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
fn a_coloured_object_binds_with_an_mlp_read_out_and_more_timesteps_per_z() {
    // Seeded as above. The object is its class's mask in one of 4 colours and the caption
    // names both, as in the shapes world, where the class binds slowly. At 800 steps the
    // linear read-out binds 0.29 of the drawn objects (chance 0.17), the MLP read-out 0.58,
    // diffusion_batch_mul 4 alone 0.48, both 0.94. Breaks if the MLP read-out stops training z.
    let world = World { colours: 4, ..World::default() };
    let (right, drawn) = binding(800, world, |c| {
        c.model.x0_hidden = Some(64);
        c.train.diffusion_batch_mul = 4;
    });
    assert!(right > 0.7 && drawn > 0.3, "class right {right:.3}, objects per image {drawn:.2}");
}

#[test]
#[ignore = "an experiment: LG_STEPS, LG_N, the world (LG_TEXTURE, LG_TWO, LG_DIFF, LG_WORDY, LG_COLOURS) and the levers"]
fn binding_experiment() {
    let steps = env("LG_STEPS", 300.0) as u64;
    let world = World {
        texture: env("LG_TEXTURE", 0.0) as f32,
        two: env("LG_TWO", 0.0) > 0.0,
        diff: env("LG_DIFF", 0.0) as usize,
        wordy: env("LG_WORDY", 0.0) > 0.0,
        colours: env("LG_COLOURS", 0.0) as usize,
    };
    let (right, drawn) = binding(steps, world, |c| {
        c.train.x0_loss_weight = env("LG_X0", 1.0);
        c.train.blr = env("LG_BLR", 0.05);
        c.model.width = Some(env("LG_WIDTH", 64.0) as usize);
        c.model.diffloss_width = Some(env("LG_HEADW", 64.0) as usize);
        c.model.diffloss_depth = Some(env("LG_HEADD", 1.0) as usize);
        c.train.diffusion_batch_mul = env("LG_MUL", 1.0) as usize;
        c.model.text_prefix = (env("LG_PREFIX", 0.0) > 0.0).then_some(true);
        c.model.x0_hidden = Some(env("LG_X0H", 0.0) as usize);
        c.train.code_loss_weight = env("LG_CODE", 0.0);
        c.train.codes = env("LG_CODES", 64.0) as usize;
        c.train.timestep_band_share = env("LG_BAND", 0.0);
        c.train.timestep_band = [env("LG_BAND_LO", 0.0) as usize, env("LG_BAND_HI", 400.0) as usize];
        c.model.prediction = (env("LG_V", 0.0) > 0.0).then_some(crate::student::model::Prediction::V);
    });
    println!(
        "steps {steps}: class right {right:.3} (chance {:.3}), objects per image {drawn:.2}",
        1.0 / CLASSES as f64
    );
}
