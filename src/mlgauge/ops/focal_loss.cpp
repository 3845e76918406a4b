// Sigmoid focal loss (Lin et al., torchvision.ops.sigmoid_focal_loss semantics), fused: the forward
// pass reads the logits and targets once and writes the loss (or only its sum, for "sum" and
// "mean"); the backward pass reads them once more and writes the gradient, already multiplied by
// the incoming one. Nothing else is stored: the reference formula streams a full anchors x classes
// tensor through about 10 element-wise ops forward and 20 backward, keeping their intermediates.
// Vectorized with ATen's Vectorized<T> (SLEEF exp/log1p from libtorch), split over PyTorch's
// intra-op threads in fixed chunks, so a sum is the same whatever the thread count.
//
// Per element, with x the logit and t the target (any real in [0, 1], as torchvision allows):
//   e = exp(-|x|), p = sigmoid(x), q = 1 - p (both from e, without cancellation)
//   ce = max(x, 0) - x t + log1p(e)                 (binary_cross_entropy_with_logits)
//   m = 1 - p_t = t q + (1 - t) p,  loss = a_t ce m^gamma,  a_t = alpha t + (1 - alpha)(1 - t) if alpha >= 0
//   d loss / dx = a_t [ (p - t) m^gamma - gamma m^(gamma - 1) ce p q (2t - 1) ]
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <vector>

namespace {

using at::vec::Vectorized;

constexpr int64_t kGrain = 32768;  // elements per chunk: large enough to amortise the thread hand-off

template <typename T>
struct Focal {
  T alpha, gamma;
  bool weighted;  // alpha >= 0: torchvision skips the weighting for negative alpha

  using V = Vectorized<T>;

  // The loss of each lane; with `grad`, also d loss / dx.
  V apply(const V& x, const V& t, V* grad) const {
    const V one(T(1)), zero(T(0)), two(T(2));
    V e = x.abs().neg().exp();
    V inv = one / (one + e);
    V small = e * inv;                        // sigmoid(-|x|)
    auto positive = x >= zero;
    V p = V::blendv(small, inv, positive);    // sigmoid(x)
    V q = V::blendv(inv, small, positive);    // 1 - sigmoid(x), exactly
    V ce = at::vec::maximum(x, zero) - x * t + e.log1p();
    V m = t * q + (one - t) * p;
    V mg = gamma == T(2) ? m * m : (gamma == T(0) ? one : m.pow(V(gamma)));
    V loss = ce * mg;
    V at = weighted ? V(alpha) * t + V(T(1) - alpha) * (one - t) : one;
    if (grad != nullptr) {
      V dmg = gamma == T(2) ? two * m : (gamma == T(0) ? zero : V(gamma) * m.pow(V(gamma - T(1))));
      *grad = ((p - t) * mg - dmg * ce * p * q * (two * t - one)) * at;
    }
    return loss * at;
  }
};

// Runs body(begin, end) over fixed chunks of kGrain elements, in parallel; returns the chunk count.
template <typename F>
int64_t for_chunks(int64_t n, const F& body) {
  const int64_t chunks = (n + kGrain - 1) / kGrain;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) body(c, c * kGrain, std::min(n, (c + 1) * kGrain));
  });
  return chunks;
}

template <typename T>
void loss_each(const T* x, const T* t, T* out, int64_t n, const Focal<T>& f) {
  using V = Vectorized<T>;
  for_chunks(n, [&](int64_t, int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + V::size() <= end; i += V::size()) f.apply(V::loadu(x + i), V::loadu(t + i), nullptr).store(out + i);
    if (i < end) f.apply(V::loadu(x + i, end - i), V::loadu(t + i, end - i), nullptr).store(out + i, end - i);
  });
}

template <typename T>
double loss_sum(const T* x, const T* t, int64_t n, const Focal<T>& f) {
  using V = Vectorized<T>;
  std::vector<double> partial((n + kGrain - 1) / kGrain, 0.0);
  for_chunks(n, [&](int64_t c, int64_t begin, int64_t end) {
    V acc(T(0));
    int64_t i = begin;
    for (; i + V::size() <= end; i += V::size()) acc = acc + f.apply(V::loadu(x + i), V::loadu(t + i), nullptr);
    T lanes[V::size()];
    acc.store(lanes);
    double sum = 0.0;
    for (int64_t k = 0; k < V::size(); ++k) sum += lanes[k];
    if (i < end) {  // zero-filled tail lanes are masked out by summing only the real ones
      f.apply(V::loadu(x + i, end - i), V::loadu(t + i, end - i), nullptr).store(lanes, end - i);
      for (int64_t k = 0; k < end - i; ++k) sum += lanes[k];
    }
    partial[c] = sum;
  });
  double total = 0.0;
  for (double v : partial) total += v;  // in chunk order: the same sum on any number of threads
  return total;
}

template <typename T>
void grad_each(const T* x, const T* t, const T* g, T scale, T* out, int64_t n, const Focal<T>& f) {
  using V = Vectorized<T>;
  for_chunks(n, [&](int64_t, int64_t begin, int64_t end) {
    V d;
    int64_t i = begin;
    for (; i + V::size() <= end; i += V::size()) {
      f.apply(V::loadu(x + i), V::loadu(t + i), &d);
      (g != nullptr ? d * V::loadu(g + i) : d * V(scale)).store(out + i);
    }
    if (i < end) {
      const int64_t rest = end - i;
      f.apply(V::loadu(x + i, rest), V::loadu(t + i, rest), &d);
      (g != nullptr ? d * V::loadu(g + i, rest) : d * V(scale)).store(out + i, rest);
    }
  });
}

void check(const torch::Tensor& x, const torch::Tensor& t) {
  TORCH_CHECK(x.device().is_cpu() && t.device().is_cpu(), "the fused kernel runs on CPU tensors");
  TORCH_CHECK(x.sizes() == t.sizes(), "inputs and targets must have the same shape");
  TORCH_CHECK(x.scalar_type() == t.scalar_type(), "inputs and targets must have the same dtype");
}

// reduce: false gives the loss of every element, true its sum (a 0-dim tensor).
torch::Tensor forward(const torch::Tensor& inputs, const torch::Tensor& targets, double alpha, double gamma,
                      bool reduce) {
  check(inputs, targets);
  auto x = inputs.contiguous();
  auto t = targets.contiguous();
  torch::Tensor out = reduce ? torch::empty({}, x.options()) : torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlgauge_sigmoid_focal_loss", [&] {
    Focal<scalar_t> f{static_cast<scalar_t>(alpha), static_cast<scalar_t>(gamma), alpha >= 0};
    if (reduce) {
      out.fill_(loss_sum<scalar_t>(x.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), x.numel(), f));
    } else {
      loss_each<scalar_t>(x.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.numel(), f);
    }
  });
  return out;
}

// d loss / d inputs times grad_output: a tensor of the inputs' shape, or one value for a reduced loss.
torch::Tensor backward(const torch::Tensor& inputs, const torch::Tensor& targets, const torch::Tensor& grad_output,
                       double alpha, double gamma) {
  check(inputs, targets);
  auto x = inputs.contiguous();
  auto t = targets.contiguous();
  const bool one_value = grad_output.numel() == 1;
  TORCH_CHECK(one_value || grad_output.sizes() == x.sizes(), "grad_output must be one value or the inputs' shape");
  auto g = one_value ? grad_output : grad_output.to(x.scalar_type()).contiguous();
  auto out = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlgauge_sigmoid_focal_loss_backward", [&] {
    Focal<scalar_t> f{static_cast<scalar_t>(alpha), static_cast<scalar_t>(gamma), alpha >= 0};
    const scalar_t scale = one_value ? g.item<scalar_t>() : scalar_t(1);
    grad_each<scalar_t>(x.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), one_value ? nullptr : g.data_ptr<scalar_t>(),
                        scale, out.data_ptr<scalar_t>(), x.numel(), f);
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "sigmoid focal loss of every element, or their sum");
  m.def("backward", &backward, "its gradient with respect to the logits, times grad_output");
}
