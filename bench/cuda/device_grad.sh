#!/bin/bash
# device_grad.sh - on the lent GPU machine: the GPU training ops (cuda/train_ops.h) against the CPU training
# kernels, tests/test_cuda_grad from the .cudarun bundle (bash bench/cuda/bundle.sh BUILD, a CUDA build that
# has built test_cuda_grad). Two runs with fresh seeds, the largest errors relative to their bounds, then one
# run under compute-sanitizer memcheck (our kernels' out-of-bounds or uninitialised reads) if the device has it.
#   run(command="bash bench/cuda/device_grad.sh", carry=[".cudarun"])
# Env: RUNS (2), MEMCHECK (1: on; 0: off), MEMCHECK_FILTER (cmocka pattern for the memcheck run: cuDNN is slow
# under memcheck, so by default every test but the convolutions), MEMCHECK_TIMEOUT (300 s). Logs go to $OUT.
R=$PWD; B=$R/.cudarun
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -x "$B/bin/test_cuda_grad" ] || chmod +x "$B"/bin/* 2>/dev/null
[ -e "$B/bin/test_cuda_grad" ] || { echo "no $B/bin/test_cuda_grad: run bench/cuda/bundle.sh on a CUDA build first"; exit 1; }
NV=$(python3 -c 'import nvidia.cudnn,nvidia.cublas,os;print(os.path.dirname(nvidia.cudnn.__file__)+"/lib:"+os.path.dirname(nvidia.cublas.__file__)+"/lib")' 2>/dev/null)
export LD_LIBRARY_PATH=$B/lib:/usr/local/cuda/lib64:$NV:$LD_LIBRARY_PATH
export CMOCKA_MESSAGE_OUTPUT=stdout
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
worst() { # the 15 largest errors relative to their bounds, from check()'s lines
  python3 - "$1" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"# (.+?) +(\S+) +\((?:gpu .*, )?bound (\S+?)[;)]", line)
    if m:
        try:
            e, b = float(m.group(2)), float(m.group(3))
        except ValueError:
            continue
        rows.append((e / b if b > 0 else float("inf"), m.group(1).rstrip(), e, b))
rows.sort(key=lambda r: -r[0] if r[0] == r[0] else -1e300)
print("   %d checks; largest error / bound:" % len(rows))
for r in rows[:15]:
    print("   %8.3g  %-58s %9.3g (bound %.0e)" % (r[0], r[1], r[2], r[3]))
PY
}
rc_all=0
for r in $(seq 1 "${RUNS:-2}"); do
  echo "== test_cuda_grad run $r"
  timeout 300 "$B/bin/test_cuda_grad" > "$OUT/test_cuda_grad_$r.log" 2>&1; rc=$?; echo "rc=$rc"
  [ $rc -ne 0 ] && rc_all=$rc
  grep -E "random seed|^\[  (PASSED|FAILED|  SKIPPED|  ERROR) \]|FAILED|unavailable" "$OUT/test_cuda_grad_$r.log" | head -20
  worst "$OUT/test_cuda_grad_$r.log"
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ "${MEMCHECK:-1}" = 1 ] && [ -n "$CS" ]; then
  echo "== memcheck (${MEMCHECK_FILTER:-every test but test_conv})"
  if [ -n "$MEMCHECK_FILTER" ]; then export DISOPT_TEST_FILTER="$MEMCHECK_FILTER"; fi
  f=""
  [ -z "$MEMCHECK_FILTER" ] && f="test_conv"
  DISOPT_TEST_SKIP="$f" timeout "${MEMCHECK_TIMEOUT:-300}" "$CS" --tool memcheck --leak-check no \
    "$B/bin/test_cuda_grad" > "$OUT/memcheck.log" 2>&1; echo "rc=$?"
  grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/memcheck.log" | head
elif [ "${MEMCHECK:-1}" = 1 ]; then
  echo "== memcheck: no compute-sanitizer on this machine"
fi
exit $rc_all
