#!/bin/bash
# device_all.sh - one device call for this session's checks when machine starts are scarce (carry
# .whl/ortpack from bench/onnx/bundle_ort.sh PACK=1, .whl/cudapack/cudarun.tar.xz = .cudarun of
# bench/cuda/bundle.sh packed with tar cJf, and .ref): 1. ONNX Runtime vs ours on the CPU (device_ort.sh,
# ROUNDS=2); 2. test_train_step on CUDA (64², with the NCCL data-parallel test); 3. the 512² one-step check on
# CUDA (device_train.sh STEP512=1 ONLY_STEP512=1); 4. nsys kernel summary of FP16 b32 inference
# (device_prof.sh). Each part's logs go to its own folder, all of them to $OUT/all.tgz at the end (the device
# tool returns at most 8 files); the key lines go to stdout.
# PARTS (default "ort train s512 prof"): which parts run; "gpuprof" (not in the default) is the engine's
# own per-node profile of student B3 512x512 batch 32 in FP16 and FP32 (bench_cpu -profile: each node
# waited for) beside the plain timing (CUDA graphs), when nsys is missing.
set -u
PARTS=" ${PARTS:-ort train s512 prof} "
has() { case "$PARTS" in *" $1 "*) return 0 ;; esac; return 1; }
REAL_OUT=$OUT; L=/tmp/dall; rm -rf $L; mkdir -p $L/ort $L/train $L/prof
pack() { tar czf $REAL_OUT/all.tgz -C $L . 2>/dev/null; }
tar xJf .whl/cudapack/cudarun.tar.xz || echo "no cudarun pack"
if has gpuprof; then
  echo "== 0. per-node GPU profile, FP16 and FP32 b32 $(date -u +%T)"
  ( . bench/cuda/device_env.sh; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    for p in fp16 fp32; do
      DISOPT_BENCH_PRECISION=$p $B/bin/bench_cpu $M -batch 32 -runs 5 -threads 16 -pinned > $L/prof/plain_$p.log 2>&1
      echo "$p plain: $(tail -1 $L/prof/plain_$p.log)"
      DISOPT_BENCH_PRECISION=$p $B/bin/bench_cpu $M -batch 32 -runs 1 -threads 16 -pinned -profile > $L/prof/node_$p.log 2>&1
      sed -n '/per-op profile/,$p' $L/prof/node_$p.log | head -34
    done )
  pack
fi
has ort && { echo "== 1. ORT $(date -u +%T)"
OUT=$L/ort ROUNDS=${ROUNDS:-2} timeout ${ORT_T:-300} bash bench/onnx/device_ort.sh > $L/ort/run.log 2>&1
echo "rc $?"; sed -n '/^## speed ratio/,$p' $L/ort/run.log | head -20; grep -E "test_ops rc|identical|check|golden" $L/ort/run.log | head -8
[ ! -f $L/ort/owngemm.log ] || cut -c1-90 $L/ort/owngemm.log
pack; }
has train && { echo "== 2. test_train_step on CUDA (64, data parallel) $(date -u +%T)"
( . bench/cuda/device_env.sh; DISOPT_TEST_BACKEND=cuda timeout 150 $B/bin/test_train_step > $L/train/tts64.log 2>&1; echo "rc $?" )
grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED|  ERROR) +\]|rank|NCCL|not run" $L/train/tts64.log | head -24
pack; }
has s512 && { echo "== 3. 512x512 one step on CUDA $(date -u +%T)"
OUT=$L/train SKIP_TEST=1 STEP512=1 ONLY_STEP512=1 timeout ${S512_T:-240} bash bench/cuda/device_train.sh > $L/train/s512.log 2>&1
echo "rc $?"; cat $L/train/summary.txt 2>/dev/null | tail -14
pack; }
has prof && { echo "== 4. nsys FP16 b32 $(date -u +%T)"
OUT=$L/prof PRECS=fp16 NO_NCU=1 timeout ${PROF_T:-100} bash bench/cuda/device_prof.sh > $L/prof/run.log 2>&1
echo "rc $?"; head -30 $L/prof/run.log | cut -c1-200
pack; }
echo "== done $(date -u +%T)"
