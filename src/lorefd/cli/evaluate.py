"""`lorefd evaluate`: frame- and video-level Acc / AUC / EER / AP of a trained detector.

    lorefd evaluate --ckpt runs/lre/best --data ffpp.csv --filter split=test --out eval/lre
    lorefd evaluate --ckpt runs/lre/best --data ffpp.csv --filter split=test \\
        --filter method=Deepfakes,real --out eval/lre_df
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained detector on a manifest",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="detector checkpoint folder (RUN/best)")
    p.add_argument("--data", required=True, help="manifest CSV or folder")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=V1,V2",
                   help="keep matching rows, repeatable (method=Deepfakes,real keeps the reals)")
    p.add_argument("--out", required=True, help="folder for metrics.json, predictions.csv, roc.png")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.checkpoint import CheckpointError, read_checkpoint_info
    from lorefd.data.manifest import ManifestError, load_samples
    from lorefd.evaluation.evaluate import evaluate
    from lorefd.evaluation.metrics import fmt

    try:
        _, meta = read_checkpoint_info(args.ckpt)  # wrong kind fails before data is read
        if meta.get("kind") != "detector":
            raise CheckpointError(f"{args.ckpt} holds a {meta.get('kind')!r} checkpoint, "
                                  "expected a detector (RUN/best of `lorefd train`)")
        m = evaluate(args.ckpt, load_samples(args.data), args.out, filters=args.filter,
                     batch_size=args.batch_size, device=args.device, num_workers=args.workers)
    except (CheckpointError, ManifestError, ValueError) as exc:
        print(f"lorefd evaluate: error: {exc}", file=sys.stderr)
        return 1
    rows = [("overall", m["overall"])] + list(m["per_method"].items())
    print(f"{'subset':<16}{'level':<7}{'n':>6}{'Acc@.5':>8}{'AccBest':>8}{'AUC':>8}{'EER':>8}{'AP':>8}")
    for name, lv in rows:
        for level in ("frame", "video"):
            r = lv[level]
            print(f"{name:<16}{level:<7}{r['n']:>6}{fmt(r['acc']):>8}{fmt(r['best_acc']):>8}"
                  f"{fmt(r['auc']):>8}{fmt(r['eer']):>8}{fmt(r['ap']):>8}")
    print(f"wrote {args.out}/metrics.json")
    return 0
