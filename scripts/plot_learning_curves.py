"""Learning curves of `lorefd train` runs side by side: training loss and validation AUC per step.

    python scripts/plot_learning_curves.py runs/grid/* --out docs/learning_curves.png

Reads each run's ``metrics.jsonl`` (rows with ``split`` "train" and "val"); prints a table of the
final and best validation AUC per run and, with ``--out``, draws both curves per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"train_loss": [(step, loss)], "val_auc": [(step, auc)]}`` of one run."""
    out: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_auc": []}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("split") == "train":
            out["train_loss"].append((row["step"], row["loss"]))
        elif row.get("split") == "val" and row.get("auc") is not None:
            out["val_auc"].append((row["step"], row["auc"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of `lorefd train`")
    ap.add_argument("--out", type=Path, default=None, help="figure to write (PNG)")
    args = ap.parse_args()
    runs = {r.name: curves(r) for r in args.runs if (r / "metrics.jsonl").is_file()}
    print("| run | steps | final val AUC | best val AUC |\n|---|---|---|---|")
    for name, c in runs.items():
        if c["val_auc"]:
            last = c["val_auc"][-1]
            print(f"| {name} | {last[0]} | {last[1]:.3f} | {max(a for _, a in c['val_auc']):.3f} |")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
        for name, c in runs.items():
            if c["train_loss"]:
                ax_loss.plot(*zip(*c["train_loss"], strict=True), label=name, lw=1)
            if c["val_auc"]:
                ax_auc.plot(*zip(*c["val_auc"], strict=True), marker="o", label=name, lw=1)
        ax_loss.set(xlabel="step", ylabel="BCE (+ mask BCE where trained)", title="training loss")
        ax_auc.set(xlabel="step", ylabel="validation AUC", title="validation AUC")
        ax_auc.axhline(0.5, color="grey", ls=":", lw=1)
        ax_auc.legend(fontsize=7)
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
