"""``lorefd recipe``: reproduce the shipped model from a folder of real faces, end to end.

    lorefd recipe FACES --out runs/cpu [--videos CLIPS] [--gan GAN_DIR] [--stages ...] [--set k=v]

FACES holds a ``real/`` folder of face images (e.g. FFHQ images under ``FACES/real/``). Every stage
resumes: re-run the same command after an interruption.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import (
    add_device_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)


def _stages(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipe", help="reproduce the shipped model from real faces, end to end",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("faces", help="folder with a real/ sub-folder of face images")
    p.add_argument("--out", required=True, help="run folder (all stages, recipe.json, model.lorefd)")
    p.add_argument("--config", default="cpu", help="bundled config name or YAML path (default cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable")
    p.add_argument("--stages", type=_stages, default=None,
                   help="comma-separated subset of faces,split,heldout,videos,stage1,baseline,"
                        "lre,robust,evaluate,export (default: all, in that order)")
    p.add_argument("--videos", default=None, metavar="CLIPS",
                   help="folder with a real/ sub-folder of real talking-head clips: frames of "
                        "a fifth of the people held out (false positives, the threshold rule), "
                        "the others' join the training reals")
    p.add_argument("--gan", default=None, metavar="DIR",
                   help="folder of whole-face GAN images to evaluate against held-out reals")
    p.add_argument("--val-fraction", type=float, default=0.08, help="identities for validation")
    p.add_argument("--test-fraction", type=float, default=0.12,
                   help="identities for test (plus the faces bundled with lorefd)")
    p.add_argument("--margin", type=float, default=None,
                   help="context around the face per side (default 0.1: FFHQ's aligned photos "
                        "end about there; see lorefd preprocess --margin)")
    p.add_argument("--crop", choices=["template", "box"], default="template",
                   help="crop mode of every face (see lorefd preprocess --crop)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.apps.recipe import MARGIN, run_recipe

    check_output_dir(args.out, "--out")
    # its stages write manifests and face crops under OUT: never into a folder it reads
    check_writes_spare_inputs(
        out_files(args.out, "--out", ("faces/manifest.csv", "recipe.json", "model.lorefd")),
        data=[args.faces, args.gan, args.videos])
    summary = run_recipe(args.faces, args.out, args.config, args.overrides, args.stages,
                         args.val_fraction, args.test_fraction, args.gan, args.device,
                         margin=MARGIN if args.margin is None else args.margin, crop=args.crop,
                         videos=args.videos)
    if "shipped" in summary:
        print(f"[recipe] exported {summary['shipped']} -> {args.out}/model.lorefd")
    return 0
