#!/bin/bash
# device_table.sh - issue 8's distillation table, second pass, and issue 6's --resume on the GPU, one device call:
#   run(command="bash bench/cuda/device_table.sh", carry=[".gdalrun"])
# Same data and settings as device_train_tool.sh MODE=experiments (synth seed 7, 120 tiles of 512 px, B3,
# batch 8, crop 256, AdamW lr 1e-3, 30 steps an epoch; unseen: 6 tiles of seed 2026), two chains on the GPU at once:
#   A: the SAR-only DeepLabV3+ with as many steps as the student (SAREPOCHS = 60 epochs = 1800 steps), training
#      seed 3 (the first pass's seed); the --resume check (below); the same with seed 13, if it fits before
#      DEADLINE (570 s from the start);
#   B: training seed 13: optical teacher (TEPOCHS = 30 epochs, seed 13) and DisOptNet student (SEPOCHS = 60, seed 14),
#      the student if it fits before DEADLINE.
# Every model goes through the driver on the unseen tiles and gdal_disopt_eval (Dice, IoU, P, R, building F1).
# --resume on CUDA: a small B0 teacher (3 epochs of 10 steps) run whole twice, and once killed with -9 after
# its first checkpoint and resumed from it; the three final models are compared (bytes and max |difference|).
# $OUT: summary.txt, tt_logs.tgz.
set -u
. "$(dirname "$0")/tt_common.sh"
SAREPOCHS=${SAREPOCHS:-60}; TEPOCHS=${TEPOCHS:-30}; SEPOCHS=${SEPOCHS:-60}
timed synth "$G/bin/gdal_disopt_synth" --out scenes --tiles 120 --size 512 --seed 7 --split 0.85,0.15,0 -q
timed synth_unseen "$G/bin/gdal_disopt_synth" --out unseen --tiles 6 --size 512 --seed 2026 --split 0,0,1 -q
awk -F, 'BEGIN{OFS=","} NR>1{$2=$1} {print}' scenes/tiles.csv > scenes/tiles_sar.csv
COMMON=(--batch 8 --crop 256 --steps-per-epoch 30 --device cuda --optimizer adamw --lr 1e-3 --weight-decay 1e-4
        --loader-threads 8)
OPTB=(--optical-bands 3,1,1,2)
saronly() { train "saronly_b3_s$1" --stage optical --arch b3 --epochs "$SAREPOCHS" --seed "$1" "${COMMON[@]}" \
  --optical-bands 1,2,3,4 scenes/tiles_sar.csv && evaluate "saronly_b3_s$1" SAR-Intensity ""; }
resume_check() {
  local a=(--stage optical --arch b0 --epochs 3 --steps-per-epoch 10 --batch 8 --crop 256 --device cuda
           --optimizer adamw --seed 5 --loader-threads 4 "${OPTB[@]}" scenes/tiles.csv)
  timed resume_full1 "$G/bin/gdal_disopt_train" "${a[@]}" full1.safetensors
  timed resume_full2 "$G/bin/gdal_disopt_train" "${a[@]}" full2.safetensors
  rm -f killed.ckpt.safetensors
  gd "$G/bin/gdal_disopt_train" "${a[@]}" killed.safetensors > logs/resume_killed.out 2>&1 & local p=$!
  for _ in $(seq 600); do [ -f killed.ckpt.safetensors ] && break; sleep 0.1; done
  kill -9 $p 2>/dev/null; wait $p 2>/dev/null
  say "resume: killed after $(($(wc -l < killed.log.csv) - 1)) logged epoch(s); checkpoint $(ls -l killed.ckpt.safetensors 2>&1 | awk '{print $5}') bytes"
  cp killed.ckpt.safetensors ck.safetensors
  timed resume_resumed "$G/bin/gdal_disopt_train" "${a[@]}" --resume ck.safetensors resumed.safetensors
  grep -h "resumed from" logs/resume_resumed.out | tee -a "$S"
  for f in full1.log.csv killed.log.csv; do cp "$f" "logs/resume_$f"; done
  python3 - <<'PY' 2>&1 | tee -a "$S"
import numpy as np, filecmp
from safetensors.numpy import load_file
a = load_file("full1.safetensors"); b = load_file("full2.safetensors"); c = load_file("resumed.safetensors")
def cmp(x, y):
    worst = max(float(np.max(np.abs(x[k].astype(np.float64) - y[k]))) / (float(np.max(np.abs(x[k]))) or 1.0) for k in x)
    return worst
print("resume: full1 == full2 bytes:", filecmp.cmp("full1.safetensors", "full2.safetensors", shallow=False),
      " max rel |d| %.3g" % cmp(a, b))
print("resume: full1 == resumed bytes:", filecmp.cmp("full1.safetensors", "resumed.safetensors", shallow=False),
      " max rel |d| %.3g" % cmp(a, c), " tensors", len(a), len(c))
PY
}
# what fits: the call may get less than 600 s; chain A checks the time left before its optional parts
DEADLINE=${DEADLINE:-570}
fits() { [ $(( $(el) + $1 )) -lt "$DEADLINE" ] || { say "skipped $2: $(el) s used, ~$1 s needed, deadline $DEADLINE s"; return 1; }; }
( saronly 3; fits 60 "the resume check" && resume_check; fits 170 "saronly seed 13" && saronly 13 ) &
A=$!
( train teacher_b3_s13 --stage optical --arch b3 --epochs "$TEPOCHS" --seed 13 "${COMMON[@]}" "${OPTB[@]}" scenes/tiles.csv \
    && evaluate teacher_b3_s13 PS-RGB 3,1,1,2 \
    && fits 230 "the seed-14 student" \
    && train student_b3_s14 --stage distill --teacher teacher_b3_s13.safetensors --arch b3 --epochs "$SEPOCHS" --seed 14 \
       "${COMMON[@]}" "${OPTB[@]}" scenes/tiles.csv \
    && evaluate student_b3_s14 SAR-Intensity "" ) &
B=$!
while kill -0 $A 2>/dev/null || kill -0 $B 2>/dev/null; do snap; sleep 20; done
wait
say "total $(el) s"
snap
