#!/bin/bash
# device_dp.sh - on the lent GPU machine (carry .gdalrun from bundle_gdal.sh): gdal_disopt_train's data-parallel
# path (--device cuda:LIST, issue 5) against the plain one. With one GPU, `cuda:0,` runs the NCCL path with one
# rank (communicator, broadcast of rank 0's state, gradient all-reduce every step) and must write the same model,
# byte for byte, as `cuda:0`, for a teacher (stage 1) and a student (stage 2). With two or more GPUs, also a
# run over all of them (batch split), reported as it comes. Logs: $OUT/summary.txt, $OUT/tt_logs.tgz.
set -u
. "$(dirname "$0")/tt_common.sh"
NC=$(python3 -c 'import nvidia.nccl,os;print(os.path.dirname(nvidia.nccl.__file__)+"/lib")' 2>/dev/null)
[ -n "$NC" ] && GLD=$GLD:$NC
timed synth "$G/bin/gdal_disopt_synth" --out scenes --tiles 24 --size 256 --seed 7 --split 0.8,0.2,0 -q
C=(--arch b0 --batch 4 --crop 128 --steps-per-epoch 5 --epochs 2 --optimizer adamw --lr 1e-3 --loader-threads 4
   --optical-bands 3,1,1,2)
train t_plain --stage optical --seed 3 --device cuda:0 "${C[@]}" scenes/tiles.csv
train t_nccl1 --stage optical --seed 3 --device cuda:0, "${C[@]}" scenes/tiles.csv
grep -h "trainer:" logs/t_plain.out logs/t_nccl1.out | tee -a "$S"
cmp t_plain.safetensors t_nccl1.safetensors && say "teacher: cuda:0 and cuda:0, (one NCCL rank): byte-identical" \
  || say "teacher: cuda:0 and cuda:0, DIFFER"
train s_plain --stage distill --teacher t_plain.safetensors --seed 4 --device cuda:0 "${C[@]}" scenes/tiles.csv
train s_nccl1 --stage distill --teacher t_plain.safetensors --seed 4 --device cuda:0, "${C[@]}" scenes/tiles.csv
cmp s_plain.safetensors s_nccl1.safetensors && say "student: cuda:0 and cuda:0, (one NCCL rank): byte-identical" \
  || say "student: cuda:0 and cuda:0, DIFFER"
NG=$(nvidia-smi -L | wc -l)
if [ "$NG" -ge 2 ]; then
  L=$(seq -s, 0 $((NG - 1)))
  train t_all --stage optical --seed 3 --device cuda:$L "${C[@]}" --batch $((2 * NG)) scenes/tiles.csv
  grep -h "trainer:\|epoch" logs/t_all.out | tee -a "$S"
else
  say "one GPU: no multi-rank run"
fi
say "total $(el) s"
snap
