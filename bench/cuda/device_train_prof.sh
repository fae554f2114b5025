#!/bin/bash
# device_train_prof.sh - on the lent GPU machine (carry .whl/cudapack): where the GPU time of the trainer's step goes,
# by the NVIDIA tools (no synchronisation per node as in bench_train -profile):
#   1. nsys: kernel time summary of bench_train (student B3 + frozen teacher, batch 8, 512^2, MATH, resident batch,
#      WARMUP + STEPS steps): $OUT/nsys_train.csv, the top 45 kernels printed;
#   2. ncu (NCU_REGEX, default the depthwise backward kernels): speed of light, occupancy, warp states of NCU_COUNT
#      launches after NCU_SKIP: $OUT/ncu_train.txt.
#   run(command="bash bench/cuda/device_train_prof.sh", carry=[".whl/cudapack"])
set -u
[ -d .cudarun ] || tar xJf .whl/cudapack/cudarun.tar.xz || { echo "no .cudarun"; exit 1; }
. "$(dirname "$0")/device_env.sh"
find_tool() { command -v "$1" || ls /usr/local/cuda/bin/$1 /opt/nvidia/nsight-*/*/$1 /opt/nvidia/nsight-*/*/bin/$1 \
  /usr/local/cuda/nsight-*/$1 /usr/local/cuda/nsight-*/bin/$1 2>/dev/null | head -1; }
NSYS=$(find_tool nsys); NCU=$(find_tool ncu)
echo "nsys: ${NSYS:-none}; ncu: ${NCU:-none}"
BT="$B/bin/bench_train -model student-b3 -batch 8 -size 512 -device cuda -math ${MATH:-bf16} -resident"
if [ -n "$NSYS" ]; then
  timeout 200 $NSYS profile -o /tmp/trp --force-overwrite true $BT -steps ${STEPS:-3} -warmup ${WARMUP:-2} > $OUT/nsys_train_run.log 2>&1
  tail -2 $OUT/nsys_train_run.log
  $NSYS stats --report cuda_gpu_kern_sum --format csv /tmp/trp.nsys-rep > $OUT/nsys_train.csv 2>&1
  echo "== nsys: top kernels over $((${STEPS:-3} + ${WARMUP:-2})) steps (Time(%),Total Time (ns),Instances,Avg (ns),...,Name)"
  grep -E '^[0-9]' $OUT/nsys_train.csv | head -45 | awk -F, '{printf "%6s %12s %6s %10s  ", $1, $2, $3, $4; for (i = 9; i <= NF; i++) printf "%s%s", $i, (i < NF ? "," : ""); print ""}' | cut -c1-190
fi
if [ -n "$NCU" ]; then
  timeout 240 $NCU -k regex:"${NCU_REGEX:-k_dw_bwd}" --launch-skip ${NCU_SKIP:-0} --launch-count ${NCU_COUNT:-6} \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    $BT -steps 1 -warmup 0 > $OUT/ncu_train.txt 2>&1
  grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Grid Size|Block Size|Stall|Warp Cycles Per Issued" $OUT/ncu_train.txt | head -120 | cut -c1-160
fi
