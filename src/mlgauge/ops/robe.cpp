// ROBE-Z embedding bag (Desai, Chou, Shrivastava, MLSys 2022) on CPU: every table reads one shared
// array M of m floats. Coordinate j of global row x (the table's row plus the rows of the tables
// before it) reads
//   M[h(x, j / Z) mod (m - Z + 1) + j mod Z],  h(x, c) = (a x + b c + r) mod P,  P = 2038074743
// which is the map of the authors' hashed_embedding_bag_kernel.cu (robe.py documents it and holds
// the PyTorch reference this kernel is tested against). A block of Z coordinates is one contiguous
// run of M, so a row costs ceil(dim / Z) random reads instead of dim.
//
// One call pools the bags of one table, or of several tables laid end to end (one output tensor
// each), so a training step over many tables can build a single gradient of M.
// forward: one pass per bag that checks each id, hashes, gathers and pools (sum, weighted sum or
// mean) straight into the bag's output row. Bags are split over PyTorch's intra-op threads.
// (Software prefetching of the next lookups' blocks measured no faster here, with M from L2-sized
// to DRAM-sized.)
// backward: the dense gradient of M (m values, collisions add). Each thread owns one slice of M and
// scans every lookup in order, adding only what lands in its slice: no atomics, no races, and every
// element of M receives its terms in lookup order, so the result is bitwise the same on any number
// of threads. Both passes use fmadd on full and partial vectors alike, so an element's arithmetic
// does not depend on where a slice boundary falls.
// The autograd function is C++ too: a model calls this once per table and step, so the call's own
// cost matters next to a few thousand lookups.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

using at::vec::Vectorized;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kPrime = 2038074743;  // the authors' P
constexpr int64_t kBagGrain = 16;       // bags per task: enough work to amortise the thread hand-off
constexpr int64_t kSliceAlign = 16;     // slice bounds on 64-byte lines, so threads never share one

// The index map, shared by all tables: base() takes a global row (the table's row + its offset).
struct Map {
  int64_t a, b, r, span, block, dim, blocks;  // span = m - Z + 1: where a block may start
  uint64_t magic;                              // Lemire's fastmod constant for span (< 2^32)

  Map(int64_t m, int64_t dim_, int64_t block_, int64_t a_, int64_t b_, int64_t r_)
      : a(a_ % kPrime), b(b_ % kPrime), r(r_ % kPrime), span(m - block_ + 1), block(block_), dim(dim_),
        blocks((dim_ + block_ - 1) / block_), magic(0) {
    TORCH_CHECK(block >= 1 && dim >= 1 && m >= block, "ROBE needs block >= 1, dim >= 1 and m >= block");
    if (span < kPrime) magic = UINT64_MAX / static_cast<uint64_t>(span) + 1;
  }

  // h(x, 0), from x reduced mod P first: a * x then stays below 2^62 for any int64 row.
  int64_t base(int64_t x) const { return (a * (x % kPrime) + r) % kPrime; }

  // h(x, c + 1) from h(x, c): adding b (< P) needs one conditional subtraction, no division.
  int64_t next(int64_t h) const {
    h += b;
    return h >= kPrime ? h - kPrime : h;
  }

  // h mod span without a division: h < P < 2^31, and (Lemire, Kaser, Kurz 2019) for 32-bit
  // h and span, h mod span = ((magic * h mod 2^64) * span) >> 64.
  int64_t start(int64_t h) const {
    if (span > h) return h;
    const uint64_t low = magic * static_cast<uint64_t>(h);
    return static_cast<int64_t>((static_cast<__uint128_t>(low) * static_cast<uint64_t>(span)) >> 64);
  }

  int64_t length(int64_t c) const { return std::min(block, dim - c * block); }
};

// The bags of one or more tables, laid end to end: nn.EmbeddingBag's offsets, or (offsets undefined)
// fixed runs of `width` ids (2-D input). Table t owns bags table_first[t] .. table_first[t + 1] - 1.
struct Bags {
  const int64_t* ids;
  const int64_t* offsets;
  int64_t width, n_ids, n_bags;
  std::vector<int64_t> table_offset, table_rows, table_first, bag_table;  // bag_table empty: one table

  int64_t begin(int64_t bag) const { return offsets != nullptr ? offsets[bag] : bag * width; }
  int64_t end(int64_t bag) const { return bag + 1 < n_bags ? begin(bag + 1) : n_ids; }
  int64_t table(int64_t bag) const { return bag_table.empty() ? 0 : bag_table[bag]; }
  int64_t n_tables() const { return static_cast<int64_t>(table_offset.size()); }

  // The global row of lookup i of `bag`; raises IndexError (caught in robe.py) for a bad id.
  int64_t global(int64_t i, int64_t bag) const {
    const int64_t t = table(bag), id = ids[i];
    TORCH_CHECK_INDEX(id >= 0 && id < table_rows[t], "ROBE id ", id, " out of range for table ", t);
    return id + table_offset[t];
  }
};

// Each table has its own (bags, dim) output (and gradient) tensor: where a bag's row lives.
template <typename T>
struct Rows {
  const Bags& bags;
  std::vector<T*> base;  // nullptr: no gradient reached this table's output
  int64_t dim;

  T* operator()(int64_t bag) const {
    const int64_t t = bags.table(bag);
    return base[t] == nullptr ? nullptr : base[t] + (bag - bags.table_first[t]) * dim;
  }
};

// y[0:n] += s * x[0:n], or y[0:n] = s * x[0:n] when `first`: a bag's first lookup writes its output
// row without zeroing and re-reading it (about 10% faster for one-id bags). The same vector ops
// serve full and partial tail vectors.
template <typename T>
inline void axpy(T* y, const T* x, T s, int64_t n, bool first = false) {
  using V = Vectorized<T>;
  const V sv(s);
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) {
    const V xv = V::loadu(x + i);
    (first ? sv * xv : at::vec::fmadd(sv, xv, V::loadu(y + i))).store(y + i);
  }
  if (i < n) {
    const int64_t rest = n - i;
    const V xv = V::loadu(x + i, rest);
    (first ? sv * xv : at::vec::fmadd(sv, xv, V::loadu(y + i, rest))).store(y + i, rest);
  }
}

template <typename T>
void forward_bags(const T* w, const Bags& bags, const T* psw, bool mean, const Map& map, const Rows<T>& out) {
  at::parallel_for(0, bags.n_bags, kBagGrain, [&](int64_t first, int64_t last) {
    for (int64_t bag = first; bag < last; ++bag) {
      T* row = out(bag);
      const int64_t begin = bags.begin(bag), end = bags.end(bag);
      if (begin == end) std::fill(row, row + map.dim, T(0));
      for (int64_t i = begin; i < end; ++i) {
        const T s = psw != nullptr ? psw[i] : T(1);
        int64_t h = map.base(bags.global(i, bag));
        for (int64_t c = 0; c < map.blocks; ++c, h = map.next(h)) {
          axpy(row + c * map.block, w + map.start(h), s, map.length(c), /*first=*/i == begin);
        }
      }
      if (mean && end > begin) {
        const T inv = T(1) / static_cast<T>(end - begin);
        for (int64_t j = 0; j < map.dim; ++j) row[j] *= inv;
      }
    }
  });
}

// Where each block of each lookup starts in M: (n_ids, blocks), computed once for all slices.
torch::Tensor block_starts(const Bags& bags, const Map& map) {
  auto starts = torch::empty({bags.n_ids, map.blocks}, torch::kLong);
  int64_t* s = starts.data_ptr<int64_t>();
  at::parallel_for(0, bags.n_bags, kBagGrain, [&](int64_t first, int64_t last) {
    for (int64_t bag = first; bag < last; ++bag) {
      const int64_t offset = bags.table_offset[bags.table(bag)];
      for (int64_t i = bags.begin(bag); i < bags.end(bag); ++i) {
        int64_t h = map.base(bags.ids[i] + offset);
        for (int64_t c = 0; c < map.blocks; ++c, h = map.next(h)) s[i * map.blocks + c] = map.start(h);
      }
    }
  });
  return starts;
}

// Adds every lookup's share of grad into gw[lo:hi], in lookup order. A lookup's scale is its
// per-sample weight, 1 / bag size for mean, else 1.
template <typename T>
void accumulate_slice(const Rows<const T>& grad, const Bags& bags, const int64_t* starts, const T* psw,
                      bool mean, const Map& map, int64_t lo, int64_t hi, T* gw) {
  std::fill(gw + lo, gw + hi, T(0));
  for (int64_t bag = 0; bag < bags.n_bags; ++bag) {
    const int64_t begin = bags.begin(bag), end = bags.end(bag);
    const T* g = grad(bag);
    if (g == nullptr) continue;
    const T bag_scale = mean ? T(1) / static_cast<T>(std::max<int64_t>(1, end - begin)) : T(1);
    for (int64_t i = begin; i < end; ++i) {
      const T s = psw != nullptr ? psw[i] : bag_scale;
      for (int64_t c = 0; c < map.blocks; ++c) {
        const int64_t start = starts[i * map.blocks + c];
        const int64_t from = std::max(start, lo), to = std::min(start + map.length(c), hi);
        if (from < to) axpy(gw + from, g + c * map.block + (from - start), s, to - from);
      }
    }
  }
}

template <typename T>
void backward_weight(const Rows<const T>& grad, const Bags& bags, const T* psw, bool mean, const Map& map,
                     int64_t m, T* gw) {
  auto starts = block_starts(bags, map);
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), m / kSliceAlign));
  auto bound = [&](int64_t s) { return s == slices ? m : (m * s / slices) / kSliceAlign * kSliceAlign; };
  at::parallel_for(0, slices, 1, [&](int64_t first, int64_t last) {
    for (int64_t s = first; s < last; ++s) {
      accumulate_slice(grad, bags, st, psw, mean, map, bound(s), bound(s + 1), gw);
    }
  });
}

// d out / d per_sample_weights[i] = <grad[bag(i)], row i of its table>.
template <typename T>
void backward_psw(const Rows<const T>& grad, const T* w, const Bags& bags, const Map& map, T* out) {
  at::parallel_for(0, bags.n_bags, kBagGrain, [&](int64_t first, int64_t last) {
    for (int64_t bag = first; bag < last; ++bag) {
      const T* g = grad(bag);
      const int64_t offset = bags.table_offset[bags.table(bag)];
      for (int64_t i = bags.begin(bag); i < bags.end(bag); ++i) {
        T acc = 0;
        if (g == nullptr) {
          out[i] = acc;
          continue;
        }
        int64_t h = map.base(bags.ids[i] + offset);
        for (int64_t c = 0; c < map.blocks; ++c, h = map.next(h)) {
          const T* x = w + map.start(h);
          const T* y = g + c * map.block;
          for (int64_t o = 0; o < map.length(c); ++o) acc += x[o] * y[o];
        }
        out[i] = acc;
      }
    }
  });
}

// tables: [bags per table..., offset per table..., rows per table...], 3F values.
Bags make_bags(const torch::Tensor& ids, const torch::Tensor& offsets, int64_t width,
               const std::vector<int64_t>& tables) {
  TORCH_CHECK(ids.scalar_type() == torch::kLong && ids.dim() == 1 && ids.is_contiguous(),
              "ids: contiguous 1-D int64");
  TORCH_CHECK(!tables.empty() && tables.size() % 3 == 0, "tables: bags, offsets and rows of each table");
  const int64_t n_tables = static_cast<int64_t>(tables.size()) / 3;
  Bags bags{ids.data_ptr<int64_t>(), nullptr, width, ids.numel(), 0, {}, {}, {}, {}};
  if (offsets.defined()) {
    TORCH_CHECK(offsets.scalar_type() == torch::kLong && offsets.dim() == 1 && offsets.is_contiguous(),
                "offsets: contiguous 1-D int64");
    bags.offsets = offsets.data_ptr<int64_t>();
    bags.n_bags = offsets.numel();
  } else {
    TORCH_CHECK(width >= 1 && ids.numel() % width == 0, "fixed-width bags need width >= 1 dividing the ids");
    bags.n_bags = ids.numel() / width;
  }
  bags.table_offset.assign(tables.begin() + n_tables, tables.begin() + 2 * n_tables);
  bags.table_rows.assign(tables.begin() + 2 * n_tables, tables.end());
  bags.table_first.assign(1, 0);
  for (int64_t t = 0; t < n_tables; ++t) bags.table_first.push_back(bags.table_first.back() + tables[t]);
  if (n_tables > 1) {
    for (int64_t t = 0; t < n_tables; ++t) bags.bag_table.insert(bags.bag_table.end(), tables[t], t);
  }
  const int64_t listed = n_tables > 1 ? static_cast<int64_t>(bags.bag_table.size()) : tables[0];
  TORCH_CHECK(listed == bags.n_bags, "tables: the bags per table must add up to the bags");
  return bags;
}

template <typename T>
const T* maybe_ptr(const torch::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Non-tensor settings travel in ctx->saved_data.
struct Settings {
  int64_t width, block, a, b, r;
  bool mean;
  at::ScalarType type;  // of the weight: the gradients' type, also when no output gradient arrives
  std::vector<int64_t> tables;

  at::ScalarType dtype() const { return type; }
  void save(AutogradContext* ctx) const {
    const int64_t type_id = static_cast<int64_t>(type);
    ctx->saved_data["s"] = std::vector<int64_t>{width, block, a, b, r, mean ? 1 : 0, type_id};
    ctx->saved_data["t"] = tables;
  }
  static Settings load(AutogradContext* ctx) {
    auto v = ctx->saved_data["s"].toIntVector();
    return Settings{v[0], v[1], v[2], v[3], v[4], v[5] != 0, static_cast<at::ScalarType>(v[6]),
                    ctx->saved_data["t"].toIntVector()};
  }
};

template <typename T>
Rows<T> rows_of(const Bags& bags, const variable_list& tensors) {
  Rows<T> rows{bags, {}, 0};
  for (const auto& t : tensors) {
    rows.base.push_back(t.defined() ? t.data_ptr<std::remove_const_t<T>>() : nullptr);
    if (t.defined()) rows.dim = t.size(1);
  }
  return rows;
}

struct RobeBag : public torch::autograd::Function<RobeBag> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& weight, const torch::Tensor& ids,
                               const std::optional<torch::Tensor>& offsets_or_none,
                               const std::optional<torch::Tensor>& psw, int64_t dim, const Settings& s) {
    TORCH_CHECK(weight.device().is_cpu() && weight.dim() == 1 && weight.is_contiguous(),
                "weight: contiguous 1-D CPU");
    const torch::Tensor offsets = offsets_or_none.value_or(torch::Tensor());
    const Bags bags = make_bags(ids, offsets, s.width, s.tables);
    const Map map(weight.numel(), dim, s.block, s.a, s.b, s.r);
    torch::Tensor p = psw.has_value() ? psw->to(weight.scalar_type()).contiguous() : torch::Tensor();
    TORCH_CHECK(!p.defined() || p.numel() == bags.n_ids, "per_sample_weights: one per id");
    // One output per table: blocks that malloc recycles, where one large block is mapped afresh (page
    // faults) on every call.
    variable_list outs;
    for (int64_t t = 0; t < bags.n_tables(); ++t) {
      outs.push_back(torch::empty({bags.table_first[t + 1] - bags.table_first[t], dim}, weight.options()));
    }
    AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "mlgauge_robe_forward", [&] {
      forward_bags<scalar_t>(weight.data_ptr<scalar_t>(), bags, maybe_ptr<scalar_t>(p), s.mean, map,
                             rows_of<scalar_t>(bags, outs));
    });
    const bool psw_grad = psw.has_value() && psw->requires_grad();
    ctx->save_for_backward({ids, offsets, p, psw_grad ? weight : torch::Tensor()});
    ctx->saved_data["m"] = weight.numel();
    s.save(ctx);
    return outs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &ids = saved[0], &offsets = saved[1], &p = saved[2], &w = saved[3];
    const Settings s = Settings::load(ctx);
    const int64_t m = ctx->saved_data["m"].toInt();
    const Bags bags = make_bags(ids, offsets, s.width, s.tables);
    int64_t dim = 0;  // stays 0 when no output of this call received a gradient
    for (auto& g : grads) {
      if (!g.defined()) continue;
      g = g.to(s.dtype()).contiguous();
      dim = g.size(1);
    }
    const auto options = ids.options().dtype(s.dtype());
    const auto make = [&](int64_t n) {
      return dim == 0 ? torch::zeros({n}, options) : torch::empty({n}, options);
    };
    const torch::Tensor gw = ctx->needs_input_grad(0) ? make(m) : torch::Tensor();
    const torch::Tensor gp = w.defined() ? make(bags.n_ids) : torch::Tensor();
    if (dim == 0) return {gw, torch::Tensor(), torch::Tensor(), gp, torch::Tensor(), torch::Tensor()};
    const Map map(m, dim, s.block, s.a, s.b, s.r);
    AT_DISPATCH_FLOATING_TYPES(s.dtype(), "mlgauge_robe_backward", [&] {
      const Rows<const scalar_t> rows = rows_of<const scalar_t>(bags, grads);
      if (gw.defined()) {
        scalar_t* out = gw.data_ptr<scalar_t>();
        backward_weight<scalar_t>(rows, bags, maybe_ptr<scalar_t>(p), s.mean, map, m, out);
      }
      if (gp.defined()) {
        backward_psw<scalar_t>(rows, w.data_ptr<scalar_t>(), bags, map, gp.data_ptr<scalar_t>());
      }
    });
    return {gw, torch::Tensor(), torch::Tensor(), gp, torch::Tensor(), torch::Tensor()};
  }
};

// [(bags_t, dim)]: the pooled ROBE rows of the bags of one or more tables laid end to end,
// differentiable in weight and per_sample_weights. offsets None: bags of `width` consecutive ids.
// tables = [bags of each table..., row offset of each..., rows of each...]. Raises IndexError on
// an id outside its table.
variable_list bag(const torch::Tensor& weight, const torch::Tensor& ids,
                  const std::optional<torch::Tensor>& offsets, int64_t width,
                  const std::optional<torch::Tensor>& psw, std::vector<int64_t> tables, int64_t dim,
                  int64_t block, int64_t a, int64_t b, int64_t r, bool mean) {
  const Settings settings{width, block, a, b, r, mean, weight.scalar_type(), std::move(tables)};
  return RobeBag::apply(weight, ids, offsets, psw, dim, settings);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bag", &bag, "ROBE-Z embedding bags: hash, gather and pool per bag; dense gradient of M");
}
