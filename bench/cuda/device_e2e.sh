#!/bin/bash
# device_e2e.sh - end-to-end run of `gdal_translate -of BUILDINGS` on the lent GPU machine, with the
# GDAL bundle made by bench/cuda/bundle_gdal.sh (see bench/cuda/README.md):
#   run(command="bash bench/cuda/device_e2e.sh", carry=[".gdalrun"])
# from the repository root there; logs go to $OUT (6 files). Steps:
#   a. CPU vs CUDA: sar_masked.tif (the real Capella scene, 200 x 200; the demo model saturates on it,
#      every valid pixel is 1.0) and a SMALL x SMALL synthetic SAR-like scene (2048; probabilities
#      spread over 0..1), DEVICE=CPU FP32 as reference against CUDA FP32 (BATCH_SIZE 1 and 8) and
#      FP16 (1 and 8): max |diff|, pixels differing by > 1e-5, mask flips at 0.5, nodata mismatches;
#   b. a SIZE x SIZE (16384) 4-band Float32 synthetic scene (ENVI raw, BSQ, on local disk: values
#      0..92, smooth structure x gamma(4) speckle, a NaN corner) through DEVICE=CUDA at FP32 and FP16
#      with BATCH_SIZE 16 and 32: wall seconds, megapixels/s, tiles/s;
#   c. a summary (stdout and $OUT/summary.txt), and a check that no stub library was called.
# Env: SIZE (16384), SMALL (2048), SKIP_CUDA=1 (CPU only: a runs CPU batch 8 against CPU batch 1, b runs
# DEVICE=CPU FP32; for trying the script without a GPU), BUDGET (540: seconds after which the
# remaining timed runs of b are skipped, the device tool stops a command at 600), WORK (/tmp/e2e:
# scratch, ~4.3 GB at 16384), GDALRUN (/tmp/gdalrun: where the bundle is unpacked), BUNDLE
# (.gdalrun/gdal.tar.xz), ALT_MODULE (see below), SMALLCASES / BIGCASES (the runs of a / b), BIG_DEBUG (CPL_DEBUG
# of the runs of b: BUILDINGS; ON adds GDAL's own timed messages), BIG_CONFIG (more --config options for b).
set -u
T0=$(date +%s.%N)
R=$PWD
OUT=${OUT:-/tmp/e2e_out}; SIZE=${SIZE:-16384}; SMALL=${SMALL:-2048}; SKIP_CUDA=${SKIP_CUDA:-0}
BUDGET=${BUDGET:-540}; W=${WORK:-/tmp/e2e}; GR=${GDALRUN:-/tmp/gdalrun}; BUNDLE=${BUNDLE:-$R/.gdalrun/gdal.tar.xz}
mkdir -p "$OUT" "$W"; rm -rf "$GR" "$W"/*; mkdir -p "$GR"
LOG=$OUT/e2e.log; CMP=$OUT/compare.txt; BENCH=$OUT/bench.txt; SUM=$OUT/summary.txt
: > "$LOG"; : > "$CMP"; : > "$BENCH"; : > "$SUM"
say() { echo "$*" | tee -a "$SUM"; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}'; }

python3 -c 'import numpy' 2>/dev/null || { say "python3 $(command -v python3) has no numpy"; exit 1; }
tar -C "$GR" -xJf "$BUNDLE" || { say "cannot unpack $BUNDLE"; exit 1; }
G=$GR/g
NV=$(python3 -c 'import nvidia.cudnn,nvidia.cublas,os;print(os.path.dirname(nvidia.cudnn.__file__)+"/lib:"+os.path.dirname(nvidia.cublas.__file__)+"/lib")' 2>/dev/null)
GLD=$G/lib:/usr/local/cuda/lib64${NV:+:$NV}
export GDAL_DRIVER_PATH=$G/plugins GDAL_DATA=$G/share/gdal PROJ_DATA=$G/share/proj PROJ_LIB=$G/share/proj
export DISOPT_CUDA_MODULE=$G/lib/libdisopt_cuda.so.0 GDAL_CACHEMAX=${GDAL_CACHEMAX:-2048}
# ALT_MODULE=path/to/libdisopt_cuda.so.0[.xz]: every run with that CUDA module instead of the bundle's (e.g.
# .whl/altmod/libdisopt_cuda_alt.so.0.xz, a module built from another branch against the same interface)
if [ -n "${ALT_MODULE:-}" ]; then
  case "$ALT_MODULE" in *.xz) xz -dc "$ALT_MODULE" > "$GR/alt_module.so" ;; *) cp "$ALT_MODULE" "$GR/alt_module.so" ;; esac
  export DISOPT_CUDA_MODULE=$GR/alt_module.so; echo "CUDA module: $ALT_MODULE" | tee -a "$SUM"
fi
# only the bundle's programs get the bundle's libraries (python3 and the shell keep the system's)
gd() { LD_LIBRARY_PATH=$GLD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$@"; }
# run NAME CMD...: logs the command and its output, sets $RC and $SECS
run() {
  local name=$1; shift
  echo "\$ [$name] $*" >> "$LOG"
  local t0; t0=$(date +%s.%N)
  gd "$@" >> "$LOG" 2>&1; RC=$?
  SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  echo "  -> rc=$RC, ${SECS} s" >> "$LOG"
  [ $RC = 0 ] || echo "FAILED ($RC): [$name] $*" | tee -a "$SUM" >&2
}

{ echo "== machine"; nvidia-smi 2>&1 | head -15; nproc; free -g | head -2; df -h /tmp | tail -1
  echo "== bundle"; head -1 "$G/MANIFEST"; grep -c '^real' "$G/MANIFEST"; grep -c '^stub' "$G/MANIFEST"
  echo "LD_LIBRARY_PATH for GDAL: $GLD"
  echo "== unresolved libraries (ldd, should be none)"
  for f in "$G"/bin/* "$G"/plugins/* "$G"/lib/*; do gd ldd "$f" 2>/dev/null | grep -H --label="$f" 'not found'; done
  echo "== versions"; gd "$G/bin/gdalinfo" --version; python3 -c 'import numpy, sys; print(sys.version.split()[0], numpy.__version__)'
} > "$OUT/env.txt" 2>&1

# the model: the build's testmodel_b3.safetensors (the tests' model), assembled from the tracked golden B3 (92 MB of
# incompressible floats are not packed)
M=$W/default.safetensors
run model "$G/bin/disopt_testmodel" "$R/testdata/golden/student_b3.safetensors" "$M"
want=$(awk '{print $1}' "$G/testmodel_b3.safetensors.sha256")
got=$(python3 -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$M" 2>/dev/null)
[ "$want" = "$got" ] && say "model: testmodel_b3.safetensors, sha256 $got (= the build's)" \
  || { say "model: sha256 $got differs from the build's $want"; exit 1; }
run formats "$G/bin/gdalinfo" --formats
grep -q '^ *BUILDINGS -raster' "$LOG" && say "driver: $(grep -m1 '^ *BUILDINGS -raster' "$LOG" | sed 's/^ *//')" \
  || say "driver BUILDINGS not registered"

# numpy helpers: SAR-like scenes (ENVI raw, BSQ, Float32) and the comparison of two probability
# rasters (ENVI raw, written by gdal_translate -of ENVI)
cat > "$W/e2e.py" <<'EOF'
import sys, re, numpy as np
def hdr(p):
    h = open(re.sub(r"\.[^./]*$", "", p) + ".hdr").read()
    g = lambda k: int(re.search(k + r"\s*=\s*(\d+)", h).group(1))
    return g("lines"), g("samples"), g("bands"), {4: "<f4", 1: "u1"}[g("data type")]
def load(p):
    n, m, b, dt = hdr(p)
    return np.fromfile(p, dtype=dt).reshape(b, n, m)[0]
def make(path, n):
    """n x n x 4 Float32, dB-like 0..92: smooth structure (blocks, ramps, waves) x gamma(4)/4 speckle,
    a NaN corner (nodata); written in strips of 512 rows through a memmap, speckle from a pool"""
    rng = np.random.default_rng(12345)
    pool = rng.standard_gamma(4.0, size=(1 << 23) + 512 * n, dtype=np.float32) / 4
    mm = np.memmap(path, dtype="<f4", mode="w+", shape=(4, n, n))
    x = np.arange(n, dtype=np.float32)
    for y0 in range(0, n, 512):
        h = min(512, n - y0); y = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
        base = 38 + 20 * np.sin(x / 41.0) * np.cos(y / 57.0) + 12 * (((x // 96) + (y // 96)) % 2) \
            + 8 * np.sin((x + y) / 700.0)
        for b in range(4):
            o = int(rng.integers(0, 1 << 23))
            v = base * (1 + 0.08 * b) * pool[o:o + h * n].reshape(h, n)
            np.clip(v, 0, 92, out=v)
            if y0 == 0 and b == 0:
                v[: min(h, n // 16), : n // 16] = np.nan
            mm[b, y0:y0 + h] = v
    mm.flush()
    open(re.sub(r"\.[^./]*$", "", path) + ".hdr", "w").write(
        f"ENVI\ndescription = {{SAR-like test scene}}\nsamples = {n}\nlines = {n}\nbands = 4\n"
        "header offset = 0\nfile type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n")
def compare(label, ref, other):
    a, b = load(ref), load(other)
    na, nb = a == -1, b == -1
    v = ~na & ~nb
    d = np.abs(a[v].astype(np.float64) - b[v])
    flips = int(((a > 0.5) != (b > 0.5))[v].sum())
    print(f"{label:34s} px {a.size:9d} valid {int(v.sum()):9d} nodata-mismatch {int((na != nb).sum()):5d} "
          f"max|d| {d.max() if d.size else 0:.3e} mean|d| {d.mean() if d.size else 0:.3e} "
          f">1e-5 {int((d > 1e-5).sum()):8d} flips@0.5 {flips:7d} ({100.0 * flips / max(1, int(v.sum())):.4f} %)"
          f"  ref mean {a[v].mean() if v.any() else 0:.4f} min {a[v].min() if v.any() else 0:.4f}"
          f" max {a[v].max() if v.any() else 0:.4f}")
def make_iid(path, n):
    """n x n x 4 Float32, i.i.d. Gamma(2, 12.5) clipped to [0, 92] (the distribution the demo model's
    BatchNorm statistics were calibrated on: there the untrained network is well conditioned, max
    |logit| ~ 50; on the structured scene above its logits reach ~1e6 and 1-ulp input noise moves
    them by ~17 %, so CPU-vs-GPU rounding differences flip pixels there)"""
    rng = np.random.default_rng(777)
    mm = np.memmap(path, dtype="<f4", mode="w+", shape=(4, n, n))
    for b in range(4):
        mm[b] = np.clip(rng.gamma(2.0, 12.5, size=(n, n)).astype(np.float32), 0, 92)
    mm.flush()
    open(re.sub(r"\.[^./]*$", "", path) + ".hdr", "w").write(
        f"ENVI\ndescription = {{iid SAR-like test scene}}\nsamples = {n}\nlines = {n}\nbands = 4\n"
        "header offset = 0\nfile type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n")
if sys.argv[1] == "make": make(sys.argv[2], int(sys.argv[3]))
elif sys.argv[1] == "make_iid": make_iid(sys.argv[2], int(sys.argv[3]))
elif sys.argv[1] == "compare": compare(sys.argv[2], sys.argv[3], sys.argv[4])
EOF

# ---- a. CPU vs CUDA
DEVS="CUDA"; [ "$SKIP_CUDA" = 1 ] && DEVS="CPU"
# test_tiler on the GPU (when bundled): bulk runs with the first batch prepared ahead and batches prefetched vs
# neither, bit for bit; its model path is the build's (/work/main/build-gdalrun/testmodel_b3.safetensors)
if [ -x "$G/bin/test_tiler" ] && [ "$SKIP_CUDA" != 1 ]; then
  [ -e /work/main ] || { mkdir -p /work && ln -s "$R" /work/main; }
  mkdir -p /work/main/build-gdalrun && ln -sf "$M" /work/main/build-gdalrun/testmodel_b3.safetensors
  DISOPT_TEST_BACKEND=cuda CMOCKA_MESSAGE_OUTPUT=stdout timeout 120 env LD_LIBRARY_PATH=$GLD "$G/bin/test_tiler" \
    > "$OUT/test_tiler_cuda.log" 2>&1
  say "a. test_tiler CUDA: rc $? $(grep -E '^\[ +(PASSED|FAILED|  ERROR|  SKIPPED) +\]' "$OUT/test_tiler_cuda.log" | tr '\n' ' ')"
  grep -E "^# batch" "$OUT/test_tiler_cuda.log" | head -12 | tee -a "$SUM"
fi
cp "$G/sar_masked.tif" "$W/sar.tif"
# SCENES=none: part b only
[ "${SCENES:-}" = none ] || python3 "$W/e2e.py" make "$W/small.raw" "$SMALL" || say "cannot make the small scene"
[ "${SCENES:-}" = none ] || python3 "$W/e2e.py" make_iid "$W/iid.raw" "$SMALL" || say "cannot make the iid scene"
for scene in ${SCENES:-sar small iid}; do
  [ "$scene" = none ] && continue
  src=$W/$scene.tif; [ $scene != sar ] && src=$W/$scene.raw
  base=(-of BUILDINGS -co MODEL="$M" -co OUTPUT=PROBABILITY)
  run "$scene cpu" "$G/bin/gdal_translate" "${base[@]}" -co DEVICE=CPU "$src" "$W/${scene}_cpu.tif"
  say "a. $scene CPU FP32 b1: ${SECS} s (rc $RC)"
  run "$scene cpu envi" "$G/bin/gdal_translate" -q -of ENVI "$W/${scene}_cpu.tif" "$W/${scene}_cpu.raw"
  if [ "$SKIP_CUDA" = 1 ]; then cases="CPU:FP32:8"; else cases=${SMALLCASES:-"CUDA:FP32:1 CUDA:FP32:8 CUDA:FP32:32 CUDA:FP16:1 CUDA:FP16:8 CUDA:FP16:32"}; fi
  for c in $cases; do
    IFS=: read -r dev prec bs <<< "$c"; tag=${scene}_${dev}_${prec}_b${bs}
    run "$tag" "$G/bin/gdal_translate" "${base[@]}" -co DEVICE=$dev -co PRECISION=$prec -co BATCH_SIZE=$bs "$src" "$W/$tag.tif"
    say "a. $scene $dev $prec b$bs: ${SECS} s (rc $RC)"
    [ $RC = 0 ] || continue
    run "$tag envi" "$G/bin/gdal_translate" -q -of ENVI "$W/$tag.tif" "$W/$tag.raw"
    python3 "$W/e2e.py" compare "$scene: $dev $prec b$bs vs CPU FP32" "$W/${scene}_cpu.raw" "$W/$tag.raw" >> "$CMP" 2>&1
  done
  # the GPU against itself: batch 1 vs 8, the lazy dataset (blocks of 77) and CUDA:ALL vs CreateCopy
  # batch 8 (0 pixels may differ: the driver's promise holds on the GPU too)
  if [ "$SKIP_CUDA" != 1 ] && [ $scene != sar ] && [ -f "$W/${scene}_CUDA_FP32_b8.raw" ]; then
    python3 "$W/e2e.py" compare "$scene: CUDA FP32 b1 vs CUDA FP32 b8" "$W/${scene}_CUDA_FP32_b8.raw" "$W/${scene}_CUDA_FP32_b1.raw" >> "$CMP" 2>&1
    run "lazy" "$G/bin/gdal_translate" -q -of ENVI -oo MODEL="$M" -oo DEVICE=CUDA -oo BLOCK_SIZE=77 "BUILDINGS:$src" "$W/${scene}_lazy.raw"
    say "a. $scene lazy CUDA FP32 BLOCK_SIZE=77: ${SECS} s (rc $RC)"
    [ $RC = 0 ] && python3 "$W/e2e.py" compare "$scene: CUDA lazy blocks 77 vs CUDA b8" "$W/${scene}_CUDA_FP32_b8.raw" "$W/${scene}_lazy.raw" >> "$CMP" 2>&1
    [ $RC = 0 ] && [ -f "$W/${scene}_CUDA_FP32_b1.raw" ] && python3 "$W/e2e.py" compare "$scene: CUDA lazy blocks 77 vs CUDA b1" "$W/${scene}_CUDA_FP32_b1.raw" "$W/${scene}_lazy.raw" >> "$CMP" 2>&1
    run "all" "$G/bin/gdal_translate" "${base[@]}" -co DEVICE=CUDA:ALL -co BATCH_SIZE=8 "$src" "$W/${scene}_all.tif"
    say "a. $scene CUDA:ALL FP32 b8: ${SECS} s (rc $RC)"
    if [ $RC = 0 ]; then
      run "all envi" "$G/bin/gdal_translate" -q -of ENVI "$W/${scene}_all.tif" "$W/${scene}_all.raw"
      python3 "$W/e2e.py" compare "$scene: CUDA:ALL b8 vs CUDA b8" "$W/${scene}_CUDA_FP32_b8.raw" "$W/${scene}_all.raw" >> "$CMP" 2>&1
    fi
  fi
done
# the stats of the first small-scene FP32 output made (b1 when SMALLCASES had it)
STATS_TIF=$(ls "$W"/small_*_FP32_b1.tif "$W"/small_*_FP32_b*.tif 2>/dev/null | head -1)
[ "${SCENES:-}" = none ] || run "stats" "$G/bin/gdalinfo" -stats "${STATS_TIF:-$W/small_${DEVS}_FP32_b1.tif}"
sed -n '/^\$ \[stats\]/,$p' "$LOG" | grep -E 'Size is|PROJCRS|ID\["EPSG"|DISOPT_(DEVICE|PRECISION|MODEL_SHA256)|STATISTICS_(MEAN|MIN|MAX)' | head -12 > "$OUT/gdalinfo_out.txt"
[ "${SCENES:-}" = none ] || run "stats sar" "$G/bin/gdalinfo" -stats "$W/sar_cpu.tif"
sed -n '/^\$ \[stats sar\]/,$p' "$LOG" | grep -E 'Size is|PROJCRS|ID\["EPSG"|STATISTICS_' >> "$OUT/gdalinfo_out.txt"
rm -f "$W"/small* "$W"/iid* "$W"/sar_*

# ---- b. timed runs on a SIZE x SIZE scene
ts=$(date +%s.%N)
[ "$SIZE" = 0 ] || python3 "$W/e2e.py" make "$W/big.raw" "$SIZE" || { say "cannot make the big scene"; SIZE=0; }
BIGSRC=$W/big.raw
if [ "${BIGFMT:-ENVI}" = GTIFF ] && [ "$SIZE" != 0 ]; then
  # the same scene as a tiled GeoTIFF (512 x 512 blocks, uncompressed): ENVI's full-width scanline
  # blocks make every 512-pixel window read 512 whole rows per band
  ts=$(date +%s.%N)
  run "big tif" "$G/bin/gdal_translate" -q -of GTiff -co TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512 -co BIGTIFF=YES \
      "$W/big.raw" "$W/big.tif"
  rm -f "$W/big.raw"; BIGSRC=$W/big.tif
  say "b. source as a tiled GeoTIFF (512 x 512 blocks), converted in $(awk -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
fi
# CROP=1: the same pixels three ways on a cell-aligned crop (the 4224^2 at 3840,3840; its interior
# 2688^2 at +768 only sees windows that lie inside the crop, so there the crop's result must be the
# big raster's): CPU FP32 and CUDA FP32 b32 on the crop, the lazy BUILDINGS: dataset of the big
# scene on CUDA (disopt_tiler_read), and, below, each timed CreateCopy run of the big scene
if [ "${CROP:-0}" = 1 ] && [ "$SIZE" -ge 8192 ]; then
  run "crop" "$G/bin/gdal_translate" -q -of GTiff -co TILED=YES -srcwin 3840 3840 4224 4224 "$BIGSRC" "$W/crop.tif"
  for dev in CPU CUDA; do
    run "crop $dev" "$G/bin/gdal_translate" -q -of BUILDINGS -co MODEL="$M" -co DEVICE=$dev -co PRECISION=FP32 \
        -co BATCH_SIZE=32 -co OUTPUT=PROBABILITY "$W/crop.tif" "$W/crop_$dev.tif"
    say "b. crop $dev FP32: ${SECS} s (rc $RC)"
    run "crop $dev in" "$G/bin/gdal_translate" -q -of ENVI -srcwin 768 768 2688 2688 "$W/crop_$dev.tif" "$W/crop_${dev}_in.raw"
  done
  python3 "$W/e2e.py" compare "crop interior: CUDA vs CPU" "$W/crop_CPU_in.raw" "$W/crop_CUDA_in.raw" >> "$CMP" 2>&1
  run "lazy big" "$G/bin/gdal_translate" -q -of ENVI -srcwin 4608 4608 2688 2688 -oo MODEL="$M" -oo DEVICE=CUDA \
      -oo PRECISION=FP32 "BUILDINGS:$BIGSRC" "$W/lazy_in.raw"
  say "b. lazy big CUDA FP32 (the crop's interior): ${SECS} s (rc $RC)"
  python3 "$W/e2e.py" compare "big lazy CUDA vs crop CPU" "$W/crop_CPU_in.raw" "$W/lazy_in.raw" >> "$CMP" 2>&1
  python3 "$W/e2e.py" compare "big lazy CUDA vs crop CUDA" "$W/crop_CUDA_in.raw" "$W/lazy_in.raw" >> "$CMP" 2>&1
fi
say "b. scene ${SIZE}x${SIZE}x4 Float32 ENVI raw ($(du -h "$W/big.raw" | cut -f1)) made in $(awk -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
# windows: canonical cells (one 512 window per 384 x 384 output cell) and what CreateCopy computes
# (columns of 16 cells, each with one extra window on either side: core/raster/tiler.c)
read -r CELLS WINS <<< "$(python3 -c "
import math; n=$SIZE; s=384; k=math.ceil(n/s)
print(k*k, k*sum(min(b+17,k)-max(b-1,0) for b in range(0,k,16)))")"
echo "# ${SIZE}x${SIZE} (${CELLS} cells of 384 px, ${WINS} network windows of 512 px computed), GDAL_CACHEMAX=$GDAL_CACHEMAX MB, GTiff DEFLATE+PREDICTOR=3 (compression threads: the driver sets GTiff NUM_THREADS=ALL_CPUS since 2026-12-06; BIG_CONFIG='--config GDAL_NUM_THREADS ALL_CPUS' for the older plugin)" >> "$BENCH"
echo "# plugin device precision batch  wall_s  Mpx/s  cells/s  windows/s  gpu_busy  rss_MiB  rc   (gpu_busy: mean nvidia-smi utilization.gpu over the run, 100 ms samples; rss: peak RSS of gdal_translate; GDAL_CACHEMAX=${BIG_CACHEMAX:-256} MB for these runs)" >> "$BENCH"
if [ "$SKIP_CUDA" = 1 ]; then cases="CPU:FP32:16 CPU:FP32:32"; else cases="CUDA:FP32:16 CUDA:FP32:32 CUDA:FP16:16 CUDA:FP16:32"; fi
[ -n "${BIGCASES:-}" ] && cases=$BIGCASES
last=0
[ "$SIZE" = 0 ] && cases=""
# OLD_PLUGIN_DIR (a folder holding another build's gdal_BUILDINGS.so, e.g. the serial tiler before the
# pipeline): every case runs with it too, right after the current plugin, tagged "old"
PLUGS="cur"; [ -n "${OLD_PLUGIN_DIR:-}" ] && [ -f "$OLD_PLUGIN_DIR/gdal_BUILDINGS.so" ] && PLUGS="cur old"
for c0 in $cases; do for plug in $PLUGS; do
  c=$c0
  if [ $plug = old ]; then export GDAL_DRIVER_PATH=$OLD_PLUGIN_DIR; else export GDAL_DRIVER_PATH=$G/plugins; fi
  IFS=: read -r dev prec bs nt <<< "$c"
  # a fourth field "nt": the run with --config GDAL_NUM_THREADS ALL_CPUS (GTiff then decodes the
  # source's tiles in threads too)
  # more variants in the fourth field, joined by "+": "f0": the output left to GDAL's block cache until the final
  # flush (DISOPT_FLUSH_MB=0), "p0": a short last batch not padded (DISOPT_TILER_PAD=NO), as before 2026-12-07;
  # "ps": cudnnCreate on its own thread (DISOPT_CUDA_PAR_SETUP=1); "nf" / "np": no prefetch / no first batch
  # prepared ahead (the tiler before 2026-12-07)
  XCFG=""; XENV="E2E_CASE=$c"
  for tok in ${nt//+/ }; do case $tok in
    ps) XENV="$XENV DISOPT_CUDA_PAR_SETUP=1" ;; # cudnnCreate on its own thread
    nt) XCFG="$XCFG --config GDAL_NUM_THREADS ALL_CPUS" ;;
    f0) XCFG="$XCFG --config DISOPT_FLUSH_MB 0" ;;
    p0) XCFG="$XCFG --config DISOPT_TILER_PAD NO" ;;
    nf) XCFG="$XCFG --config DISOPT_TILER_PREFETCH NO" ;; # no prefetch of batch j + 1 while j runs (2026-12-07)
    np) XCFG="$XCFG --config DISOPT_TILER_PREPARE NO" ;;  # the first batch not prepared ahead (2026-12-07)
  esac; done
  if [ $(( $(elapsed) + last + 10 )) -gt "$BUDGET" ]; then say "b. $plug $dev $prec b$bs skipped: $(elapsed) s used of BUDGET=$BUDGET"; continue; fi
  rm -f "$W/big_out.tif"
  # through measure.py: wall time, peak RSS of gdal_translate, GPU busy fraction (nvidia-smi samples)
  echo "\$ [big $dev $prec b$bs] gdal_translate -of BUILDINGS ... $BIGSRC" >> "$LOG"
  n0=$(wc -l < "$LOG")
  MEAS=$(env $XENV python3 "$R/bench/cuda/measure.py" --ld "$GLD" -- "$G/bin/gdal_translate" -q -of BUILDINGS -co MODEL="$M" \
      -co DEVICE=$dev -co PRECISION=$prec -co BATCH_SIZE=$bs ${BIG_CONFIG:-} $XCFG --config CPL_DEBUG ${BIG_DEBUG:-BUILDINGS} --config CPL_TIMESTAMP ON \
      --config GDAL_CACHEMAX "${BIG_CACHEMAX:-256}" "$BIGSRC" "$W/big_out.tif" 2>>"$LOG" | tail -1)
  echo "  -> $MEAS" >> "$LOG"
  # this run's timed lines (BIG_DEBUG=ON: GDAL's own debug messages too, e.g. GDALClose and GDALDestroy)
  tail -n +$((n0 + 1)) "$LOG" | grep -E "BUILDINGS: (model:|CreateCopy:|tiler run:|cuda backend:|engine:|plan )${BIG_DEBUG:+|GDAL: }" | sed "s/^/   $plug${nt:+-$nt} $dev $prec b$bs: /" >> "$BENCH"
  echo "   $plug${nt:+-$nt} $dev $prec b$bs: process $(grep -oE 'start=[0-9:.]+ end=[0-9:.]+' <<< "$MEAS")" >> "$BENCH"
  SECS=$(sed -n 's/.*wall_s=\([0-9.]*\).*/\1/p' <<< "$MEAS"); RC=$(sed -n 's/.*rc=\([0-9-]*\).*/\1/p' <<< "$MEAS")
  RSS=$(sed -n 's/.*peak_rss_mib=\([0-9]*\).*/\1/p' <<< "$MEAS"); BUSY=$(sed -n 's/.*gpu_busy=\([0-9.na]*\).*/\1/p' <<< "$MEAS")
  [ -n "$SECS" ] || { SECS=1; RC=99; }
  last=${SECS%.*}
  awk -v d=$dev -v p=$prec -v b=$bs -v t=$SECS -v n=$SIZE -v c=$CELLS -v w=$WINS -v rc=$RC -v r="$RSS" -v g="$BUSY" \
    -v pl="$plug${nt:+-$nt}" 'BEGIN{printf "%-3s %-6s %-9s %5d  %7.2f  %6.2f  %7.2f  %8.2f  %6s  %8s   %d\n", pl, d, p, b, t, n*n/1e6/t, c/t, w/t, g, r, rc}' >> "$BENCH"
  say "b. $plug $dev $prec b$bs: $(tail -1 "$BENCH")"
  if [ $RC = 0 ]; then
    run "big stats" "$G/bin/gdalinfo" ${BIGSTATS:--approx_stats} "$W/big_out.tif"
    echo "   $dev $prec b$bs${nt:+ $nt} (gdalinfo ${BIGSTATS:--approx_stats}): $(sed -n '/^\$ \[big stats\]/,$p' "$LOG" | grep -m1 'Minimum=' | sed 's/^ *//'), $(du -h "$W/big_out.tif" | cut -f1)" >> "$BENCH"
    sed -i '/^\$ \[big stats\]/,$d' "$LOG"  # keep the log short; the line above has what matters
    if [ -f "$W/crop_CPU_in.raw" ]; then
      run "big in" "$G/bin/gdal_translate" -q -of ENVI -srcwin 4608 4608 2688 2688 "$W/big_out.tif" "$W/big_in.raw"
      python3 "$W/e2e.py" compare "big $plug $dev $prec b$bs${nt:+ $nt} vs crop CPU" "$W/crop_CPU_in.raw" "$W/big_in.raw" >> "$CMP" 2>&1
      python3 "$W/e2e.py" compare "big $plug $dev $prec b$bs${nt:+ $nt} vs big lazy" "$W/lazy_in.raw" "$W/big_in.raw" >> "$CMP" 2>&1
    fi
  fi
done; done
export GDAL_DRIVER_PATH=$G/plugins
rm -f "$W/big.raw" "$W/big.hdr" "$W/big.tif" "$W/big_out.tif"

# ---- c. summary
say ""; say "== comparisons (reference: DEVICE=CPU FP32)"; cat "$CMP" | tee -a "$SUM"
say ""; say "== timings"; cat "$BENCH" | tee -a "$SUM"
n=$(grep -c 'stub called' "$LOG"); say ""; say "stub calls: $n$([ "$n" != 0 ] && grep 'stub called' "$LOG" | sort | uniq -c | head -5 | tr '\n' ';')"
say "failed commands: $(grep -c 'FAILED' "$SUM")"
say "total $(elapsed) s"
