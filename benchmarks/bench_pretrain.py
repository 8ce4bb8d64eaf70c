"""Stage-1 training throughput: images/s and peak memory of the real training step.

    python benchmarks/bench_pretrain.py --config tiny --threads 2
    python benchmarks/bench_pretrain.py --config paper --device cuda --compile --steps 100

Synthetic ``[0, 1]`` images already on the device (the data loader is not measured), the
dataset key region of the bundled faces, the engine's own mask sampling and
:func:`lorefd.engines.pretrain.pretrain_step` (Adam, bf16 autocast on CUDA).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from lorefd.config import load_config
from lorefd.data.manifest import load_samples
from lorefd.data.stage1 import compute_key_region
from lorefd.engines.common import build_optimizer, compile_mode
from lorefd.engines.pretrain import mask_generator, pretrain_step, sample_masks
from lorefd.models.mae import build_mae, count_parameters
from lorefd.utils import seed_everything


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps (compile, autotune)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode: default, reduce-overhead, max-autotune")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    device = torch.device(args.device)
    bs = args.batch_size or cfg.pretrain.batch_size
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    faces = Path(__file__).resolve().parents[1] / "src" / "lorefd" / "assets" / "faces"
    _, patch_set = compute_key_region(load_samples(faces), cfg)
    seed_everything(0)
    model = build_mae(cfg.data.image_size, cfg.mae, cfg.mask)
    model.set_key_patches(patch_set)
    model.to(device).train()
    opt, sched = build_optimizer(model.parameters(), cfg.pretrain, device)
    step_model = (torch.compile(model, mode=compile_mode(args.compile_mode)) if args.compile
                  else model)
    imgs = torch.rand(bs, 3, cfg.data.image_size, cfg.data.image_size, device=device)
    gen = mask_generator(device)

    def step(i: int) -> torch.Tensor:
        gen.manual_seed(i)
        masking = sample_masks(model, bs, gen, None, "dataset")
        return pretrain_step(step_model, opt, sched, imgs, masking, cfg.pretrain.amp)

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = None
    for i in range(args.steps):
        loss = step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        card = torch.cuda.get_device_name(device)
        peak_what = "GiB GPU (max allocated)"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        card = f"{cpu_name()}, {torch.get_num_threads()} threads"
        peak_what = "GiB host (peak RSS)"
    result = {
        "config": args.config, "device": str(device), "card": card, "compile": args.compile and args.compile_mode,
        "amp_bf16": bool(cfg.pretrain.amp and device.type == "cuda"), "batch_size": bs,
        "image_size": cfg.data.image_size, "patch_size": cfg.mask.patch_size,
        "mask_ratio": cfg.mask.mask_ratio, "params": count_parameters(model),
        "steps": args.steps, "img_per_s": round(bs * args.steps / dt, 1),
        "peak_memory": f"{peak:.2f} {peak_what}", "final_loss": float(loss),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
