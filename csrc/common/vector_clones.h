// FC_VECTOR_CLONES on a hot loop function: the build targets baseline x86-64
// (SSE2, a wheel must run on any x86-64 CPU), so its loops would run 4 floats
// wide; the clones let the loader pick AVX-512 or AVX2 code on CPUs that have
// them (GCC function multiversioning, resolved once at load time). Not for
// templates or functions the compiler cannot clone; empty elsewhere.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__CUDACC__)
#define FC_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FC_VECTOR_CLONES
#endif
