// PyTorch glue of the CPU involution kernels: checks nothing the Python side has checked already, allocates
// the outputs (in the layouts the PyTorch backend returns), splits the work into (batch, group, row block)
// tasks run by at::parallel_for (torch's intra-op threads), and picks the kernels compiled for the widest
// instruction set this CPU has. Half types are computed in float32 and rounded once at the end.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <string>
#include <vector>

#include "involution_cpu.h"

namespace involution_cpu {
namespace {

// The kernel sets this CPU can run, widest first.
std::vector<const KernelSet*> supported_sets() {
  std::vector<const KernelSet*> sets;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) sets.push_back(&avx512::kernels);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) sets.push_back(&avx2::kernels);
#endif
  sets.push_back(&generic::kernels);
  return sets;
}

const KernelSet*& current_set() {
  static const KernelSet* chosen = supported_sets().front();
  return chosen;
}

std::vector<std::string> isas() {
  std::vector<std::string> names;
  for (const KernelSet* set : supported_sets()) names.emplace_back(set->name);
  return names;
}

std::string isa() { return current_set()->name; }

void set_isa(const std::string& name) {
  for (const KernelSet* set : supported_sets()) {
    if (name == set->name) {
      current_set() = set;
      return;
    }
  }
  TORCH_CHECK_VALUE(false, "no CPU involution kernels for '", name, "' on this machine; choose one of ",
                    c10::Join(", ", isas()));
}

int64_t div_ceil(int64_t a, int64_t b) { return (a + b - 1) / b; }

Strides strides_of(const at::Tensor& t) { return Strides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The layout the PyTorch backend gives its output after t (geometry.output_memory_format).
at::MemoryFormat output_format(const at::Tensor& t) {
  if (t.is_contiguous() || !t.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::Contiguous;
  return at::MemoryFormat::ChannelsLast;
}

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// float32 for half types (accumulation in float32), the tensor itself otherwise.
at::Tensor computable(const at::Tensor& t) { return is_half(t) ? t.to(at::kFloat) : t; }

Problem make_problem(int64_t batch, int64_t channels, int64_t groups, int64_t in_h, int64_t in_w, int64_t out_h,
                     int64_t out_w, int64_t k_h, int64_t k_w, const std::vector<int64_t>& config) {
  TORCH_CHECK(config.size() == 6, "config must be (s_h, s_w, p_h, p_w, d_h, d_w)");
  return Problem{batch, channels, groups, channels / groups, in_h, in_w, out_h, out_w, k_h, k_w,
                 config[0], config[1], config[2], config[3], config[4], config[5], 0, 0};
}

void run_task(const KernelSet& set, int kernel, const Call& call, const Task& task, float* scratch) {
  set.run_float(kernel, call, task, scratch);
}

void run_task(const KernelSet& set, int kernel, const Call& call, const Task& task, double* scratch) {
  set.run_double(kernel, call, task, scratch);
}

// Run `kernel` over every (batch, group) and block of `rows` rows, in parallel.
void launch(int kernel, const Problem& p, int64_t rows, const at::Tensor& a, const at::Tensor& b,
            const at::Tensor& out, const void* span_weight = nullptr, const void* span_bias = nullptr) {
  const int64_t units = p.batch * p.groups;
  if (units == 0 || rows == 0) return;
  // Blocks of at most 16 rows (tiles that stay in cache), and at least 4 tasks per thread to share out.
  const int64_t threads = at::get_num_threads();
  const int64_t blocks = std::min(rows, std::max(div_ceil(rows, 16), div_ceil(4 * threads, units)));
  const int64_t block_rows = div_ceil(rows, blocks);
  const int64_t tasks_per_unit = div_ceil(rows, block_rows);
  const Call call{p, a.data_ptr(), strides_of(a), b.data_ptr(), strides_of(b), out.data_ptr(), strides_of(out),
                  span_weight, span_bias};
  const KernelSet& set = *current_set();
  const int64_t scratch_size = set.scratch_elements(kernel, p, block_rows);
  // At least `grain` tasks a thread: calls under about 64k multiply-adds a thread stay on the calling thread.
  const int64_t task_work =
      (p.group_channels + p.reduced) * block_rows * std::max(p.in_w, p.out_w) * p.k_h * p.k_w;
  const int64_t grain = div_ceil(int64_t{1} << 16, std::max<int64_t>(task_work, 1));
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "involution_cpu", [&] {
    at::parallel_for(0, units * tasks_per_unit, grain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(scratch_size);
      for (int64_t index = begin; index < end; ++index) {
        const int64_t unit = index / tasks_per_unit, row0 = index % tasks_per_unit * block_rows;
        const Task task{unit / p.groups, unit % p.groups, row0, std::min(rows, row0 + block_rows)};
        run_task(set, kernel, call, task, scratch.data());
      }
    });
  });
}

at::Tensor forward(const at::Tensor& x_in, const at::Tensor& weight_in, const std::vector<int64_t>& config) {
  const at::Tensor x = computable(x_in), weight = computable(weight_in).contiguous();
  const Problem p = make_problem(x.size(0), x.size(1), weight.size(1), x.size(2), x.size(3), weight.size(4),
                                 weight.size(5), weight.size(2), weight.size(3), config);
  at::Tensor out = at::empty({p.batch, p.channels, p.out_h, p.out_w}, x.options(), output_format(x_in));
  launch(kForward, p, p.out_h, x, weight, out);
  return is_half(x_in) ? out.to(x_in.scalar_type()) : out;
}

at::Tensor grad_input(const at::Tensor& grad_in, const at::Tensor& weight_in, int64_t in_h, int64_t in_w,
                      const std::vector<int64_t>& config) {
  const at::Tensor grad = computable(grad_in), weight = computable(weight_in).contiguous();
  const Problem p = make_problem(grad.size(0), grad.size(1), weight.size(1), in_h, in_w, grad.size(2),
                                 grad.size(3), weight.size(2), weight.size(3), config);
  at::Tensor out = at::empty({p.batch, p.channels, in_h, in_w}, grad.options(), output_format(grad_in));
  launch(kGradInput, p, in_h, grad, weight, out);
  return is_half(grad_in) ? out.to(grad_in.scalar_type()) : out;
}

at::Tensor grad_weight(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t groups, int64_t k_h, int64_t k_w,
                       const std::vector<int64_t>& config) {
  const at::Tensor grad = computable(grad_in), x = computable(x_in);
  const Problem p = make_problem(x.size(0), x.size(1), groups, x.size(2), x.size(3), grad.size(2), grad.size(3),
                                 k_h, k_w, config);
  at::Tensor out = at::empty({p.batch, groups, k_h, k_w, p.out_h, p.out_w}, x.options());
  launch(kGradWeight, p, p.out_h, grad, x, out);
  return is_half(x_in) ? out.to(x_in.scalar_type()) : out;
}

at::Tensor fused_forward(const at::Tensor& x_in, const at::Tensor& r_in, const at::Tensor& weight_in,
                         const at::Tensor& bias_in, int64_t kernel_size, const std::vector<int64_t>& config) {
  TORCH_CHECK(r_in.scalar_type() == x_in.scalar_type() && weight_in.scalar_type() == x_in.scalar_type() &&
                  bias_in.scalar_type() == x_in.scalar_type(),
              "fused_forward needs x, r, weight and bias of one dtype");
  TORCH_CHECK(weight_in.dim() == 2 && weight_in.size(0) % (kernel_size * kernel_size) == 0 && bias_in.dim() == 1 &&
                  bias_in.size(0) == weight_in.size(0) && r_in.dim() == 4 && r_in.size(1) == weight_in.size(1),
              "fused_forward needs weight (G * K * K, R), bias (G * K * K,) and r (B, R, Ho, Wo)");
  const at::Tensor x = computable(x_in), weight = computable(weight_in).contiguous();
  const at::Tensor bias = computable(bias_in).contiguous();
  Problem p = make_problem(x.size(0), x.size(1), weight.size(0) / (kernel_size * kernel_size), x.size(2),
                           x.size(3), r_in.size(2), r_in.size(3), kernel_size, kernel_size, config);
  // r once in the layout the generation reads (every group's tasks read all of it): contiguous, rows
  // padded with zeros to whole vectors
  const int64_t lanes = current_set()->vector_bytes / static_cast<int64_t>(x.element_size());
  p.reduced = r_in.size(1);
  p.r_pitch = div_ceil(p.out_w, lanes) * lanes;
  at::Tensor r = at::zeros({p.batch, p.reduced, p.out_h, p.r_pitch}, x.options());
  r.narrow(3, 0, p.out_w).copy_(r_in);
  at::Tensor out = at::empty({p.batch, p.channels, p.out_h, p.out_w}, x.options(), output_format(x_in));
  launch(kFusedForward, p, p.out_h, x, r, out, weight.data_ptr(), bias.data_ptr());
  return is_half(x_in) ? out.to(x_in.scalar_type()) : out;
}

}  // namespace
}  // namespace involution_cpu

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace involution_cpu;
  m.doc() = "One-pass CPU kernels of the involution op (involution_mm.ops.cpu_backend wraps them).";
  m.def("forward", &forward, "out = involution(x, weight); config = (s_h, s_w, p_h, p_w, d_h, d_w)");
  m.def("grad_input", &grad_input, "grad_x from (grad_out, weight, in_h, in_w, config)");
  m.def("grad_weight", &grad_weight, "grad_weight from (grad_out, x, groups, k_h, k_w, config)");
  m.def("fused_forward", &fused_forward,
        "out = involution(x, conv1x1(r, weight, bias) as kernels) without storing the kernels; "
        "(x, r, weight (G*K*K, R), bias, kernel_size, config)");
  m.def("isa", &isa, "the instruction set whose kernels run");
  m.def("isas", &isas, "the instruction sets this CPU can run, widest first");
  m.def("set_isa", &set_isa, "run the kernels compiled for this instruction set (one of isas())");
}
