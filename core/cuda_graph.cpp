#include "core/cuda_graph.h"

#include <utility>

#include "core/cuda_context.h"
#include "core/error.h"

#ifdef COIL_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace coil::cuda_ctx {

Graph::~Graph() { reset(); }

Graph::Graph(Graph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)), device_(o.device_) {}

Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    reset();
    exec_ = std::exchange(o.exec_, nullptr);
    device_ = o.device_;
  }
  return *this;
}

#ifndef COIL_WITH_CUDA

void Graph::reset() {}
void Graph::capture(int, const std::function<void()>&) { fail("CUDA graphs need a build with CUDA support"); }
void Graph::replay() const { fail("CUDA graphs need a build with CUDA support"); }

#else

void Graph::reset() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  exec_ = nullptr;
}

void Graph::capture(int device, const std::function<void()>& fn) {
  reset();
  device_ = device;
  auto s = static_cast<cudaStream_t>(stream(device));
  // Relaxed: a library call that is merely "unsafe" during capture (such as
  // a lazy cudaMalloc for a workspace) still works; stream syncs still fail.
  COIL_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  try {
    fn();
  } catch (...) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(s, &g);  // leave the stream usable
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t g = nullptr;
  COIL_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  COIL_CUDA_CHECK(err);
  exec_ = exec;
  // Map the graph's memory and upload it now, so the first replay is not slower.
  COIL_CUDA_CHECK(cudaGraphUpload(exec, s));
}

void Graph::replay() const {
  COIL_CHECK(exec_ != nullptr, "Graph::replay: nothing captured");
  COIL_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream(device_))));
}

#endif

}  // namespace coil::cuda_ctx
