"""`lorefd robustness`: detectors under the DeeperForensics-1.0 perturbations (Jiang et al.,
CVPR 2020; 7 types x 5 levels) and JPEG recompression (quality 90..30).

    lorefd robustness --model model.lorefd --data test.csv --out rob
    lorefd robustness --model plain=runs/lre --model robust=runs/lre-robust \\
        --data ffpp.csv --filter split=test --out rob --types blur,h264,jpeg --levels 1,3,5

Writes robustness.json, .csv, .md (AUC and Acc per setting, frame and video level, the mean
over the 35 DeeperForensics settings and over the JPEG levels, the drop from clean) and
robustness.png. Types: saturation, contrast, block, noise, blur, pixelate (the original's
"JPEG"), h264 (CRF, each video's frames as one video), jpeg. Perturbations apply to the
aligned crops the manifest holds. Re-running with the same --out resumes.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import (
    add_device_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)

TYPE_NAMES = ("saturation", "contrast", "block", "noise", "blur", "pixelate", "h264", "jpeg")


def _types(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in TYPE_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown type(s) {', '.join(bad) or text!r}; "
                                         f"choose from {', '.join(TYPE_NAMES)}")
    return names


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or any(lv not in range(1, 6) for lv in levels):
        raise argparse.ArgumentTypeError(f"levels are 1-5, comma-separated; got {text!r}")
    return levels


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robustness", help="AUC/Acc under the DeeperForensics perturbations + JPEG",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]MODEL",
                   help="a .lorefd bundle, a training run folder or a detector checkpoint "
                        "folder; repeat to compare models (NAME= sets the name shown)")
    p.add_argument("--data", required=True, help="manifest CSV or folder")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=V1,V2",
                   help="keep matching rows, repeatable (e.g. split=test)")
    p.add_argument("--out", required=True, help="folder for robustness.json/.csv/.md/.png")
    p.add_argument("--types", type=_types, default=None, metavar="T1,T2",
                   help=f"perturbation types (default: all of {', '.join(TYPE_NAMES)})")
    p.add_argument("--levels", type=_levels, default=None, metavar="1,2,3,4,5",
                   help="levels to run (default: 1,2,3,4,5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random perturbations (block positions, noise)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="score crops made with another margin/face detector than the model's")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.data.manifest import filter_samples, load_samples
    from lorefd.evaluation.robustness import FILES, model_names, robustness
    from lorefd.metrics import fmt

    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(out_files(args.out, "--out", FILES), data=[args.data],
                              models=[path for _, path in model_names(args.model)])

    samples = filter_samples(load_samples(args.data), args.filter)
    result = robustness(model_names(args.model), samples, args.out, types=args.types,
                        levels=args.levels, seed=args.seed, batch_size=args.batch_size,
                        device=args.device, num_workers=args.workers, filters=args.filter,
                        allow_mismatch=args.allow_mismatch)
    print(f"{'model':<20}{'level':<7}{'clean AUC':>10}{'DF mean':>9}{'drop':>8}{'JPEG mean':>10}"
          f"{'drop':>8}")
    for e in result["models"]:
        s = e["summary"]
        for lv in ("frame", "video"):
            df, jp = s["deeperforensics"], s["jpeg"]
            print(f"{e['name']:<20}{lv:<7}{fmt((s['clean'] or {}).get(f'{lv}_auc')):>10}"
                  f"{fmt(df[f'{lv}_auc']):>9}{fmt(df[f'{lv}_auc_drop']):>8}"
                  f"{fmt(jp[f'{lv}_auc']):>10}{fmt(jp[f'{lv}_auc_drop']):>8}")
    print(f"AUC in %; DF mean over {result['models'][0]['summary']['deeperforensics']['settings']}"
          f" DeeperForensics setting(s). Wrote {args.out}/robustness.md, .json, .csv, .png")
    return 0
