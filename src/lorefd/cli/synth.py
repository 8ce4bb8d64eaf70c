"""``lorefd synth``: write a set of synthesised fakes (PNG + mask + landmarks) and a manifest.

The work is :func:`lorefd.data.synth.fakeset.write_fake_set`.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import check_output_dir, check_writes_spare_inputs, out_files

KINDS = ["sbi", "swap", "local"]  # lorefd.data.synth.KINDS (not imported: OpenCV; tested equal)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="synthesise local forgeries (self-blend, swap, eyes/nose/mouth) from reals",
        description="Write fakes made from real faces with landmarks: DIR/fake/KIND/*.png, "
                    "their blend masks DIR/masks/KIND/*.png, landmarks DIR/landmarks/KIND/*.npy "
                    "and DIR/manifest.csv (label 1, method = kind).")
    p.add_argument("reals", help="manifest CSV, folder with manifest.csv, or image folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated kinds, taken in turn (default {','.join(KINDS)})")
    p.add_argument("--per-image", type=int, default=1, help="fakes per real image (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--limit", type=int, default=None, help="use the first N usable reals only")
    p.add_argument("--jpeg", type=int, default=None, metavar="Q",
                   help="JPEG-recompress every fake at quality Q (reals are not touched: "
                        "recompress them alike before training)")
    p.add_argument("--reals-mode", choices=["none", "ref", "copy"], default="none",
                   help="also list the reals in the manifest: by reference, or copied into "
                        "DIR/real (default none: fakes only)")
    p.add_argument("--detect-landmarks", action="store_true",
                   help="compute missing landmarks with dlib (cached in DIR/landmark_cache)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """0 when fakes were written, 1 when none could be, 2 for a user error."""
    from lorefd.data.manifest import load_samples
    from lorefd.data.synth.fakeset import write_fake_set

    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(out_files(args.out, "--out", ("manifest.csv", "synth.json")),
                              data=[args.reals])
    samples = load_samples(args.reals)
    summary = write_fake_set(
        samples, args.out, kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
        per_image=args.per_image, seed=args.seed, workers=args.workers, limit=args.limit,
        jpeg=args.jpeg, reals_mode=args.reals_mode, detect_landmarks=args.detect_landmarks)
    return 0 if summary["fakes"] else 1
