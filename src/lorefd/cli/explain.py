"""`lorefd explain`: input, reconstruction, |difference| and per-layer attention maps (Figs. 3-4).

    lorefd explain --model runs/lre face1.png face2.png --out explain.png

MODEL is a bundle, a training run folder or a checkpoint folder (default: the shipped model).
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import (
    add_device_arg,
    add_model_arg,
    check_output_file,
    check_writes_spare_inputs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="figure of reconstructions and attention maps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p)
    p.add_argument("images", nargs="+", help="face crops")
    p.add_argument("--out", required=True, help="PNG file")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.evaluation.explain import explain_figure
    from lorefd.models.bundle import resolve_model
    from lorefd.utils import pick_device

    check_output_file(args.out, "--out")
    check_writes_spare_inputs({f"--out {args.out}": args.out}, data=args.images,
                              models=[args.model])
    res = explain_figure(resolve_model(args.model), args.images, args.out,
                         str(pick_device(args.device)))
    for path, p in zip(args.images, res["prob"], strict=True):
        print(f"{p:.4f}  {path}")
    print(f"wrote {res['out']}")
    return 0
