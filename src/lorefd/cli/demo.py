"""``lorefd demo``: stage 1 + stage 2 (method and baseline) on the bundled real faces."""

from __future__ import annotations

import argparse

from lorefd.cli.common import (
    add_device_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train and evaluate the method and the baseline on the bundled faces",
        description="Aligns the bundled real faces, splits them by identity, trains stage 1 and "
                    "stage 2 (method and Xception baseline) on fakes synthesised from the "
                    "training reals, evaluates both on held-out identities, exports model.lorefd "
                    "and writes report.md and report.html. About 10 minutes on 2 CPU cores.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="the same pipeline at toy size (48 faces, a few steps; a few minutes on a CPU)")
    p.add_argument("--faces", default=None,
                   help="a folder with real/ (and landmarks found by dlib) instead of the bundle")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (see configs/demo.yaml)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.apps.demo import run_demo

    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(out_files(args.out, "--out", ("faces/manifest.csv", "report.md")),
                              data=[args.faces])
    kwargs = {"faces": args.faces} if args.faces else {}
    run_demo(args.out, quick=args.quick, overrides=args.overrides, device=args.device, **kwargs)
    return 0
