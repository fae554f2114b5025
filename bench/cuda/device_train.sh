#!/bin/bash
# device_train.sh - the trainer on the lent GPU (issue 5), one call:
#   1. test_train_step with DISOPT_TEST_BACKEND=cuda: the float32 trainer on the GPU against the authors'
#      PyTorch fixtures (loss terms, every parameter gradient, BN statistics, the SGD step, ten steps),
#      the float64 reference on the CPU as in CI;
#   2. bench_train: ms/step of the stage-2 step (student-b3 + frozen teacher-b3, batch BATCH, SIZE^2,
#      dropout and drop-connect on), peak device memory from nvidia-smi (100 ms samples);
#   3. with .ref carried and bench/bench_torch_train.py present: the authors' step in PyTorch, same
#      batch and size (TORCH_MODES).
# Carry .cudarun (bundle.sh) and, for 3, .ref. Logs: $OUT/train_logs.tgz and $OUT/summary.txt.
# Env: BATCH (8), SIZE (512), STEPS (10), TORCH_MODES (fp32,tf32,amp16,bf16), SKIP_TEST=1, STEP512=1 (below), ONLY_STEP512=1 (stop after the checks).
. "$(dirname "$0")/device_env.sh"
O=/tmp/dtrain; rm -rf $O; mkdir -p $O
S=$OUT/summary.txt; : > $S
snap() { tar -czf $OUT/train_logs.tgz -C $O . 2>/dev/null; }
say() { echo "$*" | tee -a $S; }
BATCH=${BATCH:-8}; SIZE=${SIZE:-512}; STEPS=${STEPS:-10}
say "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader) $(date -u +%FT%TZ)"
if [ "${SKIP_TEST:-0}" != 1 ] && [ -x $B/bin/test_cuda_grad ]; then
  say "== test_cuda_grad (every GPU training op against the CPU kernel)"
  timeout 120 $B/bin/test_cuda_grad > $O/test_cuda_grad.log 2>&1
  say "rc=$?"; grep -E "^\[ +(PASSED|FAILED|  ERROR) +\]|FAILED" $O/test_cuda_grad.log | head -10 | tee -a $S
fi
if [ "${SKIP_TEST:-0}" != 1 ]; then
  say "== test_train_step on CUDA"
  DISOPT_TEST_BACKEND=cuda timeout ${TEST_TIMEOUT:-300} $B/bin/test_train_step > $O/test_train_step_cuda.log 2>&1
  say "rc=$?"
  grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED|  ERROR) +\]|no CUDA|error|Error" $O/test_train_step_cuda.log | head -30 | tee -a $S
  snap
fi
# STEP512=1 (with .ref carried, which holds the authors' utils): the full-size fixtures (512 x 512, batch 2) made
# here by make_step_golden.py, then the four one-step checks with the float trainer on the GPU
if [ "${STEP512:-0}" = 1 ] && [ -d .ref ]; then
  say "== test_train_step on CUDA at 512 x 512, batch 2"
  timeout 300 python3 testdata/gen/make_step_golden.py --size 512 --out $O/fx512 --threads 16 --mirror .ref/authors \
    > $O/fx512.log 2>&1; say "fixtures rc=$?"
  DISOPT_TEST_BACKEND=cuda DISOPT_STEP_SIZE=512 DISOPT_STEP_FIXTURES=$O/fx512 timeout 400 $B/bin/test_train_step \
    > $O/test_train_step_cuda_512.log 2>&1
  say "rc=$?"; grep -E "^\[ +(OK|FAILED|PASSED|  ERROR) +\]|gradients \(|loss total" $O/test_train_step_cuda_512.log | tee -a $S
  rm -rf $O/fx512; snap
fi
[ "${ONLY_STEP512:-0}" = 1 ] && exit 0 # ONLY_STEP512=1: the checks above and no timing
# peak device memory while a command runs: nvidia-smi every 100 ms into $O/mem_$1.txt
memrun() {
  local tag=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > $O/mem_$tag.txt 2>/dev/null &
  local mp=$!
  "$@"; local rc=$?
  kill $mp 2>/dev/null; wait $mp 2>/dev/null
  say "  peak device memory ($tag): $(sort -n $O/mem_$tag.txt | tail -1) MiB (nvidia-smi, whole device)"
  return $rc
}
say "== bench_train student-b3 batch $BATCH ${SIZE}^2 on CUDA"
memrun ours timeout 300 $B/bin/bench_train -model student-b3 -batch $BATCH -size $SIZE -steps $STEPS -warmup 3 -profile \
  -device cuda > $O/bench_train_cuda.log 2>&1
say "rc=$?"; grep -E "^# (created|memory|one step)|^  |^model=|bench_train:" $O/bench_train_cuda.log | tee -a $S; snap
if [ -f bench/bench_torch_train.py ] && [ -d .ref ]; then
  say "== PyTorch: the authors' stage-2 step, batch $BATCH ${SIZE}^2 ($TORCH_MODES)"
  memrun torch timeout 400 python3 bench/bench_torch_train.py --batch $BATCH --size $SIZE --steps $STEPS \
    --modes ${TORCH_MODES:-fp32,tf32,amp16,bf16} > $O/bench_torch_train.log 2>&1
  say "rc=$?"; grep -E "^mode=|torch|device" $O/bench_torch_train.log | head -12 | tee -a $S
fi
snap
