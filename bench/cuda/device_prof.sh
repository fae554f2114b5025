#!/bin/bash
# device_prof.sh - on the lent GPU machine (carry .cudarun from bundle.sh): where the GPU time of one
# student-B3 batch goes, measured by the NVIDIA tools rather than by synchronising node by node:
#   1. nsys: kernel time summary of the CUDA-graph replay (bench_cpu, 512x512, batch 32, FP16 and FP32);
#   2. ncu: speed of light (compute and memory throughput against the H100's peaks), occupancy and
#      warp stall reasons of the depthwise kernels (graphs off so that each launch is profiled).
# Logs go to $OUT: nsys_<prec>.csv, ncu_dw_sol.txt, ncu_dw_detail.txt.
# Env: PRECS (fp16 fp32), NO_NCU=1 (nsys only), NCU_COUNT (launches of the depthwise kernel with the SOL section: 30).
. "$(dirname "$0")/device_env.sh"
find_tool() { command -v "$1" || ls /usr/local/cuda/bin/$1 /opt/nvidia/nsight-*/*/$1 /opt/nvidia/nsight-*/*/bin/$1 \
  /usr/local/cuda/nsight-*/$1 /usr/local/cuda/nsight-*/bin/$1 2>/dev/null | head -1; }
NSYS=$(find_tool nsys); NCU=$(find_tool ncu); [ -z "${NO_NCU:-}" ] || NCU=
echo "nsys: ${NSYS:-none}; ncu: ${NCU:-none}"
if [ -n "$NSYS" ]; then
  for p in ${PRECS:-fp16 fp32}; do
    DISOPT_BENCH_PRECISION=$p $NSYS profile -o /tmp/tr_$p --force-overwrite true $B/bin/bench_cpu $M -batch 32 -runs 4 \
      -threads 16 -pinned > $OUT/nsys_run_$p.log 2>&1
    $NSYS stats --report cuda_gpu_kern_sum --format csv /tmp/tr_$p.nsys-rep > $OUT/nsys_$p.csv 2>&1
    echo "== nsys $p: top kernels (total ns over 5 batches of 32: warm-up + 4 runs)"; head -25 $OUT/nsys_$p.csv | cut -c1-220
  done
fi
if [ -n "$NCU" ]; then
  DISOPT_CUDA_NO_GRAPH=1 DISOPT_BENCH_PRECISION=fp16 timeout 240 $NCU -k regex:depthwise --launch-count ${NCU_COUNT:-30} \
    --section SpeedOfLight $B/bin/bench_cpu $M -batch 32 -runs 1 -threads 16 > $OUT/ncu_dw_sol.txt 2>&1
  grep -E "k_depthwise|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Grid Size" $OUT/ncu_dw_sol.txt | head -150
  DISOPT_CUDA_NO_GRAPH=1 DISOPT_BENCH_PRECISION=fp16 timeout 200 $NCU -k regex:depthwise --launch-skip 2 --launch-count 1 \
    --set detailed $B/bin/bench_cpu $M -batch 32 -runs 1 -threads 16 > $OUT/ncu_dw_detail.txt 2>&1
  DISOPT_CUDA_NO_GRAPH=1 DISOPT_BENCH_PRECISION=fp16 timeout 200 $NCU -k regex:depthwise --launch-skip 25 --launch-count 1 \
    --set detailed $B/bin/bench_cpu $M -batch 32 -runs 1 -threads 16 >> $OUT/ncu_dw_detail.txt 2>&1
  grep -E "k_depthwise|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Stall|One or More|No Eligible|Issued Warp" \
    $OUT/ncu_dw_detail.txt | head -80
fi
