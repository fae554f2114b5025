#!/bin/bash
# lazy_view.sh - issue 9's "lazy-layer experience": how long a 1024x768 view of a lazy BUILDINGS: dataset
# takes to fill, the way QGIS asks for it (a GDALRasterIO of the view's window), on the CPU. Each request is a fresh
# gdal_translate -srcwin (a new process: open, model load, the windows the view needs, write), wall time.
#   bench/onnx/lazy_view.sh LOG        (needs the plugin: GDAL_DRIVER_PATH=build/plugin or an installed one)
# Scene: 2048x1536 x 4 Float32 tiled GeoTIFF, SAR-like (Gamma(2, 12.5) clipped to 0..92, numpy seed 7), made once.
# Views: one aligned to the default 384-pixel blocks (0 0), one not (500 300); one block alone; gdalinfo (open only).
# Env: MODELS (default: build/testmodel_b3.safetensors = the untrained student B3 of bench_cpu and
# build/default.safetensors = the demo B0), THREADS ("1 2"), ROUNDS (3), SCENE_DIR (/tmp/lazyview).
set -u
LOG=${1:-/dev/stdout}
D=${SCENE_DIR:-/tmp/lazyview}; mkdir -p "$D"
MODELS=${MODELS:-build/testmodel_b3.safetensors build/default.safetensors}
if [ ! -f "$D/syn.tif" ]; then /usr/bin/python3 - "$D/syn.tif" <<'PY'
import sys, numpy as np
from osgeo import gdal, osr
rng = np.random.default_rng(7); W, H = 2048, 1536
d = gdal.GetDriverByName("GTiff").Create(sys.argv[1], W, H, 4, gdal.GDT_Float32, ["TILED=YES"])
d.SetGeoTransform([600000, 0.5, 0, 5700000, 0, -0.5])
s = osr.SpatialReference(); s.ImportFromEPSG(32631); d.SetProjection(s.ExportToWkt())
for b in range(4):
    d.GetRasterBand(b + 1).WriteRaster(0, 0, W, H, np.clip(rng.gamma(2, 12.5, (H, W)), 0, 92).astype(np.float32).tobytes())
d = None
PY
fi
t() { local a b; a=$(date +%s.%N); "$@" > /dev/null 2>&1 || echo "FAILED: $*" >&2; b=$(date +%s.%N); awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b-a}'; }
{
echo "# lazy_view.sh $(date -u +%FT%TZ) host $(hostname) nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# commit $(git rev-parse --short HEAD 2>/dev/null); $(gdalinfo --version)"
for m in $MODELS; do
  mb=$(du -m "$m" | cut -f1)
  echo "## model $m ($mb MB)"
  echo "open only (gdalinfo): $(t gdalinfo -oo MODEL="$m" -oo DEVICE=CPU "BUILDINGS:$D/syn.tif") s"
  for r in $(seq 1 "${ROUNDS:-3}"); do
    for th in ${THREADS:-1 2}; do
      line="round $r threads $th:"
      for win in "0 0 384 384" "0 0 1024 768" "500 300 1024 768"; do
        rm -f "$D/out.tif"
        line="$line  srcwin $win $(t gdal_translate -q -srcwin $win -oo MODEL="$m" -oo DEVICE=CPU -oo NUM_THREADS="$th" \
          "BUILDINGS:$D/syn.tif" "$D/out.tif") s;"
      done
      echo "$line"
    done
  done
done
} | tee "$LOG"
