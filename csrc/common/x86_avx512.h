// AVX-512 code compiled function by function: the FC_AVX512 attribute
// targets one function at AVX-512F + FMA, so the library still loads and
// runs its other paths on x86-64 CPUs without AVX-512 (and builds elsewhere,
// where FC_X86_AVX512 is 0). Callers check avx512_supported() at run time
// before entering such a function. Inside them, instantiate no
// standard-library template: an inline function compiled for AVX-512 could
// be the copy the linker keeps for every other file.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FC_X86_AVX512 1
#include <immintrin.h>
#define FC_AVX512 __attribute__((target("avx512f,fma")))
#define FC_AVX512_INLINE \
  __attribute__((target("avx512f,fma"), always_inline)) inline
#else
#define FC_X86_AVX512 0
#endif

namespace fastconv {

// Whether this build and this CPU run AVX-512F + FMA code.
inline bool avx512_supported() {
#if FC_X86_AVX512
  static const bool ok = __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

}  // namespace fastconv
