#include "train/dist/comm.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace coil::dist {

StoreCommunicator::StoreCommunicator(std::shared_ptr<Store> store) : store_(std::move(store)) {
  COIL_CHECK(store_, "StoreCommunicator: null store");
}

std::string StoreCommunicator::key(const char* op, uint64_t seq, int r) const {
  return std::string("coll/") + op + "/" + std::to_string(seq) + "/" + std::to_string(r);
}

void StoreCommunicator::all_reduce_sum(float* data, size_t n) {
  const uint64_t seq = ++seq_;
  const int me = rank(), w = world();
  if (w == 1) return;
  std::vector<uint8_t> mine(n * sizeof(float));
  if (n) std::memcpy(mine.data(), data, mine.size());
  store_->set(key("ar", seq, me), mine);
  std::vector<float> sum(n, 0.0f);
  for (int r = 0; r < w; ++r) {
    std::vector<uint8_t> v = r == me ? mine : store_->get(key("ar", seq, r));
    COIL_CHECK(v.size() == n * sizeof(float), "all_reduce_sum: rank ", r, " sent ", v.size(),
               " bytes, rank ", me, " expected ", n * sizeof(float));
    const float* p = reinterpret_cast<const float*>(v.data());
    if (r == 0) {
      std::memcpy(sum.data(), p, v.size());
    } else {
      for (size_t i = 0; i < n; ++i) sum[i] += p[i];
    }
  }
  if (n) std::memcpy(data, sum.data(), n * sizeof(float));
  // Every rank has posted this all-reduce's buffer, so every rank has
  // finished reading the previous one: our old buffer can go.
  if (last_reduce_) store_->erase(key("ar", last_reduce_, me));
  last_reduce_ = seq;
}

void StoreCommunicator::broadcast(void* data, size_t bytes, int root) {
  const uint64_t seq = ++seq_;
  COIL_CHECK(root >= 0 && root < world(), "broadcast: root ", root, " not in world ", world());
  if (world() == 1) return;
  if (rank() == root) {
    std::vector<uint8_t> v(bytes);
    if (bytes) std::memcpy(v.data(), data, bytes);
    store_->set(key("bc", seq, root), v);
  } else {
    std::vector<uint8_t> v = store_->get(key("bc", seq, root));
    COIL_CHECK(v.size() == bytes, "broadcast: root ", root, " sent ", v.size(), " bytes, rank ",
               rank(), " expected ", bytes);
    if (bytes) std::memcpy(data, v.data(), bytes);
  }
}

void StoreCommunicator::barrier() {
  const uint64_t seq = ++seq_;
  store_->barrier("coll/" + std::to_string(seq));
}

namespace {
void check_host_tensor(const Tensor& t, const char* backend, const std::string& what) {
  COIL_CHECK(t.defined() && t.is_cpu() && t.is_contiguous() && t.dtype() == DType::f32, what, ": the ", backend,
             " communicator takes contiguous f32 CPU tensors, got ", t.defined() ? t.desc() : std::string("none"));
}
}  // namespace

void Communicator::all_reduce(const Tensor& t, ReduceOp op, const std::string& what) {
  check_host_tensor(t, backend(), what);
  float* p = t.data<float>();
  const size_t n = size_t(t.numel());
  all_reduce_sum(p, n);
  if (op == ReduceOp::avg) {
    const float inv = 1.0f / float(world());
    for (size_t i = 0; i < n; ++i) p[i] *= inv;
  }
}

void Communicator::broadcast_tensor(const Tensor& t, int root, const std::string& what) {
  COIL_CHECK(t.defined() && t.is_cpu() && t.is_contiguous(), what, ": the ", backend(),
             " communicator takes contiguous CPU tensors, got ", t.defined() ? t.desc() : std::string("none"));
  broadcast(t.data_ptr(), t.nbytes(), root);
}

std::unique_ptr<Communicator> make_cpu_communicator(const launcher::WorkerEnv& env,
                                                    std::chrono::milliseconds timeout) {
  auto store = std::make_shared<Store>(store_options_from(env, timeout));
  return std::make_unique<StoreCommunicator>(std::move(store));
}

}  // namespace coil::dist
