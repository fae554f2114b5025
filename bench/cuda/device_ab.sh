#!/bin/bash
# device_ab.sh - one short call on the lent GPU machine that checks and times a kernel change:
#   1. test_cuda (every op, FP32/FP16/BF16, against the CPU backend) and the goldens on CUDA;
#   2. test_cuda_grad (the training ops against the CPU kernels), once;
#   3. tiles/s of student B3 at 512x512, batch 32, FP16 and FP32, with the new module and with
#      OLD_MODULE (another build's libdisopt_cuda.so.0, e.g. the kernels before the change) in
#      alternating rounds, in this one process tree on this one card;
#   4. (with .gdalrun carried and E2E_SIZE > 0) one gdal_translate -of BUILDINGS run on an
#      E2E_SIZE^2 scene with the driver's stage times (device_e2e.sh part b only).
# Carry .cudarun (bundle.sh) and, for 4, .gdalrun (bundle_gdal.sh). Logs go to $OUT (a tgz + a summary).
# Env: OLD_MODULE (.cudarun/old/libdisopt_cuda.so.0), ROUNDS (2), RUNS (6), E2E_SIZE (0), E2E_CASES.
. "$(dirname "$0")/device_env.sh"
O=/tmp/ab; rm -rf $O; mkdir -p $O
snap() { tar -czf $OUT/ab_logs.tgz -C $O . 2>/dev/null; }  # after every step: a killed call still returns logs
NEW=$B/lib/libdisopt_cuda.so.0; OLD=${OLD_MODULE:-$B/old/libdisopt_cuda.so.0}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $O/gpu.txt
echo "== test_cuda"; DISOPT_CUDA_MODULE=$NEW timeout 120 $B/bin/test_cuda > $O/test_cuda.log 2>&1; echo "rc=$?"
grep -E "^\[  (PASSED|FAILED|  ERROR) \]|FAILED|error" $O/test_cuda.log | head -12; snap
echo "== goldens on CUDA"; DISOPT_CUDA_MODULE=$NEW DISOPT_TEST_BACKEND=cuda timeout 60 $B/bin/test_golden > $O/golden_cuda.log 2>&1; echo "rc=$?"
grep -E "^\[  (PASSED|FAILED) \]" $O/golden_cuda.log | head -4; snap
if [ -x $B/bin/test_cuda_grad ]; then
  echo "== test_cuda_grad"; DISOPT_CUDA_MODULE=$NEW timeout ${GRAD_TIMEOUT:-60} $B/bin/test_cuda_grad > $O/test_cuda_grad.log 2>&1; echo "rc=$?"
  grep -E "random seed|^\[  (PASSED|FAILED|  SKIPPED|  ERROR) \]|FAILED" $O/test_cuda_grad.log | head -20; snap
fi
echo "== tiles/s, 512x512 batch 32 (median of $RUNS runs; new / old module alternating)"
for r in $(seq 1 ${ROUNDS:-2}); do for p in fp16 fp32; do for mod in new old; do
  f=$NEW; [ $mod = old ] && f=$OLD; [ -f "$f" ] || continue
  line=$(DISOPT_CUDA_MODULE=$f DISOPT_BENCH_PRECISION=$p timeout 60 $B/bin/bench_cpu $M -batch 32 -runs ${RUNS:-6} -threads 16 -pinned 2>&1 | tail -1)
  echo "round $r $p $mod: $line"
done; done; done 2>&1 | tee $O/bench.log; snap
if [ "${E2E_SIZE:-0}" != 0 ] && [ -f .gdalrun/gdal.tar.xz ]; then
  echo "== end to end ${E2E_SIZE}^2"
  OUT=$O/e2e SIZE=$E2E_SIZE BIGFMT=GTIFF SCENES=none BIGCASES="${E2E_CASES:-CUDA:FP16:32}" BUDGET=200 \
    timeout 200 bash bench/cuda/device_e2e.sh > $O/e2e_stdout.log 2>&1
  grep -E "^(cur|old) |tiler run" $O/e2e/bench.txt
fi
tar -czf $OUT/ab_logs.tgz -C $O .
cp $O/bench.log $OUT/ 2>/dev/null
