// train/dist/grad_buckets: bucket layout (reverse parameter order, size
// limit, a bucket smaller than one gradient), launches from inside backward
// in bucket order, gradient accumulation (only the armed pass reduces), and
// parameters no backward reached. A recording communicator stands in for the
// real ones (test_dp.cpp runs the real ones across processes).
#include <string>
#include <vector>

#include "helpers.h"
#include "train/dist/grad_buckets.h"

using namespace coil;
using namespace coil::test;

namespace {

// World 2 seen from rank 0, where "the other rank" contributed the same
// gradient: average = the input, sum = twice it. Records every collective.
class RecordingComm final : public dist::Communicator {
 public:
  int rank() const override { return 0; }
  int world() const override { return 2; }
  const char* backend() const override { return "recording"; }
  void all_reduce_sum(float* data, size_t n) override {
    for (size_t i = 0; i < n; ++i) data[i] *= 2;
  }
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  void all_reduce(const Tensor& t, dist::ReduceOp op, const std::string& what) override {
    calls.push_back(what);
    numels.push_back(t.numel());
    during_backward.push_back(in_backward);
    Communicator::all_reduce(t, op, what);
  }
  std::vector<std::string> calls;
  std::vector<int64_t> numels;
  std::vector<bool> during_backward;
  bool in_backward = false;
};

Tensor make_leaf(const Shape& s, uint64_t seed) {
  Generator g{seed, 0};
  Tensor t = randn(s, DType::f32, Device::cpu(), &g);
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("grad buckets: reverse order, size limit, launched during backward, accumulation") {
  // Model order w1, w2, w3, unused; backward finishes w3 first.
  Tensor w1 = make_leaf({3, 4}, 1), w2 = make_leaf({4, 2}, 2), w3 = make_leaf({2}, 3), unused = make_leaf({5}, 4);
  Generator g{9, 0};
  Tensor x = randn({6, 3}, DType::f32, Device::cpu(), &g);
  auto loss = [&] { return sum(matmul(matmul(x, w1), w2) * w3); };

  SUBCASE("one byte: every gradient is bigger than a bucket, so one parameter per bucket") {
    RecordingComm comm;
    dist::GradBuckets b({w1, w2, w3, unused}, comm, 1);
    REQUIRE(b.bucket_count() == 4);
    CHECK(b.bucket_params(0) == std::vector<size_t>{3});  // unused (last in model order)
    CHECK(b.bucket_params(1) == std::vector<size_t>{2});  // w3
    CHECK(b.bucket_params(2) == std::vector<size_t>{1});  // w2
    CHECK(b.bucket_params(3) == std::vector<size_t>{0});  // w1
    CHECK(b.bucket_bytes(3) == 12 * 4);

    // Reference gradients of two accumulated passes, without buckets.
    backward(loss());
    backward(loss());
    const auto g1 = w1.grad().to_vector(), g2 = w2.grad().to_vector(), g3 = w3.grad().to_vector();
    for (Tensor* t : {&w1, &w2, &w3}) t->set_grad(Tensor());
    comm.calls.clear();

    // First micro-batch: not armed, nothing is reduced.
    comm.in_backward = true;
    backward(loss());
    CHECK(comm.calls.empty());
    // Last micro-batch: armed.
    b.arm();
    backward(loss());
    comm.in_backward = false;
    // Bucket 0 (the unused parameter) never completes during backward, and
    // buckets go out in order, so nothing could leave before finish().
    CHECK(comm.calls.empty());
    CHECK(b.launched_in_backward() == 0);
    b.finish();
    REQUIRE(comm.calls.size() == 4);
    CHECK(comm.calls[0] == "all_reduce of bucket 0 (0.0 MiB)");
    CHECK(comm.numels == std::vector<int64_t>{5, 2, 8, 12});
    // Averaged over the two (identical) ranks: the accumulated gradients.
    CHECK(w1.grad().to_vector() == g1);
    CHECK(w2.grad().to_vector() == g2);
    CHECK(w3.grad().to_vector() == g3);
    REQUIRE(unused.grad().defined());  // took part with zeros
    CHECK(unused.grad().to_vector() == std::vector<double>(5, 0.0));
  }

  SUBCASE("buckets complete inside backward when every parameter is reached") {
    RecordingComm comm;
    dist::GradBuckets b({w1, w2, w3}, comm, 1);
    b.arm();
    comm.in_backward = true;
    backward(loss());
    comm.in_backward = false;
    CHECK(b.launched_in_backward() == 3);
    CHECK(comm.during_backward == std::vector<bool>{true, true, true});
    CHECK(comm.numels == std::vector<int64_t>{2, 8, 12});  // w3, w2, w1
    b.finish();
    CHECK(comm.calls.size() == 3);
    // A second step reuses the buckets.
    for (Tensor* t : {&w1, &w2, &w3}) t->set_grad(Tensor());
    b.arm();
    backward(loss());
    b.finish();
    CHECK(comm.calls.size() == 6);
  }

  SUBCASE("a size limit that groups several parameters") {
    RecordingComm comm;
    // 40 bytes: w3 (8) fits, w2 (32) joins it (40), w1 (48) gets its own.
    dist::GradBuckets b({w1, w2, w3}, comm, 40);
    REQUIRE(b.bucket_count() == 2);
    CHECK(b.bucket_params(0) == std::vector<size_t>{2, 1});
    CHECK(b.bucket_params(1) == std::vector<size_t>{0});
    backward(loss());
    const auto g2 = w2.grad().to_vector();
    for (Tensor* t : {&w1, &w2, &w3}) t->set_grad(Tensor());
    b.arm();
    backward(loss());
    b.finish();
    CHECK(comm.numels == std::vector<int64_t>{10, 12});
    CHECK(w2.grad().to_vector() == g2);
  }
}

TEST_CASE("grad buckets: the hooks go with the buckets") {
  Tensor w = make_leaf({2}, 5);
  RecordingComm comm;
  {
    dist::GradBuckets b({w}, comm, 1 << 20);
    CHECK(b.bucket_count() == 1);
  }
  backward(sum(w * 2.0));  // no hook left pointing at the destroyed buckets
  CHECK(comm.calls.empty());
  CHECK(w.grad().to_vector() == std::vector<double>{2, 2});
}
