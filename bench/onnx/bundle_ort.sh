#!/bin/bash
# bundle_ort.sh [BUILD_DIR] [EXPORT_DIR] - packs what device_ort.sh needs into .whl/ortrun/ (git-ignored):
# bench_cpu, golden_compare, disopt_testmodel, dump_fused, test_ops and the libraries the device image lacks (libdisopt,
# BLIS, json-c); the exported graph (student_b3_fused.onnx, weights external in model.safetensors,
# which the device rebuilds from testdata/golden with disopt_testmodel), check_io.safetensors, and
# the onnxruntime wheel for the device's Python 3.12 (+ flatbuffers, protobuf). OLD_BUILD=DIR adds
# a second build's bench_cpu + libdisopt, timed as "old" beside ours and ORT. Then:
#   run(command="bash bench/onnx/device_ort.sh", carry=[".whl/ortrun"])
# Wheels: .whl/ortvenv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12
#   --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any
#   -d .whl/ortrun/whl onnxruntime==1.32.0 flatbuffers protobuf
set -euo pipefail
B=${1:-build-ort} E=${2:-.whl/onnx}
cd "$(dirname "$0")/../.."
D=.whl/ortrun
mkdir -p $D/bin $D/lib $D/onnx $D/whl
for t in bench/bench_cpu bench/bench_owngemm bench/bench_act bench/golden_compare tools/disopt_testmodel; do cp "$B/$t" $D/bin/; done
gcc -O2 -std=c11 -Wall -Werror -Iinclude bench/onnx/dump_fused.c -o $D/bin/dump_fused -L"$B"/core -ldisopt
# test_ops: the CPU kernels against the scalar reference, bit for bit across ISAs (the device has AVX-512)
cp "$B"/tests/test_ops $D/bin/ && cp -L /lib/x86_64-linux-gnu/libcmocka.so.0 $D/lib/
if [ -n "${OLD_BUILD:-}" ]; then # a second build (the code before a change) timed as "old"
  mkdir -p $D/old && cp "$OLD_BUILD/bench/bench_cpu" $D/old/ && { [ ! -x "$OLD_BUILD/bench/bench_owngemm" ] || cp "$OLD_BUILD/bench/bench_owngemm" $D/old/; } && { [ ! -x "$OLD_BUILD/bench/bench_act" ] || cp "$OLD_BUILD/bench/bench_act" $D/old/; } && cp -L "$OLD_BUILD/core/libdisopt.so.0" $D/old/
fi
cp -L "$B"/core/libdisopt.so.0 $D/lib/
cp -L /usr/lib/x86_64-linux-gnu/blis-serial/libblis.so.4 /lib/x86_64-linux-gnu/libjson-c.so.5 $D/lib/
cp "$E"/student_b3_fused.onnx "$E"/check_io.safetensors "$E"/export.json $D/onnx/
sha256sum "$E"/model.safetensors | cut -d' ' -f1 > $D/onnx/model.sha256
ls $D/whl/onnxruntime-*cp312*.whl > /dev/null
du -sh $D
# PACK=1: the same as one .whl/ortpack/ortrun.tar.xz (the run tool carries at most 64 MiB with the
# tracked tree, ~36 MB since the demo model): the wheels unzipped into site/ without what
# `import onnxruntime` does not load (the C-API library libonnxruntime.so, transformers/, quantization/,
# tools/), xz-compressed (~15 MB). device_ort.sh unpacks it when it is there:
#   run(command="bash bench/onnx/device_ort.sh", carry=[".whl/ortpack"])
if [ -n "${PACK:-}" ]; then
  P=$(mktemp -d) && mkdir -p $P/ortrun/site && cp -r $D/bin $D/lib $D/onnx $P/ortrun/ && { [ ! -d $D/old ] || cp -r $D/old $P/ortrun/; }
  for w in $D/whl/*.whl; do (cd $P/ortrun/site && unzip -q -o "$OLDPWD/$w"); done
  rm -rf $P/ortrun/site/onnxruntime/capi/libonnxruntime.so.* $P/ortrun/site/onnxruntime/{transformers,quantization,tools}
  mkdir -p .whl/ortpack && tar cJf .whl/ortpack/ortrun.tar.xz -C $P ortrun && rm -rf $P
  du -sh .whl/ortpack
fi
