# tt_common.sh - sourced by device_train_tool.sh and device_table.sh: unpacks the GDAL bundle of
# bundle_gdal.sh (.gdalrun, carried) and defines the helpers that run the training tools on the device.
# Sets: T0 R OUT W G S; functions: say el snap gd timed evaluate train.
# evaluate NAME DIR BANDS: NAME.safetensors through the driver on the unseen tiles of unseen/DIR (SAR-Intensity
# or PS-RGB; BANDS: the driver's BANDS option or empty), scored against their footprints by gdal_disopt_eval.
# train NAME ARGS...: gdal_disopt_train ARGS NAME.safetensors, its per-epoch CSV kept in logs/.
T0=$(date +%s); R=$PWD
OUT=${OUT:-/tmp/tt_out}; W=${WORK:-/tmp/tt}; GR=${GDALRUN:-/tmp/gdalrun}
mkdir -p "$OUT" "$W"; rm -rf "$GR" "$W"/*; mkdir -p "$GR" "$W/logs"
S=$OUT/summary.txt; : > "$S"
say() { echo "$*" | tee -a "$S"; }
el() { echo $(( $(date +%s) - T0 )); }
snap() { tar -czf "$OUT/tt_logs.tgz" -C "$W/logs" . 2>/dev/null; }
tar -C "$GR" -xJf "$R/.gdalrun/gdal.tar.xz" || { say "cannot unpack the bundle"; exit 1; }
G=$GR/g
NV=$(python3 -c 'import nvidia.cudnn,nvidia.cublas,os;print(os.path.dirname(nvidia.cudnn.__file__)+"/lib:"+os.path.dirname(nvidia.cublas.__file__)+"/lib")' 2>/dev/null)
GLD=$G/lib:/usr/local/cuda/lib64${NV:+:$NV}
export GDAL_DRIVER_PATH=$G/plugins GDAL_DATA=$G/share/gdal PROJ_DATA=$G/share/proj PROJ_LIB=$G/share/proj
export DISOPT_CUDA_MODULE=$G/lib/libdisopt_cuda.so.0
gd() { LD_LIBRARY_PATH=$GLD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$@"; }
timed() { # timed NAME CMD...: runs, logs to logs/NAME.out, says the seconds and rc
  local name=$1; shift; local a; a=$(date +%s.%N)
  gd "$@" > "$W/logs/$name.out" 2>&1; local rc=$?
  say "$name: rc $rc, $(awk -v a="$a" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
  return $rc
}
say "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(nproc) cores $(date -u +%FT%TZ)"
cd "$W"
evaluate() {
  local name=$1 dir=$2 bands=$3 i=0
  echo "prediction,truth" > "pairs_$name.csv"
  for img in unseen/$dir/*.tif; do
    tile=${img##*_tile_}; tile=${tile%.tif}
    truth=$(ls unseen/geojson_buildings/*_tile_$tile.geojson | head -1)
    gd "$G/bin/gdal_translate" -q -of BUILDINGS -co MODEL="$name.safetensors" -co DEVICE="${DEVICE:-cuda}" \
      -co OUTPUT=PROBABILITY ${bands:+-co BANDS=$bands} "$img" "pred_${name}_$i.tif" >> "logs/driver_$name.out" 2>&1 \
      && echo "pred_${name}_$i.tif,$truth" >> "pairs_$name.csv"
    i=$((i + 1))
  done
  timed "eval_$name" "$G/bin/gdal_disopt_eval" -list "pairs_$name.csv"
  { echo "eval_$name:"; grep -A4 "^total" "logs/eval_$name.out"; } | tee -a "$S"
}
train() {
  local name=$1; shift
  timed "$name" "$G/bin/gdal_disopt_train" "$@" "$name.safetensors" || return 1
  cp "$name.log.csv" logs/ 2>/dev/null
  say "  $name last epoch: $(tail -1 "$name.log.csv")"
}
