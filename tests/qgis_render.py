#!/usr/bin/python3
"""Headless QGIS rendering harness (QGIS 3.22, Debian qgis + python3-qgis).

Renders rasters in a real QGIS, offscreen, with one explicit renderer, and compares the images:

  qgis_render.py --compare A B [--out-dir DIR] [--size 512] [--min 0 --max 1]
                 [--band 1] [--extent xmin,ymin,xmax,ymax]
  qgis_render.py --render A [--out-dir DIR] [...]

A and B are anything QGIS's "gdal" provider opens: paths, VRTs, or GDAL connection strings with
open options such as "BUILDINGS:/abs/sar.tif|option:MODEL=/abs/m.safetensors".

Both layers get the same renderer: single-band gray of --band, contrast "stretch to min/max" with
fixed --min/--max (default: A's exact min/max over its full extent), no provider or layer
resampling (nearest), opacity 1, nodata transparent. Both are drawn on the same map: A's CRS, the
same extent (A's full extent, or --extent in A's CRS) and the same output size (--size pixels
across, height from the extent's aspect ratio), on a transparent background. --size below the
raster's width makes QGIS read zoomed-out; --extent makes it read a window.

Exit status: 0 identical and not blank; 1 the images differ, a render is blank (no opaque pixel:
QGIS calls a VRT valid even when it cannot render it) or QGIS reported render errors; 2 setup
error (bad arguments, missing file, a layer QGIS cannot open, no min/max). Prints the count of differing pixels and of non-background
pixels; with --out-dir writes A.png, B.png (and diff.png, differing pixels in red, when they differ).
"""

import argparse
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "XDG_RUNTIME_DIR" not in os.environ:  # Qt warns on every run without one
    os.environ["XDG_RUNTIME_DIR"] = os.path.join("/tmp", f"qgis-render-runtime-{os.getuid()}")
    os.makedirs(os.environ["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)

try:
    import numpy as np
    from qgis.core import (QgsApplication, QgsContrastEnhancement, QgsMapRendererSequentialJob, QgsMapSettings,
                           QgsRasterBandStats, QgsRasterLayer, QgsRectangle, QgsSingleBandGrayRenderer)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage
except ImportError as e:  # pragma: no cover - setup error
    print(f"qgis_render: cannot import QGIS ({e}); run with /usr/bin/python3 after .ci/install-qgis", file=sys.stderr)
    sys.exit(2)

EXIT_SAME, EXIT_DIFFER, EXIT_SETUP = 0, 1, 2


class SetupError(Exception):
    pass


def is_plain_path(uri):
    """True for an ordinary file name (not a connection string such as BUILDINGS:..., /vsi...)."""
    if "|" in uri or uri.startswith("/vsi"):
        return False
    head = uri.split(":", 1)[0]
    return not (":" in uri and head.isupper() and len(head) > 1)


def open_layer(uri, name, band):
    if is_plain_path(uri) and not os.path.exists(uri):
        raise SetupError(f"{name}: no such file: {uri}")
    layer = QgsRasterLayer(uri, name, "gdal")
    if not layer.isValid():
        err = layer.error().summary() if layer.error() else ""
        raise SetupError(f"{name}: QGIS cannot open {uri!r} {err}".strip())
    if band < 1 or band > layer.bandCount():
        raise SetupError(f"{name}: band {band} out of range (1..{layer.bandCount()})")
    return layer


def apply_renderer(layer, band, vmin, vmax):
    provider = layer.dataProvider()
    ce = QgsContrastEnhancement(provider.dataType(band))
    ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum, True)
    ce.setMinimumValue(vmin)
    ce.setMaximumValue(vmax)
    renderer = QgsSingleBandGrayRenderer(provider, band)
    renderer.setGradient(QgsSingleBandGrayRenderer.BlackToWhite)
    renderer.setContrastEnhancement(ce)  # takes ownership
    renderer.setOpacity(1.0)
    layer.setRenderer(renderer)  # takes ownership
    # nearest everywhere: no provider resampling, no layer resampling filter
    if hasattr(provider, "enableProviderResampling"):
        provider.enableProviderResampling(False)
    rf = layer.resampleFilter()
    rf.setZoomedInResampler(None)
    rf.setZoomedOutResampler(None)
    rf.setMaxOversampling(1.0)
    layer.setOpacity(1.0)


def render(layer, settings_template):
    """(image, list of QGIS's render error messages)"""
    settings = QgsMapSettings(settings_template)
    settings.setLayers([layer])
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    errors = [e.message for e in job.errors()]
    image = job.renderedImage().convertToFormat(QImage.Format_ARGB32)
    del job
    return image, errors


def image_array(image):
    """H x W x 4 uint8 (B, G, R, A as QImage.Format_ARGB32 lays it out little-endian)."""
    w, h = image.width(), image.height()
    ptr = image.constBits()
    ptr.setsize(image.bytesPerLine() * h)
    a = np.frombuffer(ptr, dtype=np.uint8).reshape(h, image.bytesPerLine())[:, : 4 * w]
    return a.reshape(h, w, 4).copy()


def parse_extent(text):
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 4 or not (v[0] < v[2] and v[1] < v[3]):
        raise SetupError(f"--extent needs xmin,ymin,xmax,ymax with xmin<xmax, ymin<ymax, got {text!r}")
    return QgsRectangle(v[0], v[1], v[2], v[3])


def run(args):
    uris = [args.render] if args.render else list(args.compare)
    names = ["A", "B"][: len(uris)]
    layers = [open_layer(u, n, args.band) for u, n in zip(uris, names)]
    a = layers[0]
    for n, layer in zip(names[1:], layers[1:]):
        if layer.crs() != a.crs():
            print(f"warning: {n}'s CRS ({layer.crs().authid() or layer.crs().description()}) differs from A's "
                  f"({a.crs().authid() or a.crs().description()}); it is reprojected", file=sys.stderr)

    extent = parse_extent(args.extent) if args.extent else a.extent()
    if extent.isEmpty():
        raise SetupError("empty extent")
    vmin, vmax = args.min, args.max
    if vmin is None or vmax is None:
        st = a.dataProvider().bandStatistics(args.band, QgsRasterBandStats.Min | QgsRasterBandStats.Max,
                                             a.extent(), 0)
        if not st.minimumValue <= st.maximumValue:
            raise SetupError("cannot compute A's min/max (all no data?): give --min and --max")
        vmin = st.minimumValue if vmin is None else vmin
        vmax = st.maximumValue if vmax is None else vmax
    if not vmin < vmax:
        raise SetupError(f"need min < max, got {vmin} .. {vmax}")
    for layer in layers:
        apply_renderer(layer, args.band, vmin, vmax)

    width = args.size
    height = max(1, round(args.size * extent.height() / extent.width()))
    settings = QgsMapSettings()
    settings.setDestinationCrs(a.crs())
    settings.setOutputSize(QSize(width, height))
    settings.setOutputDpi(96)
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    settings.setFlag(QgsMapSettings.Antialiasing, False)
    settings.setFlag(QgsMapSettings.UseAdvancedEffects, False)
    settings.setFlag(QgsMapSettings.DrawLabeling, False)
    if settings.outputSize() != QSize(width, height):
        raise SetupError("QGIS changed the output size")

    rendered = [render(layer, settings) for layer in layers]
    images = [im for im, _ in rendered]
    arrays = [image_array(im) for im in images]
    print(f"size {width}x{height}, extent {extent.toString(6)}, band {args.band}, gray {vmin:.9g}..{vmax:.9g}")

    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        for n, im in zip(names, images):
            im.save(os.path.join(args.out_dir, f"{n}.png"), "PNG")

    opaque = [int(np.count_nonzero(arr[:, :, 3])) for arr in arrays]
    for n, c, arr in zip(names, opaque, arrays):
        levels = len(np.unique(arr[:, :, 0][arr[:, :, 3] > 0]))  # a constant picture proves little
        print(f"{n}: {c} non-background pixels of {width * height}, {levels} gray levels")
    blank = [n for n, c in zip(names, opaque) if c == 0]

    code = EXIT_SAME
    for n, (_, errors) in zip(names, rendered):
        if errors:
            print(f"FAIL: QGIS reported render errors for {n}: " + "; ".join(errors))
            code = EXIT_DIFFER
    if len(arrays) == 2:
        diff = np.any(arrays[0] != arrays[1], axis=2)
        ndiff = int(np.count_nonzero(diff))
        maxdelta = int(np.max(np.abs(arrays[0].astype(np.int16) - arrays[1].astype(np.int16)))) if ndiff else 0
        print(f"differing pixels: {ndiff} (max channel difference {maxdelta})")
        if ndiff:
            code = EXIT_DIFFER
            if args.out_dir:
                d = arrays[0].copy()
                d[diff] = (0, 0, 255, 255)  # red in BGRA
                h, w = diff.shape
                QImage(d.tobytes(), w, h, 4 * w, QImage.Format_ARGB32).save(
                    os.path.join(args.out_dir, "diff.png"), "PNG")
    if blank:
        print(f"FAIL: blank render ({', '.join(blank)}): nothing drawn, all no data or not renderable")
        code = EXIT_DIFFER
    if code == EXIT_SAME:
        print("IDENTICAL" if len(arrays) == 2 else "OK")
    else:
        print("FAILED")
    return code


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--compare", nargs=2, metavar=("A", "B"), help="render A and B and compare the images")
    g.add_argument("--render", metavar="A", help="render A alone (fails if blank)")
    p.add_argument("--out-dir", help="write A.png, B.png (diff.png) here")
    p.add_argument("--size", type=int, default=512, help="output width in pixels (default 512)")
    p.add_argument("--min", type=float, help="value drawn black (default: A's minimum)")
    p.add_argument("--max", type=float, help="value drawn white (default: A's maximum)")
    p.add_argument("--band", type=int, default=1, help="band to draw (default 1)")
    p.add_argument("--extent", help="xmin,ymin,xmax,ymax in A's CRS (default: A's full extent)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return EXIT_SETUP if e.code else EXIT_SAME
    if args.size < 1 or args.size > 16384:
        print("qgis_render: --size must be 1..16384", file=sys.stderr)
        return EXIT_SETUP

    qgs = QgsApplication([], False)
    qgs.setPrefixPath("/usr", True)
    qgs.initQgis()
    try:
        # every QGIS object lives inside run() and is gone before exitQgis() (else: segfault at exit)
        code = run(args)
    except SetupError as e:
        print(f"qgis_render: {e}", file=sys.stderr)
        code = EXIT_SETUP
    except Exception as e:  # noqa: BLE001 - anything unexpected is a setup error, not a pass
        print(f"qgis_render: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        code = EXIT_SETUP
    qgs.exitQgis()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
