#!/bin/bash
# device_ort.sh - on the lent machine (bundle_ort.sh first): install the onnxruntime wheel, rebuild
# model.safetensors from the golden fixture (checked against the sha256 taken here), check ORT and
# ours against PyTorch fp32 on the same input, then run_bench.sh (ours vs ORT, interleaved) and
# per-op profiles of both (PROF_OURS: only ours, chosen runs). With an old build in the bundle, first
# old and new outputs are compared bit for bit. Logs go to $OUT. ROUNDS, RUNS, RUNS_B, THREADS, BATCHES as in run_bench.sh.
# VARIANTS="name:VAR=value[,VAR=value] ...": ours again under environment settings, as more contenders (e.g.
# "mt8:DISOPT_CPU_MIN_TASKS=8"). PROF_THREADS: the thread counts of the per-op profiles (default 1 and all).
set -u
R=$PWD D=$R/.whl/ortrun W=/tmp/ortd SITE=/tmp/site
if [ -f $R/.whl/ortpack/ortrun.tar.xz ]; then # the packed bundle (bundle_ort.sh PACK=1): wheels already unzipped
  tar xJf $R/.whl/ortpack/ortrun.tar.xz -C /tmp || exit 1
  D=/tmp/ortrun SITE=/tmp/ortrun/site
elif [ -z "${ORT_SKIP_PIP:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $D/whl/*.whl || exit 1
fi
export PYTHONPATH=$SITE LD_LIBRARY_PATH=$D/lib:${LD_LIBRARY_PATH:-}
chmod +x $D/bin/* 2>/dev/null
mkdir -p $W && cp $D/onnx/* $W/
python3 -c 'import sys,numpy,onnxruntime as o;print("python",sys.version.split()[0],"numpy",numpy.__version__,"ort",o.__version__)'
lscpu > $OUT/lscpu.txt; grep -m1 "model name" /proc/cpuinfo; nproc
if [ -x $D/bin/test_ops ]; then # the kernels on this CPU (AVX-512 here) against the scalar code, bit for bit
  CMOCKA_MESSAGE_OUTPUT=stdout $D/bin/test_ops > $OUT/test_ops.log 2>&1; echo "test_ops rc $?"; tail -3 $OUT/test_ops.log
fi
$D/bin/disopt_testmodel testdata/golden/student_b3.safetensors $W/model.safetensors > /dev/null || exit 1
[ "$(sha256sum $W/model.safetensors | cut -d' ' -f1)" = "$(cat $W/model.sha256)" ] && echo "model.safetensors sha256 matches" || { echo "model sha256 MISMATCH"; exit 1; }
OURS="ours=$D/bin/bench_cpu"
if [ -x $D/bin/bench_owngemm ]; then # our SGEMM alone, one thread, new (and old) build alternating: is it steady?
  { for r in 1 2; do echo "== new, round $r"; $D/bin/bench_owngemm 1024 3
      [ ! -x $D/old/bench_owngemm ] || { echo "== old, round $r"; $D/old/bench_owngemm 1024 3; }; done; } 2>&1 | tee $OUT/owngemm.log
fi
if [ -x $D/bin/bench_act ]; then # the vector activations alone, one thread, new (and old) alternating
  { for r in 1 2; do echo "== new, round $r"; $D/bin/bench_act 2
      [ ! -x $D/old/bench_act ] || { echo "== old, round $r"; $D/old/bench_act 2; }; done; } 2>&1 | tee $OUT/act.log
fi
if [ -d $D/old ]; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s:$LD_LIBRARY_PATH exec %s "$@"\n' $D/old $D/old/bench_cpu > $W/old.sh; chmod +x $W/old.sh
  OURS="$OURS old=$W/old.sh"
  { echo "== old vs new, fused logits bit for bit (cmp), $(nproc) threads, batch 1 and 4; new at 1 thread"
    for b in 1 4; do
      $D/bin/dump_fused $W/model.safetensors $W/check_io.safetensors $W/new_b$b.f32 0 $b
      LD_LIBRARY_PATH=$D/old:$LD_LIBRARY_PATH $D/bin/dump_fused $W/model.safetensors $W/check_io.safetensors $W/old_b$b.f32 0 $b
      cmp $W/new_b$b.f32 $W/old_b$b.f32 && echo "batch $b: identical"
    done
    $D/bin/dump_fused $W/model.safetensors $W/check_io.safetensors $W/new_t1.f32 1 1
    cmp $W/new_t1.f32 $W/new_b1.f32 && echo "1 thread = $(nproc) threads: identical"
    head -c $(stat -c %s $W/new_b1.f32) $W/new_b4.f32 | cmp - $W/new_b1.f32 && echo "batch 4 image 1 = batch 1: identical"; } 2>&1 | tee $OUT/bitwise.log
fi
for v in ${VARIANTS:-}; do # wrappers: bench_cpu under the variant's environment
  n=${v%%:*}; e=${v#*:}
  printf '#!/bin/sh\nexec env %s %s "$@"\n' "${e//,/ }" $D/bin/bench_cpu > $W/$n.sh; chmod +x $W/$n.sh
  OURS="$OURS $n=$W/$n.sh"
done
{ echo "== check"; python3 bench/onnx/bench_ort.py $W/student_b3_fused.onnx --check $W/check_io.safetensors --threads 1 --runs 1 | grep check
  $D/bin/golden_compare $W/model.safetensors $W/check_io.safetensors 2>&1 | grep -v missing; } 2>&1 | tee $OUT/check.log
OURS="$OURS" ORT_PY=python3 bash bench/onnx/run_bench.sh $W $OUT/bench.log > $OUT/bench_full.log 2>&1
sed -n '/^## s\/tile/,$p' $OUT/bench_full.log
T=$(nproc)
if [ -n "${PROF_OURS:-}" ]; then # e.g. PROF_OURS="new:1:4 old:1:4": build:threads:batch, ours only
  for s in $PROF_OURS; do IFS=: read who t b <<< "$s"; bin=$D/bin/bench_cpu; [ $who = old ] && bin=$W/old.sh
    echo "== profile $who threads $t batch $b"; $bin $W/model.safetensors -threads $t -batch $b -runs 1 -profile; done > $OUT/prof.log 2>&1
else
{ for t in ${PROF_THREADS:-1 $T}; do $D/bin/bench_cpu $W/model.safetensors -threads $t -runs 1 -profile
    python3 bench/onnx/bench_ort.py $W/student_b3_fused.onnx --threads $t --runs 1 --profile /tmp/ortprof; done; } > $OUT/prof.log 2>&1
fi
grep -v "^    [0-9]" $OUT/prof.log
