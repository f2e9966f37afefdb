// Building blocks of the native CPU kernels (rnn_cpu.cc): float vectors, tanh, a register-tiled
// matmul over packed column panels, the threads of one call and their barrier.

#ifndef SEQJAX_NATIVE_BLOCKS_H_
#define SEQJAX_NATIVE_BLOCKS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#endif

namespace seqjax_native {

constexpr int kLanes = 16;  // floats per vector
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));

inline vf LoadV(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreV(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

// Loads and stores of one "lane group": a vector of kLanes floats, or one float for the tails.
template <class V> inline V Load(const float* p);
template <> inline vf Load<vf>(const float* p) { return LoadV(p); }
template <> inline float Load<float>(const float* p) { return *p; }
inline void Store(float* p, vf v) { StoreV(p, v); }
inline void Store(float* p, float v) { *p = v; }
template <class V> inline V Splat(float x) { return V{} + x; }

template <class V> inline V Select(V cond_source, V a, V b);  // a where cond_source > 0 else b
template <> inline vf Select<vf>(vf k, vf a, vf b) { return k > 0.0f ? a : b; }
template <> inline float Select<float>(float k, float a, float b) { return k > 0.0f ? a : b; }

// tanh as a rational function of degree 13/6 (Eigen's float approximation, as XLA:CPU): a few
// ulp from the exact value on the clamped range, +-1 in float32 beyond it.
template <class V> inline V Tanh(V x) {
  const V lo = Splat<V>(-7.90531110763549805f), hi = Splat<V>(7.90531110763549805f);
  x = x < lo ? lo : x;  // a NaN passes through both
  x = x > hi ? hi : x;
  const V x2 = x * x;
  V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

constexpr int kMaxRows = 8;      // rows of a tile: 8 x 2 vectors = 16 accumulators
constexpr int kPanel = 2 * kLanes;  // columns of a panel

// C[m, n] (+)= A[m, k] @ P[k, n] for C with row stride ldc, n a multiple of kLanes. P is packed
// in column panels (see Pack): a tile of MR rows by NV vectors reads its panel front to back
// and keeps its MR * NV accumulators in registers. A has row stride lda, or, kPackedA, is
// packed k-major as A[kk * kMaxRows + r] (see LstmWeightGrads).
template <int MR, int NV, bool kPackedA = false>
inline void Tile(const float* a, int64_t lda, const float* p, int64_t k, float* c, int64_t ldc,
                 bool accumulate) {
  vf acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? LoadV(c + r * ldc + v * kLanes) : vf{};
  for (int64_t kk = 0; kk < k; ++kk) {
    vf w[NV];
    for (int v = 0; v < NV; ++v) w[v] = LoadV(p + (kk * NV + v) * kLanes);
    for (int r = 0; r < MR; ++r) {
      const float s = kPackedA ? a[kk * kMaxRows + r] : a[r * lda + kk];
      for (int v = 0; v < NV; ++v) acc[r][v] += s * w[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) StoreV(c + r * ldc + v * kLanes, acc[r][v]);
}

template <int NV, bool kPackedA = false>
void TileRows(int rows, const float* a, int64_t lda, const float* p, int64_t k, float* c,
              int64_t ldc, bool accumulate) {
  switch (rows) {
    case 1: return Tile<1, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    case 2: return Tile<2, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    case 3: return Tile<3, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    case 4: return Tile<4, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    case 5: return Tile<5, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    case 6: return Tile<6, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    case 7: return Tile<7, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
    default: return Tile<8, NV, kPackedA>(a, lda, p, k, c, ldc, accumulate);
  }
}

// P[k, n] (row stride n) in column panels: panel j0 (columns j0 .. j0 + w, w = kPanel or the
// last kLanes) holds P[kk, j0 + v] at k * j0 + kk * w + v, so a tile streams contiguous memory.
inline std::vector<float> Pack(const std::vector<float>& p, int64_t k, int64_t n) {
  std::vector<float> panels(k * n);
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t w = std::min<int64_t>(kPanel, n - j0);
    for (int64_t kk = 0; kk < k; ++kk)
      std::memcpy(&panels[k * j0 + kk * w], &p[kk * n + j0], w * sizeof(float));
  }
  return panels;
}

// C (+)= A @ P[k_begin:k_end] for P packed with k rows in all (see Pack): a's column 0 is k row
// k_begin. Accumulates onto C when accumulate, else overwrites it. A tile runs the whole k range
// in one pass: blocking k by 128 (panel slices kept in L1) ran 5-7% slower on one core
// (32x512 @ 512x512: 107 against 114 GFLOP/s, 117 the core's peak), the results are the same.
inline void Gemm(int64_t m, int64_t n, int64_t k, int64_t k_begin, int64_t k_end,
                 const float* a, int64_t lda, const float* panels, float* c, bool accumulate) {
  // Rows split into near-equal tiles of at most kMaxRows, so no tile is a thin tail.
  const int64_t tiles = (m + kMaxRows - 1) / kMaxRows, depth = k_end - k_begin;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t w = std::min<int64_t>(kPanel, n - j0);
    const float* pt = panels + k * j0 + k_begin * w;
    for (int64_t tile = 0, r = 0; tile < tiles; ++tile) {
      const int rows = static_cast<int>(m / tiles + (tile < m % tiles ? 1 : 0));
      const float* at = a + r * lda;
      float* ct = c + r * n + j0;
      if (w == kPanel) TileRows<2>(rows, at, lda, pt, depth, ct, n, accumulate);
      else TileRows<1>(rows, at, lda, pt, depth, ct, n, accumulate);
      r += rows;
    }
  }
}

inline void Gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const float* panels, float* c) {
  Gemm(m, n, k, 0, k, a, lda, panels, c, false);
}

// A barrier for the threads of one call: spins briefly, then yields the core.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() { Wait(Arrive()); }
  // Split phases: Arrive says this thread is done with the phase and returns its ticket;
  // Wait(ticket) returns once every thread has arrived. Work in between overlaps the wait.
  int Arrive() {
    if (n_ == 1) return -1;
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    return generation;
  }
  void Wait(int generation) {
    if (n_ == 1) return;
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < (1 << 14)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  const int n_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

// Runs fn(thread) for thread = 0 .. n-1, thread 0 on the caller, each on its own core for the
// call: the caller stays on the core it is on (its CPU mask is restored afterwards) and thread i
// gets the i-th of the process's other cores. Left to the scheduler, a new thread starts on its
// creator's core, and two threads that spin at a barrier on one core run several times slower
// (experiments/benchmark/README.md).
template <class Fn>
void RunThreads(int n, Fn fn) {
  if (n == 1) return fn(0);
  std::vector<std::thread> others;
  others.reserve(n - 1);
#if defined(__linux__)
  cpu_set_t process, caller_before, one;
  const int here = sched_getcpu();
  const bool pin = here >= 0 && sched_getaffinity(getpid(), sizeof(process), &process) == 0 &&
                   CPU_COUNT(&process) >= n &&
                   pthread_getaffinity_np(pthread_self(), sizeof(caller_before),
                                          &caller_before) == 0;
  std::vector<int> cores;
  if (pin) {
    for (int cpu = 0; cpu < CPU_SETSIZE && static_cast<int>(cores.size()) < n - 1; ++cpu)
      if (CPU_ISSET(cpu, &process) && cpu != here) cores.push_back(cpu);
    CPU_ZERO(&one);
    CPU_SET(here, &one);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
  }
#endif
  for (int i = 1; i < n; ++i) {
    others.emplace_back(fn, i);
#if defined(__linux__)
    if (pin) {
      CPU_ZERO(&one);
      CPU_SET(cores[i - 1], &one);
      pthread_setaffinity_np(others.back().native_handle(), sizeof(one), &one);
    }
#endif
  }
  fn(0);
  for (auto& thread : others) thread.join();
#if defined(__linux__)
  if (pin) pthread_setaffinity_np(pthread_self(), sizeof(caller_before), &caller_before);
#endif
}

// The hidden units [begin, end) of one thread, in whole vectors where possible.
struct Slice {
  int64_t begin, end, padded;  // padded: end - begin rounded up to kLanes
  int64_t size() const { return end - begin; }
};

inline std::vector<Slice> Slices(int64_t hid, int threads) {
  int64_t per = (hid + threads - 1) / threads;
  per = (per + kLanes - 1) / kLanes * kLanes;
  std::vector<Slice> slices;
  for (int64_t begin = 0; begin < hid; begin += per) {
    const int64_t end = std::min(hid, begin + per);
    slices.push_back({begin, end, (end - begin + kLanes - 1) / kLanes * kLanes});
  }
  return slices;
}

inline int Threads(int64_t requested, int64_t hid) {
  int64_t n = requested > 0 ? requested : 1;
  n = std::min<int64_t>(n, std::max<int64_t>(1, hid / kLanes));
  return static_cast<int>(n);
}

}  // namespace seqjax_native

#endif  // SEQJAX_NATIVE_BLOCKS_H_
