// The CPU involution kernels, written once with GCC vector extensions and compiled by each kernels_*.cpp
// for one instruction set: it defines INVOLUTION_ISA (the namespace), INVOLUTION_VECTOR_BYTES (the vector
// width), INVOLUTION_CHANNEL_BLOCK (channels whose accumulators stay in registers), INVOLUTION_TAP_BLOCK
// (kernel taps accumulated at once by the weight gradient), INVOLUTION_TAP_SUMS (the partial sums it keeps a
// tap), INVOLUTION_PAIR_CHANNEL_BLOCK (channels of the forward's two-row blocks), INVOLUTION_GEN_TAPS and
// INVOLUTION_GEN_VECTORS (the taps x column vectors whose kernel values the fused forward generates at once),
// and optionally INVOLUTION_MASKED_STORES (partial vectors stored with AVX-512VL masks; it includes
// <immintrin.h>), then includes this file under its `#pragma GCC target`. Nothing here calls a function
// defined outside this file.
//
// Every kernel is vectorized along output (or input) columns and keeps, in registers, the accumulators of
// a block of channels of one group: the channels of a group share each kernel value, so one vector of
// kernel values loaded per tap serves the whole block. The rows a task reads are first copied into a
// zero-padded tile (any source strides; columns split into `stride` phases), so the inner loops are
// branch-free contiguous vector loads whatever the layout, stride, padding or dilation.

namespace involution_cpu {
namespace INVOLUTION_ISA {

typedef int64_t i64;

constexpr int kChannelBlock = INVOLUTION_CHANNEL_BLOCK;
constexpr int kTapBlock = INVOLUTION_TAP_BLOCK;
constexpr int kTapSums = INVOLUTION_TAP_SUMS;
constexpr int kPairBlock = INVOLUTION_PAIR_CHANNEL_BLOCK;
constexpr int kGenTaps = INVOLUTION_GEN_TAPS;
// vectors of `tmp` the aggregation needs (a block of channels, or two rows of a pair block)
constexpr int kTmpVectors = kChannelBlock > 2 * kPairBlock ? kChannelBlock : 2 * kPairBlock;
constexpr int kGenVectors = INVOLUTION_GEN_VECTORS;

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(INVOLUTION_VECTOR_BYTES)));
  static constexpr int lanes = INVOLUTION_VECTOR_BYTES / sizeof(T);
};

template <typename T>
static inline typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
static inline void vstore(T* p, typename Vec<T>::type v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// Store the first `lanes` elements of v at p: the whole vector, or one masked store where the kernels file
// allows (INVOLUTION_MASKED_STORES, AVX-512VL), else element by element.
template <typename T>
static inline void store_lanes(T* p, typename Vec<T>::type v, i64 lanes) {
  if (lanes == Vec<T>::lanes) return vstore(p, v);
#if defined(INVOLUTION_MASKED_STORES)
  const auto mask = static_cast<__mmask8>((1u << lanes) - 1);
  if constexpr (sizeof(T) == sizeof(float)) return _mm256_mask_storeu_ps(p, mask, (__m256)v);
  else return _mm256_mask_storeu_pd(p, mask, (__m256d)v);
#endif
  T values[Vec<T>::lanes];
  vstore(values, v);
  for (i64 i = 0; i < lanes; ++i) p[i] = values[i];
}

static inline i64 imin(i64 a, i64 b) { return a < b ? a : b; }
static inline i64 imax(i64 a, i64 b) { return a > b ? a : b; }
static inline i64 div_floor(i64 a, i64 b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline i64 div_ceil(i64 a, i64 b) { return -div_floor(-a, b); }
static inline i64 round_up(i64 a, i64 b) { return div_ceil(a, b) * b; }

// Short copies and fills inline (no library call per row: rows here are 7 to 64 elements).
template <typename T>
static inline void copy_elements(T* dst, const T* src, i64 n) {
  constexpr int L = Vec<T>::lanes;
  i64 i = 0;
  for (; i + L <= n; i += L) vstore(dst + i, vload(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}

template <typename T>
static inline void zero_elements(T* dst, i64 n) {
  constexpr int L = Vec<T>::lanes;
  i64 i = 0;
  for (; i + L <= n; i += L) vstore(dst + i, typename Vec<T>::type{});
  for (; i < n; ++i) dst[i] = T(0);
}

// An L x L transpose through registers (8 floats: three rounds of shuffles), between the channels_last
// layout (a position's channels contiguous) and the tiles' (a channel's columns contiguous): the L vectors
// at src + k * src_stride become the L vectors at dst + k * dst_stride. `available` is false for the other
// vector shapes, which copy element by element.
template <typename T, int L>
struct Transpose {
  static constexpr bool available = false;
  static inline void run(const T*, i64, T*, i64) {}
};

#if INVOLUTION_VECTOR_BYTES == 32
template <>
struct Transpose<float, 8> {
  static constexpr bool available = true;
  typedef Vec<float>::type vec;
  static inline void run(const float* src, i64 src_stride, float* dst, i64 dst_stride) {
    vec r[8], t[8], u[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) r[k] = vload(src + k * src_stride);
#pragma GCC unroll 4
    for (int k = 0; k < 8; k += 2) {
      t[k] = __builtin_shufflevector(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
      t[k + 1] = __builtin_shufflevector(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
#pragma GCC unroll 2
    for (int k = 0; k < 8; k += 4) {
      u[k] = __builtin_shufflevector(t[k], t[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[k + 1] = __builtin_shufflevector(t[k], t[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
      u[k + 2] = __builtin_shufflevector(t[k + 1], t[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
      u[k + 3] = __builtin_shufflevector(t[k + 1], t[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      vstore(dst + k * dst_stride, __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11));
      vstore(dst + (k + 4) * dst_stride, __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15));
    }
  }
};
#endif

// A zero-padded copy of `channels` channels x `rows` rows of a tensor. Padded column u (source column
// u - left) sits at phase u % phases, position u / phases; each phase of a row has `pitch` elements.
struct TileShape {
  i64 channels, rows, phases, pitch;
  i64 row_elements() const { return phases * pitch; }
  i64 plane() const { return rows * phases * pitch; }
  i64 size() const { return channels * plane(); }
};

// Copy rows row0 .. row0 + tile.rows of `src` (pointing at the first channel of the block; rows outside
// [0, src_rows) and columns outside [0, src_cols) read as zeros) into `dst`.
template <typename T>
static void pack_tile(const T* src, const Strides& s, i64 src_rows, i64 src_cols, i64 row0, i64 left,
                      const TileShape& t, T* dst) {
  const i64 cols = t.row_elements(), plane = t.plane();
  const i64 u0 = imax(left, 0), u1 = imin(left + src_cols, cols);  // the padded columns holding data
  __builtin_memset(dst, 0, sizeof(T) * t.size());
  for (i64 r = 0; r < t.rows; ++r) {
    const i64 sr = row0 + r;
    if (sr < 0 || sr >= src_rows || u1 <= u0) continue;
    for (i64 ph = 0; ph < t.phases; ++ph) {
      const i64 q0 = div_ceil(u0 - ph, t.phases), q1 = div_ceil(u1 - ph, t.phases);
      T* out = dst + r * cols + ph * t.pitch;
      const T* in = src + sr * s.h + (q0 * t.phases + ph - left) * s.w;
      const i64 step = t.phases * s.w;
      if (s.c == 1 && t.channels > 1) {  // channels contiguous (channels_last): read a position's channels
        constexpr int L = Vec<T>::lanes;
        i64 c = 0;
        if (Transpose<T, L>::available) {
          for (; c + L <= t.channels; c += L) {
            i64 q = q0;
            for (; q + L <= q1; q += L) Transpose<T, L>::run(in + (q - q0) * step + c, step, out + c * plane + q, plane);
            for (; q < q1; ++q)
              for (i64 k = c; k < c + L; ++k) out[k * plane + q] = in[(q - q0) * step + k];
          }
        }
        if (c < t.channels) {
          const T* in_q = in;
          for (i64 q = q0; q < q1; ++q, in_q += step)
            for (i64 k = c; k < t.channels; ++k) out[k * plane + q] = in_q[k];
        }
      } else if (step == 1) {
        for (i64 c = 0; c < t.channels; ++c) copy_elements(out + c * plane + q0, in + c * s.c, q1 - q0);
      } else {
        for (i64 c = 0; c < t.channels; ++c) {
          const T* in_c = in + c * s.c;
          T* out_c = out + c * plane;
          for (i64 q = q0; q < q1; ++q, in_c += step) out_c[q] = *in_c;
        }
      }
    }
  }
}

// acc[c] = sum over taps of weights[tap][k0:] * tile[c * plane + offsets[tap] + k0:], one vector of columns
// for each of CB channels; the sums' first `lanes` columns are stored to out[c * sc] (out: null) or else the
// whole vectors to tmp[c * lanes].
template <typename T, int CB>
static inline void aggregate(const T* tile, i64 plane, const i64* offsets, const T* const* weights, i64 taps,
                             i64 k0, T* tmp, T* out, i64 sc, i64 lanes) {
  typedef typename Vec<T>::type vec;
  vec acc[CB];
#pragma GCC unroll 32
  for (int c = 0; c < CB; ++c) acc[c] = vec{};
  for (i64 t = 0; t < taps; ++t) {
    const vec w = vload(weights[t] + k0);
    const T* in = tile + offsets[t] + k0;
#pragma GCC unroll 32
    for (int c = 0; c < CB; ++c) acc[c] += w * vload(in + c * plane);
  }
  if (out) {
#pragma GCC unroll 32
    for (int c = 0; c < CB; ++c) store_lanes(out + c * sc, acc[c], lanes);
  } else {
#pragma GCC unroll 32
    for (int c = 0; c < CB; ++c) vstore(tmp + c * Vec<T>::lanes, acc[c]);
  }
}

// Write `lanes` columns of `channels` rows of tmp to out (channel stride sc, column stride sw).
template <typename T>
static inline void write_columns(const T* tmp, i64 channels, i64 lanes, T* out, i64 sc, i64 sw) {
  constexpr int L = Vec<T>::lanes;
  if (sw == 1) {
    for (i64 c = 0; c < channels; ++c) copy_elements(out + c * sc, tmp + c * L, lanes);
  } else {
    i64 c = 0;
    if (Transpose<T, L>::available && sc == 1 && lanes == L)  // channels_last: whole blocks of channels
      for (; c + L <= channels; c += L) Transpose<T, L>::run(tmp + c * L, L, out + c, sw);
    for (i64 l = 0; l < lanes; ++l)
      for (i64 k = c; k < channels; ++k) out[l * sw + k * sc] = tmp[k * L + l];
  }
}

// aggregate() over all channels of a group, in blocks of kChannelBlock and then one by one; writes out.
template <typename T>
static inline void aggregate_group(const T* tile, i64 plane, i64 channels, const i64* offsets,
                                   const T* const* weights, i64 taps, i64 k0, i64 lanes, T* tmp, T* out,
                                   i64 sc, i64 sw) {
  const bool direct = sw == 1;  // contiguous columns: stored from registers
  i64 c = 0;
  for (; c + kChannelBlock <= channels; c += kChannelBlock) {
    aggregate<T, kChannelBlock>(tile + c * plane, plane, offsets, weights, taps, k0, tmp,
                                direct ? out + c * sc : nullptr, sc, lanes);
    if (!direct) write_columns(tmp, kChannelBlock, lanes, out + c * sc, sc, sw);
  }
  for (; c < channels; ++c) {
    aggregate<T, 1>(tile + c * plane, plane, offsets, weights, taps, k0, tmp, direct ? out + c * sc : nullptr, sc,
                    lanes);
    if (!direct) write_columns(tmp, 1, lanes, out + c * sc, sc, sw);
  }
}

// Keep v in a register: GCC otherwise folds a vector load used twice into both fused multiply-adds as a
// memory operand, which loads it twice.
#if defined(__x86_64__)
#define INVOLUTION_IN_REGISTER(v) __asm__("" : "+v"(v))
#elif defined(__aarch64__)
#define INVOLUTION_IN_REGISTER(v) __asm__("" : "+w"(v))
#else
#define INVOLUTION_IN_REGISTER(v)
#endif

// Two output rows a and b at once, for the forward with s_h = d_h = 1, where row b's kernel row i reads the
// input row that row a's kernel row i + 1 reads: each input vector loaded serves both rows' accumulators.
// Taps [0, only_a) feed row a only (kernel values at weights[2t]), the next both rows (weights[2t] and
// weights[2t + 1]), the next only_b row b only (weights[2t + 1]). The sums' first `lanes` columns go to out_a
// / out_b (channel stride sc), or without them the whole vectors to tmp (row a's CB vectors, then row b's).
template <typename T, int CB>
static inline void aggregate_pair(const T* tile, i64 plane, const i64* offsets, const T* const* weights, i64 only_a,
                                  i64 both, i64 only_b, i64 k0, T* tmp, T* out_a, T* out_b, i64 sc, i64 lanes) {
  typedef typename Vec<T>::type vec;
  vec a[CB], b[CB];
#pragma GCC unroll 16
  for (int c = 0; c < CB; ++c) a[c] = b[c] = vec{};
  i64 t = 0;
  for (; t < only_a; ++t) {
    const vec wa = vload(weights[2 * t] + k0);
    const T* in = tile + offsets[t] + k0;
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) a[c] += wa * vload(in + c * plane);
  }
  for (; t < only_a + both; ++t) {
    const vec wa = vload(weights[2 * t] + k0), wb = vload(weights[2 * t + 1] + k0);
    const T* in = tile + offsets[t] + k0;
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
      vec x = vload(in + c * plane);
      INVOLUTION_IN_REGISTER(x);
      a[c] += wa * x;
      b[c] += wb * x;
    }
  }
  for (; t < only_a + both + only_b; ++t) {
    const vec wb = vload(weights[2 * t + 1] + k0);
    const T* in = tile + offsets[t] + k0;
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) b[c] += wb * vload(in + c * plane);
  }
  if (out_a) {
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
      store_lanes(out_a + c * sc, a[c], lanes);
      store_lanes(out_b + c * sc, b[c], lanes);
    }
  } else {
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
      vstore(tmp + c * Vec<T>::lanes, a[c]);
      vstore(tmp + (CB + c) * Vec<T>::lanes, b[c]);
    }
  }
}

// aggregate_pair() over all channels of a group, in blocks of kPairBlock and then one by one; writes out.
template <typename T>
static inline void aggregate_pair_group(const T* tile, i64 plane, i64 channels, const i64* offsets,
                                        const T* const* weights, i64 only_a, i64 both, i64 only_b, i64 k0, i64 lanes,
                                        T* tmp, T* out_a, T* out_b, i64 sc, i64 sw) {
  constexpr int L = Vec<T>::lanes;
  const bool direct = sw == 1;  // contiguous columns: stored from registers
  i64 c = 0;
  for (; c + kPairBlock <= channels; c += kPairBlock) {
    aggregate_pair<T, kPairBlock>(tile + c * plane, plane, offsets, weights, only_a, both, only_b, k0, tmp,
                                  direct ? out_a + c * sc : nullptr, direct ? out_b + c * sc : nullptr, sc, lanes);
    if (!direct) {
      write_columns(tmp, kPairBlock, lanes, out_a + c * sc, sc, sw);
      write_columns(tmp + kPairBlock * L, kPairBlock, lanes, out_b + c * sc, sc, sw);
    }
  }
  for (; c < channels; ++c) {
    aggregate_pair<T, 1>(tile + c * plane, plane, offsets, weights, only_a, both, only_b, k0, tmp,
                         direct ? out_a + c * sc : nullptr, direct ? out_b + c * sc : nullptr, sc, lanes);
    if (!direct) {
      write_columns(tmp, 1, lanes, out_a + c * sc, sc, sw);
      write_columns(tmp + L, 1, lanes, out_b + c * sc, sc, sw);
    }
  }
}

// The tile of x that `rows` output rows read (forward and weight gradient): phases = stride along the
// width, so output column k's tap j is at phase (j * d_w) % s_w, position k + (j * d_w) / s_w.
template <typename T>
static TileShape input_tile(const Problem& p, i64 rows) {
  const i64 out_w = round_up(p.out_w, Vec<T>::lanes);
  return TileShape{p.group_channels, (rows - 1) * p.s_h + (p.k_h - 1) * p.d_h + 1, p.s_w,
                   out_w + (p.k_w - 1) * p.d_w / p.s_w + 1};
}

// Where kernel column j's reads start within a tile row of input_tile(): phase (j * d_w) % s_w, position
// (j * d_w) / s_w; worked out once per task (a division per tap and row costs as much as its loads).
static inline void column_offsets(const Problem& p, const TileShape& xs, i64* offsets) {
  for (i64 j = 0; j < p.k_w; ++j) offsets[j] = (j * p.d_w) % p.s_w * xs.pitch + (j * p.d_w) / p.s_w;
}

// ---------------------------------------------------------------------------------------------------------
// forward: out[b, c, oh, ow] = sum_ij w[b, g, i, j, oh, ow] * x[b, c, oh*s_h - p_h + i*d_h, ow*s_w - p_w + j*d_w]

// Whether kernel row i of output row oh reads input rows inside the map (else only padding: skipped).
static inline bool row_inside(const Problem& p, i64 oh, i64 i) {
  const i64 ih = oh * p.s_h - p.p_h + i * p.d_h;
  return ih >= 0 && ih < p.in_h;
}

// Output row oh of a task (whose input rows are in x_tile) from the kernel values of tap t at
// kernel_row(oh, t): out_w values, readable up to the next whole vector (the last, partial vector is read in
// place; its lanes past the row are never written out).
template <typename T, typename KernelRow>
static inline void forward_row(const Call& call, const Task& task, const TileShape& xs, const T* x_tile,
                               const i64* columns, i64 oh, KernelRow kernel_row, T* tmp, T* out) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  const i64 taps_total = p.k_h * p.k_w;
  i64 offsets[taps_total];
  const T* weights[taps_total];
  i64 taps = 0;
  for (i64 i = 0; i < p.k_h; ++i) {
    if (!row_inside(p, oh, i)) continue;
    const i64 row = (oh - task.row0) * p.s_h + i * p.d_h;
    for (i64 j = 0; j < p.k_w; ++j) {
      weights[taps] = kernel_row(oh, i * p.k_w + j);
      offsets[taps++] = row * xs.row_elements() + columns[j];
    }
  }
  T* out_row = out + oh * call.os.h;
  for (i64 k0 = 0; k0 < p.out_w; k0 += L)
    aggregate_group(x_tile, xs.plane(), p.group_channels, offsets, weights, taps, k0, imin(L, p.out_w - k0), tmp,
                    out_row + k0 * call.os.w, call.os.c, call.os.w);
}

// Output rows oh and oh + 1 at once (s_h = d_h = 1: aggregate_pair), as forward_row does one.
template <typename T, typename KernelRow>
static inline void forward_pair(const Call& call, const Task& task, const TileShape& xs, const T* x_tile,
                                const i64* columns, i64 oh, KernelRow kernel_row, T* tmp, T* out) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  const i64 entries = (p.k_h + 1) * p.k_w;
  i64 offsets[entries];
  const T* weights[2 * entries];
  // Input row r of the k_h + 1 the pair reads is kernel row r of row a and kernel row r - 1 of row b (one
  // input row: both rows read it, or it is outside the map): r = 0 feeds row a only, r = k_h row b only, the
  // others both. Entries go in r order, so each row sums its taps in forward_row's order, to the same bits.
  i64 count[3] = {0, 0, 0};  // entries for row a only, both rows, row b only
  i64 e = 0;
  for (i64 r = 0; r <= p.k_h; ++r) {
    if (!row_inside(p, oh, r)) continue;
    const int kind = r == 0 ? 0 : r == p.k_h ? 2 : 1;
    for (i64 j = 0; j < p.k_w; ++j, ++e) {
      offsets[e] = ((oh - task.row0) + r) * xs.row_elements() + columns[j];
      weights[2 * e] = kind != 2 ? kernel_row(oh, r * p.k_w + j) : nullptr;
      weights[2 * e + 1] = kind != 0 ? kernel_row(oh + 1, (r - 1) * p.k_w + j) : nullptr;
    }
    count[kind] += p.k_w;
  }
  T* out_a = out + oh * call.os.h;
  T* out_b = out_a + call.os.h;
  for (i64 k0 = 0; k0 < p.out_w; k0 += L)
    aggregate_pair_group(x_tile, xs.plane(), p.group_channels, offsets, weights, count[0], count[1], count[2], k0,
                         imin(L, p.out_w - k0), tmp, out_a + k0 * call.os.w, out_b + k0 * call.os.w, call.os.c,
                         call.os.w);
}

// Whether the forward (and the input gradient) can take rows in pairs: s_h = d_h = 1, at any width (on
// RedNet-50's stages, 2 threads: 10-13% faster at 56 columns, 4-27% at 28, 14 and 7).
static inline bool rows_in_pairs(const Problem& p) { return p.s_h == 1 && p.d_h == 1; }

// Output rows [oh0, oh1) of a task: in pairs where rows_in_pairs, else one by one.
template <typename T, typename KernelRow>
static inline void forward_rows(const Call& call, const Task& task, const TileShape& xs, const T* x_tile,
                                const i64* columns, i64 oh0, i64 oh1, KernelRow kernel_row, T* tmp, T* out) {
  i64 oh = oh0;
  if (rows_in_pairs(call.p))
    for (; oh + 2 <= oh1; oh += 2) forward_pair(call, task, xs, x_tile, columns, oh, kernel_row, tmp, out);
  for (; oh < oh1; ++oh) forward_row(call, task, xs, x_tile, columns, oh, kernel_row, tmp, out);
}

// Output rows whose kernel values the forward copies at once: all of a task's where they take up to 256 KB
// (RedNet-50's stages: 14 rows of 56 columns, 154 KB), fewer on wide maps, so that they stay in the core's
// cache; whole pairs of rows where the rows go in pairs.
template <typename T>
static i64 packed_rows(const Problem& p, i64 rows) {
  const i64 fit = imax(1, (i64{256} << 10) / (i64(sizeof(T)) * p.k_h * p.k_w * p.out_w));
  return imin(rows, rows_in_pairs(p) ? round_up(fit, 2) : fit);
}

// The forward's scratch: the input tile, tmp, and packed_rows() rows of kernel values (and a spare vector).
template <typename T>
static i64 forward_scratch(const Problem& p, i64 rows) {
  constexpr int L = Vec<T>::lanes;
  return input_tile<T>(p, rows).size() + kTmpVectors * L + p.k_h * p.k_w * packed_rows<T>(p, rows) * p.out_w + L;
}

template <typename T>
static void forward_task(const Call& call, const Task& task, T* scratch) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  const i64 taps_total = p.k_h * p.k_w, plane_w = p.out_h * p.out_w;
  const TileShape xs = input_tile<T>(p, task.row1 - task.row0);
  T* x_tile = scratch;
  T* tmp = x_tile + xs.size();
  T* w_tile = tmp + kTmpVectors * L;
  const T* x = static_cast<const T*>(call.a) + task.batch * call.as.b + task.group * p.group_channels * call.as.c;
  const T* w = static_cast<const T*>(call.b) + (task.batch * p.groups + task.group) * taps_total * plane_w;
  T* out = static_cast<T*>(call.out) + task.batch * call.os.b + task.group * p.group_channels * call.os.c;
  pack_tile(x, call.as, p.in_h, p.in_w, task.row0 * p.s_h - p.p_h, p.p_w, xs, x_tile);
  i64 columns[p.k_w];
  column_offsets(p, xs, columns);
  // The kernel values of a block of rows, copied tap by tap (one sequential read each) before the rows read
  // all taps at once: reading them in place from memory was 1.15-1.75x slower (RedNet-50's stages, caches
  // flushed before each call).
  const i64 block = packed_rows<T>(p, task.row1 - task.row0);
  for (i64 oh0 = task.row0; oh0 < task.row1; oh0 += block) {
    const i64 oh1 = imin(task.row1, oh0 + block), chunk = (oh1 - oh0) * p.out_w;  // a tap's values
    for (i64 t = 0; t < taps_total; ++t) copy_elements(w_tile + t * chunk, w + t * plane_w + oh0 * p.out_w, chunk);
    forward_rows(call, task, xs, x_tile, columns, oh0, oh1,
                 [&](i64 oh, i64 t) { return w_tile + t * chunk + (oh - oh0) * p.out_w; }, tmp, out);
  }
}

// ---------------------------------------------------------------------------------------------------------
// fused forward: the forward with the kernel values generated row by row from the reduced features r by the
// span conv, w[b, g, t, oh, ow] = bias[g*KK + t] + sum_q weight[g*KK + t, q] * r[b, q, oh, ow], into a
// buffer that stays in cache; the (batch, groups * KK, out_h, out_w) kernel tensor is never stored. r comes
// contiguous with its rows padded to r_pitch columns (a multiple of the vector: call.b, zeros past out_w).

// kernels[tb * pitch + k0 + n*L + l] for TB taps and NV vectors of columns: bias + weight rows . r columns.
template <typename T, int TB, int NV>
static inline void generate(const T* weight, const T* bias, i64 reduced, const T* r, i64 r_plane, T* kernels,
                            i64 pitch, i64 k0) {
  typedef typename Vec<T>::type vec;
  constexpr int L = Vec<T>::lanes;
  vec acc[TB][NV];
#pragma GCC unroll 8
  for (int t = 0; t < TB; ++t)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[t][n] = bias[t] - vec{};
  for (i64 q = 0; q < reduced; ++q) {
    vec rv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) rv[n] = vload(r + q * r_plane + k0 + n * L);
#pragma GCC unroll 8
    for (int t = 0; t < TB; ++t) {
      const vec w = weight[t * reduced + q] - vec{};  // a broadcast load (`+ vec{}` would add a zero first)
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[t][n] += w * rv[n];
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < TB; ++t)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) vstore(kernels + t * pitch + k0 + n * L, acc[t][n]);
}

// generate() for taps [t0, t1) over `vectors` vectors of columns, in blocks of kGenTaps x kGenVectors.
template <typename T, int TB>
static inline void generate_columns(const T* weight, const T* bias, i64 reduced, const T* r, i64 r_plane,
                                    T* kernels, i64 pitch, i64 vectors) {
  constexpr int L = Vec<T>::lanes;
  i64 n = 0;
  for (; n + kGenVectors <= vectors; n += kGenVectors)
    generate<T, TB, kGenVectors>(weight, bias, reduced, r, r_plane, kernels, pitch, n * L);
  for (; n < vectors; ++n) generate<T, TB, 1>(weight, bias, reduced, r, r_plane, kernels, pitch, n * L);
}

template <typename T>
static void generate_taps(const T* weight, const T* bias, i64 reduced, const T* r, i64 r_plane, T* kernels,
                          i64 tap_stride, i64 vectors, i64 t0, i64 t1) {
  i64 t = t0;
  for (; t + kGenTaps <= t1; t += kGenTaps)
    generate_columns<T, kGenTaps>(weight + t * reduced, bias + t, reduced, r, r_plane, kernels + t * tap_stride,
                                  tap_stride, vectors);
  for (; t < t1; ++t)
    generate_columns<T, 1>(weight + t * reduced, bias + t, reduced, r, r_plane, kernels + t * tap_stride,
                           tap_stride, vectors);
}

// Output rows whose kernel values are generated at once: enough for kGenVectors * 3 vectors of columns (on
// narrow maps, one row is too few to keep the generation's registers busy), in whole pairs of rows where
// the aggregation takes rows in pairs (rows_in_pairs).
template <typename T>
static i64 generated_rows(const Problem& p, i64 rows) {
  const i64 least = div_ceil(3 * kGenVectors, div_ceil(p.out_w, Vec<T>::lanes));
  return imax(1, imin(rows, rows_in_pairs(p) ? round_up(least, 2) : least));
}

template <typename T>
static i64 fused_forward_scratch(const Problem& p, i64 rows) {
  return input_tile<T>(p, rows).size() + p.k_h * p.k_w * generated_rows<T>(p, rows) * p.r_pitch +
         kTmpVectors * Vec<T>::lanes;
}

template <typename T>
static void fused_forward_task(const Call& call, const Task& task, T* scratch) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  const i64 taps_total = p.k_h * p.k_w, block = generated_rows<T>(p, task.row1 - task.row0);
  const TileShape xs = input_tile<T>(p, task.row1 - task.row0);
  const i64 pitch = p.r_pitch, r_plane = p.out_h * pitch, tap_stride = block * pitch;  // kernels[tap][row][column]
  T* x_tile = scratch;
  T* kernels = x_tile + xs.size();
  T* tmp = kernels + taps_total * tap_stride;
  const T* x = static_cast<const T*>(call.a) + task.batch * call.as.b + task.group * p.group_channels * call.as.c;
  const T* r = static_cast<const T*>(call.b) + task.batch * p.reduced * r_plane;
  const T* weight = static_cast<const T*>(call.span_weight) + task.group * taps_total * p.reduced;
  const T* bias = static_cast<const T*>(call.span_bias) + task.group * taps_total;
  T* out = static_cast<T*>(call.out) + task.batch * call.os.b + task.group * p.group_channels * call.os.c;
  pack_tile(x, call.as, p.in_h, p.in_w, task.row0 * p.s_h - p.p_h, p.p_w, xs, x_tile);
  i64 columns[p.k_w];
  column_offsets(p, xs, columns);
  for (i64 oh0 = task.row0; oh0 < task.row1; oh0 += block) {
    const i64 oh1 = imin(task.row1, oh0 + block);
    // the kernel rows some row of the block reads inside the map (a contiguous range)
    i64 i_lo = p.k_h, i_hi = -1;
    for (i64 oh = oh0; oh < oh1; ++oh)
      for (i64 i = 0; i < p.k_h; ++i)
        if (row_inside(p, oh, i)) {
          i_lo = imin(i_lo, i);
          i_hi = imax(i_hi, i);
        }
    if (i_hi >= i_lo)
      generate_taps(weight, bias, p.reduced, r + oh0 * pitch, r_plane, kernels, tap_stride, (oh1 - oh0) * pitch / L,
                    i_lo * p.k_w, (i_hi + 1) * p.k_w);
    forward_rows(call, task, xs, x_tile, columns, oh0, oh1,
                 [&](i64 oh, i64 t) { return kernels + t * tap_stride + (oh - oh0) * pitch; }, tmp, out);
  }
}

// ---------------------------------------------------------------------------------------------------------
// input gradient, gathered per input row: grad_x[b, c, ih, iw] = sum of w[b, g, i, j, oh, ow] *
// grad_out[b, c, oh, ow] over the taps with oh*s_h - p_h + i*d_h = ih and ow*s_w - p_w + j*d_w = iw.
// Input columns are taken one phase u % s_w at a time (u = iw + p_w): within a phase, only the taps with
// j*d_w = u (mod s_w) reach it, and ow runs along with u / s_w, so the loads are contiguous again.

template <typename T>
static i64 grad_input_left(const Problem& p) { return div_ceil((p.k_w - 1) * p.d_w, p.s_w); }

template <typename T>
static TileShape grad_output_tile(const Problem& p, i64 rows) {  // rows: input rows of the task
  const i64 out_rows = imin(p.out_h, (rows - 1 + (p.k_h - 1) * p.d_h) / p.s_h + 2);
  return TileShape{p.group_channels, out_rows, 1,
                   grad_input_left<T>(p) + div_ceil(p.in_w + p.p_w, p.s_w) + Vec<T>::lanes + 1};
}

template <typename T>
static i64 grad_input_scratch(const Problem& p, i64 rows) {
  const TileShape gs = grad_output_tile<T>(p, rows);
  return gs.size() + p.k_h * p.k_w * gs.rows * gs.pitch + kTmpVectors * Vec<T>::lanes;
}

// Input rows ih and ih + 1 at once (s_h = d_h = 1), as aggregate_pair does the forward's rows: kernel row i2
// of row ih + 1 and kernel row i2 - 1 of row ih read output row ih + 1 + p_h - i2, whose grad_out vectors
// are loaded once for both. Entries go by i2, so each row sums its taps in the single rows' order.
template <typename T>
static inline void grad_input_pair(const Call& call, const TileShape& gs, const T* g_tile, const T* w_tile,
                                   i64 oh_lo, const i64* shifts, i64 ih, i64* offsets, const T** weights, T* tmp,
                                   T* out) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  for (i64 phase = 0; phase < p.s_w; ++phase) {
    i64 count[3] = {0, 0, 0};  // entries for row ih + 1 only, both rows, row ih only
    i64 e = 0;
    for (i64 i2 = 0; i2 <= p.k_h; ++i2) {
      const i64 oh = ih + 1 + p.p_h - i2;
      if (oh < 0 || oh >= p.out_h) continue;
      const int kind = i2 == 0 ? 0 : i2 == p.k_h ? 2 : 1;
      for (i64 j = 0; j < p.k_w; ++j) {
        const i64 shift = shifts[phase * p.k_w + j];
        if (shift < 0) continue;
        offsets[e] = (oh - oh_lo) * gs.pitch + shift;
        const T* values = w_tile + offsets[e];  // kernel row i's values: + (i * k_w + j) * plane
        weights[2 * e] = kind != 2 ? values + (i2 * p.k_w + j) * gs.plane() : nullptr;
        weights[2 * e + 1] = kind != 0 ? values + ((i2 - 1) * p.k_w + j) * gs.plane() : nullptr;
        ++e;
        ++count[kind];
      }
    }
    const i64 k_lo = div_ceil(p.p_w - phase, p.s_w), k_hi = div_ceil(p.p_w + p.in_w - phase, p.s_w);
    T* columns = out + (phase - p.p_w) * call.os.w;
    for (i64 k0 = k_lo; k0 < k_hi; k0 += L)
      aggregate_pair_group(g_tile, gs.plane(), p.group_channels, offsets, weights, count[0], count[1], count[2], k0,
                           imin(L, k_hi - k0), tmp, columns + (ih + 1) * call.os.h + p.s_w * k0 * call.os.w,
                           columns + ih * call.os.h + p.s_w * k0 * call.os.w, call.os.c, p.s_w * call.os.w);
  }
}

template <typename T>
static void grad_input_task(const Call& call, const Task& task, T* scratch) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  const i64 taps_total = p.k_h * p.k_w, plane_w = p.out_h * p.out_w, left = grad_input_left<T>(p);
  const i64 oh_lo = imax(0, div_ceil(task.row0 + p.p_h - (p.k_h - 1) * p.d_h, p.s_h));
  const i64 oh_hi = imin(p.out_h - 1, div_floor(task.row1 - 1 + p.p_h, p.s_h));
  TileShape gs = grad_output_tile<T>(p, task.row1 - task.row0);
  gs.rows = imax(0, oh_hi - oh_lo + 1);
  T* g_tile = scratch;
  T* w_tile = g_tile + gs.size();
  T* tmp = w_tile + taps_total * gs.plane();
  const T* grad = static_cast<const T*>(call.a) + task.batch * call.as.b + task.group * p.group_channels * call.as.c;
  const T* w = static_cast<const T*>(call.b) + (task.batch * p.groups + task.group) * taps_total * plane_w;
  T* out = static_cast<T*>(call.out) + task.batch * call.os.b + task.group * p.group_channels * call.os.c;
  pack_tile(grad, call.as, p.out_h, p.out_w, oh_lo, left, gs, g_tile);
  // kernel values [tap][oh - oh_lo][left + ow], zero outside the output columns
  __builtin_memset(w_tile, 0, sizeof(T) * taps_total * gs.plane());
  for (i64 t = 0; t < taps_total; ++t)
    for (i64 r = 0; r < gs.rows; ++r)
      copy_elements(w_tile + (t * gs.rows + r) * gs.pitch + left, w + t * plane_w + (oh_lo + r) * p.out_w, p.out_w);
  i64 offsets[taps_total + p.k_w], out_rows[p.k_h], shifts[p.s_w * p.k_w];
  // shifts[phase][j]: where kernel column j's values for the phase's columns start (-1: it does not reach
  // that phase)
  for (i64 phase = 0; phase < p.s_w; ++phase)
    for (i64 j = 0; j < p.k_w; ++j) {
      const i64 reach = phase - j * p.d_w;  // exact multiple of s_w, or the column misses the phase
      shifts[phase * p.k_w + j] = (reach % p.s_w + p.s_w) % p.s_w ? -1 : reach / p.s_w + left;
    }
  const T* weights[2 * (taps_total + p.k_w)];
  for (i64 ih = task.row0; ih < task.row1; ++ih) {
    if (rows_in_pairs(p) && ih + 1 < task.row1) {
      grad_input_pair(call, gs, g_tile, w_tile, oh_lo, shifts, ih, offsets, weights, tmp, out);
      ++ih;
      continue;
    }
    // the output row each kernel row i reads this input row from (-1: none)
    for (i64 i = 0; i < p.k_h; ++i) {
      const i64 num = ih + p.p_h - i * p.d_h;
      const i64 oh = p.s_h == 1 ? num : num % p.s_h == 0 ? num / p.s_h : -1;
      out_rows[i] = oh >= 0 && oh < p.out_h ? oh : -1;
    }
    for (i64 phase = 0; phase < p.s_w; ++phase) {
      i64 taps = 0;
      for (i64 i = 0; i < p.k_h; ++i) {
        if (out_rows[i] < 0) continue;
        for (i64 j = 0; j < p.k_w; ++j) {
          const i64 shift = shifts[phase * p.k_w + j];
          if (shift < 0) continue;
          offsets[taps] = (out_rows[i] - oh_lo) * gs.pitch + shift;
          weights[taps++] = w_tile + ((i * p.k_w + j) * gs.rows + out_rows[i] - oh_lo) * gs.pitch + shift;
        }
      }
      // columns u = phase + s_w * k with p_w <= u < p_w + in_w
      const i64 k_lo = div_ceil(p.p_w - phase, p.s_w), k_hi = div_ceil(p.p_w + p.in_w - phase, p.s_w);
      for (i64 k0 = k_lo; k0 < k_hi; k0 += L)
        aggregate_group(g_tile, gs.plane(), p.group_channels, offsets, weights, taps, k0,
                        imin(L, k_hi - k0), tmp,
                        out + ih * call.os.h + (phase + p.s_w * k0 - p.p_w) * call.os.w, call.os.c,
                        p.s_w * call.os.w);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// kernel gradient: grad_w[b, g, i, j, oh, ow] = sum over the group's channels c of grad_out[b, c, oh, ow] *
// x[b, c, oh*s_h - p_h + i*d_h, ow*s_w - p_w + j*d_w]: a block of channels' grad_out vectors stays in
// registers while TB taps accumulate at once.

template <typename T, int CB, int TB, bool FIRST>
static inline void correlate(const T* x_tile, i64 plane, const T* g, i64 g_plane, const i64* offsets,
                             T* const* sums, i64 k0) {
  typedef typename Vec<T>::type vec;
  vec grads[CB];
#pragma GCC unroll 32
  for (int c = 0; c < CB; ++c) grads[c] = vload(g + c * g_plane + k0);
  // kTapSums partial sums a tap (channels taken in turn): more independent multiply-add chains
  constexpr int P = CB >= kTapSums ? kTapSums : 1;
  vec acc[P][TB];
#pragma GCC unroll 16
  for (int t = 0; t < TB; ++t)
#pragma GCC unroll 4
    for (int q = 0; q < P; ++q) acc[q][t] = vec{};
#pragma GCC unroll 32
  for (int c = 0; c < CB; ++c) {
#pragma GCC unroll 16
    for (int t = 0; t < TB; ++t) acc[c % P][t] += grads[c] * vload(x_tile + c * plane + offsets[t] + k0);
  }
#pragma GCC unroll 16
  for (int t = 0; t < TB; ++t) {
    vec sum = acc[0][t];
#pragma GCC unroll 4
    for (int q = 1; q < P; ++q) sum += acc[q][t];
    vstore(sums[t], FIRST ? sum : vload(sums[t]) + sum);
  }
}

// correlate() over the taps for one block of CB channels: the first block stores its sums, the others add.
template <typename T, int CB, bool FIRST>
static inline void correlate_taps(const T* x_tile, i64 plane, const T* g, i64 g_plane, const i64* offsets,
                                  T* const* sums, i64 taps, i64 k0) {
  i64 t = 0;
  for (; t + kTapBlock <= taps; t += kTapBlock)
    correlate<T, CB, kTapBlock, FIRST>(x_tile, plane, g, g_plane, offsets + t, sums + t, k0);
  for (; t < taps; ++t) correlate<T, CB, 1, FIRST>(x_tile, plane, g, g_plane, offsets + t, sums + t, k0);
}

template <typename T>
static TileShape grad_tile(const Problem& p, i64 rows) {
  return TileShape{p.group_channels, rows, 1, round_up(p.out_w, Vec<T>::lanes)};
}

template <typename T>
static i64 grad_weight_scratch(const Problem& p, i64 rows) {
  return input_tile<T>(p, rows).size() + grad_tile<T>(p, rows).size() + p.k_h * p.k_w * Vec<T>::lanes;
}

template <typename T>
static void grad_weight_task(const Call& call, const Task& task, T* scratch) {
  constexpr int L = Vec<T>::lanes;
  const Problem& p = call.p;
  const i64 taps_total = p.k_h * p.k_w, plane_w = p.out_h * p.out_w;
  const TileShape xs = input_tile<T>(p, task.row1 - task.row0), gs = grad_tile<T>(p, task.row1 - task.row0);
  T* x_tile = scratch;
  T* g_tile = x_tile + xs.size();
  T* sums = g_tile + gs.size();
  const T* grad = static_cast<const T*>(call.a) + task.batch * call.as.b + task.group * p.group_channels * call.as.c;
  const T* x = static_cast<const T*>(call.b) + task.batch * call.bs.b + task.group * p.group_channels * call.bs.c;
  T* out = static_cast<T*>(call.out) + (task.batch * p.groups + task.group) * taps_total * plane_w;
  pack_tile(x, call.bs, p.in_h, p.in_w, task.row0 * p.s_h - p.p_h, p.p_w, xs, x_tile);
  pack_tile(grad, call.as, p.out_h, p.out_w, task.row0, 0, gs, g_tile);
  i64 offsets[taps_total], slots[taps_total], columns[p.k_w];
  T* sum_ptrs[taps_total];
  bool valid[taps_total];
  column_offsets(p, xs, columns);
  for (i64 oh = task.row0; oh < task.row1; ++oh) {
    i64 taps = 0;
    for (i64 i = 0; i < p.k_h; ++i) {
      const i64 ih = oh * p.s_h - p.p_h + i * p.d_h;
      const bool inside = ih >= 0 && ih < p.in_h;  // else the tap reads padding only: its gradient is zero
      for (i64 j = 0; j < p.k_w; ++j) valid[i * p.k_w + j] = inside;
      if (!inside) continue;
      const i64 row = (oh - task.row0) * p.s_h + i * p.d_h;
      for (i64 j = 0; j < p.k_w; ++j) {
        offsets[taps] = row * xs.row_elements() + columns[j];
        slots[taps++] = i * p.k_w + j;
      }
    }
    const T* g_row = g_tile + (oh - task.row0) * gs.pitch;
    T* out_row = out + oh * p.out_w;
    for (i64 k0 = 0; k0 < p.out_w; k0 += L) {
      // whole vectors are summed in place in the output, the last partial one in `sums`
      const i64 lanes = imin(L, p.out_w - k0);
      const bool direct = lanes == L;
      for (i64 t = 0; t < taps; ++t) sum_ptrs[t] = direct ? out_row + slots[t] * plane_w + k0 : sums + slots[t] * L;
      for (i64 t = 0; t < taps_total; ++t)
        if (!valid[t]) zero_elements(direct ? out_row + t * plane_w + k0 : sums + t * L, L);
      i64 c = 0;
      for (; c + kChannelBlock <= p.group_channels; c += kChannelBlock) {
        const T* x_c = x_tile + c * xs.plane();
        if (c == 0)
          correlate_taps<T, kChannelBlock, true>(x_c, xs.plane(), g_row, gs.plane(), offsets, sum_ptrs, taps, k0);
        else
          correlate_taps<T, kChannelBlock, false>(x_c, xs.plane(), g_row + c * gs.plane(), gs.plane(), offsets,
                                                  sum_ptrs, taps, k0);
      }
      for (; c < p.group_channels; ++c) {
        const T* x_c = x_tile + c * xs.plane();
        if (c == 0)
          correlate_taps<T, 1, true>(x_c, xs.plane(), g_row, gs.plane(), offsets, sum_ptrs, taps, k0);
        else
          correlate_taps<T, 1, false>(x_c, xs.plane(), g_row + c * gs.plane(), gs.plane(), offsets, sum_ptrs,
                                      taps, k0);
      }
      if (!direct)
        for (i64 t = 0; t < taps_total; ++t) copy_elements(out_row + t * plane_w + k0, sums + t * L, lanes);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------

static i64 scratch_elements(int kernel, const Problem& p, i64 rows) {
  // the larger of the float and double needs (vectors hold half as many doubles)
  switch (kernel) {
    case kForward: return imax(forward_scratch<float>(p, rows), forward_scratch<double>(p, rows));
    case kGradInput: return imax(grad_input_scratch<float>(p, rows), grad_input_scratch<double>(p, rows));
    case kFusedForward: return imax(fused_forward_scratch<float>(p, rows), fused_forward_scratch<double>(p, rows));
    default: return imax(grad_weight_scratch<float>(p, rows), grad_weight_scratch<double>(p, rows));
  }
}

template <typename T>
static void run(int kernel, const Call& call, const Task& task, T* scratch) {
  switch (kernel) {
    case kForward: forward_task<T>(call, task, scratch); break;
    case kGradInput: grad_input_task<T>(call, task, scratch); break;
    case kFusedForward: fused_forward_task<T>(call, task, scratch); break;
    default: grad_weight_task<T>(call, task, scratch); break;
  }
}

static void run_float(int kernel, const Call& call, const Task& task, float* scratch) {
  run<float>(kernel, call, task, scratch);
}

static void run_double(int kernel, const Call& call, const Task& task, double* scratch) {
  run<double>(kernel, call, task, scratch);
}

extern const KernelSet kernels = {INVOLUTION_ISA_NAME, INVOLUTION_VECTOR_BYTES, scratch_elements, run_float,
                                  run_double};

}  // namespace INVOLUTION_ISA
}  // namespace involution_cpu
