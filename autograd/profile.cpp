#include "autograd/profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "core/cuda_context.h"

namespace coil::profile {

namespace {
using Clock = std::chrono::steady_clock;
struct Stat {
  int64_t calls = 0;
  double ms = 0;
};
std::mutex g_mu;
bool g_on = [] {
  const char* e = std::getenv("COIL_PROFILE");
  return e && std::string(e) == "1";
}();
bool g_shapes = [] {
  const char* e = std::getenv("COIL_PROFILE_SHAPES");
  return e && std::string(e) == "1";
}();
std::map<std::string, Stat> g_stats;
Clock::time_point g_last = Clock::now(), g_bwd_start;

void sync(Device d) {
  if (d.is_cuda()) cuda_ctx::synchronize(d.index);
}
}  // namespace

bool enabled() { return g_on; }
void enable(bool on) {
  g_on = on;
  g_last = Clock::now();
}
bool shapes() { return g_shapes; }
void enable_shapes(bool on) { g_shapes = on; }
void reset() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_stats.clear();
  g_last = Clock::now();
}

void forward_mark(const char* op, Device device) {
  if (!g_on) return;
  sync(device);
  auto now = Clock::now();
  std::lock_guard<std::mutex> lock(g_mu);
  Stat& s = g_stats[std::string(op) + " fwd"];
  s.calls++;
  s.ms += std::chrono::duration<double, std::milli>(now - g_last).count();
  g_last = now;
}

void backward_begin(Device device) {
  if (!g_on) return;
  sync(device);
  g_bwd_start = Clock::now();
}

void backward_end(const std::string& op, Device device) {
  if (!g_on) return;
  sync(device);
  auto now = Clock::now();
  std::lock_guard<std::mutex> lock(g_mu);
  Stat& s = g_stats[op + " bwd"];
  s.calls++;
  s.ms += std::chrono::duration<double, std::milli>(now - g_bwd_start).count();
  g_last = now;
}

std::string report() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<std::pair<std::string, Stat>> rows(g_stats.begin(), g_stats.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.ms > b.second.ms; });
  double total = 0;
  for (auto& r : rows) total += r.second.ms;
  std::string out;
  char buf[320];
  for (auto& [name, s] : rows) {
    std::snprintf(buf, sizeof buf, "  %-*s %8lld calls %10.2f ms %6.1f%%\n", g_shapes ? 64 : 28, name.c_str(),
                  (long long)s.calls, s.ms, total > 0 ? 100 * s.ms / total : 0);
    out += buf;
  }
  return out;
}

}  // namespace coil::profile
