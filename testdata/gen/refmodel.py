"""Shared helpers for the golden generators: build the authors' DisOptNet models
(teacher DeepLabV3plus / student BiDeepLabV3p_Dist from their model.py, on
segmentation_models_pytorch 0.2.0 + efficientnet_pytorch 0.6.3), fill them with
dwgen-1 weights, calibrate BatchNorm, and run them while capturing features.

Only our own glue lives here; the third-party code is imported from the
git-ignored folder <repo>/.ref/ (see make_ref.sh) or from an installed copy.
"""

import os
import platform
import sys
import types
from pathlib import Path

import dwgen

REPO = Path(__file__).resolve().parents[2]
REF_DIR = REPO / ".ref"
DEFAULT_SITE = REF_DIR / "site"        # pure-Python smp 0.2.0, efficientnet_pytorch 0.6.3, ...
DEFAULT_AUTHORS = REF_DIR / "authors"  # the authors' model.py (commit f7e7825)
SPEC_REF = Path(os.environ.get("DISOPT_SPEC_REF", "/work/shared/spec/reference"))

AUTHORS_COMMIT = "f7e7825d66c21b48f6177252b6676c6a2f166823"
ARCHS = ("teacher", "student")
VARIANTS = ("b3", "b4")

# smp 0.2.0's encoders/__init__.py imports every encoder family at import time.
# Only `efficientnet` is used here; the others pull torchvision, pretrainedmodels
# and timm 0.4.12.  If one of those cannot be imported on some machine, we
# register empty stand-ins for those unused smp submodules (each exposes an empty
# `<name>_encoders` dict, which is all encoders/__init__.py reads from them).
# This changes nothing for the efficientnet encoder.
_UNUSED_SMP_ENCODERS = (
    "resnet", "dpn", "vgg", "senet", "densenet", "inceptionresnetv2",
    "inceptionv4", "mobilenet", "xception", "timm_efficientnet",
    "timm_resnest", "timm_res2net", "timm_regnet", "timm_sknet",
    "timm_mobilenetv3", "timm_gernet",
)

_state = {"authors": None, "info": None}


def _install_smp_stubs():
    for name in _UNUSED_SMP_ENCODERS:
        full = "segmentation_models_pytorch.encoders." + name
        mod = types.ModuleType(full)
        setattr(mod, name + "_encoders", {})
        mod.__dict__["__stub__"] = True
        sys.modules[full] = mod


def _purge(prefixes):
    for k in list(sys.modules):
        if any(k == p or k.startswith(p + ".") for p in prefixes):
            del sys.modules[k]


def setup_imports(site=DEFAULT_SITE, authors=DEFAULT_AUTHORS, stub="auto"):
    """Import the authors' model.py. `site` (a folder of pure-Python packages) is
    put first on sys.path when it exists; pass None/'' to use the installed
    packages.  stub: 'auto' (stub unused smp encoders only if the plain import
    fails), 'always', or 'never'.  Returns (authors_module, info_dict)."""
    if _state["authors"] is not None:
        return _state["authors"], _state["info"]
    if site and Path(site).is_dir():
        sys.path.insert(0, str(Path(site)))
    else:
        site = None
    if not (Path(authors) / "model.py").is_file():
        raise SystemExit("authors' model.py not found in %s (run testdata/gen/make_ref.sh)" % authors)
    sys.path.insert(0, str(Path(authors)))

    stubbed = False
    if stub == "always":
        _install_smp_stubs()
        stubbed = True
    try:
        import segmentation_models_pytorch  # noqa: F401
    except Exception as exc:  # ImportError or an API break inside an unused encoder
        if stub != "auto":
            raise
        print("note: plain smp import failed (%s: %s); stubbing unused smp encoders"
              % (type(exc).__name__, exc), file=sys.stderr)
        _purge(["segmentation_models_pytorch"])
        _install_smp_stubs()
        stubbed = True
        import segmentation_models_pytorch  # noqa: F401

    import torch
    import efficientnet_pytorch
    import segmentation_models_pytorch as smp
    import model as authors_model  # the authors' model.py

    info = {
        "torch": torch.__version__,
        "smp": smp.__version__,
        "efficientnet_pytorch": getattr(efficientnet_pytorch, "__version__", "?"),
        "python": platform.python_version(),
        "smp_path": str(Path(smp.__file__).parent),
        "authors_model_py": str(Path(authors_model.__file__)),
        "unused_smp_encoders_stubbed": str(stubbed),
    }
    if info["smp"] != "0.2.0" or info["efficientnet_pytorch"] != "0.6.3":
        raise SystemExit("need smp 0.2.0 + efficientnet_pytorch 0.6.3, got %r" % info)
    _state["authors"], _state["info"] = authors_model, info
    return authors_model, info


def build_model(arch, variant):
    """The authors' model exactly as train_st2.py builds it (model_specs:
    encoder_name, in_channels 4, classes 2, upsampling 4), without ImageNet
    weights.  Returned in eval mode, float32, CPU."""
    authors, _ = setup_imports()
    kw = dict(encoder_name="efficientnet-" + variant, encoder_weights=None,
              in_channels=4, classes=2, upsampling=4)
    if arch == "teacher":
        m = authors.DeepLabV3plus(**kw)
    elif arch == "student":
        m = authors.BiDeepLabV3p_Dist(**kw)
    else:
        raise ValueError(arch)
    return m.float().eval()


def param_kinds(model):
    """Split the state_dict keys by owning module type.
    Returns (conv_keys, bn_keys, nbt_keys, other_keys) as ordered lists."""
    import torch.nn as nn
    owner = {}
    for mname, mod in model.named_modules():
        for pname, _ in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            owner[(mname + "." if mname else "") + pname] = mod
    conv, bn, nbt, other = [], [], [], []
    for k in model.state_dict().keys():
        mod = owner.get(k)
        if isinstance(mod, nn.Conv2d) and k.rsplit(".", 1)[1] in ("weight", "bias"):
            conv.append(k)
        elif isinstance(mod, nn.BatchNorm2d):
            (nbt if k.endswith("num_batches_tracked") else bn).append(k)
        else:
            other.append(k)
    return conv, bn, nbt, other


def dwgen_conv_tensors(model):
    """{key: float32 numpy array} for every conv weight / bias (dwgen-1)."""
    conv, _, _, _ = param_kinds(model)
    sd = model.state_dict()
    out = {}
    for k in conv:
        shape = tuple(sd[k].shape)
        out[k] = dwgen.conv_weight(k, shape) if k.endswith(".weight") else dwgen.conv_bias(k, shape)
    return out


def apply_dwgen(model):
    """Conv weights/biases and BN weight/bias from dwgen-1 (BN stats untouched)."""
    import torch
    conv, bn, _, other = param_kinds(model)
    if other:
        raise RuntimeError("unexpected non-conv/non-BN state: %s" % other[:5])
    sd = model.state_dict()
    vals = dwgen_conv_tensors(model)
    for k in bn:
        if k.endswith(".weight"):
            vals[k] = dwgen.bn_weight(k, tuple(sd[k].shape))
        elif k.endswith(".bias"):
            vals[k] = dwgen.bn_bias(k, tuple(sd[k].shape))
    with torch.no_grad():
        for k, v in vals.items():
            sd[k].copy_(torch.from_numpy(v))  # state_dict tensors alias the parameters
    return model


def sar_like_input(shape, seed):
    """SAR-intensity-like raw values, then the authors' normalisation.
    raw ~ Gamma(shape 2, scale 12.5) (mean 25) built as -12.5*(ln(1-u1)+ln(1-u2))
    from torch.rand with a seeded CPU Generator, clipped to [0, 92];
    x = (raw/255 - 0.5)/0.125, float32."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand((2,) + tuple(shape), generator=g, dtype=torch.float64)
    raw = (-12.5 * (torch.log1p(-u[0]) + torch.log1p(-u[1]))).clamp(0.0, 92.0)
    x = (raw / 255.0 - 0.5) / 0.125
    return x.float().contiguous()


def calibrate_bn(model, calib):
    """BN running stats = statistics of one forward of `calib` (batch >= 2):
    BN modules in train mode with momentum=None (cumulative average; after one
    batch this is exactly the batch mean and unbiased variance), the rest in
    eval mode (dropout off, drop-connect off)."""
    import torch
    import torch.nn as nn
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
        m.train()
    with torch.no_grad():
        model(calib)
    model.eval()
    return model


def round_bn_f16(model):
    """Round every BN weight/bias/running_mean/running_var to a float16 value
    (kept as float32) so that what the fixture stores as F16 is exactly what
    PyTorch computed with."""
    import torch
    _, bn, _, _ = param_kinds(model)
    sd = model.state_dict()
    with torch.no_grad():
        for k in bn:
            t = sd[k]
            r = t.half().float()
            if not torch.isfinite(r).all():
                raise RuntimeError("BN tensor %s does not fit float16" % k)
            t.copy_(r)
    return model


def make_model(arch, variant, calib_shape, calib_seed, f16_bn=True):
    """build + dwgen + BN calibration (+ float16 rounding of BN)."""
    m = build_model(arch, variant)
    apply_dwgen(m)
    calibrate_bn(m, sar_like_input(calib_shape, calib_seed))
    if f16_bn:
        round_bn_f16(m)
    return m


def forward_with_features(model, arch, x):
    """Run the authors' forward unchanged; capture intermediate tensors with
    forward hooks (no change to the numerics).  Returns an ordered dict
    name -> tensor (logits first)."""
    import torch
    cap = {}
    hooks = []

    def grab(name):
        def hook(_mod, _inp, out):
            cap[name] = out
        return hook

    if arch == "teacher":
        hooks.append(model.encoder.register_forward_hook(grab("encoder")))
        hooks.append(model.decoder.register_forward_hook(grab("decoder")))
    else:
        hooks.append(model.encoder_sar.register_forward_hook(grab("encoder")))
        hooks.append(model.decoder_sar.register_forward_hook(grab("decoder_sar")))
        hooks.append(model.ffm.register_forward_hook(grab("ffm")))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()

    res = {}
    feats = cap["encoder"]  # smp ordering: [f0=input, f1 .. f5]
    if arch == "teacher":
        logit, multi = out
        assert len(multi) == 1 and multi[0] is cap["decoder"]  # published model.py returns [decoder_output]
        res["golden.logit"] = logit
        for i in range(1, 6):
            res["golden.feat.f%d" % i] = feats[i]
        res["golden.feat.decoder"] = cap["decoder"]
    else:
        logit_sar, logit_rgb, fused, aux = out
        p4, p5, dec_rgb = aux
        res["golden.logit_sar"] = logit_sar
        res["golden.logit_rgb"] = logit_rgb
        res["golden.fused_logit"] = fused
        for i in range(1, 6):
            res["golden.feat.f%d" % i] = feats[i]
        res["golden.feat.p4"] = p4
        res["golden.feat.p5"] = p5
        res["golden.feat.decoder_sar"] = cap["decoder_sar"]
        res["golden.feat.decoder_rgb"] = dec_rgb
        res["golden.feat.ffm"] = cap["ffm"]
    return {k: v.detach().float().contiguous() for k, v in res.items()}


def logit_names(arch):
    return ["golden.logit"] if arch == "teacher" else \
        ["golden.logit_sar", "golden.logit_rgb", "golden.fused_logit"]


def read_key_table(arch, variant):
    """[(key, shape_tuple, dtype)] from /work/shared/spec/reference/keys_*.tsv."""
    rows = []
    path = SPEC_REF / ("keys_%s_%s.tsv" % (arch, variant))
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header[:3] == ["key", "shape", "dtype"], header
        for line in f:
            if not line.strip():
                continue
            key, shape, dtype = line.rstrip("\n").split("\t")[:3]
            shp = tuple(int(s) for s in shape.split("x")) if shape not in ("", "scalar", "()") else ()
            rows.append((key, shp, dtype))
    return rows


def cpu_model_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def np_f32(t):
    return t.detach().cpu().float().numpy()

