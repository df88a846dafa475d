// Gloo CPU backend (only when COIL_WITH_GLOO): Gloo's TCP transport with
// coil's store for the rendezvous. Its ring all-reduce gives the same bits on
// every rank and does not depend on arrival order, but it does not sum in
// rank order, so results can differ in the last bits from StoreCommunicator.
#pragma once

#include <chrono>
#include <memory>

#include "train/dist/comm.h"

namespace coil::dist {

class GlooCommunicator final : public Communicator {
 public:
  explicit GlooCommunicator(std::shared_ptr<Store> store);
  ~GlooCommunicator() override;
  int rank() const override;
  int world() const override;
  const char* backend() const override { return "gloo"; }
  void all_reduce_sum(float* data, size_t n) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;

 private:
  struct Impl;
  std::shared_ptr<Store> store_;
  std::unique_ptr<Impl> impl_;
  uint32_t tag_ = 0;
};

std::unique_ptr<Communicator> make_gloo_communicator(const launcher::WorkerEnv& env,
                                                     std::chrono::milliseconds timeout);

}  // namespace coil::dist
