"""`lorefd reconstruct`: masked reconstructions by a stage-1 checkpoint (the paper's Fig. 4).

    lorefd reconstruct --ckpt runs/stage1 face1.png face2.jpg faces_dir/ --out fig.png

Rows: original, masked input, reconstruction (visible patches pasted back), |difference|.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def resolve_mae_dir(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder holding ``mae/`` (or ``checkpoints/last``)."""
    p = Path(path)
    for cand in (p, p / "mae", p / "checkpoints" / "last"):
        if (cand / "config.json").is_file():
            return cand
    return p


def collect_images(items: list[str], limit: int) -> list[str]:
    """Image files from files, folders (sorted) and manifests, at most ``limit``."""
    from lorefd.data.images import is_image
    from lorefd.data.manifest import load_samples

    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_file() and is_image(p):
            out.append(str(p))
        elif p.is_dir() or p.suffix.lower() == ".csv":
            out.extend(s.path for s in load_samples(p))
        else:
            raise FileNotFoundError(f"not an image, folder or manifest: {item}")
    return out[:limit]


def reconstruct_figure(ckpt: str | Path, images: list[str], out: str | Path, seed: int = 0,
                       device: str | None = None) -> Path:
    """Load a stage-1 model, reconstruct ``images`` under key-region masking, draw Fig. 4."""
    from lorefd.data.dataset import resize_square, to_tensor
    from lorefd.data.images import ImageLoadError, load_rgb
    from lorefd.evaluation.figures import reconstruction_grid
    from lorefd.models.mae import load_mae
    from lorefd.utils import pick_device

    dev = pick_device(device)
    model = load_mae(str(resolve_mae_dir(ckpt)), device=dev)
    tensors, names = [], []
    for path in images:
        try:
            tensors.append(to_tensor(resize_square(load_rgb(path), model.image_size)))
            names.append(Path(path).name)
        except ImageLoadError as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
    if not tensors:
        raise ValueError("no readable image to reconstruct")
    imgs = torch.stack(tensors).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    res = model.reconstruct(imgs, generator=gen)
    return reconstruction_grid(imgs.cpu(), res["image"].cpu(), res["mask"].cpu(),
                               model.patch_size, out, names,
                               title=f"{Path(ckpt)}: mask ratio {model.mask_ratio:g}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="figure of stage-1 masked reconstructions (Fig. 4)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="stage-1 checkpoint or run folder")
    p.add_argument("images", nargs="+", help="image files, folders or manifests")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--max", type=int, default=8, help="at most this many faces (rows)")
    p.add_argument("--seed", type=int, default=0, help="mask seed")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.checkpoint import CheckpointError

    try:
        images = collect_images(args.images, args.max)
        out = reconstruct_figure(args.ckpt, images, args.out, args.seed, args.device)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"lorefd reconstruct: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
