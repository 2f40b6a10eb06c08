//! lightgen's student against LightGen's own PyTorch code (`scripts/reference-parity.py`
//! wrote `tests/fixtures/parity/`): the same weights, inputs and random draws must give the
//! reference's loss, z and gradients at step 0, its weights and EMA weights after 20 AdamW
//! steps, and its DiffLoss sampling step. All in f32 on the CPU.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lightgen::student::model::layers::{to_host, Ctx};
use lightgen::student::model::{Mar, MarConfig, ParamStore, TextSource};
use lightgen::student::train::data::Batch;
use lightgen::student::train::draws::StepDraws;
use lightgen::student::train::{TrainConfig, Trainer};
use tch::{Device, Kind, Tensor};

fn dir() -> PathBuf {
    super::root().join("tests/fixtures/parity")
}

fn load(name: &str) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(dir().join(name)).unwrap().into_iter().collect()
}

fn meta() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir().join("meta.json")).unwrap()).unwrap()
}

/// max |a − b| / max |b|: the error relative to the reference tensor's scale.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (to_host(a), to_host(b));
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64 / scale as f64
}

/// A trainer at the fixture's size and optimiser settings, with the reference's weights.
fn trainer(m: &serde_json::Value) -> Trainer {
    let cfg = TrainConfig::parse(
        &format!(
            "[model]\npreset = \"tiny\"\nwidth = {w}\ndepth = 1\nheads = {h}\ntext_depth = 1\ndiffloss_width = {dw}\n\
             diffloss_depth = {dd}\ndropout = 0.0\n[train]\nbatch_size = {b}\nsteps = {s}\nblr = {blr}\nwarmup_steps = 0\n\
             lr_schedule = \"constant\"\nweight_decay = {wd}\ngrad_clip = {clip}\nema = {ema}\ndiffusion_batch_mul = {mul}\n\
             text_drop_prob = 0.0\nprecision = \"f32\"\n",
            w = m["width"],
            h = m["heads"],
            dw = m["diffloss_width"],
            dd = m["diffloss_depth"],
            b = m["batch"],
            s = m["steps"],
            blr = m["lr"].as_f64().unwrap() * 256.0 / m["batch"].as_f64().unwrap(),
            wd = m["weight_decay"],
            clip = m["grad_clip"],
            ema = m["ema"],
            mul = m["diffusion_batch_mul"],
        ),
        "parity",
    )
    .unwrap();
    let u = |k: &str| m[k].as_u64().unwrap() as usize;
    let mut model = cfg.model_config().unwrap().for_data(
        u("token_dim"),
        u("grid"),
        TextSource::Features,
        u("caption_channels"),
        u("text_len"),
    );
    model.pos_grid = 16; // the reference keeps 256 slots and interpolates to the 8×8 grid
    let mut tr = Trainer::new(cfg, model, u("grid"), Device::Cpu).unwrap();
    tr.store.load(&load("weights.safetensors")).unwrap();
    tr.ema = lightgen::student::train::optim::Ema::new(&tr.store, tr.cfg.train.ema);
    tr
}

fn batch(inputs: &BTreeMap<String, Tensor>) -> Batch {
    let b = inputs["tokens"].size()[0] as usize;
    Batch { step: 0, size: b, tokens: to_host(&inputs["tokens"]), ids: vec![], feats: to_host(&inputs["feats"]) }
}

fn draws(inputs: &BTreeMap<String, Tensor>, m: &serde_json::Value, step: usize) -> StepDraws {
    let orders = &inputs[&format!("orders.{step}")];
    let (b, l) = orders.size2().unwrap();
    let flat = Vec::<i64>::try_from(&orders.contiguous().view(-1)).unwrap();
    let keep = Vec::<u8>::try_from(&inputs[&format!("keep.{step}")]).unwrap();
    let t = Vec::<i64>::try_from(&inputs[&format!("t.{step}")]).unwrap();
    StepDraws {
        ratio: 0.0,
        masked: m["masked"][step].as_u64().unwrap() as usize,
        orders: (0..b as usize)
            .map(|i| flat[i * l as usize..(i + 1) * l as usize].iter().map(|&p| p as usize).collect())
            .collect(),
        keep: keep.into_iter().map(|k| k != 0).collect(),
        objects_first: vec![false; b as usize],
        objects_last: vec![false; b as usize],
        t: t.into_iter().map(|v| v as usize).collect(),
        noise: to_host(&inputs[&format!("noise.{step}")]),
        object_weight: 1.0,
    }
}

#[test]
fn loss_z_and_gradients_match_the_reference_at_step_0() {
    let (m, inputs, expect) = (meta(), load("inputs.safetensors"), load("expect.safetensors"));
    let tr = trainer(&m);
    let b = batch(&inputs);
    let d = draws(&inputs, &m, 0);
    let ctx = Ctx::eval(); // dropout is 0: train and eval compute the same
    let (rows, _) = tr.losses_with(&b, &d, &ctx).unwrap();
    let loss = rows.mean(Kind::Float);
    let want = expect["loss"].double_value(&[0]);
    let got = loss.double_value(&[]);
    assert!(((got - want) / want).abs() < 1e-5, "loss {got} vs reference {want}");
    // z itself, through the same path as the loss.
    let text = tr.model.text.forward(&tr.text_input(&b), &ctx).unwrap();
    let text = tr.model.drop_text(&text, &d.keep);
    let l = tr.grid * tr.grid;
    let mask = lightgen::student::model::Mask::from_orders(&d.orders, l, d.masked);
    let tokens = lightgen::student::model::layers::tensor_f32(&b.tokens, &[b.size, l, 12], Device::Cpu);
    let z = tch::no_grad(|| tr.model.forward_z(&tokens, &mask, &text, tr.grid, &ctx));
    assert!(rel(&z, &expect["z"]) < 1e-5, "z: {}", rel(&z, &expect["z"]));
    let grads = tr.store.grads(&loss);
    let mut checked = 0;
    for (k, want) in expect.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let name = &k["grad.".len()..];
        let e = rel(&grads[name], want);
        assert!(e < 1e-4, "gradient of {name}: relative error {e}");
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[test]
fn twenty_adamw_steps_with_clipping_and_ema_match_the_reference() {
    let (m, inputs, expect) = (meta(), load("inputs.safetensors"), load("expect.safetensors"));
    let mut tr = trainer(&m);
    let b = batch(&inputs);
    let steps = m["steps"].as_u64().unwrap() as usize;
    for s in 0..steps {
        tr.step_with(&b, s as u64, &draws(&inputs, &m, s)).unwrap();
    }
    // The key bias of an attention layer adds the same q·b to every score of a query, which the
    // softmax cancels: its true gradient is 0, and what each implementation computes is rounding
    // noise that Adam rescales to full lr-sized steps. Those slices are left out; everything else
    // is compared.
    let d = m["width"].as_i64().unwrap();
    let comparable = |name: &str, t: &Tensor| -> Tensor {
        if name.ends_with("attn.qkv.bias") {
            Tensor::cat(&[t.narrow(0, 0, d), t.narrow(0, 2 * d, d)], 0)
        } else if name.ends_with("attn.kv.bias") {
            t.narrow(0, d, d)
        } else {
            t.shallow_clone()
        }
    };
    let mut worst = (0.0, String::new());
    for (name, var) in &tr.store.vars {
        for (prefix, got) in [("final.", var), ("ema.", &tr.ema.weights[name])] {
            let want = &expect[&format!("{prefix}{name}")];
            let e = rel(&comparable(name, got), &comparable(name, want));
            if e > worst.0 {
                worst = (e, format!("{prefix}{name}"));
            }
        }
    }
    eprintln!("after {steps} steps the largest relative difference is {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 < 1e-4, "after {steps} steps, {} is off by {} (relative)", worst.1, worst.0);
}

#[test]
fn one_diffloss_sampling_step_with_cfg_matches_the_reference() {
    let (m, inputs, expect) = (meta(), load("inputs.safetensors"), load("expect.safetensors"));
    let tr = trainer(&m);
    let s = &m["sample"];
    let diff = lightgen::student::model::diffusion::Diffusion::respaced(s["of"].as_u64().unwrap() as usize);
    let out = tch::no_grad(|| {
        tr.model.diffloss.p_step(
            &inputs["sample.x"],
            &inputs["sample.z"],
            s["index"].as_u64().unwrap() as usize,
            s["cfg"].as_f64().unwrap(),
            s["temperature"].as_f64().unwrap(),
            None,
            &diff,
            Some(&inputs["sample.noise"]),
        )
    });
    let e = rel(&out, &expect["sample.out"]);
    assert!(e < 1e-5, "sampling step: relative error {e}");
}

#[test]
fn a_reference_checkpoint_loads_into_a_model_at_its_own_grid() {
    // The 16×16 reference tables resampled on load into a model learned at 8×8 give the same z
    // as the reference model interpolating at every forward.
    let (m, inputs, expect) = (meta(), load("inputs.safetensors"), load("expect.safetensors"));
    let tr = trainer(&m);
    let cfg = MarConfig { pos_grid: 8, ..tr.model.cfg.clone() };
    let mut store = ParamStore::new(0, Device::Cpu);
    let small = Mar::new(&cfg, &mut store).unwrap();
    store.load(&load("weights.safetensors")).unwrap();
    assert_eq!(store.vars["decoder_pos_embed_learned"].size(), [1, 64, 32]);
    let b = batch(&inputs);
    let d = draws(&inputs, &m, 0);
    let ctx = Ctx::eval();
    let text = small.text.forward(&tr.text_input(&b), &ctx).unwrap();
    let text = small.drop_text(&text, &d.keep);
    let mask = lightgen::student::model::Mask::from_orders(&d.orders, 64, d.masked);
    let tokens = lightgen::student::model::layers::tensor_f32(&b.tokens, &[b.size, 64, 12], Device::Cpu);
    let z = tch::no_grad(|| small.forward_z(&tokens, &mask, &text, 8, &ctx));
    assert!(rel(&z, &expect["z"]) < 1e-5, "z: {}", rel(&z, &expect["z"]));
}
