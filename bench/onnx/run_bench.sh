#!/bin/bash
# run_bench.sh - our bench_cpu and ONNX Runtime (bench_ort.py) on the same model, machine and run,
# interleaved: for each round, each batch size, every contender in turn (order reversed every other
# round), all at the same thread counts. Then summarize.py prints tiles/s and ratios.
#   bench/onnx/run_bench.sh DIR LOG
# DIR holds student_b3_fused.onnx and model.safetensors (see export_onnx.py). Environment:
#   OURS="ours=build-ort/bench/bench_cpu"   name=binary pairs, space-separated (e.g. old and new code)
#   ORT_PY=.whl/ortvenv/bin/python  ROUNDS=3  THREADS=1,2,all  BATCHES="1 4"
#   RUNS=5 (timed runs per batch-1 measurement)  RUNS_B=3 (per larger batch)
set -u
DIR=$1 LOG=$2
HERE=$(cd "$(dirname "$0")" && pwd)
OURS=${OURS:-ours=build-ort/bench/bench_cpu}
ORT_PY=${ORT_PY:-.whl/ortvenv/bin/python}
ROUNDS=${ROUNDS:-3} THREADS=${THREADS:-1,2,all} BATCHES=${BATCHES:-1 4} RUNS=${RUNS:-5} RUNS_B=${RUNS_B:-3}
NCPU=$(nproc)
TH_OURS=${THREADS//all/$NCPU}
{
echo "# run_bench.sh $(date -u +%FT%TZ) host $(hostname) nproc $NCPU; $(grep -m1 'model name' /proc/cpuinfo)"
echo "# OURS=$OURS ROUNDS=$ROUNDS THREADS=$THREADS BATCHES=$BATCHES RUNS=$RUNS RUNS_B=$RUNS_B"
names=(ort)
for p in $OURS; do names+=("${p%%=*}"); done
for r in $(seq 1 "$ROUNDS"); do
  order=("${names[@]}")
  if (( r % 2 == 0 )); then order=(); for ((i=${#names[@]}-1; i>=0; i--)); do order+=("${names[i]}"); done; fi
  for b in $BATCHES; do
    n=$RUNS; [ "$b" -gt 1 ] && n=$RUNS_B
    for who in "${order[@]}"; do
      echo "== round $r batch $b $who"
      if [ "$who" = ort ]; then
        "$ORT_PY" "$HERE/bench_ort.py" "$DIR/student_b3_fused.onnx" --batch "$b" --runs "$n" --threads "$THREADS" 2>&1
      else
        for p in $OURS; do [ "${p%%=*}" = "$who" ] && "${p#*=}" "$DIR/model.safetensors" -batch "$b" -runs "$n" -threads "$TH_OURS" 2>&1; done
      fi
    done
  done
done
} | tee "$LOG"
python3 "$HERE/summarize.py" "$LOG"
