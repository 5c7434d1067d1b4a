// The kernels for x86-64 CPUs with AVX-512 (F, VL): 32-byte vectors (as fast as 64-byte ones where the
// FMA units are 256 bits wide, and whole at rows of 7 or 14 columns) with 32 vector registers, so the
// accumulators of a whole group of 16 channels stay in registers. Chosen at run time
// (involution_cpu.cpp); compiled only by GCC on x86-64.
#include "involution_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl")
#include <immintrin.h>
#define INVOLUTION_ISA avx512
#define INVOLUTION_ISA_NAME "avx512"
#define INVOLUTION_VECTOR_BYTES 32
#define INVOLUTION_CHANNEL_BLOCK 16
#define INVOLUTION_TAP_BLOCK 7
#define INVOLUTION_TAP_SUMS 2
#define INVOLUTION_PAIR_CHANNEL_BLOCK 8
#define INVOLUTION_GEN_TAPS 7
#define INVOLUTION_GEN_VECTORS 3
#define INVOLUTION_MASKED_STORES 1
#include "involution_kernels.h"
#pragma GCC pop_options
#endif
