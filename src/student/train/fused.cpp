// libtorch's fused optimizer kernels, which tch does not bind (its generator skips `_foreach_*`
// and `_fused_*`): AdamW as `torch.optim.AdamW(fused=True)` runs it (one vectorised pass per
// parameter: moments, bias correction, decoupled decay, update), the global gradient norm and
// clipping as `clip_grad_norm_(foreach=True)`, and the EMA update, each one call over every
// tensor. `build.rs` compiles this file against the libtorch the binary links; `fused.rs`
// wraps it. Every entry point catches C++ exceptions and returns their message.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "../ffi/shim.h"

using lg_shim::guarded;

extern "C" {

// One AdamW update of n parameters in place (`_fused_adamw_`), `step` being the update's
// number after incrementing (as torch.optim passes its state_steps).
int lg_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** m, at::Tensor** v, size_t n,
                   double lr, double beta1, double beta2, double weight_decay, double eps, double step,
                   char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (n == 0) return;
    at::Tensor s = at::full({}, step, params[0]->options().dtype(at::kFloat));
    std::vector<at::Tensor> steps(n, s);
    // The kernel walks raw memory: gradients from autograd::grad keep whatever layout backward
    // made (a linear layer's weight gradient is a transposed view), so they are laid out as
    // their parameter first; parameters and moments are always dense.
    std::vector<at::Tensor> g;
    g.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(params[i]->is_contiguous() && m[i]->is_contiguous() && v[i]->is_contiguous(),
                  "fused AdamW needs dense parameters and moments");
      g.push_back(grads[i]->contiguous());
    }
    at::_fused_adamw_(lg_shim::tensors_of(params, n), g, lg_shim::tensors_of(m, n), lg_shim::tensors_of(v, n), {}, steps, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  });
}

// The global L2 norm of n gradients (`_foreach_norm`, then the norm of the norms), written to
// *norm as a new device scalar; when clip > 0 the gradients are scaled in place by
// min(clip / (norm + 1e-6), 1) as clip_grad_norm_ does, without reading the norm on the host.
int lg_clip_grad_norm(at::Tensor** grads, size_t n, double clip, at::Tensor** norm, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    at::Tensor total = at::linalg_vector_norm(at::stack(at::_foreach_norm(lg_shim::tensors_of(grads, n), 2)), 2);
    if (clip > 0) {
      at::Tensor coef = at::clamp_max(clip / (total + 1e-6), 1.0);
      at::_foreach_mul_(lg_shim::tensors_of(grads, n), coef);
    }
    *norm = new at::Tensor(total);
  });
}

// ema ← ema · rate + param · (1 − rate), in place (the reference's `mul_` then `add_`).
int lg_ema_update(at::Tensor** ema, at::Tensor** params, size_t n, double rate, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> e = lg_shim::tensors_of(ema, n);
    at::_foreach_mul_(e, at::Scalar(rate));
    at::_foreach_add_(e, lg_shim::tensors_of(params, n), at::Scalar(1.0 - rate));
  });
}

} // extern "C"
