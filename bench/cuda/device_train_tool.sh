#!/bin/bash
# device_train_tool.sh - the training tools end to end on the lent GPU (issues 6 and 8), one call, with the
# GDAL bundle of bundle_gdal.sh (which packs gdal_disopt_train/eval/synth/model too):
#   run(command="bash bench/cuda/device_train_tool.sh", carry=[".gdalrun"])
#   1. gdal_disopt_synth: a training scene set (TILES tiles of SIZE px, seed 7, 85 % train / 15 % val) and
#      an unseen one (6 tiles, seed 2026);
#   2. per architecture in ARCHS: gdal_disopt_train --device cuda, stage 1 (optical teacher) and stage 2
#      (the SAR student distilled from it), batch 8, crop CROP, AdamW lr 1e-3 (from scratch: no ImageNet
#      weights here), TEPOCHS / SEPOCHS epochs of 30 steps;
#   3. the student through the driver (gdal_translate -of BUILDINGS, DEVICE=CUDA) on the unseen tiles,
#      scored by gdal_disopt_eval -list (pixel Dice, SpaceNet building F1);
#   4. the b0 student (if trained) converted to F16 for $OUT (the demo model candidate).
# $OUT: tt_logs.tgz (tools' stdout, the per-epoch CSV logs, eval reports), summary.txt, student_b0_f16.part00,
# .part01 (cat them: the F16 b0 student).
# Env: ARCHS ("b0 b3"), TILES (120), SIZE (512), CROP (256), TEPOCHS (10), SEPOCHS (20), STEPS (30 per epoch),
# BUDGET (540 s), DEVICE (cuda; cpu to try it here), MODE=experiments (+ SAR-only model, teacher scored on optical).
set -u
. "$(dirname "$0")/tt_common.sh"
ARCHS=${ARCHS:-b0 b3}; TILES=${TILES:-120}; SIZE=${SIZE:-512}; CROP=${CROP:-256}
TEPOCHS=${TEPOCHS:-10}; SEPOCHS=${SEPOCHS:-20}; BUDGET=${BUDGET:-540}
timed synth "$G/bin/gdal_disopt_synth" --out scenes --tiles "$TILES" --size "$SIZE" --seed 7 --split 0.85,0.15,0 -q
timed synth_unseen "$G/bin/gdal_disopt_synth" --out unseen --tiles 6 --size "$SIZE" --seed 2026 --split 0,0,1 -q
COMMON=(--batch 8 --crop "$CROP" --steps-per-epoch "${STEPS:-30}" --device "${DEVICE:-cuda}" --optimizer adamw --lr 1e-3 --weight-decay 1e-4
        --loader-threads 8)
OPTB=(--optical-bands 3,1,1,2) # the synthetic optical is RGB: R, G, G, B for the 4-band teacher (as in §6)
# MODE=experiments: per architecture also the SAR-only DeepLabV3+ (stage 1 on the SAR images: the list's
# optical column replaced by its SAR column), and the optical teacher scored on the unseen optical tiles
awk -F, 'BEGIN{OFS=","} NR>1{$2=$1} {print}' scenes/tiles.csv > scenes/tiles_sar.csv
for a in $ARCHS; do
  [ "$(el)" -lt $(( BUDGET - 60 )) ] || { say "$a: skipped ($(el) s used of $BUDGET)"; continue; }
  if [ "${MODE:-}" = experiments ]; then
    train "saronly_$a" --stage optical --arch "$a" --epochs "$TEPOCHS" --seed 3 "${COMMON[@]}" --optical-bands 1,2,3,4 \
      scenes/tiles_sar.csv && evaluate "saronly_$a" SAR-Intensity ""
  fi
  train "teacher_$a" --stage optical --arch "$a" --epochs "$TEPOCHS" --seed 3 "${COMMON[@]}" "${OPTB[@]}" scenes/tiles.csv || continue
  [ "${MODE:-}" = experiments ] && evaluate "teacher_$a" PS-RGB 3,1,1,2
  train "student_$a" --stage distill --teacher "teacher_$a.safetensors" --arch "$a" --epochs "$SEPOCHS" --seed 4 \
    "${COMMON[@]}" "${OPTB[@]}" scenes/tiles.csv || continue
  evaluate "student_$a" SAR-Intensity ""
  snap
done
if [ -f student_b0.safetensors ]; then # (files come back in pieces of at most 16 MiB: split, cat them here)
  timed convert "$G/bin/gdal_disopt_model" convert student_b0.safetensors student_b0_f16.safetensors --dtype f16 \
    --metadata "provenance=gdal_disopt_train --device cuda on gdal_disopt_synth scenes (seed 7, $TILES tiles), $(date -u +%F)" \
    && say "  student_b0 F16: $(du -h student_b0_f16.safetensors | cut -f1), sha256 $(sha256sum student_b0_f16.safetensors | cut -c1-64)" \
    && split -b 15m -d student_b0_f16.safetensors "$OUT/student_b0_f16.part"
fi
say "total $(el) s"
snap
