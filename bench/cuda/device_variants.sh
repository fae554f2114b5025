#!/bin/bash
# device_variants.sh - on the lent GPU machine (carry .cudarun from bundle.sh, or .whl/cudapack/cudarun.tar.xz,
# and .ref for part 4): kernel changes measured against their switched-off selves in one process image:
#   1. test_cuda (every op in FP32/FP16/BF16 against the CPU backend, the bitwise A/B tests) and the goldens on CUDA;
#   2. bench_cpu tiles/s (student B3 512x512, -threads 16 -pinned, median of 10 runs) for each variant, VARIANTS
#      (default: "new" = as built; "nopipe" = DISOPT_CUDA_DW_NOPIPE=1; "old" = nopipe + DISOPT_CUDA_NO_VEC=1),
#      alternating, ROUNDS rounds (2), for CASES (default "fp16:32 fp32:32 fp16:8 bf16:32");
#   3. the per-node profile (each node waited for) of FP16 and FP32 b32, as built;
#   4. with .ref: student B3 against PyTorch fp32 (device_check.py) in FP32 and FP16.
# Logs go to $OUT (test_cuda.log, golden_cuda.log, variants.log, prof_*.log, compare.log).
[ -d .cudarun ] || tar xJf .whl/cudapack/cudarun.tar.xz || { echo "no .cudarun"; exit 1; }
. "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
echo "== test_cuda"; $B/bin/test_cuda > $OUT/test_cuda.log 2>&1; echo "rc=$?"
grep -E "^\[ +(FAILED|PASSED|  ERROR) +\]|DIFFER|pipelined !=|vector kernel !=" $OUT/test_cuda.log | head -20
echo "== goldens on CUDA"; DISOPT_TEST_BACKEND=cuda $B/bin/test_golden > $OUT/golden_cuda.log 2>&1; echo "rc=$?"
VARIANTS=${VARIANTS:-"new: nopipe:DISOPT_CUDA_DW_NOPIPE=1 old:DISOPT_CUDA_DW_NOPIPE=1,DISOPT_CUDA_NO_VEC=1"}
for r in $(seq 1 ${ROUNDS:-2}); do for c in ${CASES:-fp16:32 fp32:32 fp16:8 bf16:32}; do
  p=${c%%:*}; b=${c#*:}
  for v in $VARIANTS; do n=${v%%:*}; e=${v#*:}
    printf "round %s %-5s b%-3s %-8s %s\n" $r $p $b $n "$(env ${e//,/ } DISOPT_BENCH_PRECISION=$p $B/bin/bench_cpu $M -batch $b -runs 10 -threads 16 -pinned 2>&1 | tail -1)"
  done
done; done 2>&1 | tee $OUT/variants.log
for p in fp16 fp32; do
  DISOPT_BENCH_PRECISION=$p $B/bin/bench_cpu $M -batch 32 -runs 1 -threads 16 -pinned -profile > $OUT/prof_$p.log 2>&1
  echo "== profile $p b32"; sed -n '/per-op profile/,$p' $OUT/prof_$p.log | head -26
done
if [ -d .ref ]; then
  mkdir -p /tmp/dc; python3 testdata/gen/device_check.py --out /tmp/dc --fp64 --threads 16 --only student_b3 > $OUT/device_check.log 2>&1
  for p in fp32 fp16; do echo "== student_b3 $p"; DISOPT_BENCH_PRECISION=$p $B/bin/golden_compare /tmp/dc/student_b3.safetensors /tmp/dc/student_b3_io.safetensors; done 2>&1 | tee $OUT/compare.log
fi
