"""`lorefd evaluate`: frame- and video-level Acc / AUC / EER / AP of a trained detector.

    lorefd evaluate --data ../shared/data/deepfakes_dev --out eval/dev      # raw videos
    lorefd evaluate --model runs/lre --data ffpp.csv --filter split=test --out eval/lre
    lorefd evaluate --model model.lorefd --data ffpp.csv --filter split=test \\
        --filter method=Deepfakes,real --out eval/lre_df

DATA is raw media or stored crops. Raw: a folder with real/ and fake/ folders of videos (or
images, with --faces crop), an FF++, Celeb-DF or DFD root, or a folder of such sets (each
scored on its own, OUT/<set>/): faces are found and cropped with the model's own parameters
(face detector, crop side, template margin, frames per video) and cached under --cache, so a
second run is fast. Videos without a face or that do not decode are listed, never scored.
Crops: a manifest CSV, a folder holding manifest.csv, or a folder of face images; crops made
with another template margin or face detector than the model's are refused (--allow-mismatch
scores them anyway). Rows whose image cannot be read are left out of every metric and listed
in OUT/excluded.csv. Exit status: 0, 1 when no row could be scored, 2 for a user error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lorefd.aggregate import DEFAULT as AGGREGATE
from lorefd.cli.common import (
    add_device_arg,
    add_model_arg,
    check_output_dir,
    check_writes_spare_inputs,
    out_files,
)

# what evaluate writes into --out (per set: OUT/<set>/ the same names)
WRITES = ("metrics.json", "predictions.csv", "excluded.csv", "roc.png", "summary.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained detector on a manifest",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p)
    p.add_argument("--data", required=True,
                   help="videos/images (labelled folder, FF++/Celeb-DF/DFD root, or a folder of "
                        "such sets) or crops (manifest CSV, folder with manifest.csv)")
    p.add_argument("--faces", choices=["auto", "crop", "given"], default="auto",
                   help="crop: find and crop faces with the model's parameters; given: DATA "
                        "holds face crops; auto (default): crop when DATA holds videos or is "
                        "a dataset root without manifest.csv, else given")
    p.add_argument("--cache", default=None,
                   help="folder for the face crops of raw DATA, one per crop-parameter set "
                        "(default $LOREFD_CACHE or ~/.cache/lorefd/crops)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames sampled per video (default: the model's, 32 for the shipped one)")
    p.add_argument("--crop-workers", type=int, default=1,
                   help="processes finding and cropping faces (1)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="score crops made with another margin/face detector than the model's")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=V1,V2",
                   help="keep matching rows, repeatable (method=Deepfakes,real keeps the reals)")
    p.add_argument("--out", required=True,
                   help="folder for metrics.json, predictions.csv, excluded.csv, roc.png")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (64)")
    p.add_argument("--workers", type=int, default=0, help="data loader workers (0)")
    add_device_arg(p)
    p.set_defaults(func=run)


def _crops_given(data: Path, faces: str) -> bool:
    from lorefd.data.preprocess.adapters import find_datasets
    from lorefd.evaluation.evaluate import holds_videos

    if faces != "auto":
        return faces == "given"
    if data.is_file() or (data / "manifest.csv").is_file():
        return True
    if not data.is_dir():
        return True  # load_samples names the missing path
    layouts = {kind for _, kind, _ in find_datasets(data)}
    return not (layouts - {"folder"}) and not holds_videos(data)


def run(args: argparse.Namespace) -> int:
    import os

    from lorefd.data.manifest import load_samples
    from lorefd.evaluation.evaluate import check_crops, evaluate, evaluate_media
    from lorefd.models.bundle import load_bundle
    from lorefd.utils import pick_device

    check_output_dir(args.out, "--out")
    check_writes_spare_inputs(out_files(args.out, "--out", WRITES), data=[args.data],
                              models=[args.model])
    bundle = load_bundle(args.model, pick_device(args.device))  # before any data is read
    data = Path(args.data)
    given = _crops_given(data, args.faces)
    if given and (args.frames is not None or args.cache is not None):
        print("lorefd evaluate: note: --frames/--cache apply to raw videos, not to crops",
              file=sys.stderr)
    if given:
        samples = load_samples(data)
        mismatch = check_crops(samples, bundle, args.allow_mismatch)
        sets = {"": evaluate(bundle, samples, args.out, filters=args.filter,
                             batch_size=args.batch_size, device=args.device,
                             num_workers=args.workers, extra={"crop_mismatch": mismatch})}
    else:
        cache = args.cache or os.environ.get("LOREFD_CACHE") or Path.home() / ".cache" / \
            "lorefd" / "crops"
        sets = evaluate_media(bundle, data, args.out, cache, frames=args.frames,
                              workers=args.crop_workers, filters=args.filter,
                              batch_size=args.batch_size, device=args.device,
                              num_workers=args.workers)
    print_table(sets, args.out)
    return 0


def print_table(sets: dict, out: str) -> None:
    """Per set (a column when there are several), overall and per method: frame and video
    n, Acc, best Acc and its threshold, AUC with its bootstrap 95 % interval, EER, AP."""
    from lorefd.metrics import fmt

    many = len(sets) > 1
    print(("set".ljust(14) if many else "") + f"{'subset':<16}{'level':<7}{'n':>6}{'Acc':>8}"
          f"{'AccBest':>8}{'BestThr':>8}{'AUC':>8} {'[95% CI]':<15}{'EER':>7}{'AP':>7}")
    for name, m in sets.items():
        rows = [("overall", m["overall"])]
        if len(m["per_method"]) > 1 or not many:  # one method repeats the overall rows
            rows += list(m["per_method"].items())
        for sub, lv in rows:
            for level in ("frame", "video"):
                r = lv[level]
                ci = r.get("auc_ci")
                interval = f"[{fmt(ci[0])}, {fmt(ci[1])}]" if isinstance(ci, list) else ""
                print((f"{name[:13]:<14}" if many else "") + f"{sub[:15]:<16}{level:<7}"
                      f"{r['n']:>6}{fmt(r['acc']):>8}{fmt(r['best_acc']):>8}"
                      f"{fmt(r['best_threshold'], 1, 3):>8}{fmt(r['auc']):>8} {interval:<15}"
                      f"{fmt(r['eer']):>7}{fmt(r['ap']):>7}")
        if m.get("excluded"):
            print(f"{name or 'data'}: {len(m['excluded'])} of {m['rows']} rows could not be "
                  "scored and are left out (excluded.csv)")
        if m.get("unscored"):
            reasons = ", ".join(sorted({u["status"] for u in m["unscored"]}))
            print(f"{name or 'data'}: {len(m['unscored'])} video(s)/image(s) not scored "
                  f"({reasons}); listed under 'unscored' in metrics.json")
    first = next(iter(sets.values()))
    print(f"Acc at the model's threshold {fmt(first['overall']['frame']['threshold'], 1, 3)}; "
          f"video = {AGGREGATE} frame probability per video; metrics in %. Wrote "
          f"{out}/{'<set>/' if len(sets) > 1 else ''}metrics.json")
