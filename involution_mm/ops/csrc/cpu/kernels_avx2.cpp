// The kernels for x86-64 CPUs with AVX2 and FMA: 32-byte vectors, 16 vector registers (so 8 channels'
// accumulators at a time). Chosen at run time (involution_cpu.cpp); compiled only by GCC on x86-64.
#include "involution_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define INVOLUTION_ISA avx2
#define INVOLUTION_ISA_NAME "avx2"
#define INVOLUTION_VECTOR_BYTES 32
#define INVOLUTION_CHANNEL_BLOCK 8
#define INVOLUTION_TAP_BLOCK 6
#define INVOLUTION_TAP_SUMS 1
#define INVOLUTION_PAIR_CHANNEL_BLOCK 4
#define INVOLUTION_GEN_TAPS 4
#define INVOLUTION_GEN_VECTORS 2
#include "involution_kernels.h"
#pragma GCC pop_options
#endif
