// train/dist: the TCP rendezvous store and the CPU collective backend, with
// 2 and 3 worker processes forked inside the test.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "train/dist/comm.h"
#include "train/dist/store.h"
#ifdef COIL_WITH_GLOO
#include "train/dist/gloo_comm.h"
#include "train/dist/nccl_comm.h"
#endif

using namespace coil;
using namespace coil::dist;

namespace {

constexpr size_t kN = 1001;

float value(int rank, size_t i) {
  // Mixed magnitudes and signs, so the summation order shows in the bits.
  float s = (i % 2) ? -1.0f : 1.0f;
  return s * (0.1f * static_cast<float>(rank + 1)) + static_cast<float>(i) * 1e-3f +
         static_cast<float>(rank) * 1e5f * static_cast<float>(i % 7 == 0);
}

launcher::WorkerEnv env_for(int rank, int world, int port) {
  launcher::WorkerEnv e;
  e.rank = rank;
  e.local_rank = rank;
  e.world_size = world;
  e.local_world_size = world;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

// Forks `world` children running fn(rank); returns their exit codes (a child
// that hangs is killed by alarm after 20 s and reports 128 + SIGALRM).
std::vector<int> run_group(int world, const std::function<int(int)>& fn) {
  std::vector<pid_t> pids;
  std::fflush(nullptr);  // children must not re-emit the parent's buffered output
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::alarm(20);
      int code = 1;
      try {
        code = fn(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        code = 2;
      }
      std::fflush(nullptr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t p : pids) {
    int st = 0;
    ::waitpid(p, &st, 0);
    codes.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  return codes;
}

std::filesystem::path temp_dir() {
  auto d = std::filesystem::temp_directory_path() /
           ("coil_dist_" + std::to_string(::getpid()) + "_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(d);
  return d;
}

std::vector<float> read_floats(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<float> v(kN);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(kN * sizeof(float)));
  return f.gcount() == static_cast<std::streamsize>(kN * sizeof(float)) ? v : std::vector<float>{};
}

using Factory = std::unique_ptr<Communicator> (*)(const launcher::WorkerEnv&,
                                                 std::chrono::milliseconds);

// rank_order: the backend sums in rank order, so the result must equal the
// rank-order sum exactly; otherwise it must be bit-identical across ranks
// and close to it.
void check_group(int world, Factory make = make_cpu_communicator, bool rank_order = true) {
  const int port = find_free_port();
  const auto dir = temp_dir();
  auto codes = run_group(world, [&](int rank) -> int {
    auto comm = make(env_for(rank, world, port), std::chrono::seconds(10));
    if (comm->rank() != rank || comm->world() != world) return 3;
    std::vector<float> x(kN);
    for (int it = 0; it < 3; ++it) {  // repeated: exercises the key cleanup
      for (size_t i = 0; i < kN; ++i) x[i] = value(rank, i) * static_cast<float>(it + 1);
      comm->all_reduce_sum(x.data(), x.size());
    }
    std::ofstream(dir / ("ar" + std::to_string(rank)), std::ios::binary)
        .write(reinterpret_cast<const char*>(x.data()),
               static_cast<std::streamsize>(x.size() * sizeof(float)));
    // Broadcast from root 1.
    std::vector<uint8_t> b(37, 0);
    if (rank == 1)
      for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(3 * i + 1);
    comm->broadcast(b.data(), b.size(), 1);
    for (size_t i = 0; i < b.size(); ++i)
      if (b[i] != static_cast<uint8_t>(3 * i + 1)) return 4;
    comm->barrier();
    return 0;
  });
  for (int r = 0; r < world; ++r) CHECK_MESSAGE(codes[r] == 0, "rank ", r, " exit ", codes[r]);
  std::vector<float> expect(kN);
  for (size_t i = 0; i < kN; ++i) {
    float s = value(0, i) * 3.0f;
    for (int r = 1; r < world; ++r) s += value(r, i) * 3.0f;  // rank order
    expect[i] = s;
  }
  for (int r = 0; r < world; ++r) {
    auto got = read_floats(dir / ("ar" + std::to_string(r)));
    REQUIRE(got.size() == kN);
    if (rank_order) {
      CHECK(std::memcmp(got.data(), expect.data(), kN * sizeof(float)) == 0);
    } else {
      auto first = read_floats(dir / "ar0");
      CHECK(std::memcmp(got.data(), first.data(), kN * sizeof(float)) == 0);
      size_t bad = 0;
      for (size_t i = 0; i < kN; ++i)
        bad += std::fabs(got[i] - expect[i]) > 1e-5f * (1.0f + std::fabs(expect[i]));
      CHECK(bad == 0);
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

TEST_CASE("dist: all_reduce_sum, broadcast and barrier over 2 processes") { check_group(2); }

TEST_CASE("dist: all_reduce_sum, broadcast and barrier over 3 processes") { check_group(3); }

#ifdef COIL_WITH_GLOO
TEST_CASE("dist: Gloo backend over 2 and 3 processes") {
  check_group(2, make_gloo_communicator, false);
  check_group(3, make_gloo_communicator, false);
}
#endif

TEST_CASE("dist: store set/get, world of one") {
  StoreOptions o;
  o.port = find_free_port();
  o.timeout = std::chrono::seconds(2);
  Store s(o);
  s.set("k", {1, 2, 3});
  CHECK(s.get("k") == std::vector<uint8_t>{1, 2, 3});
  CHECK(s.check("k"));
  s.erase("k");
  CHECK_FALSE(s.check("k"));
  s.barrier("solo");
  auto comm = make_cpu_communicator(launcher::WorkerEnv{.master_port = find_free_port()},
                                    std::chrono::seconds(2));
  float x[3] = {1, 2, 3};
  comm->all_reduce_sum(x, 3);
  CHECK(x[2] == 3.0f);
}

TEST_CASE("dist: a rank that never arrives gives a clear timeout") {
  StoreOptions o;
  o.port = find_free_port();
  o.world = 2;
  o.timeout = std::chrono::seconds(1);
  auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  {
    Store s(o);
    try {
      s.barrier("start");
    } catch (const Error& e) {
      msg = e.what();
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(msg == "rendezvous: rank 0 waited 1s for key barrier/start/1 at 127.0.0.1:" +
                   std::to_string(o.port));
  CHECK(secs < 2.5);
}

TEST_CASE("dist: no master gives 'cannot reach'") {
  StoreOptions o;
  o.port = find_free_port();  // nobody listens there
  o.rank = 1;
  o.world = 2;
  o.timeout = std::chrono::milliseconds(500);
  auto t0 = std::chrono::steady_clock::now();
  try {
    Store s(o);
    FAIL("connected to nothing");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) ==
          "rendezvous: rank 1 cannot reach 127.0.0.1:" + std::to_string(o.port) + " after 0.5s");
  }
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
}

TEST_CASE("dist: the NCCL id exchange names the rank that never arrived") {
  auto opts = [](int port, int rank, int world) {
    StoreOptions o;
    o.port = port;
    o.rank = rank;
    o.world = world;
    o.timeout = std::chrono::seconds(1);
    return o;
  };
  const std::vector<uint8_t> id = {7, 1, 2, 3};
  SUBCASE("everyone arrives") {
    const int port = find_free_port();
    Store s0(opts(port, 0, 2)), s1(opts(port, 1, 2));
    std::vector<uint8_t> got1;
    std::thread t([&] { got1 = exchange_unique_id(s1, {}); });
    CHECK(exchange_unique_id(s0, id) == id);
    t.join();
    CHECK(got1 == id);
  }
  SUBCASE("rank 2 of 3 never comes") {
    const int port = find_free_port();
    Store s0(opts(port, 0, 3)), s1(opts(port, 1, 3));
    std::string e0, e1;
    std::thread t([&] {
      try {
        exchange_unique_id(s1, {});
      } catch (const Error& e) {
        e1 = e.what();
      }
    });
    try {
      exchange_unique_id(s0, id);
    } catch (const Error& e) {
      e0 = e.what();
    }
    t.join();
    CHECK(e0 == "NCCL rendezvous: rank 2 of 3 never arrived (rank 0 waited 1 s at 127.0.0.1:" + std::to_string(port) +
                    ")");
    CHECK(e1.find("NCCL rendezvous: rank 1 waited 1 s for rank 0 to see every rank arrive") == 0);
  }
  SUBCASE("rank 0 never comes") {
    const int port = find_free_port();
    Store s0(opts(port, 0, 2)), s1(opts(port, 1, 2));  // rank 0's store serves, but rank 0 never publishes
    try {
      exchange_unique_id(s1, {});
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("NCCL rendezvous: rank 1 waited 1 s for the NCCL id from rank 0") == 0);
    }
  }
}
