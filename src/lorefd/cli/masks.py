"""`lorefd masks`: draw the key region of a dataset and one sampled mask (Fig. 2).

    lorefd masks --data FACES --out key_region.png [--config tiny] [--index 3]
    lorefd masks --data FACES --mae runs/stage1 --out fig.png   # the region a run saved

Panels: landmarks with P1..P4 and the expanded rectangle; the key patch set T; one mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorefd.cli.common import (
    add_config_args,
    add_mae_arg,
    check_output_file,
    check_writes_spare_inputs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("masks", help="figure of the key region, T and a sampled mask",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--data", required=True, help="manifest or folder of real face crops")
    p.add_argument("--out", required=True, help="output PNG")
    add_mae_arg(p, help="use the key region and config of this stage-1 run (or its mae/)")
    p.add_argument("--index", type=int, default=0, help="which face to draw")
    p.add_argument("--seed", type=int, default=0, help="mask seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lorefd.checkpoint import read_checkpoint_info
    from lorefd.config import load_config
    from lorefd.data.dataset import FaceDataset
    from lorefd.data.keyregion import (
        KeyRegion,
        key_indicator,
        key_region_masking,
        sample_key_masks,
    )
    from lorefd.data.stage1 import compute_key_region, prepare_pretrain_samples
    from lorefd.evaluation.figures import key_region_figure
    from lorefd.models.mae import resolve_mae_checkpoint

    out = Path(args.out)
    check_output_file(out, "--out")
    check_writes_spare_inputs({f"--out {out}": out}, data=[args.data], models=[args.mae])
    if args.mae:
        cfg, meta = read_checkpoint_info(resolve_mae_checkpoint(args.mae))
        region, patch_set = KeyRegion.from_dict(meta["key_region"]), meta["key_patches"]
    else:
        cfg = load_config(args.config, args.overrides)
    # landmarks of plain folders: the run's cache when drawing a run's region
    cache_root = out.parent / ".lorefd"
    if args.mae and (Path(args.mae) / "landmarks").is_dir():
        cache_root = Path(args.mae)
    samples, _ = prepare_pretrain_samples(args.data, cfg, cache_root)
    if not args.mae:
        region, patch_set = compute_key_region(samples, cfg)
    item = FaceDataset(samples, cfg.data.image_size)[args.index % len(samples)]
    size, patch = cfg.data.image_size, cfg.mask.patch_size
    if cfg.mask.region == "sample":  # the face's own T
        key = sample_key_masks(item["landmarks"][None], size, patch, cfg.mask.margin)
        patch_set = key[0].nonzero().flatten().tolist()
    else:
        key = key_indicator(patch_set, (size // patch) ** 2)[None]
    gen = torch.Generator().manual_seed(args.seed)
    _, mask, _ = key_region_masking(key, cfg.mask.mask_ratio, gen, cfg.mask.random_fraction)
    key_region_figure(item["image"], item["landmarks"].numpy(), region, patch_set, mask[0],
                      cfg.mask.patch_size, out,
                      title=f"{Path(samples[args.index % len(samples)].path).name}: "
                            f"mask ratio {cfg.mask.mask_ratio:g}, region={cfg.mask.region}")
    print(out)
    return 0
