#!/usr/bin/env bash
# Builds a relocatable bundle of coil for a GPU host that has the NVIDIA
# driver and CUDA libraries but none of coil's other dependencies:
#   bash scripts/bundle.sh [OUT_DIR]      (default: .bundle)
# OUT_DIR gets coil, coil-run, coil_tests, the scan's GPU harness
# coil_scan_parity and lib/ with every shared library they need
# except glibc's, the driver, libstdc++/libgcc_s and cuBLAS/cuBLASLt/NCCL
# (the host's own are used). cudart is linked statically.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-.bundle}"
build=build/bundle

bash scripts/setup.sh >/dev/null
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOIL_BUNDLE=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  "${launcher[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
grep -q "COIL_WITH_CUDA" "$build/CMakeCache.txt" || true

rm -rf "$out"
mkdir -p "$out/lib"
bins=(coil coil-run coil_tests coil_scan_parity)
for b in "${bins[@]}"; do
  cp "$build/$b" "$out/"
  strip "$out/$b"
done
cp -r configs "$out/configs"
cp scripts/gpu-check.sh scripts/dp-check.sh scripts/nccl_busbw.py "$out/"
cp -r datasets "$out/datasets"  # tiny shakespeare for dp-check.sh's runs
skip='^(libc|libm|libdl|libpthread|librt|libresolv|ld-linux.*|libcuda|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libnccl)\.so'
for b in "${bins[@]}"; do
  ldd "$build/$b" | awk '/=> \//{print $1" "$3}' | while read -r name path; do
    if ! [[ "$name" =~ $skip ]]; then cp -L -n "$path" "$out/lib/$name"; fi
  done
done
echo "bundle: $out ($(du -sh "$out" | cut -f1)), libraries: $(ls "$out/lib" | wc -l)"
# One compressed file is what travels to the GPU host.
tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | xz -T0 -3 >"$out.tar.xz"
echo "archive: $out.tar.xz ($(du -sh "$out.tar.xz" | cut -f1))"
