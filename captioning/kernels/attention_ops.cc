// Fused CPU kernels for the additive attention's [B, L, A] work in the teacher-forced
// Show-Attend-Tell recurrence (captioning/models/sat_recurrence.py).
//
// With P [B, L, A] the projected features, a [B, A] the state's share at one step and v [A] the
// score kernel, a step's scores are e[b, l] = sum_k v[k] tanh(P[b, l, k] + a[b, k]). Written with
// TensorFlow ops, every step materialises s = tanh(P + a) ([B, L, A], 8 MB at tutorial size),
// keeps it for the backward pass, and the backward pass makes and keeps the gradient of P + a as
// another [B, L, A] tensor per step: passes over memory, not arithmetic, are what these steps
// cost on a CPU. These kernels never write a [B, L, A] tensor per step: they recompute the tanh
// from P (read once per step) instead of storing it.
//
//   CaptioningAttentionScores(P, a, v) -> e [B, L]
//   CaptioningAttentionScoresGrad(P, a, v, de) -> da [B, A],
//       da[b, k] = v[k] sum_l de[b, l] (1 - s[b, l, k]^2)
//   CaptioningAttentionProjectedGrad(P, a [T, B, A], v, de [T, B, L]) -> (dP [B, L, A], dv [A]),
//       dP[b, l, k] = v[k] sum_t de[t, b, l] (1 - s_t[b, l, k]^2),
//       dv[k] = sum_{t, b, l} de[t, b, l] s_t[b, l, k]
//
// The last one runs once after the backward loop, over all T steps: per feature row it keeps P's
// row in cache and loops over the steps. Float32 only; sums run in a fixed order (results do not
// depend on the number of threads).

#define EIGEN_USE_THREADS

#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace captioning {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
using ConstRow = Eigen::Map<const Array>;
using Row = Eigen::Map<Array>;

// An estimate of the cycles one tanh and its neighbours cost, for the sharder.
constexpr int64_t kCyclesPerElement = 20;

// Runs fn(start, limit) over [0, total) on the op's CPU worker threads.
template <typename Fn>
void ParallelFor(OpKernelContext* ctx, int64_t total, int64_t cost_per_unit, Fn fn) {
  const auto& workers = *ctx->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers.num_threads, workers.workers, total, cost_per_unit, fn);
}

// Checks P [B, L, A], a [..., B, A] (rank a_rank) and v [A]; returns false after setting the
// context's status when they do not fit.
bool CheckShapes(OpKernelContext* ctx, const Tensor& projected, const Tensor& state,
                 int a_rank, const Tensor& v) {
  const bool ok = projected.dims() == 3 && state.dims() == a_rank && v.dims() == 1 &&
                  state.dim_size(a_rank - 1) == projected.dim_size(2) &&
                  state.dim_size(a_rank - 2) == projected.dim_size(0) &&
                  v.dim_size(0) == projected.dim_size(2);
  if (!ok) {
    ctx->CtxFailure(::tensorflow::errors::InvalidArgument(
        "attention kernel: expected projected [B, L, A], state ",
        (a_rank == 3 ? "[T, B, A]" : "[B, A]"), " and v [A]; got ",
        projected.shape().DebugString(), ", ", state.shape().DebugString(), " and ",
        v.shape().DebugString()));
  }
  return ok;
}

class ScoresOp : public OpKernel {
 public:
  explicit ScoresOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& projected = ctx->input(0);
    const Tensor& state = ctx->input(1);
    const Tensor& v = ctx->input(2);
    if (!CheckShapes(ctx, projected, state, 2, v)) return;
    const int64_t batch = projected.dim_size(0), locations = projected.dim_size(1),
                  units = projected.dim_size(2);
    Tensor* scores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, locations}), &scores));
    const float* p = projected.flat<float>().data();
    const float* a = state.flat<float>().data();
    const ConstRow v_row(v.flat<float>().data(), units);
    float* e = scores->flat<float>().data();
    const int64_t cost = units * kCyclesPerElement;
    ParallelFor(ctx, batch * locations, cost, [&](int64_t start, int64_t limit) {
      for (int64_t row = start; row < limit; ++row) {
        const ConstRow p_row(p + row * units, units);
        const ConstRow a_row(a + (row / locations) * units, units);
        e[row] = ((p_row + a_row).tanh() * v_row).sum();
      }
    });
  }
};

class ScoresGradOp : public OpKernel {
 public:
  explicit ScoresGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& projected = ctx->input(0);
    const Tensor& state = ctx->input(1);
    const Tensor& v = ctx->input(2);
    const Tensor& d_scores = ctx->input(3);
    if (!CheckShapes(ctx, projected, state, 2, v)) return;
    const int64_t batch = projected.dim_size(0), locations = projected.dim_size(1),
                  units = projected.dim_size(2);
    OP_REQUIRES(ctx, d_scores.shape() == TensorShape({batch, locations}),
                ::tensorflow::errors::InvalidArgument(
                    "attention kernel: expected score gradients [B, L] = ",
                    TensorShape({batch, locations}).DebugString(), ", got ",
                    d_scores.shape().DebugString()));
    Tensor* d_state = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, state.shape(), &d_state));
    const float* p = projected.flat<float>().data();
    const float* a = state.flat<float>().data();
    const ConstRow v_row(v.flat<float>().data(), units);
    const float* de = d_scores.flat<float>().data();
    float* da = d_state->flat<float>().data();
    const int64_t cost = locations * units * kCyclesPerElement;
    ParallelFor(ctx, batch, cost, [&](int64_t start, int64_t limit) {
      for (int64_t b = start; b < limit; ++b) {
        const ConstRow a_row(a + b * units, units);
        Row sum(da + b * units, units);
        sum.setZero();
        for (int64_t l = 0; l < locations; ++l) {
          const ConstRow p_row(p + (b * locations + l) * units, units);
          sum += de[b * locations + l] * (1.0f - (p_row + a_row).tanh().square());
        }
        sum *= v_row;
      }
    });
  }
};

class ProjectedGradOp : public OpKernel {
 public:
  explicit ProjectedGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& projected = ctx->input(0);
    const Tensor& states = ctx->input(1);
    const Tensor& v = ctx->input(2);
    const Tensor& d_scores = ctx->input(3);
    if (!CheckShapes(ctx, projected, states, 3, v)) return;
    const int64_t batch = projected.dim_size(0), locations = projected.dim_size(1),
                  units = projected.dim_size(2), steps = states.dim_size(0);
    OP_REQUIRES(ctx, d_scores.shape() == TensorShape({steps, batch, locations}),
                ::tensorflow::errors::InvalidArgument(
                    "attention kernel: expected score gradients [T, B, L] = ",
                    TensorShape({steps, batch, locations}).DebugString(), ", got ",
                    d_scores.shape().DebugString()));
    Tensor* d_projected = nullptr;
    Tensor* d_v = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, projected.shape(), &d_projected));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, v.shape(), &d_v));
    // One partial sum of dv per image, added in order at the end: the same result whatever the
    // sharding.
    Tensor partial;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({batch, units}),
                                           &partial));
    const float* p = projected.flat<float>().data();
    const float* a = states.flat<float>().data();
    const ConstRow v_row(v.flat<float>().data(), units);
    const float* de = d_scores.flat<float>().data();
    float* dp = d_projected->flat<float>().data();
    float* dv_partial = partial.flat<float>().data();
    const int64_t cost = steps * locations * units * kCyclesPerElement;
    ParallelFor(ctx, batch, cost, [&](int64_t start, int64_t limit) {
      Array s(units);
      for (int64_t b = start; b < limit; ++b) {
        Row dv_b(dv_partial + b * units, units);
        dv_b.setZero();
        for (int64_t l = 0; l < locations; ++l) {
          const int64_t row = b * locations + l;
          const ConstRow p_row(p + row * units, units);
          Row dp_row(dp + row * units, units);
          dp_row.setZero();
          for (int64_t t = 0; t < steps; ++t) {
            const float d = de[t * batch * locations + row];
            const ConstRow a_row(a + (t * batch + b) * units, units);
            s = (p_row + a_row).tanh();
            dp_row += d * (1.0f - s.square());
            dv_b += d * s;
          }
          dp_row *= v_row;
        }
      }
    });
    Row dv(d_v->flat<float>().data(), units);
    dv.setZero();
    for (int64_t b = 0; b < batch; ++b) dv += ConstRow(dv_partial + b * units, units);
  }
};

}  // namespace

REGISTER_OP("CaptioningAttentionScores")
    .Input("projected: float")
    .Input("state: float")
    .Input("v: float")
    .Output("scores: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle projected;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &projected));
      c->set_output(0, c->Matrix(c->Dim(projected, 0), c->Dim(projected, 1)));
      return absl::OkStatus();
    });

REGISTER_OP("CaptioningAttentionScoresGrad")
    .Input("projected: float")
    .Input("state: float")
    .Input("v: float")
    .Input("d_scores: float")
    .Output("d_state: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle state;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &state));
      c->set_output(0, state);
      return absl::OkStatus();
    });

REGISTER_OP("CaptioningAttentionProjectedGrad")
    .Input("projected: float")
    .Input("states: float")
    .Input("v: float")
    .Input("d_scores: float")
    .Output("d_projected: float")
    .Output("d_v: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle projected, v;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &projected));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &v));
      c->set_output(0, projected);
      c->set_output(1, v);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("CaptioningAttentionScores").Device(::tensorflow::DEVICE_CPU),
                        ScoresOp);
REGISTER_KERNEL_BUILDER(Name("CaptioningAttentionScoresGrad").Device(::tensorflow::DEVICE_CPU),
                        ScoresGradOp);
REGISTER_KERNEL_BUILDER(
    Name("CaptioningAttentionProjectedGrad").Device(::tensorflow::DEVICE_CPU), ProjectedGradOp);

}  // namespace captioning
