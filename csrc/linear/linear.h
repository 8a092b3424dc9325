// Fully connected layer (CPU): y = x . W + b in paddle.nn.Linear's layout
// (x [M, K] row-major, W [K, N], b [N]), and its backward, on oneDNN's
// sgemm. See linear_cpu.cc.
#pragma once

#include <cstdint>

namespace fastconv {

constexpr const char* kLinearOp = "fastconv_linear";

// y[M, N] = x[M, K] . w[K, N] (+ b[N] when b is not null).
void linear_forward_cpu(const float* x, const float* w, const float* b,
                        float* y, int64_t M, int64_t K, int64_t N);

// dx[M, K] = dy . w^T (skipped when dx is null), dw[K, N] = x^T . dy,
// db[N] = the column sums of dy (skipped when db is null).
void linear_backward_cpu(const float* x, const float* w, const float* dy,
                         float* dx, float* dw, float* db, int64_t M,
                         int64_t K, int64_t N);

}  // namespace fastconv
