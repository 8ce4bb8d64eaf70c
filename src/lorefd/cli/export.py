"""`lorefd export RUN --out model.lorefd`: the single-file bundle that `lorefd detect` loads.

RUN is a training run folder (uses RUN/best, else RUN/last) or a detector checkpoint folder.
The bundle holds the weights of every network (MAE with its key region T, feature Xception,
detection Xception), the training config, the preprocessing parameters and the threshold.
The face pipeline (crop size, margin, face detector) is the one the run recorded for its
training data; giving one that differs is a warning.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import check_output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="single-file model bundle for `lorefd detect`",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training run folder (RUN/best, else RUN/last) or checkpoint folder")
    p.add_argument("--out", required=True, help="bundle file to write (e.g. model.lorefd)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: the run's validation threshold if it "
                        "recorded one, else train.threshold of its config, 0.5)")
    p.add_argument("--size", type=int, default=None,
                   help="face crop side of the training data (default: what the run recorded, "
                        "else lorefd preprocess's 224)")
    p.add_argument("--margin", type=float, default=None,
                   help="template margin of the training data (default: what the run "
                        "recorded, else lorefd preprocess's 0.25)")
    p.add_argument("--face-detector", choices=["dlib", "retinaface"], default=None,
                   help="face detector of the training data (default: what the run recorded, "
                        "else dlib)")
    p.add_argument("--half", action="store_true",
                   help="store weights as float16 (half the size; loaded as float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.models.bundle import export_bundle

    check_output_file(args.out, "--out")
    pre = {k: v for k, v in (("size", args.size), ("margin", args.margin),
                             ("face_detector", args.face_detector)) if v is not None}
    manifest = export_bundle(args.run, args.out, threshold=args.threshold, preprocess=pre,
                             half=args.half)
    print(f"wrote {args.out}: {manifest['detector']} detector, {manifest['image_size']} px, "
          f"{manifest['num_tensors']} tensors, threshold {manifest['threshold']['value']:.3f} "
          f"({manifest['threshold']['source']}), from {manifest['source']['checkpoint']}")
    return 0
