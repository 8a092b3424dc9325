// Argument checks that name the op and the argument. They throw through
// PD_CHECK, which Paddle turns into a Python exception: a bad call never
// aborts the process.
#pragma once

#include <exception>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "paddle/extension.h"

namespace fastconv {

template <typename T>
std::string shape_str(const std::vector<T>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// Runs an op body that calls into another library, turning that library's
// exceptions (oneDNN's dnnl::error, std::bad_alloc, ...) into a Paddle error
// that names the op. Paddle's Python bridge translates only Paddle's own
// exception types; anything else escaping a custom op aborts the process.
// Paddle's exceptions pass through unchanged. `Foreign` is the library's
// exception type (a std::exception subclass that is not Paddle's).
template <typename Foreign, typename F>
auto run_guarded(const char* op, const std::string& context, F&& body)
    -> decltype(body()) {
  try {
    return body();
  } catch (const Foreign& e) {
    PD_THROW(op, ": the convolution library failed (", e.what(), ") for ",
             context, ". Please report this with the shapes and attributes.");
  } catch (const std::bad_alloc&) {
    PD_THROW(op, ": out of host memory for ", context);
  }
}

// Whether the CUDA engine runs x: GPU tensors in CUDA builds
// (FASTCONV_WITH_CUDA); in the host test build (FASTCONV_CUDA_ON_HOST, see
// tools/build_config.py) CPU tensors, with the kernels emulated on the host.
inline bool runs_on_cuda_engine(const paddle::Tensor& x) {
#if defined(FASTCONV_CUDA_ON_HOST)
  return x.is_cpu();
#elif defined(FASTCONV_WITH_CUDA)
  return x.is_gpu();
#else
  return false;
#endif
}

// An input on a device this build has no engine for.
[[noreturn]] inline void unsupported_device(const char* op,
                                            const paddle::Place& p) {
  PD_THROW(op, ": argument 'x' is on ", p, ", but this build supports CPU",
#ifdef FASTCONV_WITH_CUDA
           " and GPU",
#else
           " only (built without CUDA)",
#endif
           " tensors");
}

}  // namespace fastconv

// FC_CHECK_ARG(cond, op, arg, what...): "op: argument 'arg' what..."
#define FC_CHECK_ARG(cond, op, arg, ...) \
  PD_CHECK((cond), op, ": argument '", arg, "' ", __VA_ARGS__)
