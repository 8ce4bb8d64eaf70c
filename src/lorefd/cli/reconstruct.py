"""`lorefd reconstruct`: masked reconstructions by a stage-1 checkpoint (the paper's Fig. 4).

    lorefd reconstruct --mae runs/stage1 face1.png face2.jpg faces_dir/ --out fig.png

Rows: original, masked input, reconstruction (visible patches pasted back), |difference|.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import (
    add_device_arg,
    add_mae_arg,
    check_output_file,
    check_writes_spare_inputs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="figure of stage-1 masked reconstructions (Fig. 4)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mae_arg(p, required=True)
    p.add_argument("images", nargs="+", help="image files, folders or manifests")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--max", type=int, default=8, help="at most this many faces (rows)")
    p.add_argument("--seed", type=int, default=0, help="mask seed")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.evaluation.figures import collect_images, reconstruct_figure

    check_output_file(args.out, "--out")
    check_writes_spare_inputs({f"--out {args.out}": args.out}, data=args.images,
                              models=[args.mae])
    images = collect_images(args.images, args.max)
    out = reconstruct_figure(args.mae, images, args.out, args.seed, args.device)
    print(out)
    return 0
