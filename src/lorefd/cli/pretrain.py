"""`lorefd pretrain`: stage 1, the key-region MAE on real faces (Section III-B).

    lorefd pretrain --config paper --data FACES_DIR_OR_MANIFEST --out runs/stage1 [--resume]
    torchrun --nproc_per_node 4 -m lorefd.cli pretrain --config paper --data ... --out ...
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from lorefd.cli.common import (
    add_allow_unchecksummed_arg,
    add_config_args,
    add_device_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)

log = logging.getLogger("lorefd")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="stage 1: train the key-region MAE on real faces",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--data", required=True,
                   help="manifest CSV, folder with manifest.csv, or folder of face crops "
                        "(fakes are dropped; landmarks found with dlib when missing)")
    p.add_argument("--out", required=True,
                   help="run folder (best/, last/, config.yaml, metrics.jsonl, tb/)")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from OUT/last (or an older run's "
                        "OUT/checkpoints/last)")
    add_allow_unchecksummed_arg(p)
    add_device_arg(p)
    p.add_argument("--no-figure", action="store_true",
                   help="skip OUT/reconstruction.png (a few training faces reconstructed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.config import load_config
    from lorefd.engines.pretrain import pretrain

    cfg = load_config(args.config, args.overrides)  # bad values fail before any model
    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(
        out_files(args.out, "--out", ("summary.json", "metrics.jsonl", "key_region.json",
                                      "config.yaml", "reconstruction.png")),
        data=[args.data])
    summary = pretrain(cfg, args.data, args.out, resume=args.resume,
                       allow_unchecksummed=args.allow_unchecksummed, device=args.device)
    if not args.no_figure and int(os.environ.get("RANK", "0")) == 0:
        from lorefd.data.manifest import REAL, load_samples
        from lorefd.evaluation.figures import reconstruct_figure

        faces = [s.path for s in load_samples(args.data) if s.label == REAL][:4]
        fig = Path(args.out) / "reconstruction.png"
        reconstruct_figure(summary["best"], faces, fig, device=args.device)
        log.info("reconstruction figure: %s", fig)
    return 0
