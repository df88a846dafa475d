// NCCL backend: one communicator per process, on cuda:LOCAL_RANK.
//
// Rendezvous: rank 0 creates the ncclUniqueId and publishes it through the
// TCP store (store.h) at MASTER_ADDR:MASTER_PORT; every rank then reports in
// and rank 0 confirms, so a rank that never arrives is named in the error
// before anyone enters ncclCommInitRank (which would wait forever).
//
// Streams: collectives run on the communicator's own high-priority stream.
// Each one first waits (an event) for the work queued so far on the
// device's compute stream (core/cuda_context), so it sees the gradients
// backward has enqueued; wait_pending() makes the compute stream wait for
// every collective issued so far. Tensors handed to a collective are kept
// alive until then, so the stream-ordered pool cannot reuse their memory
// under a running collective.
//
// Timeouts: a watchdog thread polls each collective's completion event. One
// still running after `timeout` (or an asynchronous NCCL error, e.g. a peer
// that died) makes it abort the communicator (ncclCommAbort, which ends the
// stuck kernels) and record "NCCL: all_reduce of bucket 3 (25.0 MiB) timed
// out after 600 s ..."; the next call on this communicator throws that
// error. If the main thread has not come back within a grace period (it may
// sit in a CUDA sync the abort did not release), the watchdog prints the
// error and ends the process with exit code 1, so the launcher sees it.
//
// Destruction: the watchdog stops first; then the communicator is destroyed
// (ncclCommDestroy) after a clean run whose collectives drained within the
// timeout, or aborted when an error was seen, an exception is unwinding or
// the drain timed out (destroy could wait on peers that are gone).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "train/dist/comm.h"

namespace coil::dist {

// True when this build links NCCL.
bool built_with_nccl();

struct NcclOptions {
  int device = 0;  // cuda:device, normally LOCAL_RANK
  std::chrono::milliseconds timeout{std::chrono::seconds(600)};             // one collective
  std::chrono::milliseconds rendezvous_timeout{std::chrono::seconds(300)};  // store and id exchange
  std::chrono::milliseconds exit_grace{std::chrono::seconds(30)};           // after an abort
};

// The id exchange behind make_nccl_communicator (no NCCL involved, so it is
// tested on the CPU): rank 0 publishes `id` (other ranks pass an empty
// vector), every other rank fetches it and reports in, rank 0 waits for all
// reports and then releases everyone. Returns rank 0's id. Timeouts (the
// store's) name the ranks that never arrived, or rank 0 when it is missing.
std::vector<uint8_t> exchange_unique_id(Store& store, const std::vector<uint8_t>& id);

// Rendezvous through the store at env's MASTER_ADDR:MASTER_PORT, then
// ncclCommInitRank. Throws coil::Error in a build without NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(const launcher::WorkerEnv& env, const NcclOptions& opts);

}  // namespace coil::dist
