// CPU emulation of the XNOR GEMM kernels of csrc/cuda/binary/xnor_gemm.cu (variants 1 and 3-7) and of
// its vectorized binarization (variants 1 and 2), for checking their index arithmetic, barriers and
// shared-memory traffic where no GPU exists.
//
// tests/test_cuda_emu_xnor.py pastes the kernels' source text (with three textual substitutions: the
// dynamic shared-memory declaration and the named-barrier asm) after this file's shims and builds it
// with g++. Each CUDA thread of a block is a ucontext fiber run cooperatively; warp-collective
// instructions (ldmatrix.x4, mma.sync m16n8k256 .and.popc) exchange their operands among the warp's 32
// fibers at a warp barrier and follow the fragment layouts of the PTX ISA, as the kernel comments state
// them (variant 1, checked on an H200, is the emulator's own control). Fibers run in random order with
// random skips, and each cp.async lands either at once or only at the cp.async.wait_group that retires
// it, so that missing waits and barriers show as wrong outputs (most of the time: it is a random search);
// a barrier that can never be passed is reported as a deadlock. Blocks run one after another.
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__

struct uint4 {
  uint32_t x, y, z, w;
};

namespace emu {

constexpr int kMaxThreads = 256, kStack = 256 * 1024;

struct Barrier {
  int count = 0;
  long generation = 0;
};

struct Pending {
  uint32_t dst;
  const void* src;
  bool valid;
};

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  int tid = 0;
  bool done = false;
  std::vector<std::vector<Pending>> groups{1};  // the last one is the open group
};

struct Warp {
  uint32_t addr[32];
  uint32_t a[32][4], b[32][2];
};

ucontext_t sched_ctx;
std::vector<Fiber> fibers;
Fiber* cur = nullptr;
unsigned block_x = 0, block_y = 0;
int block_threads = 0;
long progress = 0;
Barrier named[16];
Barrier warp_bar[kMaxThreads / 32];
Warp warps[kMaxThreads / 32];
std::vector<unsigned char> smem;

uint64_t sched_rng = 88172645463325252ull;
inline int rand_below(int n) {  // xorshift: the scheduling and copy-timing choices
  sched_rng ^= sched_rng << 13;
  sched_rng ^= sched_rng >> 7;
  sched_rng ^= sched_rng << 17;
  return static_cast<int>(sched_rng % static_cast<uint64_t>(n));
}

inline void yield() { swapcontext(&cur->ctx, &sched_ctx); }

inline void arrive(Barrier& b, int n) {
  ++progress;
  if (++b.count == n) {
    b.count = 0;
    ++b.generation;
  }
}

inline void sync(Barrier& b, int n) {
  const long gen = b.generation;
  arrive(b, n);
  while (b.generation == gen) yield();
}

inline void bar_sync(int id, int n) { sync(named[id], n); }
inline void bar_arrive(int id, int n) { arrive(named[id], n); }
inline void warp_sync() { sync(warp_bar[cur->tid / 32], 32); }
inline int lane() { return cur->tid % 32; }
inline Warp& warp() { return warps[cur->tid / 32]; }
inline unsigned char* shared(uint32_t off) {
  if (off + 16 > smem.size()) {
    std::fprintf(stderr, "shared-memory access at %u past %zu bytes\n", off, smem.size());
    std::exit(3);
  }
  return smem.data() + off;
}

struct Idx {
  unsigned x, y, z;
};
inline Idx thread_idx() { return {static_cast<unsigned>(cur->tid), 0, 0}; }
inline Idx block_idx() { return {block_x, block_y, 0}; }
inline Idx block_dim() { return {static_cast<unsigned>(block_threads), 1, 1}; }

void trampoline();
std::function<void()> body;

void trampoline() {
  body();
  cur->done = true;
  ++progress;
  swapcontext(&cur->ctx, &sched_ctx);
}

// Runs body in `threads` fibers for each block of the (grid_x, grid_y) grid; false on a deadlock.
bool launch(unsigned grid_x, unsigned grid_y, int threads, size_t smem_bytes, const std::function<void()>& kernel) {
  body = kernel;
  block_threads = threads;
  for (unsigned blk = 0; blk < grid_x * grid_y; ++blk) {
    block_x = blk % grid_x;
    block_y = blk / grid_x;
    smem.assign(smem_bytes + 16, 0xA5);  // garbage, as on the device
    for (auto& b : named) b = Barrier{};
    for (auto& b : warp_bar) b = Barrier{};
    fibers.assign(threads, Fiber{});
    for (int t = 0; t < threads; ++t) {
      Fiber& f = fibers[t];
      f.tid = t;
      f.stack.resize(kStack);
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.data();
      f.ctx.uc_stack.ss_size = f.stack.size();
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, trampoline, 0);
    }
    // Rounds in a random order; each warp gets a speed (the chance that its fibers run in a round but
    // every 16th, which runs all), so that warps drift apart, further than on the device, wherever no
    // barrier holds them. A full round without progress is a deadlock.
    std::vector<int> order(threads), speed(threads / 32 + 1);
    for (int t = 0; t < threads; ++t) order[t] = t;
    for (auto& sp : speed) sp = 1 + rand_below(8);  // out of 8
    for (long round = 0;; ++round) {
      const long before = progress;
      const bool full = round % 16 == 0;
      bool all_done = true;
      for (int i = threads - 1; i > 0; --i) std::swap(order[i], order[rand_below(i + 1)]);
      for (int t : order) {
        Fiber& f = fibers[t];
        if (f.done) continue;
        all_done = false;
        if (!full && rand_below(8) >= speed[t / 32]) continue;
        cur = &f;
        swapcontext(&sched_ctx, &f.ctx);
      }
      if (all_done) break;
      if (full && progress == before) {
        std::fprintf(stderr, "deadlock in block (%u, %u)\n", block_x, block_y);
        return false;
      }
    }
  }
  return true;
}

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())

// ---- the CUDA surface the kernels use
enum class DType { kF32, kF16, kBF16 };

struct bf16 {
  uint16_t bits;
};

inline float bf16_to_float(bf16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bf16 float_to_bf16(float f) {  // round to nearest even (no NaNs here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

template <DType>
struct Elem;
template <>
struct Elem<DType::kF32> {
  using T = float;
  static float to_float(T v) { return v; }
  static T from_float(float v) { return v; }
};
template <>
struct Elem<DType::kBF16> {
  using T = bf16;
  static float to_float(T v) { return bf16_to_float(v); }
  static T from_float(float v) { return float_to_bf16(v); }
};

template <DType kT>
inline void store_pair(typename Elem<kT>::T* out, float a, float b, bool pair, bool) {
  out[0] = Elem<kT>::from_float(a);
  if (pair) out[1] = Elem<kT>::from_float(b);
}

inline int __popc(uint32_t v) { return __builtin_popcount(v); }
inline void __syncthreads() { emu::sync(emu::named[0], emu::block_threads); }
inline void __syncwarp() { emu::warp_sync(); }
inline void __stcs(uint4* p, uint4 v) { *p = v; }

inline uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - emu::smem.data());
}

inline void emu_copy(const emu::Pending& p) {
  if (p.valid)
    std::memcpy(emu::shared(p.dst), p.src, 16);
  else
    std::memset(emu::shared(p.dst), 0, 16);
}

// Lands at once or at the wait that retires it, by a coin: early landings expose copies into a buffer
// still being read, late ones reads of a buffer not yet waited for.
inline void cp_async_16_zfill(uint32_t dst, const void* src, bool valid) {
  emu::shared(dst);  // bounds check now
  if (emu::rand_below(2))
    emu_copy({dst, src, valid});
  else
    emu::cur->groups.back().push_back({dst, src, valid});
}
inline void cp_async_commit() { emu::cur->groups.emplace_back(); }
template <int kPending>
inline void cp_async_wait() {
  auto& g = emu::cur->groups;  // g.back() is the open group; committed groups before it
  const int committed = static_cast<int>(g.size()) - 1;
  const int retire = committed - kPending;
  for (int i = 0; i < retire; ++i) {
    for (const auto& p : g.front()) emu_copy(p);
    g.erase(g.begin());
  }
}

// Lane l receives, of matrix q (rows from lanes 8q..8q+7), row l / 4, bytes 4 (l % 4)..+3.
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  emu::Warp& w = emu::warp();
  const int l = emu::lane();
  w.addr[l] = addr;
  emu::warp_sync();
  for (int q = 0; q < 4; ++q) std::memcpy(&r[q], emu::shared(w.addr[8 * q + l / 4]) + 4 * (l % 4), 4);
  emu::warp_sync();
}

// m16n8k256 b1: a0/a1 word t of rows g / g + 8, a2/a3 word t + 4; b0/b1 words t / t + 4 of column g;
// c0..c3 = (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
inline void mma_b1_and_popc(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emu::Warp& w = emu::warp();
  const int l = emu::lane();
  for (int i = 0; i < 4; ++i) w.a[l][i] = a[i];
  for (int i = 0; i < 2; ++i) w.b[l][i] = b[i];
  emu::warp_sync();
  auto a_word = [&](int row, int word) {  // row 0..15, word 0..7
    const int lane = 4 * (row % 8) + word % 4;
    return w.a[lane][(row / 8) + 2 * (word / 4)];
  };
  auto b_word = [&](int col, int word) { return w.b[4 * col + word % 4][word / 4]; };
  const int g = l / 4, t = l % 4;
  for (int c = 0; c < 4; ++c) {
    const int row = g + 8 * (c / 2), col = 2 * t + c % 2;
    int s = 0;
    for (int word = 0; word < 8; ++word) s += __builtin_popcount(a_word(row, word) & b_word(col, word));
    d[c] += s;
  }
  emu::warp_sync();
}

// Lane l receives lane (l ^ off)'s value: every lane posts, then reads.
template <class V>
inline V __shfl_xor_sync(unsigned, V v, int off) {
  static_assert(sizeof(V) == 4, "32-bit shuffles only");
  emu::Warp& w = emu::warp();
  const int l = emu::lane();
  std::memcpy(&w.addr[l], &v, 4);
  emu::warp_sync();
  V r;
  std::memcpy(&r, &w.addr[l ^ off], 4);
  emu::warp_sync();
  return r;
}

inline uint4 ldg_stream_128(const void* p) {
  uint4 v;
  std::memcpy(&v, p, 16);
  return v;
}
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }

inline float fmaf_(float a, float b, float c) { return std::fma(a, b, c); }
#define fmaf fmaf_

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- the kernels' source follows (pasted by the test)
