// A C ABI over libtorch's c10d (the engine under torch.distributed): a TCPStore rendezvous,
// a Gloo process group, and the collectives data-parallel training needs. tch binds no c10d;
// `build.rs` compiles this file against the same libtorch headers the binary links, and
// `dist/c10d.rs` wraps it. Every entry point catches C++ exceptions and returns their message.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "../ffi/shim.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using lg_shim::guarded;
using lg_shim::tensors_of;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

} // namespace

extern "C" {

// Joins the group: rank 0 hosts the TCPStore at host:port unless `agent_store` (torchrun's
// elastic agent already serves it there; keys then live under `prefix`). `iface`, when not
// empty, is the network interface Gloo binds (GLOO_SOCKET_IFNAME), else the hostname's address.
void* lg_c10d_init(const char* host, int port, int rank, int world, int agent_store, const char* prefix,
                   const char* iface, long timeout_ms, char* err, size_t err_len) {
  Group* g = nullptr;
  guarded(err, err_len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = !agent_store && rank == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = !agent_store;
    so.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    if (prefix != nullptr && prefix[0] != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    if (iface != nullptr && iface[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(std::string(iface)));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
    g = new Group{store, pg, timeout};
  });
  return g;
}

// Sums the tensors in place across ranks.
int lg_c10d_allreduce_sum(void* group, at::Tensor** ts, size_t n, char* err, size_t err_len) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, err_len, [&] {
    auto v = tensors_of(ts, n);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    g->backend->allreduce(v, o)->wait(g->timeout);
  });
}

// Copies rank `root`'s tensors into every rank's.
int lg_c10d_broadcast(void* group, at::Tensor** ts, size_t n, int root, char* err, size_t err_len) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, err_len, [&] {
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> v{*ts[i]};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      g->backend->broadcast(v, o)->wait(g->timeout);
    }
  });
}

int lg_c10d_barrier(void* group, char* err, size_t err_len) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, err_len, [&] { g->backend->barrier(c10d::BarrierOptions())->wait(g->timeout); });
}

void lg_c10d_free(void* group) {
  auto* g = static_cast<Group*>(group);
  try {
    delete g;
  } catch (...) {
  }
}

} // extern "C"
