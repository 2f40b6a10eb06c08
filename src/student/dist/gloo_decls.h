// Declarations of the few Gloo types that libtorch's `ProcessGroupGloo.hpp` names. The PyPI
// wheel ships libtorch's c10d headers but not Gloo's; the shim only holds Gloo objects behind
// libtorch's own pointers (devices, contexts, the store adapter), so these declarations need
// only make that header parse. `build.rs` points every `<gloo/*.h>` include at this file.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
namespace rendezvous {
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};
} // namespace rendezvous
} // namespace gloo
