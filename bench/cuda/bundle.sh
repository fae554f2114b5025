#!/bin/bash
# bundle.sh [BUILD_DIR] - packs what the CUDA device runs need into .cudarun/ (git-ignored): the test
# and bench binaries of a build made here (nvcc 13, sm_80/sm_90), libdisopt, the CUDA module and the
# Debian libraries the device image lacks (BLIS, json-c, cmocka). Then, with the device tool:
#   run(command="bash bench/cuda/device_run.sh", carry=[".cudarun", ".ref"])
#   run(command="bash bench/cuda/device_grad.sh", carry=[".cudarun"])     (the GPU training ops only)
set -euo pipefail
B=${1:-build}
cd "$(dirname "$0")/../.."
mkdir -p .cudarun/bin .cudarun/lib
cp "$B"/tests/test_cuda "$B"/tests/test_golden "$B"/bench/golden_compare "$B"/bench/bench_cpu "$B"/tools/disopt_testmodel .cudarun/bin/
# the GPU training ops against the CPU kernels (run by device_grad.sh); built only with the CUDA backend
if [ -e "$B"/tests/test_cuda_grad ]; then cp "$B"/tests/test_cuda_grad .cudarun/bin/
else echo "bundle.sh: no $B/tests/test_cuda_grad (cmake --build $B --target test_cuda_grad): device_grad.sh will not run" >&2; fi
# the trainer on the GPU: test_train_step with DISOPT_TEST_BACKEND=cuda, bench_train (device_train.sh)
for f in tests/test_train_step bench/bench_train; do
  if [ -e "$B/$f" ]; then cp "$B/$f" .cudarun/bin/; else echo "bundle.sh: no $B/$f: device_train.sh will not run it" >&2; fi
done
cp -L "$B"/core/libdisopt.so.0 "$B"/cuda/libdisopt_cuda.so.0 .cudarun/lib/
cp -L /usr/lib/x86_64-linux-gnu/blis-serial/libblis.so.4 /lib/x86_64-linux-gnu/libcmocka.so.0 \
      /lib/x86_64-linux-gnu/libjson-c.so.5 .cudarun/lib/
du -sh .cudarun
