//! Does the student learn to use its context? Two toy worlds small enough to train in
//! seconds, each with a task that only the visible tokens can answer (the caption is
//! constant): a flat random colour per image (copy anything visible), and a 3×3-token square
//! of a random colour on a grey background (copy the *neighbours*: the square's hidden centre
//! must take the colour of the square around it, not the background's). The second is the
//! demo student's failure in miniature; `toy_experiment` (ignored) takes the levers
//! from the environment for measuring.

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;

use super::config::TrainConfig;
use super::data::Batch;
use super::trainer::Trainer;
use crate::student::model::sampler::{sample_tokens, Canvas, SampleOptions};
use crate::student::model::text::TextInput;
use crate::student::model::TextSource;

/// A toy world: `grid`² tokens of 12 values (2×2 pixels × RGB).
struct Toy {
    grid: usize,
    /// `b` images → (tokens (b·L·12), the colour each must copy, the token to score or None
    /// for every unknown one).
    draw: fn(&mut ChaCha8Rng, usize) -> (Vec<f32>, Vec<[f32; 3]>, Vec<Option<usize>>),
    /// Unknown tokens of test image `i` (the scored one among them): the same count for all.
    unknown: fn(&mut ChaCha8Rng, usize, Option<usize>) -> Vec<bool>,
    /// Test images.
    tests: usize,
    /// Model width, depth and heads.
    model: (usize, usize, usize),
    sample_steps: usize,
    temperature: f64,
}

const C: usize = 12;

/// Trains on the toy for `steps` (seeded: train.seed 0, data seed 1) and returns (mean
/// |sampled − colour| over the scored tokens, the same for guessing the background 0).
fn toy_error(toy: &Toy, steps: u64, tweak: impl Fn(&mut TrainConfig)) -> (f64, f64) {
    let g = toy.grid;
    let l = g * g;
    let mut tr = toy_trainer(toy.model, steps, (C, g), (10, 3), |c| {
        c.train.text_drop_prob = 0.0;
        tweak(c);
    });
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for s in 0..steps {
        let (tokens, _, _) = (toy.draw)(&mut rng, 16);
        let batch = Batch { step: s, size: 16, tokens, ids: vec![2, 3, 4].repeat(16), feats: vec![] };
        tr.step(&batch, s).unwrap();
    }
    let n = toy.tests;
    let (tokens, cols, scored) = (toy.draw)(&mut rng, n);
    let unknown: Vec<bool> = scored.iter().enumerate().flat_map(|(i, &at)| (toy.unknown)(&mut rng, i, at)).collect();
    let text = TextInput::from_host(&[2, 3, 4].repeat(n), &[], n, 3, 0, Device::Cpu);
    let opts = SampleOptions {
        steps: toy.sample_steps,
        cfg: 1.0,
        temperature: toy.temperature,
        diffusion_steps: 20,
        clip_x0: Some(1.0),
        ..Default::default()
    };
    let canvas = Canvas { tokens, unknown: unknown.clone() };
    let out = sample_tokens(&tr.model, &text, canvas, g, &opts, &mut rng).unwrap();
    let (mut err, mut guess0, mut m) = (0.0f64, 0.0f64, 0);
    for (i, at) in scored.iter().enumerate() {
        let rows: Vec<usize> = match at {
            Some(p) => vec![i * l + p],
            None => (i * l..(i + 1) * l).filter(|&r| unknown[r]).collect(),
        };
        for r in rows {
            for k in 0..C {
                let want = cols[i][k % 3] as f64;
                err += (out[r * C + k] as f64 - want).abs();
                guess0 += want.abs();
                m += 1;
            }
        }
    }
    (err / m as f64, guess0 / m as f64)
}

/// A micro student for a toy world, without dropout: `model` (width, depth, heads), batch 16,
/// blr 0.05, one timestep per token, then `tweak`; tokens of `data.0` values on a `data.1`²
/// grid, captions of `text.1` ids below `text.0`.
pub(super) fn toy_trainer(
    model: (usize, usize, usize),
    steps: u64,
    data: (usize, usize),
    text: (usize, usize),
    tweak: impl FnOnce(&mut TrainConfig),
) -> Trainer {
    let mut cfg = TrainConfig::parse(include_str!("../../../tests/fixtures/train-micro.toml"), "micro").unwrap();
    let (w, d, h) = model;
    (cfg.model.width, cfg.model.depth, cfg.model.heads) = (Some(w), Some(d), Some(h));
    cfg.train.steps = steps;
    cfg.train.batch_size = 16;
    cfg.train.blr = 0.05;
    cfg.train.diffusion_batch_mul = 1;
    cfg.train.warmup_steps = 10;
    tweak(&mut cfg);
    let mut m = cfg.model_config().unwrap().for_data(data.0, data.1, TextSource::Vocab { vocab: text.0 }, 0, text.1);
    m.attn_dropout = 0.0;
    m.proj_dropout = 0.0;
    Trainer::new(cfg, m, data.1, Device::Cpu).unwrap()
}

/// 4×4 tokens, each image one flat colour in [−0.8, 0.8]³; half the tokens unknown.
const FLAT: Toy = Toy {
    grid: 4,
    draw: |rng, b| {
        let cols: Vec<[f32; 3]> = (0..b).map(|_| [0, 1, 2].map(|_| rng.random_range(-0.8f32..0.8))).collect();
        let tokens = cols.iter().flat_map(|c| (0..16 * 4).flat_map(move |_| c.iter().copied())).collect();
        (tokens, cols, vec![None; b])
    },
    unknown: |_, i, _| (0..16).map(|p| (p * 7 + i) % 16 < 8).collect(),
    tests: 16,
    model: (32, 1, 2),
    sample_steps: 2,
    temperature: 0.3,
};

/// 8×8 tokens, grey (0) with one 3×3-token square of a saturated random colour; its centre
/// and 31 other random tokens unknown, so about half of the square around the centre shows.
const SQUARE: Toy = Toy {
    grid: 8,
    draw: |rng, b| {
        let mut tokens = vec![0.0f32; b * 64 * C];
        let (mut cols, mut centres) = (vec![], vec![]);
        for i in 0..b {
            let col = [0, 1, 2].map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 } * rng.random_range(0.4f32..0.9));
            let (cy, cx) = (rng.random_range(1..7), rng.random_range(1..7));
            for y in cy - 1..=cy + 1 {
                for x in cx - 1..=cx + 1 {
                    for k in 0..C {
                        tokens[(i * 64 + y * 8 + x) * C + k] = col[k % 3];
                    }
                }
            }
            cols.push(col);
            centres.push(Some(cy * 8 + cx));
        }
        (tokens, cols, centres)
    },
    unknown: |rng, _, centre| {
        let c = centre.expect("a scored centre");
        let mut others: Vec<usize> = (0..64).filter(|&p| p != c).collect();
        others.shuffle(rng);
        let mut u = vec![false; 64];
        for &p in others[..31].iter().chain([c].iter()) {
            u[p] = true;
        }
        u
    },
    tests: 32,
    model: (64, 2, 4),
    sample_steps: 8,
    temperature: 0.5,
};

fn env(k: &str, d: f64) -> f64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// The levers the experiments read: LG_X0 (x0_loss_weight), LG_MASKMIN, LG_ROPE (0/1), LG_BLR.
fn levers(c: &mut TrainConfig) {
    c.train.x0_loss_weight = env("LG_X0", 0.0);
    c.train.mask_ratio_min = env("LG_MASKMIN", 0.7);
    c.train.blr = env("LG_BLR", 0.05);
    c.model.rope = Some(env("LG_ROPE", 0.0) > 0.0);
}

#[test]
fn visible_tokens_are_used_a_flat_colour_is_copied_from_context() {
    // Seeded. This breaks if the visible tokens do not reach the masked ones (encoder gather,
    // decoder scatter, the row path). Measured with the reference's recipe: error 0.27 after
    // 300 steps against 0.35 for guessing 0, 0.08 after 1,000; with the x0 read-out
    // (weight 1) 0.12 after 300 and 0.06 after 1,000.
    let (err, guess0) = toy_error(&FLAT, 1000, |_| {});
    assert!(err < 0.5 * guess0, "mean |sampled − colour| {err:.3}, guessing 0 gives {guess0:.3}");
}

#[test]
fn with_rotary_positions_and_the_x0_read_out_a_hidden_square_centre_takes_the_squares_colour() {
    // Seeded. The demo recipe's levers (model.rope, train.x0_loss_weight = 1,
    // mask_ratio_min = 0.3) against the failure the reference's recipe shows: its centre error
    // equals the background guess (0.655 against 0.655 after 1,000 steps, 0.627 / 0.627 after
    // 3,000), and so does either lever alone (rope: 0.655; x0: 0.654). Both: 0.20 at 1,000.
    let (err, guess0) = toy_error(&SQUARE, 1000, |c| {
        c.model.rope = Some(true);
        c.train.x0_loss_weight = 1.0;
        c.train.mask_ratio_min = 0.3;
    });
    assert!(err < 0.5 * guess0, "centre error {err:.3}, the background guess {guess0:.3}");
}

#[test]
#[ignore = "an experiment: LG_TOY (flat | square), LG_STEPS and the levers"]
fn toy_experiment() {
    let steps = env("LG_STEPS", 300.0) as u64;
    let square = std::env::var("LG_TOY").is_ok_and(|t| t == "square");
    let (err, g) = toy_error(if square { &SQUARE } else { &FLAT }, steps, levers);
    println!("steps {steps}: error {err:.3} (guessing the background: {g:.3})");
}
