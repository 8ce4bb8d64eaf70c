"""`lorefd protocol`: one of the paper's evaluation protocols end to end (Tables I-V).

    lorefd protocol in-dataset --ffpp ffpp.csv --mae runs/stage1 --config paper --out proto/
    lorefd protocol cross-manipulation --ffpp ffpp.csv --mae runs/stage1 --out proto/
    lorefd protocol gid --ffpp ffpp.csv --mae runs/stage1 --compression c23,c40 --out proto/
    lorefd protocol cross-dataset --ffpp ffpp.csv --celebdf cdf.csv --dfd dfd.csv --mae ... --out proto/
    lorefd protocol ablation --ffpp ffpp.csv --celebdf cdf.csv --dfd dfd.csv --mae ... --out proto/

Manifests come from ``lorefd preprocess`` (columns dataset, split, method, compression; FF++
methods Deepfakes, Face2Face, FaceSwap, NeuralTextures). Trained runs are cached in OUT/runs and
shared between protocols using the same OUT (cross-dataset and ablation share the c23 run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorefd.cli.common import (
    add_config_args,
    add_device_arg,
    add_mae_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)

PROTOCOLS = ["in-dataset", "cross-manipulation", "gid", "cross-dataset", "ablation"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protocol", help="run a paper protocol and write its table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=PROTOCOLS, help="the protocol: " + ", ".join(PROTOCOLS))
    add_config_args(p)
    p.add_argument("--ffpp", required=True, help="FF++ manifest (splits train/val/test)")
    p.add_argument("--celebdf", default=None, help="Celeb-DF-v2 manifest (test split or all)")
    p.add_argument("--dfd", default=None, help="DFD manifest (test split or all)")
    add_mae_arg(p, required=True)
    p.add_argument("--compression", default="c23,c40",
                   help="compressions, comma-separated, for in-dataset and gid (c23,c40)")
    p.add_argument("--out", required=True, help="folder for NAME.md, NAME.csv, runs/, evals/")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.apps.protocols import run_protocol
    from lorefd.config import load_config
    from lorefd.data.manifest import check_files, load_samples

    cfg = load_config(args.config, args.overrides)
    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(out_files(args.out, "--out", (f"{args.name}.md",
                                                            f"{args.name}.csv")),
                              data=[args.ffpp, args.celebdf, args.dfd], models=[args.mae])
    sets = {}
    for key in ("ffpp", "celebdf", "dfd"):
        path = getattr(args, key)
        if path:
            sets[key] = load_samples(path)
            check_files(sets[key], f"--{key} {path}")
    _same_crops(sets)
    res = run_protocol(args.name, sets["ffpp"], args.mae, cfg, args.out,
                       celebdf=sets.get("celebdf"), dfd=sets.get("dfd"),
                       compressions=[c.strip() for c in args.compression.split(",") if c.strip()],
                       device=args.device)
    print(Path(res["markdown"]).read_text())
    return 0


def _same_crops(sets: dict) -> None:
    """The detectors are trained on the --ffpp crops: a cross-dataset set cropped otherwise
    (another template margin or face detector) would be scored silently wrong, so refuse it."""
    from lorefd.data.manifest import crop_mismatches, preprocess_record
    from lorefd.errors import UserError

    train = preprocess_record(sets["ffpp"])
    if train is None:
        return
    for key in ("celebdf", "dfd"):
        if key in sets:
            errors, _ = crop_mismatches(preprocess_record(sets[key]), train)
            if errors:
                raise UserError(f"--{key}: its crops were made otherwise than the --ffpp crops "
                                f"the detectors train on: {'; '.join(errors).replace('model', 'ffpp')}; "
                                f"re-crop it with `lorefd preprocess ... --size {train.get('size')} "
                                f"--margin {train.get('margin')} --crop "
                                f"{train.get('crop', 'template')}`")
