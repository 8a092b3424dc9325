// The fully connected layer on oneDNN's sgemm (the library Paddle ships).
// Why not Paddle's own matmul: on the project's machine (AMD EPYC VM, 2
// threads, batch 8) paddle.nn.Linear took 0.39-1.0 ms on the classifier
// heads' shapes against 0.14-0.24 ms here (benchmarks/test_bench_linear.py),
// and GoogLeNet's five Linear layers 5.4 ms of a 136 ms eval batch against
// 2.1 ms (per-layer forward hooks).
#include "linear/linear.h"

#include <algorithm>
#include <cstring>

#include "paddle/extension.h"

#ifdef FASTCONV_WITH_ONEDNN
#include "oneapi/dnnl/dnnl.h"
#endif

namespace fastconv {

#ifdef FASTCONV_WITH_ONEDNN
namespace {

// Row-major C[m, n] = op(A)[m, k] . op(B)[k, n] + beta * C through
// dnnl_sgemm, which threads with OpenMP as Paddle's setting says.
void sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  const dnnl_status_t st =
      dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
  PD_CHECK(st == dnnl_success, kLinearOp,
           ": oneDNN's sgemm failed (status ", static_cast<int>(st), ") for ",
           m, "x", k, " by ", k, "x", n);
}

}  // namespace

void linear_forward_cpu(const float* x, const float* w, const float* b,
                        float* y, int64_t M, int64_t K, int64_t N) {
  if (b != nullptr) {
    // Seed every row with the bias; the GEMM accumulates onto it (beta = 1)
    // rather than a second pass adding it.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; ++i)
      std::memcpy(y + i * N, b, sizeof(float) * N);
  }
  sgemm('N', 'N', M, N, K, x, K, w, N, b != nullptr ? 1.f : 0.f, y, N);
}

void linear_backward_cpu(const float* x, const float* w, const float* dy,
                         float* dx, float* dw, float* db, int64_t M,
                         int64_t K, int64_t N) {
  if (dx != nullptr) sgemm('N', 'T', M, K, N, dy, N, w, N, 0.f, dx, K);
  sgemm('T', 'N', K, N, M, x, K, dy, N, 0.f, dw, N);
  if (db != nullptr) {
    // Column sums, in blocks of columns so each thread reads whole rows'
    // stretches (dy is row-major).
    constexpr int64_t kBlock = 256;
#pragma omp parallel for schedule(static)
    for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
      const int64_t j1 = std::min(N, j0 + kBlock);
      float acc[kBlock] = {};
      for (int64_t i = 0; i < M; ++i) {
        const float* row = dy + i * N;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) acc[j - j0] += row[j];
      }
      std::memcpy(db + j0, acc, sizeof(float) * (j1 - j0));
    }
  }
}

#else  // no oneDNN: the Python side never routes here (ops.linear)

void linear_forward_cpu(const float*, const float*, const float*, float*,
                        int64_t, int64_t, int64_t) {
  PD_THROW(kLinearOp, ": this build has no oneDNN engine");
}

void linear_backward_cpu(const float*, const float*, const float*, float*,
                         float*, float*, int64_t, int64_t, int64_t) {
  PD_THROW(kLinearOp, ": this build has no oneDNN engine");
}

#endif

}  // namespace fastconv
