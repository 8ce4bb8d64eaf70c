"""Training throughput of ``lorefd train`` against a bare PyTorch loop over the same network.

    python benchmarks/bench_train_overhead.py --config cpu --reals MANIFEST [--steps 60]

The bare loop trains the very detector module ``lorefd train`` builds (same backbone, heads,
batch, optimiser, channels_last memory format) on random tensors already in memory. ``lorefd train`` runs its own engine:
fakes synthesised on the fly from ``--reals`` in a DataLoader worker, blend-mask targets,
logging, the LR schedule. The ratio (goal >= 0.9) is the cost of everything but the model.
Steady-state images/s: the first logging window of each is left out (warm-up).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lorefd.config import load_config
from lorefd.data.manifest import read_manifest
from lorefd.engines.train import train
from lorefd.models.detectors import build_detector


def bare_loop(cfg, steps: int, warmup: int) -> float:  # noqa: ANN001
    torch.manual_seed(0)
    det = build_detector(cfg).train().to(memory_format=torch.channels_last)  # as lorefd train
    opt = torch.optim.Adam(det.trainable_parameters(), lr=cfg.train.lr)
    bs, s = cfg.train.batch_size, cfg.data.image_size
    x = torch.rand(bs, 3, s, s).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(bs) % 2).float()
    masks = torch.rand(bs, 1, s, s) * y[:, None, None, None]
    has = torch.ones(bs, dtype=torch.bool)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = det.loss(det(x), y, masks, has)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * bs / (time.perf_counter() - t0)


def lorefd_train(cfg, reals, steps: int, log_every: int) -> float:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, reals, None, None, Path(tmp) / "run", device="cpu")
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
    rates = [r["img_per_s"] for r in rows if "img_per_s" in r][1:]  # drop the warm-up window
    return sum(rates) / len(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--reals", required=True, help="manifest of real faces with landmarks")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="append the result as a JSON line")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides + [
        "train.epochs=1", f"train.iters_per_epoch={args.steps + args.log_every}",
        f"train.log_every={args.log_every}", "train.fakes=synth", "detector.name=baseline"])
    reals = [s for s in read_manifest(args.reals) if s.label == 0]
    engine = lorefd_train(cfg, reals, args.steps, args.log_every)
    bare = bare_loop(cfg, args.steps, args.log_every)
    result = {"config": args.config, "backbone": cfg.detector.backbone,
              "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size,
              "threads": torch.get_num_threads(), "num_workers": cfg.data.num_workers,
              "bare_img_per_s": round(bare, 2), "lorefd_img_per_s": round(engine, 2),
              "ratio": round(engine / bare, 3)}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
