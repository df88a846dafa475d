// Runs the CUDA selective scan kernels (cuda/selective_scan_{fwd,bwd}_kernel.cuh)
// on the CPU and checks them against the CPU reference (float64), for machines
// without a GPU, through the fiber emulator of tests/cuda/emu.h (barriers and
// shuffles as scheduling points, warps and lanes in random orders): each case
// runs twice with different orders and must give the same bits. Shared memory
// and outputs start as NaN. The host-side helpers
// (argument structs, workspace layout, sum jobs) are the production ones; only
// the launches are emulated, and the float math is the host's (exp2f for
// ex2.approx), so results match the GPU's to rounding, not bit for bit.
//
// Build from the repository root (one line):
//   g++ -std=c++20 -O2 -I. -pthread tests/cuda/scan_emu.cpp ops/cpu/selective_scan.cpp core/thread_pool.cpp -o /tmp/scan_emu
// Run: /tmp/scan_emu [--quick]   (exit status 0 only if every check passed)
#include <chrono>
#include <string>

#include "tests/cuda/emu.h"

#include "cuda/selective_scan_bwd_kernel.cuh"
#include "cuda/selective_scan_fwd_kernel.cuh"
#include "cuda/selective_scan_seg_kernel.cuh"
#include "ops/cpu/selective_scan.h"

namespace {
std::vector<std::pair<const char*, const char*>> g_inputs;
}  // namespace
namespace coil::cuda::scan {
float4* dyn_smem() { return emu::smem(); }
// A prefetch outside the tensor it names is a bug even though it reads nothing.
void prefetch_hook(const void* base, int64_t byte_offset) {
  const char* c = static_cast<const char*>(base);
  for (const auto& r : g_inputs)
    if (c == r.first && byte_offset >= 0 && c + byte_offset < r.second) return;
  std::fprintf(stderr, "emu: prefetch outside its input (byte offset %lld)\n", (long long)byte_offset);
  std::exit(3);
}
}  // namespace coil::cuda::scan
// The two host entry points of the .cu files that the emulation needs (one-liners there too).
int64_t coil::cuda::scan_num_chunks(int64_t len) { return scan::num_tiles(len); }
// Segments as the launchers plan them on a 132-SM GPU, or forced by p.segments.
static coil::cuda::scan::SegPlan emu_fwd_plan(const coil::cuda::ScanParams& p) {
  return coil::cuda::scan::fwd_seg_plan(p, 132);
}
static coil::cuda::scan::SegPlan emu_bwd_plan(const coil::cuda::ScanParams& p) {
  return coil::cuda::scan::bwd_seg_plan(p, 132);
}
size_t coil::cuda::scan_bwd_workspace_bytes(const ScanParams& p) {
  return size_t(scan::ws_layout(p, emu_bwd_plan(p).n_seg).total) * sizeof(float);
}

using coil::DType;
using namespace coil::cuda;
using namespace coil::cuda::scan;

namespace {

// Calls f.template operator()<IO, BC, VB, VC>() for the instantiation p needs.
template <class F> void dispatch(const ScanParams& p, F&& f) {
  auto with_vc = [&]<class IO, class BC, bool VB>() {
    if (p.var_C) f.template operator()<IO, BC, VB, true>();
    else f.template operator()<IO, BC, VB, false>();
  };
  auto with_vb = [&]<class IO, class BC>() {
    if (p.var_B) with_vc.template operator()<IO, BC, true>();
    else with_vc.template operator()<IO, BC, false>();
  };
  auto with_bc = [&]<class IO>() {
    if (p.bc == DType::f32) with_vb.template operator()<IO, float>();
    else with_vb.template operator()<IO, coil::bf16>();
  };
  if (p.io == DType::f32) with_bc.template operator()<float>();
  else with_bc.template operator()<coil::bf16>();
}

void run_grid(unsigned gx, unsigned gy, int threads, size_t smem, const std::function<void()>& body, unsigned gz = 1) {
  emu::g_griddim = emu::Idx{gx, gy, gz};
  for (unsigned zz = 0; zz < gz; ++zz)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        emu::g_block = emu::Idx{x, y, zz};
        emu::run_block(threads, smem, body);
      }
}

template <bool kBwd> void emu_seg(const ScanParams& p, const SegArgs& a) {
  dispatch(p, [&]<class IO, class BC, bool VB, bool VC>() {
    run_grid(unsigned((p.dim + kCh - 1) / kCh), unsigned(p.batch), kThreads, seg_smem_bytes(),
             [&] { seg_kernel<IO, BC, kBwd>(a); }, unsigned(a.seg.n_seg - 1));
  });
}

// The inputs a kernel may prefetch (prefetch_tile), as [begin, end) byte
// ranges in g_inputs.
void set_inputs(const ScanParams& p, const void* dout) {
  g_inputs.clear();
  const int64_t es = int64_t(coil::element_size(p.io)), bs = int64_t(coil::element_size(p.bc));
  auto add = [](const void* base, int64_t bytes) {
    if (base) g_inputs.emplace_back(static_cast<const char*>(base), static_cast<const char*>(base) + bytes);
  };
  auto extent = [&](const int64_t* st) {  // elements spanned by a (batch, dim, len) view
    const Layout l = layout_of(st, p.dim, p.len);
    return (p.batch - 1) * l.sb + (p.dim - 1) * l.sd + p.len;
  };
  const int64_t rows = p.batch * p.dim * p.len;
  add(p.u, rows * es);
  add(p.delta, extent(p.delta_strides) * es);
  if (p.has_z) add(p.z, extent(p.z_strides) * es);
  add(dout, rows * es);
  add(p.B, (p.var_B ? p.batch * p.dstate * p.len : p.dim * p.dstate) * bs);
  add(p.C, (p.var_C ? p.batch * p.dstate * p.len : p.dim * p.dstate) * bs);
}

// Mirrors selective_scan_fwd / selective_scan_bwd with emulated launches.
void emu_fwd(const ScanParams& p) {
  if (p.batch == 0 || p.dim == 0) return;
  set_inputs(p, nullptr);
  const SegPlan plan = p.len > 0 ? emu_fwd_plan(p) : SegPlan{};
  std::vector<float> ws(size_t(fwd_ws_floats(p, plan)) + 4, NAN);
  const FwdArgs a = make_fwd_args(p, plan, ws.data());
  if (plan.n_seg > 1) emu_seg<false>(p, make_seg_args(p, plan, false, nullptr, a.seg_h, a.seg_dt));
  dispatch(p, [&]<class IO, class BC, bool VB, bool VC>() {
    run_grid(unsigned((p.dim + kCh - 1) / kCh), unsigned(p.batch), kThreads, fwd_smem_bytes(a),
             [&] { fwd_kernel<IO, BC, VB, VC>(a); }, unsigned(plan.n_seg));
  });
}

void emu_bwd(const ScanParams& p, const ScanGrads& g) {
  const bool work = p.batch > 0 && p.dim > 0 && p.len > 0;
  const SegPlan plan = emu_bwd_plan(p);
  if (work) {
    set_inputs(p, g.dout);
    const BwdArgs a = make_bwd_args(p, g, plan);
    if (plan.n_seg > 1) emu_seg<true>(p, make_seg_args(p, plan, true, g.dout, a.seg_g, a.seg_dt));
    dispatch(p, [&]<class IO, class BC, bool VB, bool VC>() {
      run_grid(unsigned((p.dim + kCh - 1) / kCh), unsigned(p.batch), kThreads, bwd_smem_bytes(a),
               [&] { bwd_kernel<IO, BC, VB, VC>(a); }, unsigned(plan.n_seg));
    });
  }
  SumJobs js{};
  const int nj = make_sum_jobs(p, g, work, plan.n_seg, js);
  if (nj > 0) run_grid(sum_grid_x(js, nj), unsigned(nj), 256, 0, [&] { sum_parts_kernel(js); });
  if (!work && g.dh0 && p.batch * p.dim > 0) {
    const size_t n = size_t(p.batch * p.dim * p.dstate);
    for (size_t i = 0; i < n; ++i) g.dh0[i] = g.dhT ? g.dhT[i] : 0.f;
  }
}

// ---- buffers in io / bc dtype ---------------------------------------------------------

struct Buf {
  DType t = DType::f32;
  std::vector<float4> mem;  // 16-byte aligned storage
  size_t n = 0;
  Buf() = default;
  Buf(size_t count, DType type) : t(type), mem((count * coil::element_size(type) + 15) / 16 + 1), n(count) {
    std::memset(mem.data(), 0xff, mem.size() * 16);  // NaN poison
  }
  void* p() { return n ? static_cast<void*>(mem.data()) : nullptr; }
  float* f() { return static_cast<float*>(p()); }
  void set(const std::vector<double>& v) {
    for (size_t i = 0; i < n; ++i) {
      if (t == DType::f32) f()[i] = float(v[i]);
      else static_cast<coil::bf16*>(p())[i] = coil::to_bf16(float(v[i]));
    }
  }
  std::vector<double> get() const {
    std::vector<double> v(n);
    const void* q = mem.data();
    for (size_t i = 0; i < n; ++i)
      v[i] = t == DType::f32 ? static_cast<const float*>(q)[i] : coil::to_float(static_cast<const coil::bf16*>(q)[i]);
    return v;
  }
  bool same_bits(const Buf& o) const { return std::memcmp(mem.data(), o.mem.data(), mem.size() * 16) == 0; }
};

double round_to(double x, DType t) {
  return t == DType::f32 ? double(float(x)) : double(coil::to_float(coil::to_bf16(float(x))));
}

double rel_err(const std::vector<double>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

struct Case {
  int64_t B, D, L, N;
  bool varB, varC, hasD, hasZ, hasBias, softplus, h0, dhT;
  DType io, bc;
};

constexpr int kNumOut = 11;
const char* kOutNames[kNumOut] = {"out", "hT", "du", "ddelta", "dz", "dA", "dB", "dC", "dD", "ddelta_bias", "dh0"};

struct Run {
  std::vector<Buf> outs;
};

bool run_case(const Case& c, uint64_t seed) {
  const char* se = std::getenv("COIL_SCAN_STRIDED");
  const bool strided = se && std::atoi(se) != 0;
  std::mt19937_64 g(seed);
  auto normal = [&] { return std::normal_distribution<double>(0, 1)(g); };
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(g); };
  const size_t BDL = c.B * c.D * c.L, BDN = c.B * c.D * c.N, DN = c.D * c.N, BNL = c.B * c.N * c.L;
  const size_t nB = c.varB ? BNL : DN, nC = c.varC ? BNL : DN;
  auto vec = [&](size_t n, DType t, double scale = 1, double shift = 0) {
    std::vector<double> v(n);
    for (auto& x : v) x = round_to(shift + scale * normal(), t);
    return v;
  };
  std::vector<double> u = vec(BDL, c.io), bias(c.D), delta(BDL), A(DN);
  for (auto& x : bias) x = double(float(std::log(std::expm1(std::exp(uniform(std::log(1e-3), std::log(1e-1)))))));
  for (auto& x : delta) x = round_to(c.softplus ? 0.5 * normal() + (c.hasBias ? 0.0 : -4.0) : uniform(1e-3, 0.2), c.io);
  if (!c.softplus && c.hasBias)
    for (auto& x : bias) x = double(float(uniform(0.0, 0.05)));
  for (int64_t d = 0; d < c.D; ++d)
    for (int64_t n = 0; n < c.N; ++n) A[d * c.N + n] = double(float(-(n + 1) * uniform(0.5, 1.5)));
  std::vector<double> Bv = vec(nB, c.bc), Cv = vec(nC, c.bc), Dv = vec(c.D, DType::f32), z = vec(c.hasZ ? BDL : 0, c.io);
  std::vector<double> h0 = vec(BDN, DType::f32), dout = vec(BDL, c.io), dhT = vec(BDN, DType::f32);

  coil::cpu::ScanDims s{c.B, c.D, c.L, c.N, c.varB, c.varC, c.hasD, c.hasZ, c.hasBias, c.softplus};
  std::vector<std::vector<double>> ref(kNumOut);
  const size_t counts[kNumOut] = {BDL, BDN, BDL, BDL, c.hasZ ? BDL : 0, DN, nB, nC, size_t(c.D), size_t(c.D), BDN};
  for (int i = 0; i < kNumOut; ++i) ref[i].resize(counts[i]);
  coil::cpu::selective_scan_fwd<double>(s, u.data(), delta.data(), A.data(), Bv.data(), Cv.data(),
                                        c.hasD ? Dv.data() : nullptr, c.hasZ ? z.data() : nullptr,
                                        c.hasBias ? bias.data() : nullptr, c.h0 ? h0.data() : nullptr, ref[0].data(),
                                        ref[1].data());
  coil::cpu::selective_scan_bwd<double>(s, u.data(), delta.data(), A.data(), Bv.data(), Cv.data(),
                                        c.hasD ? Dv.data() : nullptr, c.hasZ ? z.data() : nullptr,
                                        c.hasBias ? bias.data() : nullptr, c.h0 ? h0.data() : nullptr, dout.data(),
                                        c.dhT ? dhT.data() : nullptr, ref[2].data(), ref[3].data(), ref[5].data(),
                                        ref[6].data(), ref[7].data(), ref[8].data(), c.hasZ ? ref[4].data() : nullptr,
                                        ref[9].data(), ref[10].data());

  auto run = [&](uint64_t order_seed) {
    emu::g_order_rng.seed(order_seed);
    Buf bu(BDL, c.io), bdelta(BDL, c.io), bz(c.hasZ ? BDL : 0, c.io), bB(nB, c.bc), bC(nC, c.bc);
    Buf bA(DN, DType::f32), bD(c.D, DType::f32), bbias(c.D, DType::f32), bh0(BDN, DType::f32);
    Buf bdout(BDL, c.io), bdhT(BDN, DType::f32);
    // COIL_SCAN_STRIDED=1: delta and z (and so ddelta) stored (D, B, L), as
    // strided (B, D, L) views; ddelta is read back into (B, D, L) order.
    auto dbl = [&](const std::vector<double>& v) {
      if (!strided || v.empty()) return v;
      std::vector<double> o(v.size());
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t d = 0; d < c.D; ++d)
          for (int64_t t = 0; t < c.L; ++t) o[(d * c.B + b) * c.L + t] = v[(b * c.D + d) * c.L + t];
      return o;
    };
    bu.set(u), bdelta.set(dbl(delta)), bz.set(dbl(z)), bB.set(Bv), bC.set(Cv), bA.set(A), bD.set(Dv), bbias.set(bias);
    bh0.set(h0), bdout.set(dout), bdhT.set(dhT);
    Run r;
    r.outs.emplace_back(BDL, c.io);                                  // out
    r.outs.emplace_back(BDN, DType::f32);                            // hT
    r.outs.emplace_back(BDL, c.io);                                  // du
    r.outs.emplace_back(BDL, c.io);                                  // ddelta
    r.outs.emplace_back(c.hasZ ? BDL : 0, c.io);                     // dz
    r.outs.emplace_back(DN, DType::f32);                             // dA
    r.outs.emplace_back(nB, c.varB ? c.bc : DType::f32);             // dB
    r.outs.emplace_back(nC, c.varC ? c.bc : DType::f32);             // dC
    r.outs.emplace_back(c.D, DType::f32);                            // dD
    r.outs.emplace_back(c.D, DType::f32);                            // ddelta_bias
    r.outs.emplace_back(BDN, DType::f32);                            // dh0
    Buf chunks(size_t(c.B * c.D * scan_num_chunks(c.L) * c.N), DType::f32);
    ScanParams p;
    p.batch = c.B, p.dim = c.D, p.len = c.L, p.dstate = c.N;
    p.var_B = c.varB, p.var_C = c.varC, p.has_D = c.hasD, p.has_z = c.hasZ, p.has_delta_bias = c.hasBias;
    p.softplus = c.softplus, p.io = c.io, p.bc = c.bc;
    if (const char* e = std::getenv("COIL_SCAN_SEGMENTS")) p.segments = std::atoi(e);
    if (strided) {
      p.delta_strides[0] = p.z_strides[0] = c.L;
      p.delta_strides[1] = p.z_strides[1] = c.B * c.L;
    }
    p.u = bu.p(), p.delta = bdelta.p(), p.B = bB.p(), p.C = bC.p(), p.z = c.hasZ ? bz.p() : nullptr;
    p.A = bA.f(), p.D = c.hasD ? bD.f() : nullptr, p.delta_bias = c.hasBias ? bbias.f() : nullptr;
    p.h0 = c.h0 ? bh0.f() : nullptr;
    p.out = r.outs[0].p(), p.hT = r.outs[1].f(), p.chunk_states = chunks.f();
    Buf ws((scan_bwd_workspace_bytes(p) + 3) / 4, DType::f32);
    ScanGrads gr;
    gr.dout = bdout.p(), gr.dhT = c.dhT ? bdhT.f() : nullptr, gr.du = r.outs[2].p(), gr.ddelta = r.outs[3].p();
    gr.dz = c.hasZ ? r.outs[4].p() : nullptr, gr.dA = r.outs[5].f(), gr.dB = r.outs[6].p(), gr.dC = r.outs[7].p();
    gr.dD = r.outs[8].f(), gr.ddelta_bias = r.outs[9].f(), gr.dh0 = r.outs[10].f();
    gr.workspace = ws.p(), gr.workspace_bytes = ws.mem.size() * 16;
    emu_fwd(p);
    emu_bwd(p, gr);
    return r;
  };
  Run r1 = run(seed * 3 + 1), r2 = run(seed * 3 + 2);
  auto bdl = [&](std::vector<double> v) {  // (D, B, L) -> (B, D, L)
    if (!strided) return v;
    std::vector<double> o(v.size());
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t d = 0; d < c.D; ++d)
        for (int64_t t = 0; t < c.L; ++t) o[(b * c.D + d) * c.L + t] = v[(d * c.B + b) * c.L + t];
    return o;
  };

  bool ok = true;
  std::printf("B%lld D%lld L%lld N%lld %s%s io=%s bc=%s%s%s%s%s%s%s\n  ", (long long)c.B, (long long)c.D,
              (long long)c.L, (long long)c.N, c.varB ? "varB" : "constB", c.varC ? "+varC" : "+constC",
              coil::dtype_name(c.io), coil::dtype_name(c.bc), c.hasD ? " D" : "", c.hasZ ? " z" : "",
              c.hasBias ? " bias" : "", c.softplus ? " softplus" : "", c.h0 ? " h0" : "", c.dhT ? " dhT" : "");
  for (int i = 0; i < kNumOut; ++i) {
    if (ref[i].empty()) continue;
    const bool out_bf16 = r1.outs[i].t == DType::bf16;
    const double tol = out_bf16 ? 1e-2 : 1e-5;
    const double e = rel_err(i == 3 ? bdl(r1.outs[i].get()) : r1.outs[i].get(), ref[i]);
    const bool same = r1.outs[i].same_bits(r2.outs[i]);
    ok = ok && e <= tol && same;
    std::printf(" %s=%.1e%s%s", kOutNames[i], e, e <= tol ? "" : "(FAIL)", same ? "" : "(ORDER-DEPENDENT)");
  }
  std::printf("\n  -> %s\n", ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && !std::strcmp(argv[1], "--quick");
  const DType F = DType::f32, H = DType::bf16;
  std::vector<Case> cases = {
      // B  D    L    N   varB  varC  D     z     bias  softp h0    dhT   io bc
      {2, 5, 1, 16, true, true, true, true, true, true, true, true, F, F},
      {2, 7, 7, 16, true, true, true, true, true, true, false, false, F, F},
      {1, 33, 63, 16, true, true, true, true, true, true, true, true, F, F},
      {1, 33, 64, 16, true, true, true, false, true, true, true, true, F, F},
      {1, 33, 65, 16, true, true, false, true, false, true, true, false, F, F},
      {2, 40, 130, 16, true, true, true, true, true, true, true, true, H, H},
      // bf16 on the 16-byte path (L % 8 == 0): the forward's register prefetch,
      // a partial last tile; then selective B only, without z.
      {2, 40, 136, 16, true, true, true, true, true, true, true, true, H, H},
      {1, 33, 192, 16, true, false, true, false, true, true, false, true, H, H},
      {1, 37, 128, 16, true, true, true, true, true, true, false, false, H, H},
      {1, 36, 72, 16, true, true, true, true, true, true, true, true, H, F},
      {1, 36, 72, 16, true, true, true, true, true, true, true, true, F, H},
      {1, 9, 100, 1, true, true, true, true, true, true, true, true, F, F},
      {2, 3, 50, 5, true, true, true, true, true, true, true, true, F, F},
      {1, 37, 77, 20, true, true, true, true, true, true, true, true, F, F},
      {1, 6, 70, 64, true, true, true, true, true, true, true, true, H, H},
      {1, 3, 66, 256, true, true, true, true, true, true, true, true, F, F},
      {2, 3, 0, 16, true, true, true, true, true, true, true, true, F, F},
      {1, 40, 129, 16, true, true, false, false, false, false, false, false, F, F},
      {1, 35, 300, 16, true, true, true, true, true, true, true, true, F, F},
      {1, 35, 300, 20, true, false, true, true, true, true, true, true, H, H},
      {1, 33, 100, 16, true, true, true, true, true, false, true, true, F, F},
      {2, 40, 70, 16, false, false, true, true, true, true, true, true, F, F},
      {2, 40, 70, 16, true, false, true, true, true, true, true, true, F, F},
      {2, 40, 70, 16, false, true, true, true, true, true, true, true, H, H},
      {1, 20, 90, 48, false, true, true, true, true, true, true, true, F, F},
      {1, 20, 90, 48, true, false, true, true, true, true, true, true, F, H},
      {1, 20, 90, 48, false, false, true, true, true, true, true, true, F, F},
  };
  if (quick) cases.resize(7);
  // The backward's segment plan on 132 SMs (4 blocks each): fill the last wave.
  {
    ScanParams p{};
    p.dim = 1536, p.dstate = 16, p.var_B = p.var_C = true;
    const int64_t shapes[][3] = {{16, 2048, 2}, {32, 2048, 1}, {1, 65536, 22}, {24, 2048, 4}};
    for (const auto& sh : shapes) {
      p.batch = sh[0], p.len = sh[1];
      const int n = scan::bwd_seg_plan(p, 132).n_seg;
      std::printf("bwd segments B%lld L%lld: %d (want %lld)\n", (long long)sh[0], (long long)sh[1], n, (long long)sh[2]);
      if (n != sh[2]) {
        std::printf("  -> FAILED\n");
        return 1;
      }
    }
  }
  const uint64_t base = uint64_t(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  int failed = 0;
  for (size_t i = 0; i < cases.size(); ++i)
    if (!run_case(cases[i], base + 7919 * i)) ++failed;
  std::printf("%d passed, %d failed\n", int(cases.size()) - failed, failed);
  return failed ? 1 : 0;
}
