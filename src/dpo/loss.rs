//! Diffusion-DPO adapted to MAR (`lightgen.md` §6): winner and loser share the mask and order,
//! the timestep and the noise of every masked token; the per-sample eps-MSE over masked tokens
//! of the policy and of the frozen reference give
//! `loss = −log σ(−β/2 · ((Lw − Ll) − (Lw_ref − Ll_ref)))`.

use candle_core::{Result, Tensor};

use crate::model::layers::Ctx;
use crate::model::{Mar, Mask};

/// What one batch's noise looks like: the shared draws of B pairs.
pub struct Draws {
    /// One order per pair (used for its winner and its loser).
    pub orders: Vec<Vec<usize>>,
    /// Masked tokens per sample.
    pub masked: usize,
    /// Timestep of each masked token, pair-major (B · masked).
    pub t: Vec<usize>,
    /// Noise of each masked token, (B · masked, C).
    pub noise: Tensor,
}

/// Per-sample eps-MSE over the masked tokens of `tokens` (2B, L, C) = [winners; losers], with
/// `text` (2B, T, D) the aligned captions: (2B).
pub fn pair_mse(model: &Mar, tokens: &Tensor, text: &Tensor, d: &Draws, grid: usize, ctx: &Ctx) -> Result<Tensor> {
    let (b2, l, c) = tokens.dims3()?;
    let orders: Vec<Vec<usize>> = d.orders.iter().chain(d.orders.iter()).cloned().collect();
    let mask = Mask::from_orders(&orders, l, d.masked);
    let z = model.forward_z(tokens, &mask, text, grid, ctx)?; // (2B, L, D)
                                                              // Rows ascend by sample then position: row j of winner i and of loser i is one position.
    let rows = mask.rows(true);
    let k = rows.len(); // 2B · masked
    let idx = Tensor::from_vec(rows, k, tokens.device())?;
    let z = z.reshape((b2 * l, z.dim(2)?))?.index_select(&idx, 0)?; // (K, D)
    let target = tokens.reshape((b2 * l, c))?.index_select(&idx, 0)?; // (K, C)
    let t: Vec<usize> = d.t.iter().chain(d.t.iter()).copied().collect();
    let noise = Tensor::cat(&[&d.noise, &d.noise], 0)?; // (K, C)
    let mse = model.diffloss.terms(&target, &z, &t, &noise)?.mse; // (K)
    mse.reshape((b2, d.masked))?.mean(1) // (2B)
}

/// The DPO loss from per-sample MSEs (2B) of the policy and the reference: (scalar loss,
/// per-pair `d = (Lw − Ll) − (Lw_ref − Ll_ref)`, B). The reference side must carry no gradient.
pub fn dpo_loss(policy: &Tensor, reference: &Tensor, beta: f64) -> Result<(Tensor, Tensor)> {
    let b = policy.dim(0)? / 2;
    let diff = |x: &Tensor| -> Result<Tensor> { x.narrow(0, 0, b)? - x.narrow(0, b, b)? };
    let d = (diff(policy)? - diff(&reference.detach())?)?; // (B)
                                                           // −log σ(−x) = softplus(x) = max(x, 0) + log(1 + e^−|x|), stable for any x
    let x = (&d * (beta / 2.0))?;
    let softplus = (x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    Ok((softplus.mean_all()?, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_matches_a_hand_computed_case() {
        // Two pairs. Policy MSEs: w = (0.30, 0.50), l = (0.40, 0.45); reference: w = (0.35, 0.50),
        // l = (0.35, 0.50). d1 = (0.30 − 0.40) − (0.35 − 0.35) = −0.10; d2 = (0.50 − 0.45) − 0 = 0.05.
        // β = 20: −log σ(−10·d) → −log σ(1) = 0.313262, −log σ(−0.5) = 0.974077; mean 0.643669.
        let dev = Device::Cpu;
        let p = Tensor::new(&[0.30f32, 0.50, 0.40, 0.45], &dev).unwrap();
        let r = Tensor::new(&[0.35f32, 0.50, 0.35, 0.50], &dev).unwrap();
        let (loss, d) = dpo_loss(&p, &r, 20.0).unwrap();
        let d: Vec<f32> = d.to_vec1().unwrap();
        assert!((d[0] + 0.10).abs() < 1e-6 && (d[1] - 0.05).abs() < 1e-6, "{d:?}");
        let v = loss.to_scalar::<f32>().unwrap();
        assert!((v - 0.643_669).abs() < 1e-5, "{v}");
        // policy = reference: log 2 whatever β
        let (same, _) = dpo_loss(&r, &r, 5000.0).unwrap();
        assert!((same.to_scalar::<f32>().unwrap() - std::f32::consts::LN_2).abs() < 1e-6);
        // large arguments stay finite (softplus, not log(sigmoid))
        let (big, _) = dpo_loss(&p, &r, 1e6).unwrap();
        assert!(big.to_scalar::<f32>().unwrap().is_finite());
    }

    #[test]
    fn the_gradient_lowers_the_winner_error_relative_to_the_loser() {
        // d loss / d Lw > 0 and d loss / d Ll < 0: descending makes the winner likelier.
        let dev = Device::Cpu;
        let p = candle_core::Var::new(&[0.4f32, 0.4], &dev).unwrap();
        let r = Tensor::new(&[0.4f32, 0.4], &dev).unwrap();
        let (loss, _) = dpo_loss(p.as_tensor(), &r, 10.0).unwrap();
        let g: Vec<f32> = loss.backward().unwrap().get(&p).unwrap().to_vec1().unwrap();
        assert!(g[0] > 0.0 && g[1] < 0.0, "{g:?}");
        assert!((g[0] - 2.5).abs() < 1e-5, "β/2 · σ(0) = 2.5: {g:?}");
    }
}
