// Fused per-edge kernels of Scalar Interaction for the eager CPU path.
//
// Each kernel gathers node rows by an edge index, combines them with per-edge values and
// (for the scatters) adds the result into node rows, in one pass: the (E, M, c) edge
// temporaries of the unfused form (gathered rows, products, their gradients) are never
// written. The four kernels are closed under differentiation (the backward of each is a
// combination of the others), so sinet_ase/ops/fused.py builds forward, backward and
// double backward from them.
//
// Shapes: E edges, N nodes, R rows per node (spherical columns, or columns plus one),
// C the contiguous inner width (channels, or hidden units). Indices are int64.
//
// Threads (ATen's pool, torch.set_num_threads): gathers split the edges; scatters split the
// destination nodes where the edges are sorted by destination (the receivers of a neighbour
// list), else the edges, each thread adding into a private copy of the output
// (scatter_parallel).

// Built two ways: as a Python extension (torch.utils.cpp_extension, which defines
// TORCH_EXTENSION_NAME) for sinet_ase, and into the LAMMPS plugin (sinet_ase/lammps), where
// the same operators serve the exported packages without Python.
#ifdef TORCH_EXTENSION_NAME
#include <torch/extension.h>
#else
#include <torch/all.h>
#include <torch/library.h>
#endif

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

namespace {

void check_index(const torch::Tensor& index, int64_t num_edges, const char* name) {
  TORCH_CHECK(index.scalar_type() == torch::kLong, name, " must be int64");
  TORCH_CHECK(index.dim() == 1 && index.size(0) == num_edges, name, " must have one entry per edge");
}

// Runs body(out, e0, e1) over edge ranges so that no two threads add into the same element of
// ``out`` (num_nodes rows of ``row_size`` values): contiguous ranges of destination nodes
// where dst is sorted (the receivers of a neighbour list); else each thread adds its share of
// the edges into a zeroed private copy, and the copies are summed into ``out`` at the end.
template <typename scalar_t, typename Body>
void scatter_parallel(scalar_t* out, const int64_t* dst, int64_t E, int64_t num_nodes, int64_t row_size,
                      const Body& body) {
  const int64_t threads = at::get_num_threads();
  if (threads == 1 || E < 1024) {
    body(out, 0, E);
  } else if (std::is_sorted(dst, dst + E)) {
    at::parallel_for(0, num_nodes, 1, [&](int64_t n0, int64_t n1) {
      body(out, std::lower_bound(dst, dst + E, n0) - dst, std::lower_bound(dst, dst + E, n1) - dst);
    });
  } else {
    const int64_t size = num_nodes * row_size, share = (E + threads - 1) / threads;
    std::vector<std::vector<scalar_t>> copies(threads - 1);
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        scalar_t* target = out;
        if (t > 0) {
          copies[t - 1].assign(size, scalar_t(0));
          target = copies[t - 1].data();
        }
        body(target, std::min(E, t * share), std::min(E, (t + 1) * share));
      }
    });
    at::parallel_for(0, size, 4096, [&](int64_t i0, int64_t i1) {
      for (const auto& copy : copies) {
        const scalar_t* __restrict__ c = copy.data();
        _Pragma("omp simd") for (int64_t i = i0; i < i1; ++i) out[i] += c[i];
      }
    });
  }
}

}  // namespace

// out[e, c] = sum_r w[e, r] src[index[e], r, c]:  src (N, R, C), index (E,), w (E, R) -> (E, C)
torch::Tensor gather_contract(torch::Tensor src, torch::Tensor index, torch::Tensor w) {
  src = src.contiguous();
  w = w.contiguous();
  index = index.contiguous();
  const int64_t E = w.size(0), R = w.size(1), C = src.size(2);
  TORCH_CHECK(src.size(1) == R, "gather_contract: src rows ", src.size(1), " != weight columns ", R);
  check_index(index, E, "gather_contract: index");
  auto out = torch::empty({E, C}, src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "gather_contract", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, E, 256, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        scalar_t* __restrict__ oe = o + e * C;
        const scalar_t* se = s + idx[e] * R * C;
        const scalar_t* we = wp + e * R;
        for (int64_t c = 0; c < C; ++c) oe[c] = 0;
        for (int64_t r = 0; r < R; ++r) {
          const scalar_t wr = we[r];
          const scalar_t* row = se + r * C;
          _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) oe[c] += wr * row[c];
        }
      }
    });
  });
  return out;
}

// out[e, r] = sum_c src[index[e], r, c] x[e, c]:  src (N, R, C), index (E,), x (E, C) -> (E, R)
torch::Tensor gather_dot(torch::Tensor src, torch::Tensor index, torch::Tensor x) {
  src = src.contiguous();
  x = x.contiguous();
  index = index.contiguous();
  const int64_t E = x.size(0), R = src.size(1), C = src.size(2);
  TORCH_CHECK(x.size(1) == C, "gather_dot: widths differ");
  check_index(index, E, "gather_dot: index");
  auto out = torch::empty({E, R}, src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "gather_dot", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, E, 256, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const scalar_t* se = s + idx[e] * R * C;
        const scalar_t* xe = xp + e * C;
        for (int64_t r = 0; r < R; ++r) {
          const scalar_t* row = se + r * C;
          scalar_t acc = 0;
          _Pragma("omp simd reduction(+ : acc)") for (int64_t c = 0; c < C; ++c) acc += row[c] * xe[c];
          o[e * R + r] = acc;
        }
      }
    });
  });
  return out;
}

// out[index[e], r, c] += w[e, r] x[e, c]:  w (E, R), x (E, C), index (E,) -> (num_nodes, R, C)
torch::Tensor outer_scatter(torch::Tensor w, torch::Tensor x, torch::Tensor index, int64_t num_nodes) {
  w = w.contiguous();
  x = x.contiguous();
  index = index.contiguous();
  const int64_t E = w.size(0), R = w.size(1), C = x.size(1);
  TORCH_CHECK(x.size(0) == E, "outer_scatter: edge counts differ");
  check_index(index, E, "outer_scatter: index");
  auto out = torch::zeros({num_nodes, R, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "outer_scatter", [&] {
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scatter_parallel(o, idx, E, num_nodes, R * C, [&](scalar_t* target, int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        scalar_t* __restrict__ oe = target + idx[e] * R * C;
        const scalar_t* xe = xp + e * C;
        const scalar_t* we = wp + e * R;
        for (int64_t r = 0; r < R; ++r) {
          const scalar_t wr = we[r];
          scalar_t* __restrict__ row = oe + r * C;
          _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) row[c] += wr * xe[c];
        }
      }
    });
  });
  return out;
}

// out[e, l, c] = scale[l] sum_{m in l} a[ia[e], m, c] b[ib[e], m, c]
//   a (Na, M, C), b (Nb, M, C), ia, ib (E,), degree_start (L+2,) -> (E, L+1, C)
torch::Tensor pair_degree_dot(torch::Tensor a, torch::Tensor ia, torch::Tensor b, torch::Tensor ib,
                              torch::Tensor degree_start, torch::Tensor scale) {
  a = a.contiguous();
  b = b.contiguous();
  ia = ia.contiguous();
  ib = ib.contiguous();
  degree_start = degree_start.to(torch::kLong).contiguous();
  scale = scale.to(a.scalar_type()).contiguous();
  const int64_t E = ia.size(0), M = a.size(1), C = a.size(2), L1 = degree_start.size(0) - 1;
  TORCH_CHECK(b.size(1) == M && b.size(2) == C, "pair_degree_dot: a and b rows differ");
  check_index(ib, E, "pair_degree_dot: ib");
  auto out = torch::empty({E, L1, C}, a.options());
  const int64_t* start = degree_start.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "pair_degree_dot", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    const scalar_t* sp = scale.data_ptr<scalar_t>();
    const int64_t* xa = ia.data_ptr<int64_t>();
    const int64_t* xb = ib.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, E, 256, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const scalar_t* ae = ap + xa[e] * M * C;
        const scalar_t* be = bp + xb[e] * M * C;
        for (int64_t l = 0; l < L1; ++l) {
          scalar_t* __restrict__ ol = o + (e * L1 + l) * C;
          for (int64_t c = 0; c < C; ++c) ol[c] = 0;
          for (int64_t m = start[l]; m < start[l + 1]; ++m) {
            const scalar_t* ar = ae + m * C;
            const scalar_t* br = be + m * C;
            _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) ol[c] += ar[c] * br[c];
          }
          const scalar_t s = sp[l];
          _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) ol[c] *= s;
        }
      }
    });
  });
  return out;
}

// out[dst[e], m, c] += alpha[e, l(m), c] src[isrc[e], m, c]
//   alpha (E, L+1, C), src (N, M, C), isrc, dst (E,), degree_start (L+2,) -> (num_nodes, M, C)
torch::Tensor degree_scatter(torch::Tensor alpha, torch::Tensor src, torch::Tensor isrc, torch::Tensor dst,
                             torch::Tensor degree_start, int64_t num_nodes) {
  alpha = alpha.contiguous();
  src = src.contiguous();
  isrc = isrc.contiguous();
  dst = dst.contiguous();
  degree_start = degree_start.to(torch::kLong).contiguous();
  const int64_t E = alpha.size(0), L1 = alpha.size(1), C = alpha.size(2), M = src.size(1);
  TORCH_CHECK(src.size(2) == C && degree_start.size(0) == L1 + 1, "degree_scatter: shapes differ");
  check_index(isrc, E, "degree_scatter: isrc");
  check_index(dst, E, "degree_scatter: dst");
  auto out = torch::zeros({num_nodes, M, C}, src.options());
  const int64_t* start = degree_start.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "degree_scatter", [&] {
    const scalar_t* al = alpha.data_ptr<scalar_t>();
    const scalar_t* sp = src.data_ptr<scalar_t>();
    const int64_t* xs = isrc.data_ptr<int64_t>();
    const int64_t* xd = dst.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scatter_parallel(o, xd, E, num_nodes, M * C, [&](scalar_t* target, int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        const scalar_t* se = sp + xs[e] * M * C;
        scalar_t* oe = target + xd[e] * M * C;
        for (int64_t l = 0; l < L1; ++l) {
          const scalar_t* ar = al + (e * L1 + l) * C;
          for (int64_t m = start[l]; m < start[l + 1]; ++m) {
            const scalar_t* sr = se + m * C;
            scalar_t* __restrict__ orow = oe + m * C;
            _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) orow[c] += ar[c] * sr[c];
          }
        }
      }
    });
  });
  return out;
}

// Operators of the dispatcher (torch.ops.sinet_fused.*): called from Python eagerly and, with
// no Python in between, from the code that torch.compile generates. Their fake (shape)
// implementations and gradients are registered in sinet_ase/ops/fused.py.
//
// Registered once per process, not with TORCH_LIBRARY: sinet_ase's Python extension and the
// LAMMPS plugin (sinet_ase/lammps) both compile this file, and one process may load both
// (LAMMPS driven from Python); a second definition would abort that process. The copy loaded
// second leaves the first one's operators in place.
namespace {

struct FusedOperators {
  std::unique_ptr<torch::Library> def, impl;

  FusedOperators() {
    if (c10::Dispatcher::singleton().findSchema(c10::OperatorName("sinet_fused::gather_contract", "")).has_value())
      return;
    def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "sinet_fused", std::nullopt, __FILE__, __LINE__);
    def->def("gather_contract(Tensor src, Tensor index, Tensor w) -> Tensor");
    def->def("gather_dot(Tensor src, Tensor index, Tensor x) -> Tensor");
    def->def("outer_scatter(Tensor w, Tensor x, Tensor index, SymInt num_nodes) -> Tensor");
    def->def("pair_degree_dot(Tensor a, Tensor ia, Tensor b, Tensor ib, Tensor degree_start, Tensor scale) -> Tensor");
    def->def(
        "degree_scatter(Tensor alpha, Tensor src, Tensor isrc, Tensor dst, Tensor degree_start, SymInt num_nodes) -> Tensor");
    impl = std::make_unique<torch::Library>(torch::Library::IMPL, "sinet_fused", c10::DispatchKey::CPU, __FILE__,
                                            __LINE__);
    impl->impl("gather_contract", &gather_contract);
    impl->impl("gather_dot", &gather_dot);
    impl->impl("outer_scatter", &outer_scatter);
    impl->impl("pair_degree_dot", &pair_degree_dot);
    impl->impl("degree_scatter", &degree_scatter);
  }
};

const FusedOperators fused_operators;

}  // namespace

#ifdef TORCH_EXTENSION_NAME
// the Python module that torch's extension loader imports; the operators above are its content
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
#endif
