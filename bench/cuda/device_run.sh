#!/bin/bash
# device_run.sh - on the lent GPU machine (see bundle.sh): CUDA op tests (every precision), the
# goldens on CUDA, tiles/s per precision and batch (two rounds), a per-op profile, and the 512x512
# equality of student B3 against PyTorch fp32/fp64 (needs .ref carried). Logs go to $OUT.
. "$(dirname "$0")/device_env.sh"
echo "== test_cuda"; $B/bin/test_cuda > $OUT/test_cuda.log 2>&1; echo "rc=$?"; grep -E "FAIL|PASSED|ERROR" $OUT/test_cuda.log | head
echo "== goldens on CUDA"; DISOPT_TEST_BACKEND=cuda $B/bin/test_golden > $OUT/golden_cuda.log 2>&1; echo "rc=$?"
for r in 1 2; do for p in fp32 tf32 fp16 bf16; do for b in 1 8 32; do
  echo "== round $r $p batch $b"; DISOPT_BENCH_PRECISION=$p $B/bin/bench_cpu $M -batch $b -runs 10 -threads 16 | tail -1
done; done; done 2>&1 | tee $OUT/bench.log
echo "== profile fp16 b32"; DISOPT_BENCH_PRECISION=fp16 $B/bin/bench_cpu $M -batch 32 -runs 2 -threads 16 -profile 2>&1 | head -30 > $OUT/prof_fp16_b32.log
if [ -d .ref ]; then
  mkdir -p /tmp/dc; python3 testdata/gen/device_check.py --out /tmp/dc --fp64 --threads 16 --only student_b3 > $OUT/device_check.log 2>&1
  for p in fp32 tf32 fp16 bf16; do echo "== student_b3 $p"; DISOPT_BENCH_PRECISION=$p $B/bin/golden_compare /tmp/dc/student_b3.safetensors /tmp/dc/student_b3_io.safetensors; done 2>&1 | tee $OUT/compare.log
fi
