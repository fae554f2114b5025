#!/usr/bin/env python3
"""Draw the README's demo picture: the demo SAR scene, the optical image of the same tile (not shipped;
regenerate it with gdal_disopt_synth, see README.md here), and the driver's buildings over the SAR with
the true footprints outlined.

usage: /usr/bin/python3 testdata/demo/make_figure.py SAR.tif OPTICAL.tif PRED.tif TRUTH.geojson OUT.png
PRED: the driver's output (OUTPUT=PROBABILITY or MASK). Needs numpy, Pillow and GDAL's Python bindings."""
import sys
import numpy as np
from osgeo import gdal, ogr
from PIL import Image, ImageDraw

sar_p, opt_p, pred_p, truth_p, out_p = sys.argv[1:6]
S = 384  # panel side

def read(ds, b, dt=gdal.GDT_Float32, np_dt=np.float32):
    """a band as an array, through ReadRaster (no gdal_array: its numpy ABI may not match)"""
    x, y = ds.RasterXSize, ds.RasterYSize
    return np.frombuffer(ds.GetRasterBand(b).ReadRaster(0, 0, x, y, buf_type=dt), dtype=np_dt).reshape(y, x)


def stretch(a, lo=2, hi=98):
    v = a[np.isfinite(a)]
    l, h = np.percentile(v, lo), np.percentile(v, hi)
    return np.clip((a - l) / max(h - l, 1e-6) * 255, 0, 255).astype(np.uint8)

sar = gdal.Open(sar_p)
hh, vv = read(sar, 1), read(sar, 4)
sar_rgb = np.dstack([stretch(hh), stretch(vv), stretch(0.5 * (hh + vv))])
opt = gdal.Open(opt_p)
opt_rgb = np.dstack([read(opt, b, gdal.GDT_Byte, np.uint8) for b in (1, 2, 3)])
p = read(gdal.Open(pred_p), 1)
mask = (p > 0.5) & (p <= 1.0)
# the truth rasterized on the SAR grid, its outline
drv = gdal.GetDriverByName("MEM")
t = drv.Create("", sar.RasterXSize, sar.RasterYSize, 1, gdal.GDT_Byte)
t.SetGeoTransform(sar.GetGeoTransform())
t.SetProjection(sar.GetProjection())
ds = ogr.Open(truth_p)
gdal.RasterizeLayer(t, [1], ds.GetLayer(0), burn_values=[1])
tm = read(t, 1, gdal.GDT_Byte, np.uint8) > 0
edge = tm & ~(np.roll(tm, 1, 0) & np.roll(tm, -1, 0) & np.roll(tm, 1, 1) & np.roll(tm, -1, 1))
gray = stretch(0.5 * (hh + vv)).astype(np.float32) * 0.55
over = np.dstack([gray, gray, gray])
over[mask] = 0.35 * over[mask] + 0.65 * np.array([255, 40, 40])
over[edge] = [0, 255, 255]
panels = [Image.fromarray(a.astype(np.uint8)).resize((S, S), Image.BILINEAR) for a in (sar_rgb, opt_rgb, over)]
W = 3 * S + 4 * 8
img = Image.new("RGB", (W, S + 8 + 28), (255, 255, 255))
d = ImageDraw.Draw(img)
for i, (pn, title) in enumerate(zip(panels, ("SAR (HH, VV, mean)", "optical (not used at run time)",
                                              "buildings from SAR (red), truth (cyan)"))):
    x = 8 + i * (S + 8)
    img.paste(pn, (x, 28))
    d.text((x, 8), title, fill=(0, 0, 0))
img.save(out_p, optimize=True)
print(f"wrote {out_p}: {img.size[0]}x{img.size[1]}")
