// The register-blocked GEMM step that the CPU kernels share (the Winograd
// kernel's 36 GEMMs, the 1x1 kernels' tiles): R rows of A, each element
// broadcast, against NV 16-float vectors of each row of B, R * NV
// accumulators that the caller keeps in registers (R * NV + NV + 1 <= 32).
// Only for functions compiled for AVX-512 (common/x86_avx512.h).
#pragma once

#include <cstdint>

#include "common/x86_avx512.h"

#if FC_X86_AVX512
namespace fastconv {

// acc[i][j] += sum_k A[i * lda + k] * B[k * ldb + 16 * j + 0..15], k < K.
template <int R, int NV>
FC_AVX512_INLINE void gemm_accumulate(__m512 (&acc)[R][NV], const float* a,
                                      int64_t lda, const float* b, int64_t ldb,
                                      int64_t K) {
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_ps(b + k * ldb + 16 * j);
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * lda + k]);
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
}

}  // namespace fastconv
#endif  // FC_X86_AVX512
