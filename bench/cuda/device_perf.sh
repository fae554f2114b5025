#!/bin/bash
# device_perf.sh - on the lent GPU machine (carry .cudarun from bundle.sh): the CUDA tests, then where
# an inference's time goes: phases (input check, upload, network, download) with ordinary and
# pinned host buffers per precision and batch, and an nsys trace of the graph replay when nsys
# exists. Logs go to $OUT.
. "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $OUT/test_cuda.log 2>&1
echo "== test_cuda"; $B/bin/test_cuda >> $OUT/test_cuda.log 2>&1; echo "rc=$?"; grep -E "FAIL|PASSED|ERROR|refused" $OUT/test_cuda.log | head
echo "== goldens on CUDA"; DISOPT_TEST_BACKEND=cuda $B/bin/test_golden > $OUT/golden_cuda.log 2>&1; echo "rc=$?"
echo "== profile fp16 b32"; DISOPT_BENCH_PRECISION=fp16 $B/bin/bench_cpu $M -batch 32 -runs 2 -threads 16 -profile 2>&1 | head -30 > $OUT/prof_b32.log
echo "== profile fp32 b32"; DISOPT_BENCH_PRECISION=fp32 $B/bin/bench_cpu $M -batch 32 -runs 2 -threads 16 -profile 2>&1 | head -30 >> $OUT/prof_b32.log
# ours, then the authors' PyTorch model on the same weights (with TORCH=1 and .ref carried), then ours again
for r in 1 2; do
  if [ $r = 2 ] && [ -n "$TORCH" ] && [ -d .ref ]; then
    python3 bench/bench_torch_gpu.py --batches 1,8,32 --modes fp32,tf32,fp16,bf16 > $OUT/torch_gpu.log 2>&1
    grep NCHW $OUT/torch_gpu.log
  fi
  for p in ${PRECS:-fp32 fp16}; do for b in ${BATCHES:-8 32}; do for mem in ${MEMS:--pinned}; do
    echo "== round $r $p batch $b ${mem:-malloc}"
    DISOPT_BENCH_PRECISION=$p $B/bin/bench_cpu $M -batch $b -runs 8 -threads 16 -phases $mem | tail -2
  done; done; done
done 2>&1 | tee $OUT/phases.log
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-none}"
if [ -n "$NSYS" ]; then
  for p in fp32 fp16; do
    DISOPT_BENCH_PRECISION=$p $NSYS profile -o /tmp/tr_$p --force-overwrite true $B/bin/bench_cpu $M -batch 32 -runs 4 -threads 16 -pinned > /dev/null 2>&1
    $NSYS stats --report cuda_gpu_kern_sum,cuda_gpu_mem_time_sum,cuda_api_sum --format csv /tmp/tr_$p.nsys-rep > $OUT/nsys_$p.csv 2>&1
    head -c 3000 $OUT/nsys_$p.csv
  done
fi
if [ -d .ref ]; then
  mkdir -p /tmp/dc; python3 testdata/gen/device_check.py --out /tmp/dc --fp64 --modes --threads 16 --only student_b3 > $OUT/device_check.log 2>&1; grep autocast $OUT/device_check.log
  for p in fp32 tf32 fp16 bf16; do echo "== student_b3 $p"; DISOPT_BENCH_PRECISION=$p $B/bin/golden_compare /tmp/dc/student_b3.safetensors /tmp/dc/student_b3_io.safetensors; done 2>&1 | tee $OUT/compare.log | grep -E "==|fused|flip|PASS|FAIL" | head -40
fi
