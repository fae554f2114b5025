#!/usr/bin/env python3
"""Time the authors' stage-2 training step in PyTorch: student-b3 (BiDeepLabV3p_Dist) distilled from a
frozen teacher-b3 (DeepLabV3plus), the baseline for our training engine (core/train, cuda/train_ops).

One step, as in the authors' train_st2.py (the same step testdata/gen/make_step_golden.py builds at
2x64x64 on the CPU, but with their training randomness ON):
  opt.zero_grad(); with no_grad: teacher(optical) (eval mode; its encoder f4, f5 and decoder output
  captured by a forward hook: the spec's intended feature pairs); student(sar) in train mode
  (Dropout(0.5) in the ASPP projections, drop-connect 0.2 x block/blocks in the encoder and in the
  pseudo-optical stages); the authors' total loss (their utils/losses.py: get_loss composite ce + dice of
  main_st2.py's config, CriterionPixelWise, nn.MSELoss over the 3 pairs); backward;
  SGD(lr 5e-3, momentum 0.9, Nesterov, weight decay 1e-4).step().
The batch (N x 4 x S x S SAR-like input, N x 4 x S x S optical input for the teacher (4 bands: the
authors' model_specs in_channels 4 is shared by teacher and student; SpaceNet 6 PS-RGBNIR), N x S x S
two-class target) is made once and stays on the device: no data loading is timed.

Modes, each with a freshly built model set (same seed): fp32 (TF32 off in matmul and cuDNN), tf32 (both
on), amp16 (autocast float16 + GradScaler), bf16 (autocast bfloat16, no scaler). cudnn.benchmark on.
W warm-up steps, then R timed steps, torch.cuda.synchronize() before and after each; peak memory is
torch.cuda.max_memory_allocated() since reset_peak_memory_stats() just before the warm-up (the models,
optimizer state, batch and the step's activations).

Weights: PyTorch's own initialisation (or dwgen-1 with --dwgen); the teacher's BN running statistics are
set from one train-mode forward of the optical batch (refmodel.calibrate_bn), so that its eval-mode
activations stay in range (float16). Timing only: nothing is compared.

The authors' losses.py is read at run time, never copied into this repository: from
<repo>/.ref/authors/utils/losses.py when present (the device: extract it into .ref before carrying .ref,
see bench/cuda/README.md), else from the bare mirror (git show, as make_train_golden.py does).

Writes nothing (stdout only; no .pyc files).

usage (device):  python3 bench/bench_torch_train.py --modes fp32,tf32,amp16,bf16 [--channels-last]
       (CPU smoke) /usr/bin/python3 bench/bench_torch_train.py --device cpu --size 64 --batch 2 \\
                       --steps 2 --warmup 1 --modes fp32
"""
import sys

sys.dont_write_bytecode = True  # import refmodel, smp, ... without writing __pycache__ into the tree

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "gen"))
import refmodel as R  # noqa: E402

MODES = ("fp32", "tf32", "amp16", "bf16")
GPU_ONLY = ("tf32", "amp16", "bf16")
DEFAULT_UTILS = R.DEFAULT_AUTHORS / "utils"
LR, MOMENTUM, WD = 5e-3, 0.9, 1e-4
# main_st2.py's loss config (dict order kept): dice + ce, both weight 1
SEG_LOSS = {"diceloss": {"mode": "multiclass", "from_logits": True}, "crossentropyloss": None}
SEG_WEIGHTS = {"crossentropyloss": 1.0, "diceloss": 1.0}


def load_losses(utils_dir, mirror):
    """the authors' utils/losses.py as a module: from utils_dir/losses.py if it exists, else from the mirror"""
    path = Path(utils_dir) / "losses.py" if utils_dir else None
    if path is not None and path.is_file():
        m = types.ModuleType("authors_losses")
        m.__file__ = str(path)
        exec(compile(path.read_text(), str(path), "exec"), m.__dict__)
        return m, str(path)
    import make_train_golden as MT
    try:
        L = MT.load_authors_utils(mirror)["losses"]
    except SystemExit as exc:
        raise SystemExit("%s\n(no %s either: put the authors' utils/losses.py there, see bench/cuda/README.md)"
                         % (exc, path))
    return L, "%s@%s:utils/losses.py" % (mirror, R.AUTHORS_COMMIT[:7])


def make_batch(n, s, seed=20261125):
    """SAR-like student input, optical-like teacher input (both 4 bands, the authors' normalisation),
    a blocky two-class target (8x8-pixel blocks, about 40 % class 1); float32 / int64 on the CPU"""
    import torch
    x = R.sar_like_input((n, 4, s, s), 11)
    xt = R.sar_like_input((n, 4, s, s), 12)
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 1, s // 8, s // 8, generator=g) > 0.6).long()
    y = y.repeat_interleave(8, 2).repeat_interleave(8, 3)[:, 0].contiguous()
    return x, xt, y


class Step:
    """one model set (teacher, student, optimizer, scaler) and its training step in one mode"""

    def __init__(self, mode, dev, L, batch, channels_last, dwgen, seed):
        import torch
        self.torch = torch
        self.mode, self.dev = mode, dev
        torch.manual_seed(seed)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x, xt, y = batch
        self.x = x.to(dev).contiguous(memory_format=fmt)
        self.xt = xt.to(dev).contiguous(memory_format=fmt)
        self.y = y.to(dev)
        teacher = R.build_model("teacher", "b3")
        student = R.build_model("student", "b3")
        if dwgen:
            R.apply_dwgen(teacher)
            R.apply_dwgen(student)
        self.teacher = teacher.to(dev).to(memory_format=fmt)
        R.calibrate_bn(self.teacher, self.xt)  # fp32, before any autocast; leaves the teacher in eval mode
        self.teacher.eval()
        # the authors' training mode: dropout and drop-connect ON (nothing switched off)
        self.student = student.to(dev).to(memory_format=fmt).train()
        self.opt = torch.optim.SGD(self.student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD,
                                   nesterov=True)
        self.seg = L.get_loss(SEG_LOSS, SEG_WEIGHTS)
        self.kd = L.CriterionPixelWise()
        self.mse = torch.nn.MSELoss()
        self.adt = {"amp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
        self.scaler = None
        if mode == "amp16":
            if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
                self.scaler = torch.amp.GradScaler("cuda")
            else:
                self.scaler = torch.cuda.amp.GradScaler()
        self.cap = {}
        self.hook = self.teacher.encoder.register_forward_hook(lambda _m, _i, o: self.cap.__setitem__("enc", o))
        self.skipped = 0

    def step(self):
        """one full training step; returns the total loss (a tensor, not synchronised)"""
        torch = self.torch
        self.opt.zero_grad()  # train_st2.py's order: zero_grad first
        ac = torch.autocast(self.dev.type, dtype=self.adt) if self.adt is not None else contextlib.nullcontext()
        with ac:
            with torch.no_grad():
                t_logits, t_multi = self.teacher(self.xt)
                rgb_tgt = torch.argmax(t_logits, dim=1)
            t_feats = list(self.cap.pop("enc")[-2:]) + [t_multi[-1]]  # (f4, f5, decoder output)
            logit_sar, logit_rgb, logit_fused, s_feats = self.student(self.x)
            sar_loss = self.seg(logit_sar, self.y)
            rgb_loss = self.seg(logit_rgb, rgb_tgt.detach()) + self.kd([logit_rgb], [t_logits.detach()])
            fused_loss = self.seg(logit_fused, self.y)
            dist = sum([self.mse(s, t) for s, t in zip(s_feats, t_feats)])
            loss = sar_loss + rgb_loss + fused_loss + dist / len(s_feats)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return loss


def run_mode(mode, a, dev, L, batch):
    import torch
    cuda = dev.type == "cuda"
    if cuda:
        tf32 = mode == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    st = Step(mode, dev, L, batch, a.channels_last, a.dwgen, a.seed)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    loss = None
    prev_scale = st.scaler.get_scale() if st.scaler is not None else None
    for i in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = st.step()
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        if i >= a.warmup:
            times.append(1000.0 * (t1 - t0))
        if st.scaler is not None:  # read outside the timing: get_scale() synchronises
            scale = st.scaler.get_scale()
            st.skipped += scale < prev_scale  # a reduced scale = inf/nan gradients, that step was skipped
            prev_scale = scale
    lv = float(loss.detach().float().item())
    peak = "%.3f" % (torch.cuda.max_memory_allocated() / 2.0 ** 30) if cuda else "na"
    reserved = " peak_reserved_gib=%.3f" % (torch.cuda.max_memory_reserved() / 2.0 ** 30) if cuda else ""
    extra = ""
    if st.scaler is not None:
        extra = " scale=%g skipped_steps=%d/%d" % (st.scaler.get_scale(), st.skipped, a.warmup + a.steps)
    print("mode=%s batch=%d size=%d ms_step_median=%.2f ms_step_min=%.2f peak_mem_gib=%s%s layout=%s "
          "loss=%.6g finite=%s%s" % (mode, a.batch, a.size, statistics.median(times), min(times), peak, reserved,
                                     "channels_last" if a.channels_last else "nchw", lv,
                                     "yes" if lv == lv and abs(lv) != float("inf") else "NO", extra), flush=True)
    ok = lv == lv and abs(lv) != float("inf")
    st.hook.remove()  # the hook's closure refers back to st: free this mode's tensors before the next mode
    del st, loss
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--modes", default="fp32,tf32,amp16,bf16", help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--batch", type=int, default=8, help="N (default 8, the authors' stage-2 batch; >= 2)")
    ap.add_argument("--size", type=int, default=512, help="S (default 512; a multiple of 32)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps W (default 3)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps R (default 10)")
    ap.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    ap.add_argument("--dwgen", action="store_true", help="dwgen-1 weights instead of PyTorch's initialisation")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed for each mode's models (default 0)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    ap.add_argument("--site", default=str(R.DEFAULT_SITE), help="folder with smp 0.2.0 etc. ('' = installed)")
    ap.add_argument("--authors", default=str(R.DEFAULT_AUTHORS), help="folder with the authors' model.py")
    ap.add_argument("--authors-utils", default=str(DEFAULT_UTILS),
                    help="folder with the authors' utils/losses.py (default .ref/authors/utils; else --mirror)")
    ap.add_argument("--mirror", default="/work/.mirror/jiankang1991+TGRS_DisOptNet/repo",
                    help="bare git mirror of jiankang1991/TGRS_DisOptNet (when losses.py is not in --authors-utils)")
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error("unknown mode(s) %s (choose from %s)" % (",".join(bad), ",".join(MODES)))
    if a.size % 32:
        ap.error("--size must be a multiple of 32")
    if a.batch < 2:
        ap.error("--batch must be >= 2 (train-mode BatchNorm after the ASPP's global pooling needs 2 values)")
    if a.steps < 1 or a.warmup < 0:
        ap.error("--steps >= 1, --warmup >= 0")

    _, info = R.setup_imports(site=a.site or None, authors=a.authors)
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    L, losses_src = load_losses(a.authors_utils, a.mirror)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device %s: CUDA is not available (use --device cpu)" % a.device)
    torch.backends.cudnn.benchmark = True

    print("# bench_torch_train: the authors' stage-2 training step (student-b3 from a frozen teacher-b3)")
    print("# torch %s, smp %s, efficientnet_pytorch %s, python %s" % (
        torch.__version__, info["smp"], info["efficientnet_pytorch"], info["python"]))
    if cuda:
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        print("# device %s: %s, CUDA %s, cuDNN %s" % (dev, torch.cuda.get_device_name(idx), torch.version.cuda,
                                                    torch.backends.cudnn.version()))
    else:
        print("# device cpu: %s, %d threads" % (R.cpu_model_name(), torch.get_num_threads()))
    print("# settings: modes=%s batch=%d size=%d warmup=%d steps=%d layout=%s weights=%s seed=%d "
          "cudnn.benchmark=True" % (",".join(modes), a.batch, a.size, a.warmup, a.steps,
                                    "channels_last" if a.channels_last else "nchw",
                                    "dwgen-1" if a.dwgen else "torch-init", a.seed))
    print("# step: teacher fwd (eval, no_grad) + student fwd (train: dropout 0.5, drop-connect 0.2) + authors' "
          "loss + backward + SGD(lr %g, momentum %g, nesterov, wd %g); losses from %s" % (LR, MOMENTUM, WD,
                                                                                          losses_src))
    print("# model: %s" % info["authors_model_py"], flush=True)

    batch = make_batch(a.batch, a.size)
    all_ok = True
    for mode in modes:
        if not cuda and mode in GPU_ONLY:
            print("mode=%s skipped: GPU-only mode on --device cpu" % mode, flush=True)
            continue
        all_ok &= run_mode(mode, a, dev, L, batch)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
