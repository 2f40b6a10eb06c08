// What every C ABI shim over libtorch shares (`dist/c10d.cpp`, `train/fused.cpp`): tensor
// handles from tch (`at::Tensor*`) into a vector, and an entry point that catches C++
// exceptions and writes their first lines into the caller's buffer (`ffi.rs` reads it).
#pragma once

#include <ATen/ATen.h>

#include <cstring>
#include <string>
#include <vector>

namespace lg_shim {

inline std::vector<at::Tensor> tensors_of(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

inline void put_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = std::min(len - 1, msg.size());
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Runs f; 0 on success, 1 with the message in `err` on any exception. c10::Error carries a
// backtrace after its message; the message is what a user needs.
template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    put_error(err, len, e.msg());
  } catch (const std::exception& e) {
    put_error(err, len, e.what());
  } catch (...) {
    put_error(err, len, "unknown C++ exception in libtorch");
  }
  return 1;
}

} // namespace lg_shim
