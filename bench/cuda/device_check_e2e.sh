#!/bin/bash
# device_check_e2e.sh - one device call: device_ab.sh (test_cuda, the goldens on CUDA, test_cuda_grad,
# tiles/s; no old module unless .cudarun/old has one) and then device_e2e.sh in full (part a: CPU vs
# CUDA on three scenes, batch 1/8/32; part b: the SIZE^2 scene, cases BIGCASES, exact statistics).
# Carry .cudarun and .gdalrun. $OUT: ab_logs.tgz, bench.log, e2e_logs.tgz, summary.txt.
# Env: ROUNDS (1), SIZE (16384), BIGCASES ("CUDA:FP16:32 CUDA:FP32:32"), E2E_BUDGET (300).
R=$PWD; FINAL=$OUT
ROUNDS=${ROUNDS:-1} bash bench/cuda/device_ab.sh 2>&1 | tee /tmp/ab_stdout.log
E=/tmp/e2e_check; rm -rf $E; mkdir -p $E
OUT=$E SIZE=${SIZE:-16384} BIGFMT=GTIFF BIGSTATS=-stats BIGCASES="${BIGCASES:-CUDA:FP16:32 CUDA:FP32:32}" \
  BUDGET=${E2E_BUDGET:-300} timeout $(( ${E2E_BUDGET:-300} + 60 )) bash bench/cuda/device_e2e.sh > $E/stdout.log 2>&1
tar -czf $FINAL/e2e_logs.tgz -C $E .
cp $E/summary.txt $FINAL/ 2>/dev/null; cp /tmp/ab_stdout.log $FINAL/ab_stdout.log
tail -40 $E/summary.txt
