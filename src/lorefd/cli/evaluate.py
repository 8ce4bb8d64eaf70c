"""`lorefd evaluate`: frame- and video-level Acc / AUC / EER / AP of a trained detector.

    lorefd evaluate --model runs/lre --data ffpp.csv --filter split=test --out eval/lre
    lorefd evaluate --model model.lorefd --data ffpp.csv --filter split=test \\
        --filter method=Deepfakes,real --out eval/lre_df

MODEL is a bundle, a training run folder or a checkpoint folder. Rows whose image cannot be
read are left out of every metric and listed in OUT/excluded.csv. Exit status: 0, 1 when no
row could be scored, 2 for a user error.
"""

from __future__ import annotations

import argparse

from lorefd.cli.common import add_model_arg, check_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained detector on a manifest",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arg(p)
    p.add_argument("--data", required=True, help="manifest CSV or folder")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=V1,V2",
                   help="keep matching rows, repeatable (method=Deepfakes,real keeps the reals)")
    p.add_argument("--out", required=True,
                   help="folder for metrics.json, predictions.csv, excluded.csv, roc.png")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (64)")
    p.add_argument("--workers", type=int, default=0, help="data loader workers (0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorefd.data.manifest import load_samples
    from lorefd.evaluation.evaluate import evaluate
    from lorefd.evaluation.metrics import fmt
    from lorefd.models.bundle import resolve_model

    check_output_dir(args.out, "--out")
    model = resolve_model(args.model)  # a wrong path fails before any data is read
    m = evaluate(model, load_samples(args.data), args.out, filters=args.filter,
                 batch_size=args.batch_size, device=args.device, num_workers=args.workers)
    rows = [("overall", m["overall"])] + list(m["per_method"].items())
    print(f"{'subset':<16}{'level':<7}{'n':>6}{'Acc':>8}{'AccBest':>8}{'BestThr':>8}{'AUC':>8}"
          f"{'EER':>8}{'AP':>8}")
    for name, lv in rows:
        for level in ("frame", "video"):
            r = lv[level]
            print(f"{name:<16}{level:<7}{r['n']:>6}{fmt(r['acc']):>8}{fmt(r['best_acc']):>8}"
                  f"{fmt(r['best_threshold'], 1, 3):>8}{fmt(r['auc']):>8}{fmt(r['eer']):>8}"
                  f"{fmt(r['ap']):>8}")
    if m.get("excluded"):
        print(f"{len(m['excluded'])} of {m['rows']} rows could not be scored and are left out "
              f"(reasons in {args.out}/excluded.csv)")
    print(f"Acc at threshold {m['overall']['frame']['threshold']}; AccBest at BestThr chosen on "
          f"this set; metrics in %. Wrote {args.out}/metrics.json")
    return 0
