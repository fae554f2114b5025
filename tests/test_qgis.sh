#!/usr/bin/env bash
# test_qgis.sh BUILD_DIR SHARED_DIR [OUT_DIR] - the BUILDINGS driver in a real QGIS 3.22, headless.
# Renders the lazy dataset through a VRT (absolute BUILDINGS: source with open options, and the
# relocatable sidecar form) and the CreateCopy GeoTIFF with tests/qgis_render.py, and requires
# identical pixels: full extent, zoomed out (QGIS reads overviews-free, decimated), and a window.
# Scene: the real Capella SAR (dB) linearly mapped to SpaceNet 6's value range, so that the demo
# model's output varies over it.
set -euo pipefail
build=$(cd "$1" && pwd); shared=$(cd "$2" && pwd); out=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
if ! QT_QPA_PLATFORM=offscreen /usr/bin/python3 -c 'import qgis.core' 2>/dev/null; then
  echo "QGIS Python bindings missing (bash .ci/install-qgis): skipped"; exit 77
fi
export GDAL_DRIVER_PATH="$build/plugin" QT_QPA_PLATFORM=offscreen
model="$build/testmodel_b3.safetensors"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
opts=(TILE_SIZE=128 OVERLAP=32 DEVICE=CPU)
gdal_translate -q -of VRT -ot Float32 -scale -25 35 0 92 "$shared/realdata/rotterdam_capella/sar_masked.tif" "$tmp/scene.vrt"
gdal_translate -q -of BUILDINGS -co MODEL="$model" ${opts[@]/#/-co } "$tmp/scene.vrt" "$tmp/ref.tif"
gdal_translate -q -of VRT -oo MODEL="$model" ${opts[@]/#/-oo } "BUILDINGS:$tmp/scene.vrt" "$tmp/lazy.vrt"
mkdir -p "$tmp/proj"
cp "$tmp/scene.vrt" "$tmp/proj/scene.vrt"
ln -s "$model" "$tmp/proj/model.safetensors"
cat > "$tmp/proj/scene.buildings.json" <<JSON
{"type": "disopt.buildings", "source": "scene.vrt",
 "options": {"MODEL": "model.safetensors", "TILE_SIZE": "128", "OVERLAP": "32", "BLOCK_SIZE": "77", "DEVICE": "CPU"}}
JSON
(cd "$tmp/proj" && gdal_translate -q -of VRT scene.buildings.json buildings.vrt)
py=(/usr/bin/python3 "$here/qgis_render.py" --min 0 --max 1)
rc=0
run() { echo "== $*"; "${py[@]}" "$@" || rc=1; }
# extent of a window inside the scene (map units of EPSG:32631)
read -r x0 y1 < <(gdalinfo -json "$tmp/ref.tif" | /usr/bin/python3 -c 'import json,sys; g=json.load(sys.stdin)["geoTransform"]; print(g[0], g[3])')
win=$(/usr/bin/python3 -c "print(f'{$x0+100},{$y1-600},{$x0+500},{$y1-250}')")
run --compare "$tmp/ref.tif" "$tmp/lazy.vrt" --size 400 ${out:+--out-dir "$out/full"}
run --compare "$tmp/ref.tif" "$tmp/lazy.vrt" --size 97
run --compare "$tmp/ref.tif" "$tmp/lazy.vrt" --size 300 --extent "$win"
run --compare "$tmp/ref.tif" "$tmp/proj/buildings.vrt" --size 333
run --compare "$tmp/ref.tif" "BUILDINGS:$tmp/scene.vrt|option:MODEL=$model|option:TILE_SIZE=128|option:OVERLAP=32|option:DEVICE=CPU" --size 200
exit $rc
