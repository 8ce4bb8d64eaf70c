"""`lorefd export RUN --out model.lorefd`: the single-file bundle that `lorefd detect` loads.

RUN is a training run folder (uses RUN/best, else RUN/last) or a detector checkpoint folder.
The bundle holds the weights of every network (MAE with its key region T, feature Xception,
detection Xception), the training config, the preprocessing parameters and the threshold.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="single-file model bundle for `lorefd detect`",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training run folder (RUN/best, else RUN/last) or checkpoint folder")
    p.add_argument("--out", required=True, help="bundle file to write (e.g. model.lorefd)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: the run's validation threshold if it "
                        "recorded one, else train.threshold of its config, 0.5)")
    p.add_argument("--size", type=int, default=None,
                   help="face crop side used by `lorefd preprocess` for the training data "
                        "(default: its default, 224)")
    p.add_argument("--margin", type=float, default=None,
                   help="template margin used by `lorefd preprocess` (default: its default, 0.25)")
    p.add_argument("--face-detector", choices=["dlib", "retinaface"], default=None,
                   help="face detector used by `lorefd preprocess` (default: dlib)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.checkpoint import CheckpointError
    from lorefd.models.bundle import BundleError, export_bundle

    pre = {k: v for k, v in (("size", args.size), ("margin", args.margin),
                             ("face_detector", args.face_detector)) if v is not None}
    try:
        manifest = export_bundle(args.run, args.out, threshold=args.threshold, preprocess=pre)
    except (CheckpointError, BundleError, ValueError, OSError) as exc:
        print(f"lorefd export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {manifest['detector']} detector, {manifest['image_size']} px, "
          f"{manifest['num_tensors']} tensors, threshold {manifest['threshold']['value']:.3f} "
          f"({manifest['threshold']['source']}), from {manifest['source']['checkpoint']}")
    return 0
