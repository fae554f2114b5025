#!/bin/bash
# device_combo.sh - one device call for a scarce machine (carry .whl/cudapack and .gdalrun: both fit the 64 MiB
# with the tree): 1. test_cuda (device_next.sh PARTS=infer, $OUT/next_infer.tgz); 2. device_e2e.sh with
# E2E_SMALL / E2E_BIG cases and BIG_DEBUG=ON ($OUT/e2e/); 3. the training checks and bench_train
# (device_next.sh PARTS=train: BT_ROUNDS, GRAD_OWN_FILTER, TTS_DW, BT_VARIANTS as there; $OUT/next.tgz), each part given what is left of
# DEADLINE (570 s) seconds.
#   run(command="bash bench/cuda/device_combo.sh", carry=[".whl/cudapack", ".gdalrun"])
set -u
T0=$(date +%s); O=$OUT
left() { echo $(( ${DEADLINE:-570} - ($(date +%s) - T0) )); }
echo "== 1. test_cuda ($(left) s left)"
PARTS=infer timeout 150 bash bench/cuda/device_next.sh
mv "$O/next.tgz" "$O/next_infer.tgz" 2>/dev/null
echo "== 2. end to end ($(left) s left)"
mkdir -p "$O/e2e"
OUT=$O/e2e SMALLCASES="${E2E_SMALL:-CUDA:FP32:8 CUDA:FP16:8}" \
  BIGCASES="${E2E_BIG:-CUDA:FP32:16 CUDA:FP32:16:f0+p0 CUDA:FP16:32 CUDA:FP16:32:f0+p0 CUDA:FP32:32}" \
  BIG_DEBUG=ON BUDGET=${E2E_BUDGET:-200} timeout $(( ${E2E_BUDGET:-200} + 60 )) bash bench/cuda/device_e2e.sh 2>&1 \
  | grep -vE "^ *$" | tail -60
echo "== 3. training ($(left) s left)"
export BT_ROUNDS=${BT_ROUNDS:-1} GRAD_OWN_FILTER=${GRAD_OWN_FILTER:-test_bn_act} TTS_DW=${TTS_DW:-cudnn}
export BT_VARIANTS=${BT_VARIANTS:-"bf16:cudnn tf32:cudnn fp32:cudnn"}
PARTS=train OUT="$O" timeout $(( $(left) - 5 )) bash bench/cuda/device_next.sh
echo "== done ($(left) s left)"
