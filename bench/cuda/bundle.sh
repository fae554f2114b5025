#!/bin/bash
# bundle.sh [BUILD_DIR] - packs what the CUDA device runs need into .cudarun/ (git-ignored): the test
# and bench binaries of a build made here (nvcc 13, sm_80/sm_90), libdisopt, the CUDA module and the
# Debian libraries the device image lacks (BLIS, json-c, cmocka). Then, with the device tool:
#   run(command="bash bench/cuda/device_run.sh", carry=[".cudarun", ".ref"])
set -euo pipefail
B=${1:-build}
cd "$(dirname "$0")/../.."
mkdir -p .cudarun/bin .cudarun/lib
cp "$B"/tests/test_cuda "$B"/tests/test_golden "$B"/bench/golden_compare "$B"/bench/bench_cpu "$B"/tools/disopt_testmodel .cudarun/bin/
cp -L "$B"/core/libdisopt.so.0 "$B"/cuda/libdisopt_cuda.so.0 .cudarun/lib/
cp -L /usr/lib/x86_64-linux-gnu/blis-serial/libblis.so.4 /lib/x86_64-linux-gnu/libcmocka.so.0 \
      /lib/x86_64-linux-gnu/libjson-c.so.5 .cudarun/lib/
du -sh .cudarun
