// The kernels for any CPU: 16-byte vectors (SSE2 on x86-64, NEON on AArch64), as the compiler's baseline
// target allows.
#include "involution_cpu.h"

#define INVOLUTION_ISA generic
#define INVOLUTION_ISA_NAME "generic"
#define INVOLUTION_VECTOR_BYTES 16
#define INVOLUTION_CHANNEL_BLOCK 8
#define INVOLUTION_TAP_BLOCK 4
#define INVOLUTION_TAP_SUMS 1
#define INVOLUTION_PAIR_CHANNEL_BLOCK 4
#define INVOLUTION_GEN_TAPS 4
#define INVOLUTION_GEN_VECTORS 2
#include "involution_kernels.h"
