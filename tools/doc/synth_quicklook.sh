#!/bin/bash
# synth_quicklook.sh DIR TILE_INDEX OUT_PREFIX [SIZE [XOFF YOFF WIN]]
# PNG quicklooks of one tile written by gdal_disopt_synth (GDAL command-line tools only):
#   OUT_hh.png   HH, values 0..80 stretched to 0..255, footprints outlined (yellow)
#   OUT_rgb.png  SAR composite R=HH G=HV B=VV
#   OUT_opt.png  the optical tile, footprints outlined (yellow)
#   OUT_2x2.png  the three above and the label mask in a 2x2 mosaic
# SIZE: output pixels per panel (default 450); XOFF YOFF WIN: a square window of the tile (default all)
set -euo pipefail
dir=$1; idx=$2; out=$3; size=${4:-450}
win=(); if [ $# -ge 7 ]; then win=(-srcwin "$5" "$6" "$7" "$7"); fi
row=$(grep -n "_tile_${idx}.tif" "$dir/tiles.csv" | head -1 | cut -d: -f2)
sar="$dir/$(echo "$row" | cut -d, -f1)"; opt="$dir/$(echo "$row" | cut -d, -f2)"; lab="$dir/$(echo "$row" | cut -d, -f3)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ogr2ogr -q -f GeoJSON "$tmp/lines.geojson" "$lab" -nlt MULTILINESTRING
gdal_translate -q -ot Byte -b 1 -b 1 -b 1 -scale 0 80 0 255 "$sar" "$tmp/hh.tif"
gdal_translate -q -ot Byte -b 1 -b 2 -b 4 -scale 0 80 0 255 "$sar" "$tmp/rgb.tif"
gdal_translate -q "$opt" "$tmp/opt.tif"
gdal_translate -q -ot Byte -b 1 -b 1 -b 1 -scale 0 1 0 0 "$sar" "$tmp/mask.tif"
gdal_rasterize -q -b 1 -b 2 -b 3 -burn 255 -burn 255 -burn 255 "$lab" "$tmp/mask.tif"
for f in hh opt; do gdal_rasterize -q -b 1 -b 2 -b 3 -burn 255 -burn 230 -burn 0 "$tmp/lines.geojson" "$tmp/$f.tif"; done
for f in hh rgb opt mask; do
  gdal_translate -q -of PNG "${win[@]}" -outsize "$size" "$size" -r average "$tmp/$f.tif" "$tmp/$f.png"
done
cp "$tmp/hh.png" "${out}_hh.png"; cp "$tmp/rgb.png" "${out}_rgb.png"; cp "$tmp/opt.png" "${out}_opt.png"
# 2x2 mosaic through a VRT: HH | optical / HH-HV-VV | label mask
cat > "$tmp/m.vrt" <<VRT
<VRTDataset rasterXSize="$((2 * size))" rasterYSize="$((2 * size))">
$(for b in 1 2 3; do
  echo "<VRTRasterBand dataType=\"Byte\" band=\"$b\">"
  for spec in "hh 0 0" "opt $size 0" "rgb 0 $size" "mask $size $size"; do
    set -- $spec
    echo "<SimpleSource><SourceFilename>$tmp/$1.png</SourceFilename><SourceBand>$b</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"$size\" ySize=\"$size\"/><DstRect xOff=\"$2\" yOff=\"$3\" xSize=\"$size\" ySize=\"$size\"/></SimpleSource>"
  done
  echo "</VRTRasterBand>"
done)
</VRTDataset>
VRT
gdal_translate -q -of PNG -co ZLEVEL=9 "$tmp/m.vrt" "${out}_2x2.png"
