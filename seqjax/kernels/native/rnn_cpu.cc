// The fused LSTM's two time loops and its weight gradients as XLA FFI custom calls for the CPU
// (see seqjax/kernels/native/__init__.py).
//
// XLA:CPU runs the per-step recurrent matmul of a small batch ([16, 128] @ [128, 512]) on one
// core and pays dispatch costs for every small operation of a step. Here each loop is one call
// that splits the hidden units between threads: a thread owns a slice of the units, multiplies
// the full previous hidden state by its own columns of the recurrent weights (all four gates of
// its units), does the gate arithmetic of its units and waits at one barrier per step for the
// others to finish theirs.
//
// Shapes (batch-major, float32, as seqjax/kernels/fused.py): b batch, t time, d inputs, h hidden units,
// g = 4h.
//   lstm_forward:  inputs, w_ih, w_hh [h, g], bias [g] ((b_ih + b_hh) * scale), h0, c0 [b, h],
//                  keep [b, t] (or [1] with masked = 0); with project = 1 inputs are xs [b, t, d]
//                  and w_ih is [d, g], else inputs are gx [b, t, g] (xs @ w_ih, w_ih unread)
//                  -> train: acts [b, t, g] (gate activations), hs [b, t, h], cs [b, t, h]
//                  -> infer: hs [b, t, h], c_last [b, h]
//   lstm_backward: dhs [b, t, h], acts [b, t, g] (aliased to dgates), cs [b, t, h], c0 [b, h],
//                  keep, w_hh [h, g], dc_last [b, h]
//                  -> dgates [b, t, g] (of the pre-activations), dh0 [b, h], dc0 [b, h],
//                     dbias [g] (dgates summed over batch and time)
//   lstm_weight_grads: xs [b, t, d], hs [b, t, h], h0 [b, h], dgates [b, t, g]
//                  -> dw_ih [d, g], dw_hh [h, g] (x_t^T dgates_t and h_{t-1}^T dgates_t summed
//                     over batch and time, h_{-1} = h0)
// Gate order i, f, g, o; scale 0.5 for the sigmoid gates i, f, o and 1 for g.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "blocks.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace seqjax_native;  // NOLINT: the kernels' building blocks

constexpr float kScale[4] = {0.5f, 0.5f, 1.0f, 0.5f};

// The forward gate arithmetic of lane group [j, j + width) of batch row b at step t.
template <class V, bool kTrain>
inline void ForwardUnits(int64_t b, int64_t t, int64_t j, int64_t jl, int64_t time, int64_t hid,
                         const float* mm, int64_t padded, const float* gx, const float* bias,
                         const float* h_prev, float* c_state, const float* keep, float* h_out,
                         float* acts, float* hs, float* cs) {
  const int64_t g = 4 * hid, row = b * time + t;
  V act[4];
  for (int q = 0; q < 4; ++q) {
    // gx: the input projection from XLA, or nullptr when the matmul included the inputs.
    const V pre = gx != nullptr ? Load<V>(gx + row * g + q * hid + j) + Load<V>(mm + q * padded + jl)
                                : Load<V>(mm + q * padded + jl);
    const V z = pre * kScale[q] + Load<V>(bias + q * hid + j);
    act[q] = Tanh(z) * kScale[q] + (1.0f - kScale[q]);
    if (kTrain) Store(acts + row * g + q * hid + j, act[q]);
  }
  const V c = Load<V>(c_state);
  V c_new = act[1] * c + act[0] * act[2];
  V h_new = act[3] * Tanh(c_new);
  if (keep != nullptr) {
    const V k = Splat<V>(keep[row]);
    h_new = Select<V>(k, h_new, Load<V>(h_prev));
    c_new = Select<V>(k, c_new, c);
  }
  Store(c_state, c_new);
  Store(h_out, h_new);
  Store(hs + row * hid + j, h_new);
  if (kTrain) Store(cs + row * hid + j, c_new);
}

// The forward loop. With xs [b, t, d] and w_ih [d, g] (gx nullptr) each step's matmul takes
// [x_t, h_prev] @ [w_ih; w_hh], the input projection included; with gx [b, t, g] (xs nullptr)
// it takes h_prev @ w_hh and adds gx.
template <bool kTrain>
void LstmForward(int64_t batch, int64_t time, int64_t in_dim, int64_t hid, int threads,
                 const float* xs, const float* w_ih, const float* gx, const float* w_hh,
                 const float* bias, const float* h0, const float* c0, const float* keep,
                 float* acts, float* hs, float* cs, float* c_last) {
  const int64_t g = 4 * hid, in = xs != nullptr ? in_dim : 0, depth = in + hid;
  const std::vector<Slice> slices = Slices(hid, Threads(threads, hid));
  const int n_threads = static_cast<int>(slices.size());
  Barrier barrier(n_threads);
  // The hidden states of the last two steps, [2, b, ld], contiguous (rows of hs lie t * h floats
  // apart and fall into the same L1 cache sets), rows padded by one cache line for the same
  // reason. Step t reads buffer (t + 1) % 2 and writes buffer t % 2; a thread writes step t + 1's
  // states only after every thread has arrived at step t's barrier, done reading step t - 1's.
  const int64_t ld = hid + kLanes;
  std::vector<float> buffers(2 * batch * ld);
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(&buffers[(batch + b) * ld], h0 + b * hid, hid * sizeof(float));
  RunThreads(n_threads, [&](int thread) {
    const Slice s = slices[thread];
    const int64_t n = 4 * s.padded;
    // This thread's columns of [w_ih; w_hh], gate by gate, each gate's block padded to whole
    // vectors.
    std::vector<float> columns(depth * n, 0.0f), mm(batch * n), c_state(batch * s.padded);
    for (int64_t k = 0; k < depth; ++k) {
      const float* w_row = k < in ? w_ih + k * g : w_hh + (k - in) * g;
      for (int q = 0; q < 4; ++q)
        std::memcpy(&columns[k * n + q * s.padded], w_row + q * hid + s.begin,
                    s.size() * sizeof(float));
    }
    const std::vector<float> packed = Pack(columns, depth, n);
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(&c_state[b * s.padded], c0 + b * hid + s.begin, s.size() * sizeof(float));
    // When projecting: step t's inputs (this thread's copy, padded rows) times w_ih, into mm.
    // It needs no other thread's results, so it runs between arriving at the previous step's
    // barrier and waiting there: a thread that finished its units first does it while the others
    // finish theirs.
    const int64_t ld_x = in + kLanes;
    std::vector<float> x_rows(in > 0 ? batch * ld_x : 0);
    auto project = [&](int64_t t) {
      for (int64_t b = 0; b < batch; ++b)
        std::memcpy(&x_rows[b * ld_x], xs + (b * time + t) * in, in * sizeof(float));
      Gemm(batch, n, depth, 0, in, x_rows.data(), ld_x, packed.data(), mm.data(), false);
    };
    if (in > 0) project(0);
    int ticket = 0;
    for (int64_t t = 0; t < time; ++t) {
      const float* prev = &buffers[((t + 1) % 2) * batch * ld];
      float* next = &buffers[(t % 2) * batch * ld];
      if (t > 0) barrier.Wait(ticket);  // every unit's state of step t - 1 is written
      Gemm(batch, n, depth, in, depth, prev, ld, packed.data(), mm.data(), in > 0);
      for (int64_t b = 0; b < batch; ++b) {
        const float* mm_b = &mm[b * n];
        const float* h_prev_b = prev + b * ld + s.begin;
        float* c_b = &c_state[b * s.padded];
        float* h_b = next + b * ld + s.begin;
        int64_t jl = 0;
        for (; jl + kLanes <= s.size(); jl += kLanes)
          ForwardUnits<vf, kTrain>(b, t, s.begin + jl, jl, time, hid, mm_b, s.padded, gx, bias,
                                   h_prev_b + jl, c_b + jl, keep, h_b + jl, acts, hs, cs);
        for (; jl < s.size(); ++jl)
          ForwardUnits<float, kTrain>(b, t, s.begin + jl, jl, time, hid, mm_b, s.padded, gx, bias,
                                      h_prev_b + jl, c_b + jl, keep, h_b + jl, acts, hs, cs);
      }
      ticket = barrier.Arrive();
      if (in > 0 && t + 1 < time) project(t + 1);
    }
    if (!kTrain)
      for (int64_t b = 0; b < batch; ++b)
        std::memcpy(c_last + b * hid + s.begin, &c_state[b * s.padded], s.size() * sizeof(float));
  });
}

// The backward's elementwise part of lane group [j, j + width) of batch row b at step t. Every
// cotangent of a step is linear in the (dh, dc) arriving at its output; the coefficients come
// from the stored gate activations and cell states, as in fused.py's XLA backward.
template <class V>
inline void BackwardUnits(int64_t row, int64_t j, int64_t hid, const float* dhs,
                          const float* acts, const float* c, const float* c_prev,
                          const float* keep, float* dh_state, float* dc_state, float* dgates,
                          float* dg_out) {
  const int64_t g = 4 * hid;
  const V i = Load<V>(acts + row * g + j), f = Load<V>(acts + row * g + hid + j);
  const V gg = Load<V>(acts + row * g + 2 * hid + j), o = Load<V>(acts + row * g + 3 * hid + j);
  const V tanh_c = Tanh(Load<V>(c));
  V dc_dh = o * (1.0f - tanh_c * tanh_c);
  V coef[4] = {gg * i * (1.0f - i), Load<V>(c_prev) * f * (1.0f - f), i * (1.0f - gg * gg),
               tanh_c * o * (1.0f - o)};
  V dc_prev = f;
  if (keep != nullptr) {  // a padded step passes (dh, dc) straight through, no gate gradient
    const V k = Splat<V>(keep[row]);
    dc_dh = dc_dh * k;
    for (int q = 0; q < 4; ++q) coef[q] = coef[q] * k;
    dc_prev = Select<V>(k, f, Splat<V>(1.0f));
  }
  const V dh = Load<V>(dh_state) + Load<V>(dhs + row * hid + j);
  const V dc = Load<V>(dc_state) + dh * dc_dh;
  for (int q = 0; q < 4; ++q) {
    const V dgate = (q < 3 ? dc : dh) * coef[q];
    Store(dgates + row * g + q * hid + j, dgate);
    Store(dg_out + q * hid, dgate);
  }
  Store(dh_state, dh);
  Store(dc_state, dc * dc_prev);
}

void LstmBackward(int64_t batch, int64_t time, int64_t hid, int threads, const float* dhs,
                  const float* acts, const float* cs, const float* c0, const float* keep,
                  const float* w_hh, const float* dc_last, float* dgates, float* dh0,
                  float* dc0, float* dbias) {
  const int64_t g = 4 * hid;
  const std::vector<Slice> slices = Slices(hid, Threads(threads, hid));
  Barrier barrier(static_cast<int>(slices.size()));
  // The gate gradients of the last two steps, [2, b, g], contiguous for the matmul (as the
  // forward's hidden state): step t writes buffer t % 2.
  const int64_t ldg = g + kLanes;  // rows padded by one cache line (as the forward's ldh)
  std::vector<float> dg_buffers(2 * batch * ldg);
  RunThreads(static_cast<int>(slices.size()), [&](int thread) {
    const Slice s = slices[thread];
    const int64_t n = s.padded;
    // w_hh^T restricted to this thread's units: packed[r, j] = w_hh[begin + j, r].
    std::vector<float> columns(g * n, 0.0f), mm(batch * n);
    std::vector<float> dh_state(batch * n, 0.0f), dc_state(batch * n, 0.0f);
    for (int64_t j = 0; j < s.size(); ++j)
      for (int64_t r = 0; r < g; ++r) columns[r * n + j] = w_hh[(s.begin + j) * g + r];
    const std::vector<float> packed = Pack(columns, g, n);
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(&dc_state[b * n], dc_last + b * hid + s.begin, s.size() * sizeof(float));
    // The bias gradient of this thread's gate columns: each step's sum over the batch (float),
    // added up over the steps in double. It saves XLA a pass over all of dgates.
    std::vector<double> dbias_sum(4 * n, 0.0);
    std::vector<float> step_sum(4 * n);
    for (int64_t t = time - 1; t >= 0; --t) {
      float* dg_t = &dg_buffers[(t % 2) * batch * ldg];
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t row = b * time + t;
        const float* c = cs + row * hid + s.begin;
        const float* c_prev = (t == 0 ? c0 + b * hid : cs + (row - 1) * hid) + s.begin;
        int64_t jl = 0;
        for (; jl + kLanes <= s.size(); jl += kLanes)
          BackwardUnits<vf>(row, s.begin + jl, hid, dhs, acts, c + jl, c_prev + jl, keep,
                            &dh_state[b * n + jl], &dc_state[b * n + jl], dgates,
                            dg_t + b * ldg + s.begin + jl);
        for (; jl < s.size(); ++jl)
          BackwardUnits<float>(row, s.begin + jl, hid, dhs, acts, c + jl, c_prev + jl, keep,
                               &dh_state[b * n + jl], &dc_state[b * n + jl], dgates,
                               dg_t + b * ldg + s.begin + jl);
      }
      std::fill(step_sum.begin(), step_sum.end(), 0.0f);
      for (int64_t b = 0; b < batch; ++b)
        for (int q = 0; q < 4; ++q) {
          const float* dg = dg_t + b * ldg + q * hid + s.begin;
          float* sum = &step_sum[q * n];
          for (int64_t jl = 0; jl < s.size(); ++jl) sum[jl] += dg[jl];
        }
      for (int64_t i = 0; i < 4 * n; ++i) dbias_sum[i] += step_sum[i];
      barrier.Wait();  // every unit's gate gradients of step t are written
      Gemm(batch, n, g, dg_t, ldg, packed.data(), mm.data());
      for (int64_t b = 0; b < batch; ++b) {
        // A padded step passes dh straight through: dh_prev = dgates @ w_hh^T + (1 - keep) dh.
        const float pass = keep == nullptr ? 0.0f : 1.0f - keep[b * time + t];
        for (int64_t jl = 0; jl < s.size(); ++jl) {
          float& dh = dh_state[b * n + jl];
          dh = keep == nullptr ? mm[b * n + jl] : mm[b * n + jl] + pass * dh;
        }
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      std::memcpy(dh0 + b * hid + s.begin, &dh_state[b * n], s.size() * sizeof(float));
      std::memcpy(dc0 + b * hid + s.begin, &dc_state[b * n], s.size() * sizeof(float));
    }
    for (int q = 0; q < 4; ++q)
      for (int64_t jl = 0; jl < s.size(); ++jl)
        dbias[q * hid + s.begin + jl] = static_cast<float>(dbias_sum[q * n + jl]);
  });
}

// Rows (b, t) per pass of the weight gradients: 128 x 32 panel slices (16 KiB) stay in L1
// (256 to 2048 measured no different).
constexpr int64_t kPassRows = 128;

// The weight gradients dw_ih = sum over rows (b, t) of x_t^T dgates_t and dw_hh = sum of
// h_{t-1}^T dgates_t (h0 at t = 0), computed from xs, hs and h0 as they lie. XLA would first
// transpose xs and the shifted hs into two [d or h, b * t] buffers for its matmuls. Each thread
// owns a range of the g columns and needs no barrier: per pass of kPassRows rows it packs the
// rows' [x_t, h_{t-1}] k-major (all m = d + h of them) and its columns of dgates in panels, then
// runs the tiles. A padded step's dgates are zero, so it adds nothing.
void LstmWeightGrads(int64_t batch, int64_t time, int64_t in_dim, int64_t hid, int threads,
                     const float* xs, const float* hs, const float* h0, const float* dgates,
                     float* dw_ih, float* dw_hh) {
  const int64_t g = 4 * hid, rows = batch * time;
  // Row tiles of at most kMaxRows: the input part's rows, then the hidden part's.
  struct RowTile { int64_t begin; int rows; float* c; };
  std::vector<RowTile> tiles;
  for (int part = 0; part < 2; ++part) {
    const int64_t m = part == 0 ? in_dim : hid, offset = part == 0 ? 0 : in_dim;
    const int64_t count = (m + kMaxRows - 1) / kMaxRows;
    for (int64_t tile = 0, r = 0; tile < count; ++tile) {
      const int n = static_cast<int>(m / count + (tile < m % count ? 1 : 0));
      tiles.push_back({offset + r, n, (part == 0 ? dw_ih : dw_hh) + r * g});
      r += n;
    }
  }
  const int64_t m_all = in_dim + hid, panels = (g + kPanel - 1) / kPanel;
  const int n_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, panels)));
  RunThreads(n_threads, [&](int thread) {
    const int64_t c_begin = panels * thread / n_threads * kPanel;
    const int64_t c_end = std::min(g, panels * (thread + 1) / n_threads * kPanel);
    if (c_begin >= c_end) return;
    const int64_t width = c_end - c_begin, full = width / kLanes * kLanes, tail = width - full;
    std::vector<float> a_pack(tiles.size() * kPassRows * kMaxRows, 0.0f);
    std::vector<float> b_pack(kPassRows * (full + (tail > 0 ? kLanes : 0)), 0.0f);
    // The last, partial vector of columns accumulates here ([m_all, kLanes]) and is copied out.
    std::vector<float> c_tail(tail > 0 ? m_all * kLanes : 0, 0.0f);
    for (int64_t k0 = 0; k0 < rows; k0 += kPassRows) {
      const int64_t depth = std::min(kPassRows, rows - k0);
      for (int64_t kk = 0; kk < depth; ++kk) {
        const int64_t k = k0 + kk, t = k % time;
        const float* x = xs + k * in_dim;
        const float* h_prev = t > 0 ? hs + (k - 1) * hid : h0 + (k / time) * hid;
        for (size_t i = 0; i < tiles.size(); ++i) {
          const RowTile& tile = tiles[i];
          const float* source = tile.begin < in_dim ? x + tile.begin : h_prev + tile.begin - in_dim;
          std::memcpy(&a_pack[(i * kPassRows + kk) * kMaxRows], source, tile.rows * sizeof(float));
        }
        const float* dg = dgates + k * g + c_begin;
        for (int64_t j0 = 0; j0 < full; j0 += kPanel) {
          const int64_t w = std::min<int64_t>(kPanel, full - j0);
          std::memcpy(&b_pack[depth * j0 + kk * w], dg + j0, w * sizeof(float));
        }
        if (tail > 0) std::memcpy(&b_pack[depth * full + kk * kLanes], dg + full, tail * sizeof(float));
      }
      for (int64_t j0 = 0; j0 < full; j0 += kPanel) {
        const int64_t w = std::min<int64_t>(kPanel, full - j0);
        const float* p = &b_pack[depth * j0];
        for (size_t i = 0; i < tiles.size(); ++i) {
          const float* a = &a_pack[i * kPassRows * kMaxRows];
          float* c = tiles[i].c + c_begin + j0;
          if (w == kPanel) TileRows<2, true>(tiles[i].rows, a, 0, p, depth, c, g, k0 > 0);
          else TileRows<1, true>(tiles[i].rows, a, 0, p, depth, c, g, k0 > 0);
        }
      }
      if (tail > 0)
        for (size_t i = 0; i < tiles.size(); ++i)
          TileRows<1, true>(tiles[i].rows, &a_pack[i * kPassRows * kMaxRows], 0,
                            &b_pack[depth * full], depth, &c_tail[tiles[i].begin * kLanes],
                            kLanes, true);
    }
    for (const RowTile& tile : tiles)
      for (int r = 0; r < tile.rows; ++r) {
        float* c = tile.c + r * g + c_begin;
        if (rows == 0) std::fill(c, c + full, 0.0f);  // no pass ran
        if (tail > 0)
          std::memcpy(c + full, &c_tail[(tile.begin + r) * kLanes], tail * sizeof(float));
      }
  });
}

// Shape checks shared by the handlers: [b, t, width] arrays and [b, width] carries.
ffi::Error Expect(const char* name, ffi::Span<const int64_t> dims,
                  std::initializer_list<int64_t> expected) {
  if (dims.size() == expected.size() && std::equal(expected.begin(), expected.end(), dims.begin()))
    return ffi::Error::Success();
  std::string got, want;
  for (int64_t d : dims) got += std::to_string(d) + ",";
  for (int64_t d : expected) want += std::to_string(d) + ",";
  return ffi::Error::InvalidArgument(std::string("seqjax lstm kernel: ") + name + " has shape [" +
                                     got + "], expected [" + want + "]");
}

#define SEQJAX_CHECK(expr)        \
  do {                            \
    ffi::Error error = (expr);    \
    if (!error.success()) return error; \
  } while (0)

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

// The forward's inputs: (xs [b, t, d], w_ih [d, g]) when project, else (gx [b, t, g], unused).
ffi::Error CheckForward(const F32& inputs, const F32& w_ih, const F32& w_hh, const F32& bias,
                        const F32& h0, const F32& c0, const F32& keep, bool masked, bool project,
                        int64_t* batch, int64_t* time, int64_t* in_dim, int64_t* hid) {
  auto dims = inputs.dimensions();
  auto w_dims = w_hh.dimensions();
  if (dims.size() != 3 || w_dims.size() != 2 || w_dims[1] != 4 * w_dims[0])
    return ffi::Error::InvalidArgument(
        "seqjax lstm kernel: needs inputs [b, t, d] (or gx [b, t, 4h]) and w_hh [h, 4h]");
  *batch = dims[0], *time = dims[1], *hid = w_dims[0], *in_dim = project ? dims[2] : 0;
  if (project) SEQJAX_CHECK(Expect("w_ih", w_ih.dimensions(), {*in_dim, 4 * *hid}));
  else SEQJAX_CHECK(Expect("gx", dims, {*batch, *time, 4 * *hid}));
  SEQJAX_CHECK(Expect("bias", bias.dimensions(), {4 * *hid}));
  SEQJAX_CHECK(Expect("h0", h0.dimensions(), {*batch, *hid}));
  SEQJAX_CHECK(Expect("c0", c0.dimensions(), {*batch, *hid}));
  if (masked) SEQJAX_CHECK(Expect("keep", keep.dimensions(), {*batch, *time}));
  return ffi::Error::Success();
}

template <bool kTrain>
ffi::Error Forward(const F32& inputs, const F32& w_ih, const F32& w_hh, const F32& bias,
                   const F32& h0, const F32& c0, const F32& keep, float* acts, float* hs,
                   float* cs, float* c_last, int64_t masked, int64_t project, int64_t threads) {
  int64_t batch, time, in_dim, hid;
  SEQJAX_CHECK(CheckForward(inputs, w_ih, w_hh, bias, h0, c0, keep, masked, project, &batch,
                            &time, &in_dim, &hid));
  LstmForward<kTrain>(batch, time, in_dim, hid, threads,
                      project ? inputs.typed_data() : nullptr,
                      project ? w_ih.typed_data() : nullptr,
                      project ? nullptr : inputs.typed_data(), w_hh.typed_data(),
                      bias.typed_data(), h0.typed_data(), c0.typed_data(),
                      masked ? keep.typed_data() : nullptr, acts, hs, cs, c_last);
  return ffi::Error::Success();
}

ffi::Error LstmForwardTrainImpl(F32 inputs, F32 w_ih, F32 w_hh, F32 bias, F32 h0, F32 c0,
                                F32 keep, F32Out acts, F32Out hs, F32Out cs, int64_t masked,
                                int64_t project, int64_t threads) {
  return Forward<true>(inputs, w_ih, w_hh, bias, h0, c0, keep, acts->typed_data(),
                       hs->typed_data(), cs->typed_data(), nullptr, masked, project, threads);
}

ffi::Error LstmForwardInferImpl(F32 inputs, F32 w_ih, F32 w_hh, F32 bias, F32 h0, F32 c0,
                                F32 keep, F32Out hs, F32Out c_last, int64_t masked,
                                int64_t project, int64_t threads) {
  return Forward<false>(inputs, w_ih, w_hh, bias, h0, c0, keep, nullptr, hs->typed_data(),
                        nullptr, c_last->typed_data(), masked, project, threads);
}

ffi::Error LstmBackwardImpl(F32 dhs, F32 acts, F32 cs, F32 c0, F32 keep, F32 w_hh, F32 dc_last,
                            F32Out dgates, F32Out dh0, F32Out dc0, F32Out dbias,
                            int64_t masked, int64_t threads) {
  auto dims = acts.dimensions();
  if (dims.size() != 3 || dims[2] % 4 != 0)
    return ffi::Error::InvalidArgument("seqjax lstm kernel: acts must be [b, t, 4h]");
  const int64_t batch = dims[0], time = dims[1], hid = dims[2] / 4;
  SEQJAX_CHECK(Expect("dhs", dhs.dimensions(), {batch, time, hid}));
  SEQJAX_CHECK(Expect("cs", cs.dimensions(), {batch, time, hid}));
  SEQJAX_CHECK(Expect("c0", c0.dimensions(), {batch, hid}));
  SEQJAX_CHECK(Expect("w_hh", w_hh.dimensions(), {hid, 4 * hid}));
  SEQJAX_CHECK(Expect("dc_last", dc_last.dimensions(), {batch, hid}));
  if (masked) SEQJAX_CHECK(Expect("keep", keep.dimensions(), {batch, time}));
  if (dgates->typed_data() != acts.typed_data())  // not aliased: start from a copy of acts
    std::memcpy(dgates->typed_data(), acts.typed_data(), acts.element_count() * sizeof(float));
  // Each step reads its row of acts before overwriting it with the gate gradients.
  LstmBackward(batch, time, hid, threads, dhs.typed_data(), dgates->typed_data(),
               cs.typed_data(), c0.typed_data(), masked ? keep.typed_data() : nullptr,
               w_hh.typed_data(), dc_last.typed_data(), dgates->typed_data(), dh0->typed_data(),
               dc0->typed_data(), dbias->typed_data());
  return ffi::Error::Success();
}

ffi::Error LstmWeightGradsImpl(F32 xs, F32 hs, F32 h0, F32 dgates, F32Out dw_ih, F32Out dw_hh,
                               int64_t threads) {
  auto dims = dgates.dimensions();
  if (dims.size() != 3 || dims[2] % 4 != 0)
    return ffi::Error::InvalidArgument("seqjax lstm kernel: dgates must be [b, t, 4h]");
  const int64_t batch = dims[0], time = dims[1], hid = dims[2] / 4;
  if (xs.dimensions().size() != 3)
    return ffi::Error::InvalidArgument("seqjax lstm kernel: xs must be [b, t, d]");
  const int64_t in_dim = xs.dimensions()[2];
  SEQJAX_CHECK(Expect("xs", xs.dimensions(), {batch, time, in_dim}));
  SEQJAX_CHECK(Expect("hs", hs.dimensions(), {batch, time, hid}));
  SEQJAX_CHECK(Expect("h0", h0.dimensions(), {batch, hid}));
  SEQJAX_CHECK(Expect("dw_ih", dw_ih->dimensions(), {in_dim, 4 * hid}));
  SEQJAX_CHECK(Expect("dw_hh", dw_hh->dimensions(), {hid, 4 * hid}));
  LstmWeightGrads(batch, time, in_dim, hid, static_cast<int>(threads), xs.typed_data(),
                  hs.typed_data(), h0.typed_data(), dgates.typed_data(), dw_ih->typed_data(),
                  dw_hh->typed_data());
  return ffi::Error::Success();
}

// The loops' handlers take seven float32 buffers (see the shapes at the top of this file).
auto SevenBuffers() {
  return ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForwardTrain, LstmForwardTrainImpl,
                              SevenBuffers().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("masked").Attr<int64_t>("project")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForwardInfer, LstmForwardInferImpl,
                              SevenBuffers().Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("masked").Attr<int64_t>("project")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmBackward, LstmBackwardImpl,
                              SevenBuffers().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("masked").Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmWeightGrads, LstmWeightGradsImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Attr<int64_t>("threads"));
