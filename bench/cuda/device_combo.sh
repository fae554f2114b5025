#!/bin/bash
# device_combo.sh - one device call for a scarce machine (carry .whl/cudapack and .gdalrun: both fit the 64 MiB
# with the tree). PARTS (default "e2e infer train"), in that order, each given what is left of DEADLINE (570) s:
#   e2e:   device_e2e.sh with E2E_SMALL / E2E_BIG cases, BIG_DEBUG=ON, E2E_BUDGET ($OUT/e2e/);
#   infer: test_cuda (device_next.sh PARTS=infer; $OUT/next_infer.tgz);
#   train: the training checks and bench_train (device_next.sh PARTS=train: BT_ROUNDS, GRAD_OWN_FILTER, TTS_DW,
#          BT_VARIANTS as there; $OUT/next.tgz).
#   run(command="bash bench/cuda/device_combo.sh", carry=[".whl/cudapack", ".gdalrun"])
set -u
T0=$(date +%s); O=$OUT
left() { echo $(( ${DEADLINE:-570} - ($(date +%s) - T0) )); }
for part in ${PARTS:-e2e infer train}; do
  L=$(left); [ "$L" -gt 30 ] || { echo "== $part skipped: $L s left"; continue; }
  case $part in
  e2e)
    echo "== end to end ($L s left)"
    mkdir -p "$O/e2e"
    B=${E2E_BUDGET:-200}; [ $((B + 60)) -gt "$L" ] && B=$((L - 60))
    OUT=$O/e2e SMALLCASES="${E2E_SMALL:-CUDA:FP32:8 CUDA:FP16:8}" \
      BIGCASES="${E2E_BIG:-CUDA:FP32:16 CUDA:FP32:16:ps CUDA:FP32:16:f0+p0 CUDA:FP16:32 CUDA:FP16:32:f0+p0 CUDA:FP32:32}" \
      BIG_DEBUG=ON BUDGET=$B timeout $((B + 55)) bash bench/cuda/device_e2e.sh 2>&1 | grep -vE "^ *$" | tail -60 ;;
  infer)
    echo "== test_cuda ($L s left)"
    PARTS=infer timeout $(( L < 150 ? L - 5 : 150 )) bash bench/cuda/device_next.sh
    mv "$O/next.tgz" "$O/next_infer.tgz" 2>/dev/null ;;
  train)
    echo "== training ($L s left)"
    export BT_ROUNDS=${BT_ROUNDS:-1} GRAD_OWN_FILTER=${GRAD_OWN_FILTER:-test_bn_act} TTS_DW=${TTS_DW:-cudnn}
    export BT_VARIANTS=${BT_VARIANTS:-"bf16:cudnn bf16:cudnn:res bf16:cudnn:res+tser bf16:cudnn:town tf32:cudnn fp32:cudnn fp32:cudnn:res"}
    PARTS=train OUT="$O" timeout $((L - 5)) bash bench/cuda/device_next.sh ;;
  esac
done
echo "== done ($(left) s left)"
