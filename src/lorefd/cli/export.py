"""`lorefd export RUN --out model.lorefd`: the single-file bundle that `lorefd detect` loads.

RUN is a training run folder (uses RUN/best, else RUN/last) or a detector checkpoint folder.
The bundle holds the weights of every network (MAE with its key region T, feature Xception,
detection Xception), the training config, the preprocessing parameters and the threshold.
The face pipeline (crop size, margin, face detector) is the one the run recorded for its
training data; giving one that differs is a warning.

The bundle also gets the detector's ONNX inference graph (`--no-onnx`: not), which `lorefd
detect` and `serve` run with ONNX Runtime, without loading PyTorch. The graph is checked
against PyTorch on the bundled real faces and not written if a probability differs by more
than 1e-4. RUN may also be a .lorefd bundle: `lorefd export model.lorefd --out new.lorefd`
writes it again with a (new) graph, and with `--tta` / `--threshold` changed if given.

`--tta flip` makes every score the mean of the face's and its mirror image's (logits and maps
averaged, in PyTorch and in the ONNX graph alike): a mirror image then gets the same score.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lorefd.cli.common import check_output_file, check_outputs_spare_inputs


def _crop_side(value: str) -> int:
    # the range a bundle is checked against at load
    from lorefd.models.bundle_check import CROP_SIDE

    side = int(value)
    if not CROP_SIDE[0] <= side <= CROP_SIDE[1]:
        raise argparse.ArgumentTypeError(f"a crop side in [{CROP_SIDE[0]}, {CROP_SIDE[1]}] px, "
                                         f"got {side}")
    return side


def _margin(value: str) -> float:
    from lorefd.models.bundle_check import MARGIN

    margin = float(value)
    if not MARGIN[0] <= margin <= MARGIN[1]:
        raise argparse.ArgumentTypeError(f"a template margin in [{MARGIN[0]:g}, {MARGIN[1]:g}], "
                                         f"got {margin}")
    return margin


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="single-file model bundle for `lorefd detect`",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training run folder (RUN/best, else RUN/last), checkpoint "
                               "folder, or a .lorefd bundle to add the ONNX graph to")
    p.add_argument("--out", required=True, help="bundle file to write (e.g. model.lorefd)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: the run's validation threshold if it "
                        "recorded one, else train.threshold of its config, 0.5)")
    p.add_argument("--threshold-rule", default=None, metavar="TEXT",
                   help="with --threshold: how it was chosen, recorded in the bundle and shown "
                        "by detect and serve (e.g. 'at most 10 %% of real video frames fake')")
    p.add_argument("--size", type=_crop_side, default=None,
                   help="face crop side of the training data (default: what the run recorded, "
                        "else lorefd preprocess's 224)")
    p.add_argument("--margin", type=_margin, default=None,
                   help="template margin of the training data (default: what the run "
                        "recorded, else lorefd preprocess's 0.25)")
    p.add_argument("--crop", choices=["template", "box"], default=None,
                   help="crop mode of the training data (default: what the run recorded, "
                        "else template)")
    p.add_argument("--face-detector", choices=["dlib", "retinaface"], default=None,
                   help="face detector of the training data (default: what the run recorded, "
                        "else dlib)")
    p.add_argument("--half", action="store_true",
                   help="store weights as float16 (half the size; loaded as float32)")
    p.add_argument("--tta", choices=["none", "flip"], default=None,
                   help="test-time flip: flip = the face and its mirror image averaged (2x the "
                        "inference cost); default: the run's detector.tta (none)")
    p.add_argument("--no-onnx", dest="onnx", action="store_false",
                   help="no ONNX graph in the bundle (detect and serve then run PyTorch)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lorefd.models.export import export_bundle
    from lorefd.models.graph import add_graph

    check_output_file(args.out, "--out")
    check_outputs_spare_inputs({"--out": args.out}, [args.run])
    if Path(args.run).is_file():
        if not args.onnx:
            print("lorefd export: a bundle is re-exported only to add its graph; drop "
                  "--no-onnx", file=sys.stderr)
            return 2
        if (args.size is not None or args.margin is not None or args.face_detector
                or args.crop):
            print("lorefd export: --size, --margin, --crop and --face-detector are a run's, not a "
                  "bundle's (its face pipeline is fixed)", file=sys.stderr)
            return 2
        manifest = add_graph(args.run, args.out, tta=args.tta, threshold=args.threshold,
                             threshold_rule=args.threshold_rule)
        print(f"wrote {args.out}: {args.run} with its ONNX graph ({_graph_note(manifest)})")
        return 0
    pre = {k: v for k, v in (("size", args.size), ("margin", args.margin), ("crop", args.crop),
                             ("face_detector", args.face_detector)) if v is not None}
    manifest = export_bundle(args.run, args.out, threshold=args.threshold, preprocess=pre,
                             half=args.half, tta=args.tta, threshold_rule=args.threshold_rule)
    print(f"wrote {args.out}: {manifest['detector']} detector, {manifest['image_size']} px, "
          f"{manifest['num_tensors']} tensors, threshold {manifest['threshold']['value']:.3f} "
          f"({manifest['threshold']['source']}), from {manifest['source']['checkpoint']}")
    if args.onnx:
        manifest = add_graph(args.out)
        print(f"added the ONNX graph ({_graph_note(manifest)})")
    return 0


def _graph_note(manifest: dict[str, Any]) -> str:
    info = manifest["onnx"]
    return (f"{len(info['shared'])} tensors shared with the weights; largest difference from "
            f"PyTorch {info['max_abs_diff']['prob']:.1e} in P(fake)")
