#!/usr/bin/env bash
# On a GPU host, from a bundle made by scripts/bundle.sh:
#   bash scripts/gpu-check.sh BUNDLE_DIR OUT_DIR [bench]
# 1. the GPU test cases (parity against the CPU kernels) and the scan's
#    standalone harness (coil_scan_parity),
# 2. compute-sanitizer memcheck and racecheck over them,
# 3. with "bench": the benchmarks (coil bench ...),
# full logs in OUT_DIR, a short table last.
set -uo pipefail
bundle="$(cd "$1" && pwd)"
out="$2"
mode="${3:-}"
mkdir -p "$out"
cd "$bundle"
export NCCL_NVLS_ENABLE=0
gpu_cases='*cuda*,*gpu*'
summary=()

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

./coil_tests -tc="$gpu_cases" >"$out/gpu-tests.log" 2>&1
rc=$?
summary+=("gpu tests: rc=$rc  $(grep -E '^\[doctest\] (test cases|assertions)' "$out/gpu-tests.log" | tr -s ' ' | paste -sd ' ')")

# NCCL on one GPU (world 1); kept out of compute-sanitizer below.
./coil_tests -tc='*nccl*' >"$out/nccl-tests.log" 2>&1
rc=$?
summary+=("nccl tests: rc=$rc  $(grep -E '^\[doctest\] (test cases|assertions)' "$out/nccl-tests.log" | tr -s ' ' | paste -sd ' ')")

# The scan kernels against the float64 CPU reference, odd sizes and variants.
./coil_scan_parity --check >"$out/scan-parity.log" 2>&1
rc=$?
summary+=("scan harness: rc=$rc  $(grep -E '^parity:' "$out/scan-parity.log")")

./coil_tests >"$out/all-tests.log" 2>&1
rc=$?
summary+=("all tests: rc=$rc  $(grep -E '^\[doctest\] test cases' "$out/all-tests.log" | tr -s ' ')")

if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    timeout "${SANITIZER_TIMEOUT:-240}" compute-sanitizer --tool "$tool" --error-exitcode 9 ./coil_tests -tc="$gpu_cases" >"$out/sanitizer-$tool.log" 2>&1
    rc=$?
    summary+=("compute-sanitizer $tool: rc=$rc  $(grep -E 'ERROR SUMMARY' "$out/sanitizer-$tool.log" | tail -1)")
  done
fi

if [ "$mode" = bench ]; then
  ./coil bench all 2>&1 | tee "$out/bench.log"
  ./coil_scan_parity --bench 2>&1 | tail -8 | tee -a "$out/bench.log"
  echo "== COIL_SCAN_PREFETCH=0" | tee -a "$out/bench.log"
  COIL_SCAN_PREFETCH=0 ./coil bench scan 2>&1 | tee -a "$out/bench.log"
  for b in 32 16; do
    ./coil bench step --config configs/mamba-130m.yaml --micro-batch "$b" 2>&1 | tail -2 | tee -a "$out/bench.log"
  done
  ./coil bench step --config configs/mamba-370m.yaml --micro-batch 16 2>&1 | tail -2 | tee -a "$out/bench.log"
  ./coil bench generate --config configs/mamba-130m.yaml --batch 1,64 2>&1 | tee -a "$out/bench.log"
  # Batch 64 with the decode options that are off by default (A/B on the same machine).
  for opt in "COIL_DECODE_MMA=1" "COIL_DECODE_CONV_XPROJ=1" "COIL_DECODE_MMA=1 COIL_DECODE_CONV_XPROJ=1"; do
    echo "== $opt" | tee -a "$out/bench.log"
    env $opt ./coil bench generate --config configs/mamba-130m.yaml --batch 64 2>&1 | tee -a "$out/bench.log"
  done
fi

echo
echo "==== summary ($(head -1 "$out/gpu.txt"))"
printf '%s\n' "${summary[@]}"
