// train/launcher: coil-run end to end (sh workers) and worker env parsing.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

#include "train/launcher/env.h"
#include "train/launcher/launcher.h"

using namespace coil::launcher;

namespace {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
  double seconds = 0;
};

// coil-run as built next to this test binary, or beside it where the tests
// were copied (a bundle on a GPU host).
std::string coil_run_bin() {
  if (::access(COIL_RUN_BIN, X_OK) == 0) return COIL_RUN_BIN;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return COIL_RUN_BIN;
  self[n] = '\0';
  if (char* slash = std::strrchr(self, '/')) std::strcpy(slash + 1, "coil-run");
  return self;
}

// Runs coil-run with `args` (already shell-quoted) through /bin/sh.
RunResult coil_run(const std::string& args) {
  std::string cmd = "'";
  cmd += coil_run_bin();
  cmd += "' " + args + " 2>&1";
  auto t0 = std::chrono::steady_clock::now();
  FILE* f = ::popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  RunResult r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.output.append(buf, n);
  int st = ::pclose(f);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("coil-run: torchrun variables reach every worker, output is prefixed") {
  auto r = coil_run(
      "--nproc-per-node 3 -- /bin/sh -c 'echo R=$RANK L=$LOCAL_RANK W=$WORLD_SIZE LW=$LOCAL_WORLD_SIZE "
      "G=$GROUP_RANK A=$MASTER_ADDR P=$MASTER_PORT RC=$TORCHELASTIC_RESTART_COUNT "
      "MR=$TORCHELASTIC_MAX_RESTARTS OMP=$OMP_NUM_THREADS NV=$NCCL_NVLS_ENABLE; printf partial >&2'");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  for (int i = 0; i < 3; ++i) {
    std::string R = std::to_string(i);
    CHECK(has(r.output, "[rank " + R + "] R=" + R + " L=" + R +
                            " W=3 LW=3 G=0 A=127.0.0.1 P=29500 RC=0 MR=0 OMP=1 NV=0\n"));
    CHECK(has(r.output, "[rank " + R + "] partial\n"));  // unterminated last line is flushed
  }
}

TEST_CASE("coil-run: multi-node ranks and --standalone port") {
  auto r = coil_run(
      "--nproc-per-node 2 --nnodes 3 --node-rank 1 --master-addr=hostA --master_port 1234 -- "
      "/bin/sh -c 'echo R=$RANK L=$LOCAL_RANK W=$WORLD_SIZE G=$GROUP_RANK A=$MASTER_ADDR P=$MASTER_PORT'");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(has(r.output, "[rank 2] R=2 L=0 W=6 G=1 A=hostA P=1234\n"));
  CHECK(has(r.output, "[rank 3] R=3 L=1 W=6 G=1 A=hostA P=1234\n"));

  auto s = coil_run("--standalone --nproc-per-node 1 -- /bin/sh -c 'echo A=$MASTER_ADDR P=$MASTER_PORT OMP=$OMP_NUM_THREADS.'");
  INFO(s.output);
  CHECK(s.exit_code == 0);
  CHECK(has(s.output, "[rank 0] A=127.0.0.1 P="));
  CHECK(!has(s.output, "P=29500"));
  CHECK(has(s.output, "OMP=.\n"));  // not set for a single worker
}

TEST_CASE("coil-run: a failing worker stops the group") {
  auto r = coil_run(
      "--nproc-per-node 2 -- /bin/sh -c 'if [ $RANK = 1 ]; then sleep 0.2; exit 3; fi; echo started; sleep 30; echo late'");
  INFO(r.output);
  CHECK(r.exit_code == 3);
  CHECK(r.seconds < 5.0);
  CHECK(has(r.output, "coil-run: rank 1 (pid "));
  CHECK(has(r.output, ") failed with exit status 3"));
  CHECK(has(r.output, "[rank 0] started"));
  CHECK(!has(r.output, "late"));
}

TEST_CASE("coil-run: a worker killed by a signal is reported") {
  auto r = coil_run("--nproc-per-node 2 -- /bin/sh -c 'if [ $RANK = 0 ]; then sleep 0.1; kill -9 $$; fi; sleep 30'");
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.seconds < 5.0);
  CHECK(has(r.output, "coil-run: rank 0 (pid "));
  CHECK(has(r.output, "was killed by signal SIGKILL"));
}

TEST_CASE("coil-run: --max-restarts restarts the whole group") {
  const std::string script =
      "-- /bin/sh -c 'echo try $TORCHELASTIC_RESTART_COUNT of $TORCHELASTIC_MAX_RESTARTS; "
      "if [ $TORCHELASTIC_RESTART_COUNT = 0 ] && [ $RANK = 1 ]; then exit 4; fi'";
  auto r = coil_run("--nproc-per-node 2 --max-restarts 1 " + script);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(has(r.output, "[rank 1] try 0 of 1"));
  CHECK(has(r.output, "[rank 0] try 1 of 1"));
  CHECK(has(r.output, "[rank 1] try 1 of 1"));
  CHECK(has(r.output, "restarting the worker group"));

  auto no = coil_run("--nproc-per-node 2 " + script);
  INFO(no.output);
  CHECK(no.exit_code == 4);
  CHECK(!has(no.output, "try 1"));
}

TEST_CASE("coil-run: bad flags") {
  using V = std::vector<std::string>;
  CHECK_THROWS_WITH_AS(parse_launch_args(V{"--nproc-per-node", "0", "--", "x"}),
                       doctest::Contains("--nproc-per-node"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_launch_args(V{"--nproc-per-node", "2", "x"}), doctest::Contains("missing '--'"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_launch_args(V{"--nproc-per-node", "2", "--"}), doctest::Contains("no worker program"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_launch_args(V{"--bogus", "--", "x"}), doctest::Contains("unknown flag"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_launch_args(V{"--nnodes", "2", "--node-rank", "2", "--", "x"}),
                       doctest::Contains("--node-rank"), std::invalid_argument);
  CHECK_THROWS_AS(parse_launch_args(V{"--master-port", "70000", "--", "x"}), std::invalid_argument);
  auto o = parse_launch_args(V{"--nproc_per_node=4", "--max-restarts", "2", "--", "prog", "--flag"});
  CHECK(o.nproc_per_node == 4);
  CHECK(o.max_restarts == 2);
  CHECK(o.program == V{"prog", "--flag"});

  auto r = coil_run("--nproc-per-node 0 -- /bin/true");
  CHECK(r.exit_code == 2);
  CHECK(has(r.output, "coil-run: --nproc-per-node"));
  auto m = coil_run("--nproc-per-node 1 /bin/true");
  CHECK(m.exit_code == 2);
  CHECK(has(m.output, "missing '--'"));
}

TEST_CASE("worker_env: torchrun, Slurm and defaults") {
  auto d = worker_env_from_map({});
  CHECK(d.source == "default");
  CHECK(d.rank == 0);
  CHECK(d.world_size == 1);
  CHECK(d.master_port == 29500);

  auto t = worker_env_from_map({{"RANK", "5"}, {"LOCAL_RANK", "1"}, {"WORLD_SIZE", "8"}, {"LOCAL_WORLD_SIZE", "4"},
                                {"MASTER_ADDR", "h0"}, {"MASTER_PORT", "1111"}, {"TORCHELASTIC_RESTART_COUNT", "2"},
                                {"SLURM_PROCID", "0"}});
  CHECK(t.source == "torchrun");
  CHECK(t.rank == 5);
  CHECK(t.local_rank == 1);
  CHECK(t.group_rank == 1);
  CHECK(t.master_addr == "h0");
  CHECK(t.master_port == 1111);
  CHECK(t.restart_count == 2);

  auto s = worker_env_from_map({{"SLURM_PROCID", "9"}, {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS", "16"},
                                {"SLURM_TASKS_PER_NODE", "8(x2)"}, {"SLURM_NODEID", "1"},
                                {"SLURM_JOB_NODELIST", "node[01-04],other"}, {"SLURM_JOB_ID", "123456"}});
  CHECK(s.source == "slurm");
  CHECK(s.rank == 9);
  CHECK(s.local_rank == 1);
  CHECK(s.world_size == 16);
  CHECK(s.local_world_size == 8);
  CHECK(s.group_rank == 1);
  CHECK(s.master_addr == "node01");
  CHECK(s.master_port == 29500 + 456);

  auto s2 = worker_env_from_map({{"SLURM_PROCID", "2"}, {"SLURM_LOCALID", "2"}, {"SLURM_NTASKS", "4"},
                                 {"SLURM_NTASKS_PER_NODE", "4"}, {"SLURM_JOB_NODELIST", "gpu-a,gpu-b"},
                                 {"MASTER_PORT", "4000"}});
  CHECK(s2.local_world_size == 4);
  CHECK(s2.group_rank == 0);
  CHECK(s2.master_addr == "gpu-a");
  CHECK(s2.master_port == 4000);

  CHECK(slurm_first_host("single") == "single");
  CHECK(slurm_first_host("rack[3-4]n[07,09]") == "rack3n07");
  CHECK(slurm_first_host("a[1,5-7],b[2]") == "a1");
  CHECK(slurm_tasks_on_node("2(x3),1", 2) == 2);
  CHECK(slurm_tasks_on_node("2(x3),1", 3) == 1);
}

TEST_CASE("worker_env: malformed values name the variable") {
  CHECK_THROWS_WITH(worker_env_from_map({{"RANK", "x1"}}), doctest::Contains("RANK='x1'"));
  CHECK_THROWS_WITH(worker_env_from_map({{"RANK", "4"}, {"WORLD_SIZE", "4"}}), doctest::Contains("world size"));
  CHECK_THROWS_WITH(worker_env_from_map({{"RANK", "0"}, {"MASTER_PORT", "99999"}}), doctest::Contains("MASTER_PORT"));
  CHECK_THROWS_WITH(worker_env_from_map({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "two"}}),
                    doctest::Contains("SLURM_NTASKS="));
  CHECK_THROWS_WITH(worker_env_from_map({{"SLURM_PROCID", "0"}, {"SLURM_TASKS_PER_NODE", "8(y2)"}}),
                    doctest::Contains("SLURM_TASKS_PER_NODE"));
  CHECK_THROWS_WITH(worker_env_from_map({{"SLURM_PROCID", "0"}, {"SLURM_JOB_NODELIST", "node[01-04"}}),
                    doctest::Contains("SLURM_JOB_NODELIST"));
  CHECK_THROWS_WITH(worker_env_from_map({{"SLURM_PROCID", "0"}, {"SLURM_JOB_NODELIST", "node[a-b]"}}),
                    doctest::Contains("SLURM_JOB_NODELIST"));
}
