"""`lorefd train`: stage 2, the reconstruction-guided detector (Section III-C) or the baseline.

    lorefd train --config paper --mae runs/stage1 --train ffpp.csv --filter split=train \\
        --val ffpp.csv --val-filter split=val --out runs/lre [--detector lre|baseline] [--resume]
    torchrun --nproc_per_node 4 -m lorefd.cli train ...
"""

from __future__ import annotations

import argparse
import os

from lorefd.cli.common import (
    add_allow_unchecksummed_arg,
    add_config_args,
    add_device_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="stage 2: train the detector (lre) or the baseline",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--mae", default=None,
                   help="stage-1 model (`lorefd pretrain` run or its best/ folder); needed for lre")
    p.add_argument("--train", required=True, help="training manifest (CSV or folder)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=V1,V2",
                   help="keep matching training rows, repeatable (e.g. split=train)")
    p.add_argument("--val", default=None, help="validation manifest (best checkpoint by its AUC)")
    p.add_argument("--val-filter", action="append", default=[], metavar="KEY=V1,V2",
                   help="filter for the validation rows (e.g. split=val)")
    p.add_argument("--detector", default=None, help="registry name (lre, baseline), overrides detector.name")
    p.add_argument("--out", required=True,
                   help="run folder (best/, last/, config.yaml, metrics.jsonl, tb/)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/last")
    add_allow_unchecksummed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.config import ConfigError, load_config
    from lorefd.data.manifest import filter_samples, load_samples
    from lorefd.engines.train import train

    overrides = list(args.overrides)
    if args.detector:
        overrides.append(f"detector.name={args.detector}")
    cfg = load_config(args.config, overrides)
    if cfg.detector.name == "lre" and not args.mae:
        raise ConfigError("--mae CKPT is required for the lre detector "
                          "(or pass --detector baseline for the baseline)")
    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(out_files(args.out, "--out", ("summary.json", "metrics.jsonl",
                                                            "config.yaml")),
                              data=[args.train, args.val], models=[args.mae])
    train_samples = filter_samples(load_samples(args.train), args.filter)
    val_samples = (filter_samples(load_samples(args.val), args.val_filter)
                   if args.val else None)
    summary = train(cfg, train_samples, val_samples, args.mae, args.out, resume=args.resume,
                    allow_unchecksummed=args.allow_unchecksummed,
                    device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    auc = summary["best_auc"]
    print(f"best: {summary['best']} (epoch {summary['best_epoch']}, val AUC "
          f"{'n/a' if auc is None else f'{auc:.4f}'})")
    return 0
