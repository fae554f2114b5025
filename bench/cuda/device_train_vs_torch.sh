#!/bin/bash
# device_train_vs_torch.sh - issue 5's speed goal in one call: bench_train (student B3 + frozen teacher B3, batch 8,
# 512^2, the default trainer: our depthwise and head convs, fused + in-place BN pairs) per math mode, with the batch
# resident (as bench_torch_train.py keeps its batch on the device) and, for BF16, uploaded in the step; then the
# authors' step in PyTorch (bench_torch_train.py: fp32, tf32, amp16, bf16) on the same machine. Peak device memory
# of each process by nvidia-smi (100 ms samples, whole device) beside each tool's own figure.
#   run(command="bash bench/cuda/device_train_vs_torch.sh", carry=[".whl/cudapack", ".ref"])
set -u
[ -d .cudarun ] || tar xJf .whl/cudapack/cudarun.tar.xz || { echo "no .cudarun"; exit 1; }
. "$(dirname "$0")/device_env.sh"
O=/tmp/dvt; rm -rf $O; mkdir -p $O
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u +%FT%TZ
memrun() { # tag command...: the command's output to $O/$tag.log, its peak device memory printed
  local tag=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > $O/mem_$tag.txt 2>/dev/null &
  local mp=$!; "$@" > $O/$tag.log 2>&1; local rc=$?; kill $mp 2>/dev/null; wait $mp 2>/dev/null
  echo "$tag rc=$rc peak_smi_mib=$(sort -n $O/mem_$tag.txt | tail -1): $(grep -E "^model=|^mode=" $O/$tag.log | tr '\n' ' ')"
}
for v in ${OUR_VARIANTS:-bf16:-resident tf32:-resident fp32:-resident bf16:}; do
  m=${v%%:*}; f=${v#*:}
  memrun ours_${m}${f:+_res} timeout 120 $B/bin/bench_train -model student-b3 -batch 8 -size 512 -steps 10 -warmup 3 \
    -device cuda -math $m $f
done
[ -d .ref ] && memrun torch timeout 300 python3 bench/bench_torch_train.py --batch 8 --size 512 --steps 10 \
  --modes ${TORCH_MODES:-fp32,tf32,amp16,bf16}
grep -E "^mode=" $O/torch.log
tar czf $OUT/train_vs_torch.tgz -C $O . 2>/dev/null
