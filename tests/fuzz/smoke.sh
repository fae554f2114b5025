#!/usr/bin/env bash
# Fuzz smoke for CI: builds the libFuzzer targets with clang, replays the regression inputs
# (tests/fuzz/regressions: pickle-* and st-*) and the seeds, then fuzzes each target for a few
# seconds. Exit 77 (skip) when clang or libFuzzer is not installed.
#   usage: tests/fuzz/smoke.sh OUTDIR [SECONDS]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: smoke.sh OUTDIR [SECONDS]}"
secs="${2:-5}"
bash "$here/build.sh" "$out" > "$out.build.log" 2>&1
rc=$?
if [ $rc -eq 77 ]; then cat "$out.build.log"; exit 77; fi
if [ $rc -ne 0 ]; then cat "$out.build.log"; exit 1; fi
src="$(cd "$here/../.." && pwd)"
mkdir -p "$out/pk" "$out/st" "$out/art"
cp "$here"/regressions/pickle-* "$out/pk/" 2>/dev/null
cp "$here"/regressions/st-* "$out/st/" 2>/dev/null
for f in "$src"/testdata/pth/*.pth*; do  # data.pkl of the checkpoint fixtures as pickle seeds
  python3 - "$f" "$out/pk/$(basename "$f").pkl" <<'PY' 2>/dev/null
import sys, zipfile
try:
    z = zipfile.ZipFile(sys.argv[1])
    n = [m for m in z.namelist() if m.endswith('/data.pkl')]
    if n: open(sys.argv[2], 'wb').write(z.read(n[0]))
except Exception:
    pass
PY
done
printf '\x20\x00\x00\x00\x00\x00\x00\x00{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   \x00\x00\x80\x3f' > "$out/st/seed0"
status=0
for t in pickle:pk safetensors:st; do
  name="${t%%:*}"; dir="$out/${t##*:}"
  echo "== fuzz_$name: $(ls "$dir" | wc -l) inputs, then ${secs}s"
  if ! "$out/fuzz_$name" -max_total_time="$secs" -max_len=4096 -artifact_prefix="$out/art/" \
       -print_final_stats=1 "$dir" > "$out/fuzz_$name.log" 2>&1; then
    tail -40 "$out/fuzz_$name.log"; status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$out/fuzz_$name.log" | head -2
  fi
done
exit $status
