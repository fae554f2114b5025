#!/usr/bin/env python3
"""Write the training goldens testdata/train/loss_golden.safetensors and
testdata/train/optim_golden.safetensors (checked by tests/test_train.c).

Everything is computed by PyTorch (CPU, Debian torch 1.13) on small deterministic
inputs (torch.Generator seeds below):

loss_golden.safetensors
  * term cases "ce/dice" (cases c2, c2_absent, c2_mask, c2_mask_absent, c3, c3_mask):
    inputs <case>.x (F32 NCHW logits), <case>.y (I32 N*H*W), <case>.valid (U8, masked
    cases only; the target holds 255 = ignore_index at invalid pixels);
    outputs <case>.g_ce, <case>.g_dice: the gradients of nn.CrossEntropyLoss and of
    smp 0.2.0's real DiceLoss(mode="multiclass", from_logits=True[, ignore_index=255])
    w.r.t. x, computed by autograd in float64 and stored rounded to F32.
  * KD cases kd_c2, kd_c2_mask, kd_c3: <case>.s, <case>.t, [<case>.valid]; <case>.g_s,
    <case>.g_t. Unmasked cases use the authors' own CriterionPixelWise (utils/losses.py,
    loaded from their repository at run time; never copied); the masked one sums only
    valid pixels and still divides by H*W (our documented choice).
  * mse: mse.a, mse.b, mse.g_a, mse.g_b (nn.MSELoss).
  * st2, st2_mask: the stage-2 total of train_st2.py with the spec's intended feature
    pairs (three pairs of different shapes): inputs <case>.logit_sar/.logit_rgb/
    .logit_fused/.t_logits/.y/[.valid]/.s_feat{0,1,2}/.t_feat{0,1,2}; gradients
    <case>.g_logit_sar/.g_logit_rgb/.g_logit_fused/.g_s_feat{0,1,2}. The unmasked case
    runs the authors' get_loss() composite (dice + ce from main_st2.py's config),
    CriterionPixelWise and nn.MSELoss in their expression order.
  * st1: the teacher's loss of main_st1.py (composite dice + ce): st1.x, st1.y, st1.g.
  * scalars live in the metadata as "<case>.<term>.f64" (PyTorch float64, repr) and
    "<case>.<term>.f32" (PyTorch float32 on the same F32 inputs).

optim_golden.safetensors
  * one arena of n floats holding 4 parameter tensors with gaps between them
    (metadata "segments": "offset:count:decay,..."), params0 (n), grads (10 x n; gap
    elements are 0 and unused);
  * runs "sgd" (the authors': SGD lr 5e-3, momentum 0.9, Nesterov, wd 1e-4 on every
    parameter, their LR_Scheduler('poly', 5e-3, epochs + 1, iters_per_epoch) called
    after each step with epochs 3, iters_per_epoch 4), "sgd_damp" (momentum 0.9,
    dampening 0.1, no Nesterov, wd 1e-3 on decay segments only, same schedule) and
    "adamw" (AdamW betas (0.9, 0.999), eps 1e-8, wd 0.05 on decay segments only, base
    lr 1e-2, same schedule): <run>.params (10 x n: the parameters after every step),
    <run>.state (final momentum_buffer or exp_avg|exp_avg_sq, n each), metadata
    "<run>.lr" = the 10 learning rates used (repr).

usage: /usr/bin/python3 testdata/gen/make_train_golden.py [--mirror BARE_REPO]
"""

import argparse
import contextlib
import io
import json
import struct
import subprocess
import sys
import types
from pathlib import Path

import refmodel as R

OUT_DIR = R.REPO / "testdata" / "train"
MIRROR = "/work/.mirror/jiankang1991+TGRS_DisOptNet/repo"
IGNORE = 255


# ---------------------------------------------------------------- safetensors writer
class StWriter:
    DT = {"F32": 4, "I32": 4, "U8": 1}

    def __init__(self):
        self.t = []
        self.meta = {}

    def add(self, name, dtype, shape, data_bytes):
        assert len(data_bytes) == self.DT[dtype] * max(1, int(_prod(shape)))
        self.t.append((name, dtype, list(shape), data_bytes))

    def add_f32(self, name, tensor):
        import torch
        a = tensor.detach().to(torch.float32).contiguous().numpy()
        self.add(name, "F32", a.shape, a.astype("<f4").tobytes())

    def add_i32(self, name, tensor):
        a = tensor.detach().contiguous().numpy()
        self.add(name, "I32", a.shape, a.astype("<i4").tobytes())

    def add_u8(self, name, tensor):
        a = tensor.detach().contiguous().numpy()
        self.add(name, "U8", a.shape, a.astype("u1").tobytes())

    def save(self, path):
        header, off = {}, 0
        if self.meta:
            header["__metadata__"] = dict(sorted(self.meta.items()))
        for name, dtype, shape, b in self.t:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
            off += len(b)
        hj = json.dumps(header, separators=(",", ":")).encode()
        hj += b" " * ((8 - len(hj) % 8) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(hj)))
            f.write(hj)
            for _, _, _, b in self.t:
                f.write(b)


def _prod(s):
    p = 1
    for v in s:
        p *= v
    return p


# ---------------------------------------------------------------- the authors' training utilities
def load_authors_utils(mirror):
    """utils/losses.py and utils/lr_scheduler.py of the authors' repository at the pinned commit,
    executed as modules (read at run time, never copied into this repository): from the bare mirror, or
    from a plain folder holding utils/<name>.py (.ref/authors as make_ref.sh extracts it, e.g. on the device)."""
    mods = {}
    for name in ("losses", "lr_scheduler"):
        plain = Path(mirror) / "utils" / (name + ".py")
        try:
            if plain.is_file():
                src = plain.read_text()
            else:
                src = subprocess.run(["git", "-C", mirror, "show", "%s:utils/%s.py" % (R.AUTHORS_COMMIT, name)],
                                     check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit("cannot read utils/%s.py from %s: %s" % (name, mirror, exc))
        m = types.ModuleType("authors_" + name)
        exec(compile(src, "authors:utils/%s.py" % name, "exec"), m.__dict__)
        mods[name] = m
    return mods


# ---------------------------------------------------------------- loss goldens
def r(x):
    return repr(float(x))


def make_inputs(g, n, c, h, w, scale=2.0):
    import torch
    return (torch.randn(n, c, h, w, generator=g) * scale).float()


def term_cases(g):
    import torch
    cases = {}
    # (name, N, C, H, W, masked, target rule)
    spec = [("c2", 2, 2, 8, 10, False, "all"), ("c2_absent", 2, 2, 8, 10, False, "only0"),
            ("c2_mask", 2, 2, 8, 10, True, "all"), ("c2_mask_absent", 2, 2, 8, 10, True, "only1"),
            ("c3", 2, 3, 6, 7, False, "no2"), ("c3_mask", 2, 3, 6, 7, True, "all")]
    for name, n, c, h, w, masked, rule in spec:
        x = make_inputs(g, n, c, h, w)
        if rule == "all":
            y = torch.randint(0, c, (n, h, w), generator=g)
        elif rule == "only0":
            y = torch.zeros(n, h, w, dtype=torch.long)
        elif rule == "only1":
            y = torch.ones(n, h, w, dtype=torch.long)
        else:  # "no2": classes 0 and 1 only
            y = torch.randint(0, 2, (n, h, w), generator=g)
        valid = None
        if masked:
            valid = (torch.rand(n, h, w, generator=g) > 0.3)
            y = torch.where(valid, y, torch.full_like(y, IGNORE))
        cases[name] = (x, y, valid)
    return cases


def seg_terms(smp, x, y, masked, dtype):
    """ce and dice values and gradients w.r.t. x (autograd) in dtype"""
    import torch
    kw = dict(ignore_index=IGNORE) if masked else {}
    ce_fn = torch.nn.CrossEntropyLoss(**kw)
    dice_fn = smp.losses.DiceLoss(mode="multiclass", from_logits=True, **kw)
    out = {}
    for term, fn in (("ce", ce_fn), ("dice", dice_fn)):
        xx = x.to(dtype).clone().requires_grad_(True)
        v = fn(xx, y)
        v.backward()
        out[term] = (v.item(), xx.grad.detach().clone())
    return out


def kd_masked(s, t, valid):
    import torch.nn.functional as F
    n, c, h, w = s.shape
    px = -(F.softmax(t, dim=1) * F.log_softmax(s, dim=1)).sum(1)
    return (px * valid.to(s.dtype)).sum() / (h * w)


def write_losses(path, authors, seed):
    import torch
    from segmentation_models_pytorch import losses as smp_losses  # noqa: F401
    import segmentation_models_pytorch as smp
    g = torch.Generator().manual_seed(seed)
    W = StWriter()
    W.meta["torch"] = torch.__version__
    W.meta["smp"] = smp.__version__
    W.meta["authors_commit"] = R.AUTHORS_COMMIT
    W.meta["generator"] = "testdata/gen/make_train_golden.py"
    W.meta["seed"] = str(seed)

    # ---- ce / dice term cases
    for name, (x, y, valid) in term_cases(g).items():
        W.add_f32(name + ".x", x)
        W.add_i32(name + ".y", y)
        if valid is not None:
            W.add_u8(name + ".valid", valid)
        o64 = seg_terms(smp, x, y, valid is not None, torch.float64)
        o32 = seg_terms(smp, x, y, valid is not None, torch.float32)
        for term in ("ce", "dice"):
            W.meta["%s.%s.f64" % (name, term)] = r(o64[term][0])
            W.meta["%s.%s.f32" % (name, term)] = r(o32[term][0])
            W.add_f32("%s.g_%s" % (name, term), o64[term][1])

    # ---- KD
    kd_auth = authors["losses"].CriterionPixelWise()
    for name, c, h, w, masked in (("kd_c2", 2, 8, 10, False), ("kd_c2_mask", 2, 8, 10, True),
                                  ("kd_c3", 3, 6, 7, False)):
        s = make_inputs(g, 2, c, h, w)
        t = make_inputs(g, 2, c, h, w, scale=3.0)
        valid = (torch.rand(2, h, w, generator=g) > 0.3) if masked else None
        W.add_f32(name + ".s", s)
        W.add_f32(name + ".t", t)
        if valid is not None:
            W.add_u8(name + ".valid", valid)
        for dt, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            ss = s.to(dt).clone().requires_grad_(True)
            tt = t.to(dt).clone().requires_grad_(True)
            v = kd_masked(ss, tt, valid) if masked else kd_auth([ss], [tt])
            if not masked:  # the spec's formula == the authors' module
                ref = kd_masked(ss, tt, torch.ones(2, h, w, dtype=torch.bool))
                assert abs(ref.item() - v.item()) <= 1e-12 * abs(v.item()) + (1e-5 if dt == torch.float32 else 0)
            v.backward()
            W.meta["%s.kd.%s" % (name, tag)] = r(v.item())
            if tag == "f64":
                W.add_f32(name + ".g_s", ss.grad)
                W.add_f32(name + ".g_t", tt.grad)

    # ---- MSE
    a = torch.randn(3, 4, 5, generator=g).float()
    b = torch.randn(3, 4, 5, generator=g).float()
    W.add_f32("mse.a", a)
    W.add_f32("mse.b", b)
    for dt, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
        aa = a.to(dt).clone().requires_grad_(True)
        bb = b.to(dt).clone().requires_grad_(True)
        v = torch.nn.MSELoss()(aa, bb)
        v.backward()
        W.meta["mse.mse.%s" % tag] = r(v.item())
        if tag == "f64":
            W.add_f32("mse.g_a", aa.grad)
            W.add_f32("mse.g_b", bb.grad)

    # ---- stage 2
    L = authors["losses"]
    seg_cfg2 = {"crossentropyloss": None, "diceloss": {"mode": "multiclass", "from_logits": True}}
    w_cfg2 = {"crossentropyloss": 1.0, "diceloss": 1.0}
    feat_shapes = [(2, 6, 2, 3), (2, 8, 2, 3), (2, 4, 4, 5)]  # (p4, f4), (p5, f5), (decoder_rgb, decoder)
    for name, masked in (("st2", False), ("st2_mask", True)):
        n, c, h, w = 2, 2, 8, 10
        ins = {k: make_inputs(g, n, c, h, w) for k in ("logit_sar", "logit_rgb", "logit_fused")}
        ins["t_logits"] = make_inputs(g, n, c, h, w, scale=3.0)
        y = torch.randint(0, c, (n, h, w), generator=g)
        valid = (torch.rand(n, h, w, generator=g) > 0.3) if masked else None
        if masked:
            y = torch.where(valid, y, torch.full_like(y, IGNORE))
        s_feats = [torch.randn(*sh, generator=g).float() for sh in feat_shapes]
        t_feats = [torch.randn(*sh, generator=g).float() for sh in feat_shapes]
        for k, v in ins.items():
            W.add_f32("%s.%s" % (name, k), v)
        W.add_i32(name + ".y", y)
        if valid is not None:
            W.add_u8(name + ".valid", valid)
        for i in range(3):
            W.add_f32("%s.s_feat%d" % (name, i), s_feats[i])
            W.add_f32("%s.t_feat%d" % (name, i), t_feats[i])
        for dt, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            X = {k: v.to(dt).clone().requires_grad_(k != "t_logits") for k, v in ins.items()}
            SF = [f.to(dt).clone().requires_grad_(True) for f in s_feats]
            TF = [f.to(dt) for f in t_feats]
            if masked:
                ce_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
                dice_fn = smp.losses.DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE)

                def seg(o, tgt):
                    return ce_fn(o, tgt) + dice_fn(o, tgt)

                def kd(s_, t_):
                    return kd_masked(s_, t_, valid)
            else:
                seg = L.get_loss(seg_cfg2, w_cfg2)
                kd_m = L.CriterionPixelWise()

                def kd(s_, t_):
                    return kd_m([s_], [t_])
            with torch.no_grad():
                rgb_tgt = torch.argmax(X["t_logits"], dim=1)
                if masked:
                    rgb_tgt = torch.where(valid, rgb_tgt, torch.full_like(rgb_tgt, IGNORE))
            # train_st2.py, with the intended pairing of the spec
            sar_loss = seg(X["logit_sar"], y)
            seg_rgb = seg(X["logit_rgb"], rgb_tgt)
            kd_rgb = kd(X["logit_rgb"], X["t_logits"].detach())
            rgb_loss = seg_rgb + kd_rgb
            fused_loss = seg(X["logit_fused"], y)
            mses = [torch.nn.MSELoss()(sf, tf) for sf, tf in zip(SF, TF)]
            dist = sum(mses)
            loss = sar_loss + rgb_loss + fused_loss + dist / len(SF)
            loss.backward()
            # the unweighted terms, separately
            kw = dict(ignore_index=IGNORE) if masked else {}
            ce_fn = torch.nn.CrossEntropyLoss(**kw)
            dice_fn = smp.losses.DiceLoss(mode="multiclass", from_logits=True, **kw)
            with torch.no_grad():
                terms = {
                    "ce_sar": ce_fn(X["logit_sar"], y), "dice_sar": dice_fn(X["logit_sar"], y),
                    "ce_rgb": ce_fn(X["logit_rgb"], rgb_tgt), "dice_rgb": dice_fn(X["logit_rgb"], rgb_tgt),
                    "kd_rgb": kd_rgb, "ce_fused": ce_fn(X["logit_fused"], y),
                    "dice_fused": dice_fn(X["logit_fused"], y),
                    "mse0": mses[0], "mse1": mses[1], "mse2": mses[2], "total": loss,
                }
            for k, v in terms.items():
                W.meta["%s.%s.%s" % (name, k, tag)] = r(v.item())
            if tag == "f64":
                for k in ("logit_sar", "logit_rgb", "logit_fused"):
                    W.add_f32("%s.g_%s" % (name, k), X[k].grad)
                for i in range(3):
                    W.add_f32("%s.g_s_feat%d" % (name, i), SF[i].grad)

    # ---- stage 1 (main_st1.py: dice listed first)
    seg_cfg1 = {"diceloss": {"mode": "multiclass", "from_logits": True}, "crossentropyloss": None}
    w_cfg1 = {"diceloss": 1.0, "crossentropyloss": 1.0}
    x = make_inputs(g, 2, 2, 8, 10)
    y = torch.randint(0, 2, (2, 8, 10), generator=g)
    W.add_f32("st1.x", x)
    W.add_i32("st1.y", y)
    for dt, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
        seg = L.get_loss(seg_cfg1, w_cfg1)
        xx = x.to(dt).clone().requires_grad_(True)
        v = seg(xx, y)
        v.backward()
        W.meta["st1.total.%s" % tag] = r(v.item())
        W.meta["st1.ce.%s" % tag] = r(seg.values["crossentropyloss"].item())
        W.meta["st1.dice.%s" % tag] = r(seg.values["diceloss"].item())
        if tag == "f64":
            W.add_f32("st1.g", xx.grad)
    W.save(path)


# ---------------------------------------------------------------- optimizer goldens
SEG_SIZES = [(96, 1), (16, 0), (128, 1), (17, 0)]  # (count, decay flag)
GAP = 3
STEPS = 10
EPOCHS, ITERS = 3, 4


def write_optim(path, authors, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    segs, off = [], 0
    for cnt, dec in SEG_SIZES:
        segs.append((off, cnt, dec))
        off += cnt + GAP
    n = off
    params0 = torch.zeros(n)
    grads = torch.zeros(STEPS, n)
    for i, (o, cnt, dec) in enumerate(segs):
        params0[o:o + cnt] = torch.randn(cnt, generator=g) * (0.5 + i)
        for s in range(STEPS):
            gg = torch.randn(cnt, generator=g) * (0.1 * (i + 1))
            gg[torch.rand(cnt, generator=g) < 0.05] = 0.0
            grads[s, o:o + cnt] = gg
    W = StWriter()
    W.meta["torch"] = torch.__version__
    W.meta["generator"] = "testdata/gen/make_train_golden.py"
    W.meta["seed"] = str(seed)
    W.meta["segments"] = ",".join("%d:%d:%d" % sg for sg in segs)
    W.meta["n"] = str(n)
    W.meta["steps"] = str(STEPS)
    W.meta["epochs"] = str(EPOCHS)
    W.meta["iters_per_epoch"] = str(ITERS)
    W.add_f32("params0", params0)
    W.add_f32("grads", grads)

    runs = {
        "sgd": dict(cls=torch.optim.SGD, base=5e-3, wd=1e-4, all_decay=True,
                    kw=dict(momentum=0.9, nesterov=True)),
        "sgd_damp": dict(cls=torch.optim.SGD, base=5e-3, wd=1e-3, all_decay=False,
                         kw=dict(momentum=0.9, dampening=0.1, nesterov=False)),
        "adamw": dict(cls=torch.optim.AdamW, base=1e-2, wd=0.05, all_decay=False,
                      kw=dict(betas=(0.9, 0.999), eps=1e-8)),
    }
    Sched = authors["lr_scheduler"].LR_Scheduler
    for name, rc in runs.items():
        ps = [torch.nn.Parameter(params0[o:o + cnt].clone()) for o, cnt, _ in segs]
        if rc["all_decay"]:
            groups = [{"params": ps, "weight_decay": rc["wd"]}]
        else:
            groups = [{"params": [p for p, sg in zip(ps, segs) if sg[2]], "weight_decay": rc["wd"]},
                      {"params": [p for p, sg in zip(ps, segs) if not sg[2]], "weight_decay": 0.0}]
        opt = rc["cls"](groups, lr=rc["base"], **rc["kw"])
        with contextlib.redirect_stdout(io.StringIO()):
            sched = Sched("poly", rc["base"], EPOCHS + 1, ITERS)
        traj, lrs = torch.zeros(STEPS, n), []
        step = 0
        for epoch in range(1, EPOCHS + 1):  # the authors' loop: step, then scheduler(i, epoch)
            for i in range(ITERS):
                if step == STEPS:
                    break
                lrs.append(opt.param_groups[0]["lr"])
                assert all(gr["lr"] == lrs[-1] for gr in opt.param_groups)
                for p, (o, cnt, _) in zip(ps, segs):
                    p.grad = grads[step, o:o + cnt].clone()
                opt.step()
                with contextlib.redirect_stdout(io.StringIO()):  # it prints each epoch's lr
                    sched(opt, i, epoch, 0.0)
                for p, (o, cnt, _) in zip(ps, segs):
                    traj[step, o:o + cnt] = p.detach()
                step += 1
        W.add_f32(name + ".params", traj)
        keys = ["momentum_buffer"] if rc["cls"] is torch.optim.SGD else ["exp_avg", "exp_avg_sq"]
        st = torch.zeros(len(keys), n)
        for j, key in enumerate(keys):
            for p, (o, cnt, _) in zip(ps, segs):
                st[j, o:o + cnt] = opt.state[p][key]
        W.add_f32(name + ".state", st)
        W.meta[name + ".lr"] = ",".join(r(v) for v in lrs)
    W.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=MIRROR, help="bare git mirror of jiankang1991/TGRS_DisOptNet")
    ap.add_argument("--out", default=str(OUT_DIR))
    args = ap.parse_args()
    R.setup_imports()  # smp 0.2.0 from .ref/site (also puts the authors' model.py on the path)
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    authors = load_authors_utils(args.mirror)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_losses(out / "loss_golden.safetensors", authors, seed=5101)
    write_optim(out / "optim_golden.safetensors", authors, seed=5102)
    for f in sorted(out.glob("*_golden.safetensors")):
        if f.name.startswith(("loss_", "optim_")):
            print("%s: %d bytes" % (f, f.stat().st_size))


if __name__ == "__main__":
    sys.exit(main())
