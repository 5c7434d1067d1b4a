// The interface between the PyTorch glue (involution_cpu.cpp) and the kernels, which are compiled once per
// instruction set (kernels_*.cpp). Plain C++ only: the kernel files include nothing of PyTorch, so no inline
// function of a PyTorch header is ever compiled for a wider instruction set than the machine may have.
#pragma once

#include <cstdint>

namespace involution_cpu {

// One involution call, as Geometry (ops/geometry.py) describes it.
struct Problem {
  int64_t batch, channels, groups, group_channels;
  int64_t in_h, in_w, out_h, out_w;
  int64_t k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w;
  int64_t reduced, r_pitch;  // the fused forward: channels of r and its padded row length (else 0)
};

// Element strides of a (batch, channels, height, width) tensor: any memory layout.
struct Strides {
  int64_t b, c, h, w;
};

// The tensors of one kernel call. forward: a = x, b = weight, out = out; grad_input: a = grad_out,
// b = weight, out = grad_x; grad_weight: a = grad_out, b = x, out = grad_weight; fused forward: a = x,
// b = r (the reduced features, (batch, reduced, out_h, r_pitch) contiguous), span_weight
// (groups * k_h * k_w, reduced) and span_bias (groups * k_h * k_w) contiguous, out = out. The weight and
// grad_weight are contiguous (batch, groups, k_h, k_w, out_h, out_w); the others have any strides.
struct Call {
  Problem p;
  const void* a;
  Strides as;
  const void* b;
  Strides bs;
  void* out;
  Strides os;
  const void* span_weight = nullptr;
  const void* span_bias = nullptr;
};

// One unit of parallel work: one (batch, group) and a block of rows (output rows for forward and
// grad_weight, input rows for grad_input).
struct Task {
  int64_t batch, group, row0, row1;
};

enum Kernel { kForward = 0, kGradInput = 1, kGradWeight = 2, kFusedForward = 3 };

// What one instruction set provides: the three kernels for float and double, each running one task with
// a scratch buffer of scratch_elements(kernel, problem, rows) elements of the dtype.
struct KernelSet {
  const char* name;
  int vector_bytes;
  int64_t (*scratch_elements)(int kernel, const Problem& p, int64_t rows);
  void (*run_float)(int kernel, const Call& call, const Task& task, float* scratch);
  void (*run_double)(int kernel, const Call& call, const Task& task, double* scratch);
};

// Defined by kernels_generic.cpp (always), kernels_avx2.cpp and kernels_avx512.cpp (x86-64 with GCC).
namespace generic { extern const KernelSet kernels; }
namespace avx2 { extern const KernelSet kernels; }
namespace avx512 { extern const KernelSet kernels; }

}  // namespace involution_cpu
