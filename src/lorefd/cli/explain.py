"""`lorefd explain`: input, reconstruction, |difference| and per-layer attention maps (Figs. 3-4).

    lorefd explain --ckpt runs/lre/best face1.png face2.png --out explain.png
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="figure of reconstructions and attention maps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="detector checkpoint folder (RUN/best)")
    p.add_argument("images", nargs="+", help="face crops")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.checkpoint import CheckpointError
    from lorefd.data.images import ImageLoadError
    from lorefd.evaluation.explain import explain_figure

    try:
        res = explain_figure(args.ckpt, args.images, args.out, args.device)
    except (CheckpointError, ImageLoadError, ValueError) as exc:
        print(f"lorefd explain: error: {exc}", file=sys.stderr)
        return 1
    for path, p in zip(args.images, res["prob"], strict=True):
        print(f"{p:.4f}  {path}")
    print(f"wrote {res['out']}")
    return 0
