#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) into OUTDIR.
# Independent of the project's compiler: the main build may use gcc.
#   usage: tests/fuzz/build.sh OUTDIR     exit 77 when clang or libFuzzer is not installed
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
out="${1:?usage: build.sh OUTDIR}"
cc="${DISOPT_FUZZ_CC:-$(command -v clang || true)}"
if [ -z "$cc" ]; then echo "clang not installed: skipping fuzz targets"; exit 77; fi
mkdir -p "$out"
flags=(-std=c11 -D_POSIX_C_SOURCE=200809L -D_FILE_OFFSET_BITS=64 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$src/include" -I"$src/core" -I"$src/core/raster" $(pkg-config --cflags json-c))
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n){(void)d;(void)n;return 0;}' |
     "$cc" -x c - -fsanitize=fuzzer -o "$out/.probe" 2>/dev/null; then
  echo "libFuzzer not available with $cc: skipping fuzz targets"; exit 77
fi
rm -f "$out/.probe"
"$cc" "${flags[@]}" "$here/fuzz_safetensors.c" "$src/core/safetensors.c" "$src/core/status.c" \
  $(pkg-config --libs json-c) -lm -o "$out/fuzz_safetensors"
if [ -f "$here/fuzz_pickle.c" ]; then
  "$cc" "${flags[@]}" "$here/fuzz_pickle.c" "$src/core/raster/pickle.c" "$src/core/status.c" -lm \
    -o "$out/fuzz_pickle"
fi
echo "fuzz targets in $out"
