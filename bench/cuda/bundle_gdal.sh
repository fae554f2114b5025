#!/bin/bash
# bundle_gdal.sh [BUILD_DIR] - packs GDAL's command-line tools, the BUILDINGS plugin, libdisopt, the
# CUDA module and what they load into .gdalrun/gdal.tar.xz (git-ignored), for end-to-end runs of the
# driver on the lent GPU machine, which has no GDAL (see bench/cuda/README.md). With the device tool:
#   run(command="bash bench/cuda/device_e2e.sh", carry=[".gdalrun"])
#
# Debian's libgdal NEEDs ~45 libraries (BIND_NOW) and pulls ~110 in all (173 MB), most of them for
# drivers we never touch (PDF, HDF5, netCDF, SpatiaLite, MySQL, HEIF, KML, ...). We keep real only the
# libraries that GDAL's GTiff/VRT/MEM/ENVI path, PROJ, the plugin and the C++ runtime use (KEEP below);
# every other library NEEDed by a kept one is replaced by a stub made by stublib.py (same SONAME,
# symbols and versions; every function prints "stub called: NAME" and returns 0), and whatever only
# the replaced libraries needed is left out. glibc is not packed: the device has a newer one.
# The demo model (92 MB of incompressible floats) is not packed either: the bundle carries
# disopt_testmodel, which assembles it on the device from testdata/golden/student_b3.safetensors
# (tracked), and the SHA-256 of the build's testmodel_b3.safetensors to check it against.
#
# Env: KEEP_EXTRA='regex' keeps more libraries real (e.g. KEEP_EXTRA='libxml2|libicu' after a
# "stub called" report); XZ_LEVEL (default -9); MEASURE=1 prints each library's compressed size.
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/../.."
R=$PWD
# real libraries, by SONAME prefix: GDAL and the C++ runtime; libtiff/libgeotiff and the codecs
# libtiff NEEDs (GTiff); PROJ and SQLite (proj.db); the plugin's BLIS, json-c and libcrypto (SHA-256);
# netCDF and Blosc, whose version functions the netCDF and Zarr drivers call when they register, and
# SpatiaLite, whose spatialite_shutdown() GDAL calls on exit (a no-op when never initialised); libpng,
# whose png_sig_cmp the PNG driver's Identify calls on every file it is shown (a stub's 0 = "is a PNG");
# libheif, whose heif_check_filetype HEIF's Identify calls, with libaom and libde265, which libheif's
# plugin registration calls (aom_codec_version, de265_init); its x265 and dav1d stay stubs
KEEP='libgdal\.so|libstdc\+\+\.so|libgcc_s\.so|libz\.so|libtiff\.so|libgeotiff\.so|libjpeg\.so|libdeflate\.so|liblzma\.so|libzstd\.so|libLerc\.so|libjbig\.so|libwebp\.so|libsharpyuv\.so|libproj\.so|libsqlite3\.so|libjson-c\.so|libblis\.so|libcrypto\.so|libnetcdf\.so|libblosc\.so|libspatialite\.so|libpng16\.so|libheif\.so|libaom\.so|libde265\.so|libgeos_c\.so|libgeos\.so|libcmocka\.so'
[ -n "${KEEP_EXTRA:-}" ] && KEEP="$KEEP|$KEEP_EXTRA"
GLIBC='^(libc|libm|libpthread|libdl|librt|libresolv|libutil|libnsl|libanl|libmvec|libBrokenLocale|libthread_db|libc_malloc_debug|libnss_[a-z]+|ld-linux-x86-64)\.so'
# on the device, not packed
DEVICE='^(libcuda|libcudart|libcublas|libcublasLt|libcudnn|libnv)[a-zA-Z0-9_]*\.so'
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
G=$T/g
mkdir -p "$G/bin" "$G/lib" "$G/plugins" "$G/share/proj" "$T/stubs"
bins="/usr/bin/gdal_translate /usr/bin/gdalinfo /usr/bin/gdal_create /usr/bin/gdallocationinfo"
for b in $bins; do cp -L "$b" "$G/bin/"; done
cp -L "$B"/tools/disopt_run "$B"/tools/disopt_testmodel "$G/bin/"
# the training tools (gdal_disopt_train/eval/synth/model), when the build has them
TOOLS=""
for t in gdal_disopt_train gdal_disopt_eval gdal_disopt_synth gdal_disopt_model; do
  [ -x "$B/tools/$t" ] && { cp -L "$B/tools/$t" "$G/bin/"; TOOLS="$TOOLS $B/tools/$t"; }
done
# the tiler's test (GDAL sources, the CUDA engine with DISOPT_TEST_BACKEND=cuda: device_e2e.sh runs it)
[ -x "$B/tests/test_tiler" ] && { cp -L "$B/tests/test_tiler" "$G/bin/"; TOOLS="$TOOLS $B/tests/test_tiler"; }
cp -L "$B"/plugin/gdal_BUILDINGS.so "$G/plugins/"
cp -L "$B"/core/libdisopt.so.0 "$B"/cuda/libdisopt_cuda.so.0 "$G/lib/"
roots="$bins $B/plugin/gdal_BUILDINGS.so $B/core/libdisopt.so.0 $B/tools/disopt_run $B/tools/disopt_testmodel $B/cuda/libdisopt_cuda.so.0$TOOLS"
# SONAME -> path for the whole closure, as the dynamic linker resolves it here
for f in $roots; do LD_LIBRARY_PATH="$B/core" ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'; done \
  | sort -u > "$T/paths"
# walk DT_NEEDED from the roots: kept libraries are copied and walked further, the others become
# stubs (their own NEEDED are not followed); glibc and the CUDA libraries are skipped
python3 - "$T" "$KEEP" "$GLIBC" "$DEVICE" $roots <<'EOF'
import os, re, sys
sys.path.insert(0, os.path.join(os.getcwd(), "bench/cuda"))
from stublib import Elf
T, keep, glibc, device, roots = sys.argv[1], re.compile("^(" + sys.argv[2] + ")"), \
    re.compile(sys.argv[3]), re.compile(sys.argv[4]), sys.argv[5:]
paths = dict(l.split() for l in open(f"{T}/paths"))
own = {"libdisopt.so.0", "libdisopt_cuda.so.0"}
real, stub, todo, seen = set(), {}, list(roots), set()
while todo:
    f = todo.pop()
    for n in Elf(f).needed:
        if n in seen or glibc.match(n) or device.match(n) or n in own:
            continue
        seen.add(n)
        if n not in paths:
            sys.exit(f"bundle_gdal: {n} (NEEDED by {f}) not found")
        if keep.match(n):
            real.add(n); todo.append(paths[n])
        else:
            stub.setdefault(n, f)
with open(f"{T}/real", "w") as o:
    o.writelines(f"{paths[n]}\n" for n in sorted(real))
with open(f"{T}/stub", "w") as o:
    o.writelines(f"{paths[n]} {os.path.basename(by)}\n" for n, by in sorted(stub.items()))
dropped = sorted(set(paths) - real - set(stub) - own)
dropped = [n for n in dropped if not glibc.match(n) and not device.match(n)]
with open(f"{T}/dropped", "w") as o:
    o.writelines(f"{paths[n]}\n" for n in dropped)
EOF
while read -r l; do cp -L "$l" "$G/lib/"; done < "$T/real"
# the stubs shadow nothing a real library (or glibc) defines
shadow=$(for l in $(cat "$T/real") $(awk '{print $2}' "$T/paths" | grep -E "/$(echo "$GLIBC" | sed 's/^\^//')" || true); do printf -- '--shadow %s ' "$l"; done)
while read -r l by; do
  python3 bench/cuda/stublib.py "$l" -o "$G/lib/$(basename "$l")" $shadow | sed "s/^/  stub (for $by) /"
done < "$T/stub"
cp -r /usr/share/gdal "$G/share/gdal"
cp /usr/share/proj/proj.db "$G/share/proj/"
cp /work/shared/realdata/rotterdam_capella/sar_masked.tif "$G/" 2>/dev/null || cp ../shared/realdata/rotterdam_capella/sar_masked.tif "$G/"
sha256sum "$B"/testmodel_b3.safetensors | awk '{print $1 "  testmodel_b3.safetensors"}' > "$G/testmodel_b3.safetensors.sha256"
{
  echo "# gdal-disopt GDAL bundle, $(date -u +%FT%TZ), $(git -C "$R" rev-parse --short HEAD), build $B"
  echo "# real libraries"; for l in $(cat "$T/real"); do echo "real $(basename "$l")"; done
  echo "# stubs (stublib.py): SONAME, NEEDED by"; while read -r l by; do echo "stub $(basename "$l") $by"; done < "$T/stub"
  echo "# left out (only the stubbed libraries needed them)"; for l in $(cat "$T/dropped"); do echo "dropped $(basename "$l")"; done
} > "$G/MANIFEST"
if [ "${MEASURE:-0}" = 1 ]; then
  echo "bytes after xz ${XZ_LEVEL:--9}: packed file, the real library a stub replaces (with its own"
  echo "NEEDED, now left out, not counted)"
  for f in "$G"/lib/* "$G"/bin/* "$G"/plugins/*; do
    n=$(basename "$f"); o=$(awk -v n="$n" '$1 == n {print $2; exit}' "$T/paths")
    was=-; [ -n "$o" ] && grep -q "^$o " "$T/stub" && was=$(xz -T2 ${XZ_LEVEL:--9} -c "$o" | wc -c)
    printf '%10d %10s %s\n' "$(xz -T2 ${XZ_LEVEL:--9} -c "$f" | wc -c)" "$was" "$n"
  done | sort -rn
fi
echo "real $(wc -l < "$T/real"), stubs $(wc -l < "$T/stub"), left out $(wc -l < "$T/dropped") libraries"
mkdir -p "$R/.gdalrun"
tar -C "$T" -cf - g | xz -T2 ${XZ_LEVEL:--9} > "$R/.gdalrun/gdal.tar.xz.tmp"
mv "$R/.gdalrun/gdal.tar.xz.tmp" "$R/.gdalrun/gdal.tar.xz"
du -sh "$R/.gdalrun/gdal.tar.xz"; du -sh --apparent-size "$G" | sed 's/\t.*/ unpacked/'
