#!/usr/bin/env bash
# Rebuild the git-ignored folder <repo>/.ref/ that the golden generators import
# third-party code from.  Nothing in .ref/ is ever committed.
#
#   .ref/authors/model.py   the authors' model.py (jiankang1991/TGRS_DisOptNet @ f7e7825)
#   .ref/authors/utils/losses.py, lr_scheduler.py  their training losses and LR schedule (only when the source is a git mirror), read by
#                           bench/bench_torch_train.py on the device, which has no mirror
#   .ref/site/              pure-Python packages, no compiled code:
#                             segmentation_models_pytorch 0.2.0, efficientnet_pytorch 0.6.3,
#                             pretrainedmodels 0.7.4, timm 0.4.12, munch
#
# usage: testdata/gen/make_ref.sh [AUTHORS_MODEL_PY_OR_BARE_REPO]
#   default source of model.py: /work/.mirror/jiankang1991+TGRS_DisOptNet/repo (a bare git mirror)
# needs: git (for a mirror), a pip that can reach PyPI, python3 >= 3.8.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
ref="$repo/.ref"
src="${1:-/work/.mirror/jiankang1991+TGRS_DisOptNet/repo}"
commit=f7e7825d66c21b48f6177252b6676c6a2f166823
py="${PYTHON:-python3}"

mkdir -p "$ref/authors"
if [ -f "$src" ]; then
    cp "$src" "$ref/authors/model.py"
else
    git -C "$src" show "$commit:model.py" > "$ref/authors/model.py"
    mkdir -p "$ref/authors/utils"
    git -C "$src" show "$commit:utils/losses.py" > "$ref/authors/utils/losses.py"
    git -C "$src" show "$commit:utils/lr_scheduler.py" > "$ref/authors/utils/lr_scheduler.py"
fi

# --no-deps: torch / torchvision come from the machine; these five are all the
# pure-Python code smp 0.2.0 needs to import (see refmodel.py for the fallback
# when torchvision or timm 0.4.12 cannot be imported).
rm -rf "$ref/site.new"
"$py" -m pip install --quiet --no-deps --no-compile --target "$ref/site.new" \
    segmentation-models-pytorch==0.2.0 efficientnet-pytorch==0.6.3 \
    pretrainedmodels==0.7.4 timm==0.4.12 munch==4.0.0
# keep only the import packages (drop *.dist-info, bin/)
find "$ref/site.new" -mindepth 1 -maxdepth 1 \( -name '*.dist-info' -o -name '*.egg-info' -o -name bin \) \
    -exec rm -rf {} +
rm -rf "$ref/site"
mv "$ref/site.new" "$ref/site"
du -sh "$ref/site" "$ref/authors"
