// CUDA graphs on coil's per-device stream: record a sequence of launches once
// (capture), replay it with one launch. Work captured must be replayable:
// fixed input/output buffers; allocations made during the capture come from
// the stream-ordered pool as graph allocation nodes and must be freed before
// the capture ends (temporaries that die inside the captured function).
// Declared for every build; without CUDA, capture() throws.
#pragma once
#include <functional>

namespace coil::cuda_ctx {

class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&& o) noexcept;
  Graph& operator=(Graph&& o) noexcept;

  // Runs fn with the device's stream in capture mode and instantiates what
  // it launched. fn must not synchronise with the host (no copies to or from
  // the host, no stream syncs). Throws coil::Error naming the failing call.
  void capture(int device, const std::function<void()>& fn);
  // One launch of the captured work on the device's stream (asynchronous).
  void replay() const;
  bool ready() const { return exec_ != nullptr; }

 private:
  void reset();
  void* exec_ = nullptr;  // cudaGraphExec_t
  int device_ = 0;
};

}  // namespace coil::cuda_ctx
