#!/bin/bash
# device_ort.sh - on the lent machine (bundle_ort.sh first): install the onnxruntime wheel, rebuild
# model.safetensors from the golden fixture (checked against the sha256 taken here), check ORT and
# ours against PyTorch fp32 on the same input, then run_bench.sh (ours vs ORT, interleaved) and
# per-op profiles of both. Logs go to $OUT. ROUNDS, RUNS, RUNS_B, THREADS, BATCHES as in run_bench.sh.
set -u
R=$PWD D=$R/.whl/ortrun W=/tmp/ortd
[ -n "${ORT_SKIP_PIP:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $D/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site LD_LIBRARY_PATH=$D/lib:${LD_LIBRARY_PATH:-}
chmod +x $D/bin/* 2>/dev/null
mkdir -p $W && cp $D/onnx/* $W/
python3 -c 'import sys,numpy,onnxruntime as o;print("python",sys.version.split()[0],"numpy",numpy.__version__,"ort",o.__version__)'
lscpu > $OUT/lscpu.txt; grep -m1 "model name" /proc/cpuinfo; nproc
$D/bin/disopt_testmodel testdata/golden/student_b3.safetensors $W/model.safetensors > /dev/null || exit 1
[ "$(sha256sum $W/model.safetensors | cut -d' ' -f1)" = "$(cat $W/model.sha256)" ] && echo "model.safetensors sha256 matches" || { echo "model sha256 MISMATCH"; exit 1; }
OURS="ours=$D/bin/bench_cpu"
if [ -d $D/old ]; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s:$LD_LIBRARY_PATH exec %s "$@"\n' $D/old $D/old/bench_cpu > $W/old.sh; chmod +x $W/old.sh
  OURS="$OURS old=$W/old.sh"
fi
{ echo "== check"; python3 bench/onnx/bench_ort.py $W/student_b3_fused.onnx --check $W/check_io.safetensors --threads 1 --runs 1 | grep check
  $D/bin/golden_compare $W/model.safetensors $W/check_io.safetensors 2>&1 | grep -v missing; } 2>&1 | tee $OUT/check.log
OURS="$OURS" ORT_PY=python3 bash bench/onnx/run_bench.sh $W $OUT/bench.log > $OUT/bench_full.log 2>&1
sed -n '/^## s\/tile/,$p' $OUT/bench_full.log
T=$(nproc)
{ for t in 1 $T; do $D/bin/bench_cpu $W/model.safetensors -threads $t -runs 1 -profile
    python3 bench/onnx/bench_ort.py $W/student_b3_fused.onnx --threads $t --runs 1 --profile /tmp/ortprof; done; } > $OUT/prof.log 2>&1
grep -v "^    [0-9]" $OUT/prof.log
