// Involution forward, input-gradient and weight-gradient kernels for the CuPy backend.
//
// cuda_source.py prepends the compile-time constants of one (dtype, shape class, layout):
//   SCALAR_KIND           0 float16, 1 bfloat16, 2 float32, 3 float64
//   KERNEL_H/W, STRIDE_H/W, PAD_H/W, DILATION_H/W   the involution geometry
//   CHANNELS_PER_THREAD   channels of one group a forward / input-gradient thread handles
//   PIXELS_PER_THREAD     neighbouring columns a forward / input-gradient thread handles
//   WGRAD_PIXELS_PER_THREAD   neighbouring columns a weight-gradient thread handles
//   CONTIGUOUS_ROWS       1 when every tensor of the launch has unit stride along its columns
//   CHANNELS_LAST         1 for the channel-vector kernels (feature maps with unit channel stride, below)
//   BLOCK_SIZE            threads per block
//
// Every thread owns a strip of neighbouring columns in one row, loads each input value it needs once into
// registers and reuses it for every tap of the strip, and sums in float32 (float64 for float64). No kernel
// needs atomics, shared memory or synchronisation: every thread is independent of the others, and every
// output element is written once. Which columns lie inside the maps is worked out once per thread, column
// offsets are 32-bit (and compile-time constants with CONTIGUOUS_ROWS), and the loops step pointers, so their
// bodies are mostly loads, conversions and multiply-adds.
//
// Two families share the parameter list and the kernel names:
// - row kernels (CHANNELS_LAST 0), for any layout: a forward or input-gradient thread loads its kernel weights
//   once per kernel row and applies them to CHANNELS_PER_THREAD channels of its group, one map row of each at
//   a time; a weight-gradient thread sums one kernel row of taps over all channels of its group.
// - channel-vector kernels (CHANNELS_LAST 1), for feature maps whose channels are adjacent in memory (NHWC):
//   a thread's CHANNELS_PER_THREAD channels are one vector, moved by aligned loads and stores of up to 16
//   bytes each, and threads of neighbouring vectors of the same pixels are neighbours in the launch, so a warp's
//   loads cover whole runs of a pixel's channels. The weight-gradient thread reads its group's channels a
//   vector at a time. Kernel weights are read element by element through their strides, in any layout.
//
// Tensors are read and written through element strides, so any memory layout works without a copy. All
// three kernels share one parameter list (INVOLUTION_PARAMS):
//   a, b -> result         forward: x, weight -> out; input grad: grad_out, weight -> grad_x;
//                          weight grad: grad_out, x -> grad_weight
//   threads                number of threads that have work
//   channels, group_channels, in_h, in_w, out_h, out_w
//   a_s*, b_s*, r_s*       six strides per tensor, in elements: (n, c, h, w, 0, 0) for feature maps and
//                          (n, g, kh, kw, h, w) for weights

#ifndef INVOLUTION_EMULATE_ON_HOST
#define KERNEL extern "C" __global__ void __launch_bounds__(BLOCK_SIZE)
#define DEVICE __device__ __forceinline__
#define THREAD_ID ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#define LOAD(ptr) __ldg(ptr)

DEVICE float half_bits_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
DEVICE unsigned short float_to_half_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
DEVICE unsigned int float_as_bits(float f) { return __float_as_uint(f); }
DEVICE float bits_as_float(unsigned int u) { return __uint_as_float(u); }
#endif

#if SCALAR_KIND == 3
typedef double scalar_t;
typedef double acc_t;
DEVICE acc_t to_acc(scalar_t v) { return v; }
DEVICE scalar_t from_acc(acc_t v) { return v; }
#elif SCALAR_KIND == 2
typedef float scalar_t;
typedef float acc_t;
DEVICE acc_t to_acc(scalar_t v) { return v; }
DEVICE scalar_t from_acc(acc_t v) { return v; }
#elif SCALAR_KIND == 1
typedef unsigned short scalar_t;  // bfloat16 bits
typedef float acc_t;
DEVICE acc_t to_acc(scalar_t v) { return bits_as_float(((unsigned int)v) << 16); }
DEVICE scalar_t from_acc(acc_t v) {  // round to nearest even, NaN stays NaN
    unsigned int u = float_as_bits(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (scalar_t)((u >> 16) | 0x40u);
    return (scalar_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#else
typedef unsigned short scalar_t;  // float16 bits
typedef float acc_t;
DEVICE acc_t to_acc(scalar_t v) { return half_bits_to_float(v); }
DEVICE scalar_t from_acc(acc_t v) { return float_to_half_bits(v); }
#endif

// A tensor's element stride along its columns: 1 at compile time when the launch's rows are contiguous.
#if CONTIGUOUS_ROWS
#define COLUMN_STRIDE(stride) 1
#else
#define COLUMN_STRIDE(stride) ((int)(stride))
#endif
#define FLOOR_DIV(a, b) ((a) >= 0 ? (a) / (b) : -((-(a) + (b) - 1) / (b)))
// Input columns a strip of PIXELS columns reads for one kernel row.
#define INPUT_SPAN(PIXELS) (((PIXELS) - 1) * STRIDE_W + (KERNEL_W - 1) * DILATION_W + 1)

#define INVOLUTION_PARAMS                                                                               \
    const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, scalar_t* __restrict__ result,     \
        long long threads, int channels, int group_channels, int in_h, int in_w, int out_h, int out_w, \
        long long a_s0, long long a_s1, long long a_s2, long long a_s3, long long a_s4, long long a_s5,   \
        long long b_s0, long long b_s1, long long b_s2, long long b_s3, long long b_s4, long long b_s5,   \
        long long r_s0, long long r_s1, long long r_s2, long long r_s3, long long r_s4, long long r_s5

// inside[j]: whether column first + j lies in [0, width).
template <int COUNT>
DEVICE void columns_inside(bool (&inside)[COUNT], int first, int width) {
#pragma unroll
    for (int j = 0; j < COUNT; ++j) inside[j] = (unsigned)(first + j) < (unsigned)width;
}

// dst[j] = row[j * col_stride], or zero where the column is outside the map.
template <int COUNT>
DEVICE void load_row(acc_t (&dst)[COUNT], const scalar_t* row, int col_stride, const bool (&inside)[COUNT]) {
#pragma unroll
    for (int j = 0; j < COUNT; ++j) dst[j] = inside[j] ? to_acc(LOAD(row + j * col_stride)) : acc_t(0);
}

// What thread t computes: the strip of columns [col0, col0 + pixels) in row `row` of a map `width` wide and
// `height` high, for channel chunk `chunk` (of `chunks`) of group g of sample n. Strips vary fastest, then
// rows, chunks, groups and samples: the order KernelSpec.threads counts them in.
struct Strip {
    long long n;
    int g, chunk, row, col0;
};
DEVICE Strip strip_of(long long t, int height, int width, int pixels, int chunks, int groups) {
    Strip s;
    const int strips = (width + pixels - 1) / pixels;
    s.col0 = (int)(t % strips) * pixels; t /= strips;
    s.row = (int)(t % height); t /= height;
    s.chunk = (int)(t % chunks); t /= chunks;
    s.g = (int)(t % groups);
    s.n = t / groups;
    return s;
}

#if CHANNELS_LAST
// ---- Channel-vector kernels: feature maps with unit channel stride (channels_last) ----------------------
// The two families repeat a few lines (the input-gradient row arithmetic and weights, the weight-gradient
// store) rather than share helpers: shared helpers made ptxas spill a few bytes in some tilings and raised the
// row input gradient from 4.0 to 4.7 instructions per multiply-add (benchmarks/kernel_report.py).

// The CHANNELS_PER_THREAD adjacent channels of a thread move as aligned chunks of CHUNK channels, 2 to 16 bytes.
template <int BYTES> struct ChunkOf;
template <> struct ChunkOf<2> { typedef unsigned short type; };
template <> struct ChunkOf<4> { typedef unsigned int type; };
template <> struct ChunkOf<8> { typedef uint2 type; };
template <> struct ChunkOf<16> { typedef uint4 type; };
constexpr int CHUNK = CHANNELS_PER_THREAD * sizeof(scalar_t) > 16 ? 16 / sizeof(scalar_t) : CHANNELS_PER_THREAD;
typedef ChunkOf<sizeof(scalar_t) * CHUNK>::type chunk_t;
union ChannelChunk {
    chunk_t chunk;
    scalar_t value[CHUNK];
};

// dst[v] = src[v] for the thread's channels, a chunk per load.
DEVICE void load_vector(acc_t (&dst)[CHANNELS_PER_THREAD], const scalar_t* src) {
#pragma unroll
    for (int k = 0; k < CHANNELS_PER_THREAD; k += CHUNK) {
        ChannelChunk part;
        part.chunk = LOAD(reinterpret_cast<const chunk_t*>(src + k));
#pragma unroll
        for (int v = 0; v < CHUNK; ++v) dst[k + v] = to_acc(part.value[v]);
    }
}

// dst[v] = src[v] for the thread's channels, a chunk per store.
DEVICE void store_vector(scalar_t* dst, const acc_t (&src)[CHANNELS_PER_THREAD]) {
#pragma unroll
    for (int k = 0; k < CHANNELS_PER_THREAD; k += CHUNK) {
        ChannelChunk part;
#pragma unroll
        for (int v = 0; v < CHUNK; ++v) part.value[v] = from_acc(src[k + v]);
        *reinterpret_cast<chunk_t*>(dst + k) = part.chunk;
    }
}

// What a forward or input-gradient thread t computes: channels [c0, c0 + CHANNELS_PER_THREAD) of the strip of
// columns [col0, col0 + pixels) in row `row` of sample n. Vectors vary fastest, then strips, rows and samples
// (the order KernelSpec.threads counts them in).
struct PixelStrip {
    long long n;
    int c0, row, col0;
};
DEVICE PixelStrip pixel_strip_of(long long t, int height, int width, int pixels, int channels) {
    PixelStrip s;
    const int vectors = channels / CHANNELS_PER_THREAD, strips = (width + pixels - 1) / pixels;
    s.c0 = (int)(t % vectors) * CHANNELS_PER_THREAD; t /= vectors;
    s.col0 = (int)(t % strips) * pixels; t /= strips;
    s.row = (int)(t % height);
    s.n = t / height;
    return s;
}

// Writes a thread's sums to map[n, c0 + v, row, col0 + p], inside `width`, a vector per column.
DEVICE void store_pixel_strip(scalar_t* __restrict__ map, const acc_t (&acc)[PIXELS_PER_THREAD][CHANNELS_PER_THREAD],
                              const PixelStrip& s, int width, long long s0, long long s2, long long s3) {
    scalar_t* first = map + s.n * s0 + s.c0 + s.row * s2 + s.col0 * s3;
#pragma unroll
    for (int p = 0; p < PIXELS_PER_THREAD; ++p)
        if (s.col0 + p < width) store_vector(first + p * s3, acc[p]);
}

// out[n, c, oh, ow] = sum_{kh, kw} weight[n, g, kh, kw, oh, ow] * x[n, c, oh * S - P + kh * D, ...]
// Each input column of the strip's span is loaded once per kernel row, as a vector, and feeds every
// (pixel, tap) pair that reads it.
KERNEL involution_forward(INVOLUTION_PARAMS) {
    const long long t = THREAD_ID;
    if (t >= threads) return;
    const PixelStrip s = pixel_strip_of(t, out_h, out_w, PIXELS_PER_THREAD, channels);
    const int g = s.c0 / group_channels;
    constexpr int SPAN = INPUT_SPAN(PIXELS_PER_THREAD);
    const int first_col = s.col0 * STRIDE_W - PAD_W;
    const int x_col = (int)a_s3, w_col = (int)b_s5;
    bool col_inside[SPAN], pixel_inside[PIXELS_PER_THREAD];
    columns_inside(col_inside, first_col, in_w);
    columns_inside(pixel_inside, s.col0, out_w);
    const scalar_t* weight = b + s.n * b_s0 + g * b_s1 + s.row * b_s4 + (long long)s.col0 * b_s5;
    const scalar_t* x = a + s.n * a_s0 + s.c0 + (long long)first_col * a_s3;
    acc_t acc[PIXELS_PER_THREAD][CHANNELS_PER_THREAD] = {};

#pragma unroll 1
    for (int kh = 0; kh < KERNEL_H; ++kh) {
        const int ih = s.row * STRIDE_H - PAD_H + kh * DILATION_H;
        if ((unsigned)ih >= (unsigned)in_h) continue;
        acc_t w[KERNEL_W][PIXELS_PER_THREAD];
        const scalar_t* w_tap = weight + kh * b_s2;
#pragma unroll
        for (int kw = 0; kw < KERNEL_W; ++kw, w_tap += b_s3) load_row(w[kw], w_tap, w_col, pixel_inside);
        const scalar_t* x_row = x + ih * a_s2;
#pragma unroll
        for (int j = 0; j < SPAN; ++j) {
            if (!col_inside[j]) continue;
            acc_t column[CHANNELS_PER_THREAD];
            load_vector(column, x_row + j * x_col);
#pragma unroll
            for (int p = 0; p < PIXELS_PER_THREAD; ++p)
#pragma unroll
                for (int kw = 0; kw < KERNEL_W; ++kw)
                    if (p * STRIDE_W + kw * DILATION_W == j) {  // compile-time
#pragma unroll
                        for (int v = 0; v < CHANNELS_PER_THREAD; ++v) acc[p][v] += w[kw][p] * column[v];
                    }
        }
    }
    store_pixel_strip(result, acc, s, out_w, r_s0, r_s2, r_s3);
}

// grad_x[n, c, ih, iw] = sum over the (oh, ow, kh, kw) whose tap reads (ih, iw) of
// grad_out[n, c, oh, ow] * weight[n, g, kh, kw, oh, ow]. A strip starts at a multiple of STRIDE_W, so which
// (pixel, kw) pairs meet each output column of its span is known at compile time, as in the row kernel.
KERNEL involution_grad_input(INVOLUTION_PARAMS) {
    const long long t = THREAD_ID;
    if (t >= threads) return;
    const PixelStrip s = pixel_strip_of(t, in_h, in_w, PIXELS_PER_THREAD, channels);
    const int g = s.c0 / group_channels;
    // Output columns the strip meets: [first_col, first_col + SPAN).
    constexpr int FIRST = FLOOR_DIV(PAD_W - (KERNEL_W - 1) * DILATION_W, STRIDE_W);
    constexpr int SPAN = FLOOR_DIV(PIXELS_PER_THREAD - 1 + PAD_W, STRIDE_W) - FIRST + 1;
    const int first_col = s.col0 / STRIDE_W + FIRST;
    const int g_col = (int)a_s3, w_col = (int)b_s5;
    bool col_inside[SPAN];
    columns_inside(col_inside, first_col, out_w);
    const scalar_t* weight = b + s.n * b_s0 + g * b_s1 + (long long)first_col * b_s5;
    const scalar_t* grad = a + s.n * a_s0 + s.c0 + (long long)first_col * a_s3;
    acc_t acc[PIXELS_PER_THREAD][CHANNELS_PER_THREAD] = {};

#pragma unroll 1
    for (int kh = 0; kh < KERNEL_H; ++kh) {
        const int rows_from_top = s.row + PAD_H - kh * DILATION_H;
        if (rows_from_top < 0 || rows_from_top % STRIDE_H != 0) continue;
        const int oh = rows_from_top / STRIDE_H;
        if (oh >= out_h) continue;
        // w[kw][p]: the weight of tap kw at the output column pixel p meets through it (0 where none).
        acc_t w[KERNEL_W][PIXELS_PER_THREAD];
        const scalar_t* w_tap = weight + kh * b_s2 + oh * b_s4;
#pragma unroll
        for (int kw = 0; kw < KERNEL_W; ++kw, w_tap += b_s3)
#pragma unroll
            for (int p = 0; p < PIXELS_PER_THREAD; ++p) {
                const int offset = p + PAD_W - kw * DILATION_W;  // compile-time
                const int j = FLOOR_DIV(offset, STRIDE_W) - FIRST;
                w[kw][p] = offset % STRIDE_W == 0 && col_inside[j] ? to_acc(LOAD(w_tap + j * w_col)) : acc_t(0);
            }
        const scalar_t* grad_row = grad + oh * a_s2;
#pragma unroll
        for (int j = 0; j < SPAN; ++j) {
            if (!col_inside[j]) continue;
            acc_t column[CHANNELS_PER_THREAD];
            load_vector(column, grad_row + j * g_col);
#pragma unroll
            for (int p = 0; p < PIXELS_PER_THREAD; ++p)
#pragma unroll
                for (int kw = 0; kw < KERNEL_W; ++kw) {
                    const int offset = p + PAD_W - kw * DILATION_W;  // compile-time
                    if (offset % STRIDE_W == 0 && FLOOR_DIV(offset, STRIDE_W) - FIRST == j) {
#pragma unroll
                        for (int v = 0; v < CHANNELS_PER_THREAD; ++v) acc[p][v] += w[kw][p] * column[v];
                    }
                }
        }
    }
    store_pixel_strip(result, acc, s, in_w, r_s0, r_s2, r_s3);
}

// grad_weight[n, g, kh, kw, oh, ow] = sum_{c in group g} grad_out[n, c, oh, ow] * x[n, c, tap(oh, kh), tap(ow, kw)]
// A thread sums the taps of one kernel row kh for its strip over the group's channels, a vector at a time:
// the strip's output gradients, then each input column of the span, once, feeding every (tap, pixel) pair
// that reads it. Threads are ordered as in the row kernel, so a warp's stores cover runs of a map row.
KERNEL involution_grad_weight(INVOLUTION_PARAMS) {
    const long long t = THREAD_ID;
    if (t >= threads) return;
    const Strip s = strip_of(t, out_h, out_w, WGRAD_PIXELS_PER_THREAD, KERNEL_H, channels / group_channels);
    const int oh = s.row, ow0 = s.col0, g = s.g, kh = s.chunk;
    constexpr int SPAN = INPUT_SPAN(WGRAD_PIXELS_PER_THREAD);
    const int ih = oh * STRIDE_H - PAD_H + kh * DILATION_H;
    const int first_col = ow0 * STRIDE_W - PAD_W;
    const int g_col = (int)a_s3, x_col = (int)b_s3;
    bool col_inside[SPAN], pixel_inside[WGRAD_PIXELS_PER_THREAD];
    columns_inside(col_inside, first_col, in_w);
    columns_inside(pixel_inside, ow0, out_w);
    const long long group_start = (long long)g * group_channels;
    const scalar_t* grad = a + s.n * a_s0 + group_start + oh * a_s2 + (long long)ow0 * a_s3;
    const scalar_t* x = b + s.n * b_s0 + group_start + (long long)ih * b_s2 + (long long)first_col * b_s3;
    acc_t acc[KERNEL_W][WGRAD_PIXELS_PER_THREAD] = {};
    const int channels_to_sum = (unsigned)ih < (unsigned)in_h ? group_channels : 0;  // none on rows outside

#pragma unroll 1
    for (int c = 0; c < channels_to_sum; c += CHANNELS_PER_THREAD, grad += CHANNELS_PER_THREAD,
                                         x += CHANNELS_PER_THREAD) {
        acc_t grad_here[WGRAD_PIXELS_PER_THREAD][CHANNELS_PER_THREAD];
#pragma unroll
        for (int p = 0; p < WGRAD_PIXELS_PER_THREAD; ++p) {
            if (pixel_inside[p]) {
                load_vector(grad_here[p], grad + p * g_col);
            } else {
#pragma unroll
                for (int v = 0; v < CHANNELS_PER_THREAD; ++v) grad_here[p][v] = acc_t(0);
            }
        }
#pragma unroll
        for (int j = 0; j < SPAN; ++j) {
            if (!col_inside[j]) continue;
            acc_t column[CHANNELS_PER_THREAD];
            load_vector(column, x + j * x_col);
#pragma unroll
            for (int p = 0; p < WGRAD_PIXELS_PER_THREAD; ++p)
#pragma unroll
                for (int kw = 0; kw < KERNEL_W; ++kw)
                    if (p * STRIDE_W + kw * DILATION_W == j) {  // compile-time
#pragma unroll
                        for (int v = 0; v < CHANNELS_PER_THREAD; ++v) acc[kw][p] += grad_here[p][v] * column[v];
                    }
        }
    }
    scalar_t* out = result + s.n * r_s0 + g * r_s1 + kh * r_s2 + oh * r_s4 + ow0 * r_s5;
#pragma unroll
    for (int kw = 0; kw < KERNEL_W; ++kw)
#pragma unroll
        for (int p = 0; p < WGRAD_PIXELS_PER_THREAD; ++p)
            if (pixel_inside[p]) out[kw * r_s3 + p * r_s5] = from_acc(acc[kw][p]);
}

#else
// ---- Row kernels: any layout -------------------------------------------------------------------------------

// Writes a forward or input-gradient thread's sums to map[n, c0 + c, row, col0 + p], inside `width`.
DEVICE void store_strip(scalar_t* __restrict__ map, const acc_t (&acc)[CHANNELS_PER_THREAD][PIXELS_PER_THREAD],
                        const Strip& s, int c0, int width, long long s0, long long s1, long long s2, long long s3) {
#pragma unroll
    for (int c = 0; c < CHANNELS_PER_THREAD; ++c)
#pragma unroll
        for (int p = 0; p < PIXELS_PER_THREAD; ++p)
            if (s.col0 + p < width)
                map[s.n * s0 + (c0 + c) * s1 + s.row * s2 + (s.col0 + p) * s3] = from_acc(acc[c][p]);
}

// out[n, c, oh, ow] = sum_{kh, kw} weight[n, g, kh, kw, oh, ow] * x[n, c, oh * S - P + kh * D, ...]
KERNEL involution_forward(INVOLUTION_PARAMS) {
    const long long t = THREAD_ID;
    if (t >= threads) return;
    const Strip s = strip_of(t, out_h, out_w, PIXELS_PER_THREAD, group_channels / CHANNELS_PER_THREAD,
                             channels / group_channels);
    const int oh = s.row, ow0 = s.col0, g = s.g;
    const long long n = s.n;
    const int c0 = g * group_channels + s.chunk * CHANNELS_PER_THREAD;
    constexpr int SPAN = INPUT_SPAN(PIXELS_PER_THREAD);
    const int first_col = ow0 * STRIDE_W - PAD_W;
    const int x_col = COLUMN_STRIDE(a_s3), w_col = COLUMN_STRIDE(b_s5);
    bool col_inside[SPAN], pixel_inside[PIXELS_PER_THREAD];
    columns_inside(col_inside, first_col, in_w);
    columns_inside(pixel_inside, ow0, out_w);
    const scalar_t* weight = b + n * b_s0 + g * b_s1 + oh * b_s4 + (long long)ow0 * w_col;
    const scalar_t* x = a + n * a_s0 + c0 * a_s1 + (long long)first_col * x_col;
    acc_t acc[CHANNELS_PER_THREAD][PIXELS_PER_THREAD] = {};

#pragma unroll 1
    for (int kh = 0; kh < KERNEL_H; ++kh) {
        const int ih = oh * STRIDE_H - PAD_H + kh * DILATION_H;
        if ((unsigned)ih >= (unsigned)in_h) continue;
        acc_t w[KERNEL_W][PIXELS_PER_THREAD];
        const scalar_t* w_tap = weight + kh * b_s2;
#pragma unroll
        for (int kw = 0; kw < KERNEL_W; ++kw, w_tap += b_s3) load_row(w[kw], w_tap, w_col, pixel_inside);
        const scalar_t* x_row = x + ih * a_s2;
#pragma unroll
        for (int c = 0; c < CHANNELS_PER_THREAD; ++c, x_row += a_s1) {
            acc_t row[SPAN];
            load_row(row, x_row, x_col, col_inside);
#pragma unroll
            for (int kw = 0; kw < KERNEL_W; ++kw)
#pragma unroll
                for (int p = 0; p < PIXELS_PER_THREAD; ++p)
                    acc[c][p] += w[kw][p] * row[p * STRIDE_W + kw * DILATION_W];
        }
    }
    store_strip(result, acc, s, c0, out_w, r_s0, r_s1, r_s2, r_s3);
}

// grad_x[n, c, ih, iw] = sum over the (oh, ow, kh, kw) whose tap reads (ih, iw) of
// grad_out[n, c, oh, ow] * weight[n, g, kh, kw, oh, ow]. A strip starts at a multiple of STRIDE_W
// (PIXELS_PER_THREAD is one), so which (column, kw) pairs meet an output column is known at compile time.
KERNEL involution_grad_input(INVOLUTION_PARAMS) {
    const long long t = THREAD_ID;
    if (t >= threads) return;
    const Strip s = strip_of(t, in_h, in_w, PIXELS_PER_THREAD, group_channels / CHANNELS_PER_THREAD,
                             channels / group_channels);
    const int ih = s.row, iw0 = s.col0, g = s.g;
    const long long n = s.n;
    const int c0 = g * group_channels + s.chunk * CHANNELS_PER_THREAD;
    // Output columns the strip meets: [first_col, first_col + SPAN).
    constexpr int FIRST = FLOOR_DIV(PAD_W - (KERNEL_W - 1) * DILATION_W, STRIDE_W);
    constexpr int SPAN = FLOOR_DIV(PIXELS_PER_THREAD - 1 + PAD_W, STRIDE_W) - FIRST + 1;
    const int first_col = iw0 / STRIDE_W + FIRST;
    const int g_col = COLUMN_STRIDE(a_s3), w_col = COLUMN_STRIDE(b_s5);
    bool col_inside[SPAN];
    columns_inside(col_inside, first_col, out_w);
    const scalar_t* weight = b + n * b_s0 + g * b_s1 + (long long)first_col * w_col;
    const scalar_t* grad = a + n * a_s0 + c0 * a_s1 + (long long)first_col * g_col;
    acc_t acc[CHANNELS_PER_THREAD][PIXELS_PER_THREAD] = {};

#pragma unroll 1
    for (int kh = 0; kh < KERNEL_H; ++kh) {
        const int rows_from_top = ih + PAD_H - kh * DILATION_H;
        if (rows_from_top < 0 || rows_from_top % STRIDE_H != 0) continue;
        const int oh = rows_from_top / STRIDE_H;
        if (oh >= out_h) continue;
        // w[kw][p]: the weight of tap kw at the output column pixel p meets through it (0 where none).
        acc_t w[KERNEL_W][PIXELS_PER_THREAD];
        const scalar_t* w_tap = weight + kh * b_s2 + oh * b_s4;
#pragma unroll
        for (int kw = 0; kw < KERNEL_W; ++kw, w_tap += b_s3)
#pragma unroll
            for (int p = 0; p < PIXELS_PER_THREAD; ++p) {
                const int offset = p + PAD_W - kw * DILATION_W;  // compile-time
                const int j = FLOOR_DIV(offset, STRIDE_W) - FIRST;
                w[kw][p] = offset % STRIDE_W == 0 && col_inside[j] ? to_acc(LOAD(w_tap + j * w_col)) : acc_t(0);
            }
        const scalar_t* grad_row = grad + oh * a_s2;
#pragma unroll
        for (int c = 0; c < CHANNELS_PER_THREAD; ++c, grad_row += a_s1) {
            acc_t row[SPAN];
            load_row(row, grad_row, g_col, col_inside);
#pragma unroll
            for (int kw = 0; kw < KERNEL_W; ++kw)
#pragma unroll
                for (int p = 0; p < PIXELS_PER_THREAD; ++p) {
                    const int offset = p + PAD_W - kw * DILATION_W;
                    if (offset % STRIDE_W == 0) acc[c][p] += w[kw][p] * row[FLOOR_DIV(offset, STRIDE_W) - FIRST];
                }
        }
    }
    store_strip(result, acc, s, c0, in_w, r_s0, r_s1, r_s2, r_s3);
}

// grad_weight[n, g, kh, kw, oh, ow] = sum_{c in group g} grad_out[n, c, oh, ow] * x[n, c, tap(oh, kh), tap(ow, kw)]
// A thread sums the taps of one kernel row kh (its Strip's chunk) for its strip, over all the group's channels.
KERNEL involution_grad_weight(INVOLUTION_PARAMS) {
    const long long t = THREAD_ID;
    if (t >= threads) return;
    const Strip s = strip_of(t, out_h, out_w, WGRAD_PIXELS_PER_THREAD, KERNEL_H, channels / group_channels);
    const int oh = s.row, ow0 = s.col0, g = s.g, kh = s.chunk;
    const long long n = s.n;
    constexpr int SPAN = INPUT_SPAN(WGRAD_PIXELS_PER_THREAD);
    const int ih = oh * STRIDE_H - PAD_H + kh * DILATION_H;
    const int first_col = ow0 * STRIDE_W - PAD_W;
    const int g_col = COLUMN_STRIDE(a_s3), x_col = COLUMN_STRIDE(b_s3);
    bool col_inside[SPAN], pixel_inside[WGRAD_PIXELS_PER_THREAD];
    columns_inside(col_inside, (unsigned)ih < (unsigned)in_h ? first_col : in_w, in_w);  // none on rows outside
    columns_inside(pixel_inside, ow0, out_w);
    const long long group_start = (long long)g * group_channels;
    const scalar_t* grad = a + n * a_s0 + group_start * a_s1 + oh * a_s2 + (long long)ow0 * g_col;
    const scalar_t* x = b + n * b_s0 + group_start * b_s1 + (long long)ih * b_s2 + (long long)first_col * x_col;
    acc_t acc[KERNEL_W][WGRAD_PIXELS_PER_THREAD] = {};

#pragma unroll 2
    for (int c = 0; c < group_channels; ++c, grad += a_s1, x += b_s1) {
        acc_t grad_here[WGRAD_PIXELS_PER_THREAD], row[SPAN];
        load_row(grad_here, grad, g_col, pixel_inside);
        load_row(row, x, x_col, col_inside);
#pragma unroll
        for (int kw = 0; kw < KERNEL_W; ++kw)
#pragma unroll
            for (int p = 0; p < WGRAD_PIXELS_PER_THREAD; ++p)
                acc[kw][p] += grad_here[p] * row[p * STRIDE_W + kw * DILATION_W];
    }
    scalar_t* out = result + n * r_s0 + g * r_s1 + kh * r_s2 + oh * r_s4 + ow0 * r_s5;
#pragma unroll
    for (int kw = 0; kw < KERNEL_W; ++kw)
#pragma unroll
        for (int p = 0; p < WGRAD_PIXELS_PER_THREAD; ++p)
            if (pixel_inside[p]) out[kw * r_s3 + p * r_s5] = from_acc(acc[kw][p]);
}
#endif  // CHANNELS_LAST
