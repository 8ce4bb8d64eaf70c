"""Stage-2 throughput: training and evaluation images/s of the detector (model only).

    python benchmarks/bench_stage2.py --config tiny --threads 1
    python benchmarks/bench_stage2.py --config paper --device cuda [--compile] [--steps 50]

Images are random tensors already on the device, so the numbers measure the model step
(frozen MAE reconstruction + feature extractor + detection Xception forward/backward, Adam),
not JPEG decoding. bf16 autocast and channels_last on CUDA, as in ``lorefd train``. The MAE has
random weights of the configured size (speed does not depend on its values).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lorefd.checkpoint import save_checkpoint
from lorefd.config import load_config
from lorefd.engines.common import autocast
from lorefd.models.detectors import build_detector
from lorefd.models.mae import build_mae


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--detector", default="lre", help="lre or baseline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 GPU, 5 CPU)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")
    ap.add_argument("--eval-batch-size", type=int, default=None, help="default: 4 x batch")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode, e.g. reduce-overhead (CUDA graphs) or max-autotune")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--json", default=None, help="append the result as a JSON line")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    steps = args.steps or (20 if gpu else 5)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    cfg = load_config(args.config, args.overrides + [f"detector.name={args.detector}",
                                                     "detector.pretrained=false"])
    s = cfg.data.image_size
    bs = args.batch_size or cfg.train.batch_size
    ebs = args.eval_batch_size or 4 * bs
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        mae = build_mae(s, cfg.mae, cfg.mask)
        g = s // cfg.mask.patch_size
        mae.set_key_patches([i * g + j for i in range(g // 4, g - g // 8)
                             for j in range(g // 6, g - g // 6)])
        save_checkpoint(Path(tmp) / "mae", mae, cfg, {"kind": "mae"})
        det = build_detector(cfg, Path(tmp) / "mae").to(dev)
    if gpu:
        det.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cl = torch.channels_last if gpu else torch.contiguous_format
    fwd = torch.compile(det, mode=args.compile_mode) if args.compile else det
    opt = torch.optim.Adam(det.trainable_parameters(), lr=1e-4, fused=gpu)
    x = torch.rand(bs, 3, s, s, device=dev).contiguous(memory_format=cl)
    y = (torch.arange(bs, device=dev) % 2).float()

    def train_step() -> torch.Tensor:
        with autocast(dev, cfg.train.amp):
            out = fwd(x)
        loss = det.loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    det.train()
    for _ in range(warmup):
        train_step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        loss = train_step()
    sync(dev)
    train_ips = steps * bs / (time.perf_counter() - t)
    float(loss.detach())  # surfaces asynchronous errors

    det.eval()
    xe = torch.rand(ebs, 3, s, s, device=dev).contiguous(memory_format=cl)
    with torch.inference_mode():
        for _ in range(warmup):
            with autocast(dev, cfg.train.amp):
                fwd(xe)
        sync(dev)
        t = time.perf_counter()
        for _ in range(steps):
            with autocast(dev, cfg.train.amp):
                fwd(xe)
        sync(dev)
        eval_ips = steps * ebs / (time.perf_counter() - t)

    res = {"config": args.config, "detector": args.detector, "device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if gpu else "cpu",
           "threads": torch.get_num_threads(), "image_size": s, "batch": bs, "eval_batch": ebs,
           "compile": args.compile, "compile_mode": args.compile_mode, "amp_bf16": gpu and cfg.train.amp, "steps": steps,
           "train_img_per_s": round(train_ips, 2), "eval_img_per_s": round(eval_ips, 2),
           "torch": torch.__version__}
    if gpu:
        res["max_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    print(json.dumps(res))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
