// Argument checks that name the op and the argument. They throw through
// PD_CHECK, which Paddle turns into a Python exception: a bad call never
// aborts the process.
#pragma once

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

}  // namespace fastconv

// FC_CHECK_ARG(cond, op, arg, what...): "op: argument 'arg' what..."
#define FC_CHECK_ARG(cond, op, arg, ...) \
  PD_CHECK((cond), op, ": argument '", arg, "' ", __VA_ARGS__)
