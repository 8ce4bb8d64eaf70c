"""The paper's evaluation protocols (Section IV-C..E, Tables I-V) as end-to-end runs.

Each protocol selects train / val / test subsets from ``lorefd preprocess`` manifests (columns
``dataset, split, method, compression``), trains the needed detectors (cached under
``OUT/runs/KEY``; a finished run is reused, an interrupted one resumed), scores the test sets
(``OUT/evals``) and writes ``OUT/NAME.md`` and ``OUT/NAME.csv`` shaped like the paper's table,
with the paper's "Ours" numbers (and Table V's baseline) in a column beside ours.

Numbers are frame-level (the paper does not say which level); Acc at threshold 0.5.

* ``in-dataset`` (Table I): train and test on FF++ at each compression (all four methods).
* ``cross-manipulation`` (Table II, c23, AUC): train on one method, test on all four.
* ``gid`` (Table III): train on three methods, test on the held-out DF / F2F (c23 and c40).
* ``cross-dataset`` (Table IV, AUC): train on FF++ c23, test on FF++ c23, Celeb-DF-v2, DFD.
* ``ablation`` (Table V, AUC): the Xception baseline vs the method, same harness and data.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorefd.config import Config
from lorefd.data.manifest import FAKE, REAL, ManifestError, Sample
from lorefd.engines.train import train
from lorefd.errors import UserError
from lorefd.evaluation.evaluate import evaluate
from lorefd.metrics import NA, fmt
from lorefd.models.mae import resolve_mae_checkpoint
from lorefd.utils import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger("lorefd")

METHODS = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]
SHORT = {"Deepfakes": "DF", "Face2Face": "F2F", "FaceSwap": "FS", "NeuralTextures": "NT"}
PROTOCOLS = ["in-dataset", "cross-manipulation", "gid", "cross-dataset", "ablation"]

# The paper's numbers (percent): "Ours" rows of Tables I-IV and both rows of Table V.
PAPER: dict[str, Any] = {
    "in-dataset": {"c23": {"acc": 91.78, "auc": 97.4}, "c40": {"acc": 80.75, "auc": 90.12}},
    "cross-manipulation": {
        "Deepfakes": {"DF": 99.85, "F2F": 70.0, "FS": 41.38, "NT": 71.42, "Avg": 70.66},
        "Face2Face": {"DF": 78.99, "F2F": 99.01, "FS": 55.53, "NT": 70.45, "Avg": 75.92},
        "FaceSwap": {"DF": 63.4, "F2F": 70.79, "FS": 99.53, "NT": 51.48, "Avg": 71.3},
        "NeuralTextures": {"DF": 84.14, "F2F": 76.4, "FS": 50.88, "NT": 96.51, "Avg": 76.98},
    },
    "gid": {"Deepfakes": {"c23": {"acc": 79.28, "auc": 87.9}, "c40": {"acc": 70.22, "auc": 78.67}},
            "Face2Face": {"c23": {"acc": 73.62, "auc": 84.29}, "c40": {"acc": 69.25, "auc": 76.5}}},
    "cross-dataset": {"FF++(c23)": 97.24, "Celeb-DF-v2": 77.47, "DFD": 95.23},
    "ablation": {"baseline": {"FF++(c23)": 99.09, "Celeb-DF-v2": 72.15, "DFD": 87.86},
                 "lre": {"FF++(c23)": 97.24, "Celeb-DF-v2": 77.47, "DFD": 95.23}},
}


class ProtocolError(UserError, ValueError):
    """A protocol that cannot run on the given manifests."""


# ---- selecting subsets --------------------------------------------------------------------
def has_compression(samples: list[Sample]) -> bool:
    return any(s.compression for s in samples)


def select(samples: list[Sample], split: str | None = None, methods: list[str] | None = None,
           compression: str | None = None) -> list[Sample]:
    """Reals plus the fakes of ``methods`` (all fakes when None), of one split / compression.

    The compression filter is skipped for manifests without a ``compression`` column value.
    """
    use_c = compression is not None and has_compression(samples)
    out = []
    for s in samples:
        if split is not None and s.split != split:
            continue
        if use_c and s.compression != compression:
            continue
        if s.label == FAKE and methods is not None and s.method not in methods:
            continue
        out.append(s)
    return out


def test_split(samples: list[Sample]) -> list[Sample]:
    """The ``test`` split of a cross-dataset manifest, or all of it when it has no splits."""
    test = [s for s in samples if s.split == "test"]
    return test or samples


def require(samples: list[Sample], what: str) -> list[Sample]:
    labels = {s.label for s in samples}
    if not samples:
        raise ProtocolError(f"{what}: no samples (check split / method / compression columns)")
    if what.startswith("train") and labels != {REAL, FAKE}:
        raise ProtocolError(f"{what}: needs both real and fake samples, has {sorted(labels)}")
    return samples


# ---- running ------------------------------------------------------------------------------
@dataclass
class ProtocolRun:
    cfg: Config
    mae_ckpt: str | None
    out: Path
    device: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def train(self, key: str, detector: str, train_set: list[Sample], val_set: list[Sample]) -> Path:
        """Train (or reuse / resume) the run ``key``; returns its best checkpoint."""
        run = self.out / "runs" / key
        if (run / "summary.json").is_file() and (run / "best").is_dir():
            log.info("protocol: reusing finished run %s", run)
            return run / "best"
        cfg = copy.deepcopy(self.cfg)
        cfg.detector.name = detector
        require(train_set, f"train set of {key}")
        log.info("protocol: training %s (%s)", key, detector)
        train(cfg, train_set, val_set or None, self.mae_ckpt if detector != "baseline" else None,
              run, resume=(run / "last").is_dir(), device=self.device)
        return run / "best"

    def test(self, key: str, ckpt: Path, test_set: list[Sample]) -> dict[str, Any]:
        """Frame-level overall metrics of ``ckpt`` on ``test_set`` (cached per key)."""
        out = self.out / "evals" / key
        if (out / "metrics.json").is_file():
            m = json.loads((out / "metrics.json").read_text())
        else:
            m = evaluate(ckpt, test_set, out_dir=out, batch_size=self.cfg.train.batch_size * 2,
                         device=self.device, num_workers=self.cfg.data.num_workers,
                         amp=self.cfg.train.amp)
        self.results[key] = m
        return m["overall"]["frame"]


def _splits(ffpp: list[Sample], methods: list[str] | None, c: str | None
            ) -> tuple[list[Sample], list[Sample]]:
    return select(ffpp, "train", methods, c), select(ffpp, "val", methods, c)


def in_dataset(ctx: ProtocolRun, ffpp: list[Sample], compressions: list[str], **_: Any) -> tuple[list[str], list[list[str]]]:
    header = ["Dataset", "Acc", "Acc (paper)", "AUC", "AUC (paper)"]
    rows = []
    for c in compressions:
        tr, va = _splits(ffpp, None, c)
        ckpt = ctx.train(f"lre_all_{c}", "lre", tr, va)
        m = ctx.test(f"lre_all_{c}__ffpp_{c}", ckpt, require(select(ffpp, "test", None, c), "test set"))
        p = PAPER["in-dataset"].get(c, {})
        rows.append([f"FF++({c.upper()})", fmt(m["acc"]), str(p.get("acc", "—")),
                     fmt(m["auc"]), str(p.get("auc", "—"))])
    return header, rows


def cross_manipulation(ctx: ProtocolRun, ffpp: list[Sample], **_: Any) -> tuple[list[str], list[list[str]]]:
    short = [SHORT[m] for m in METHODS]
    header = ["Train"] + [f"{s}{x}" for s in [*short, "Avg"] for x in ("", " (paper)")]
    rows = []
    for train_m in METHODS:
        tr, va = _splits(ffpp, [train_m], "c23")
        ckpt = ctx.train(f"lre_{SHORT[train_m]}_c23", "lre", tr, va)
        aucs = []
        row = [SHORT[train_m]]
        for test_m in METHODS:
            m = ctx.test(f"lre_{SHORT[train_m]}_c23__{SHORT[test_m]}", ckpt,
                         require(select(ffpp, "test", [test_m], "c23"), f"test set {test_m}"))
            aucs.append(m["auc"])
            row += [fmt(m["auc"]), str(PAPER["cross-manipulation"][train_m][SHORT[test_m]])]
        nums = [a for a in aucs if a != NA]
        avg = float(np.mean(nums)) if len(nums) == len(aucs) else NA
        row += [fmt(avg), str(PAPER["cross-manipulation"][train_m]["Avg"])]
        rows.append(row)
    return header, rows


def gid(ctx: ProtocolRun, ffpp: list[Sample], compressions: list[str], **_: Any) -> tuple[list[str], list[list[str]]]:
    header = ["Setting", "Acc", "Acc (paper)", "AUC", "AUC (paper)"]
    rows = []
    for held in ["Deepfakes", "Face2Face"]:
        others = [m for m in METHODS if m != held]
        for c in compressions:
            tr, va = _splits(ffpp, others, c)
            key = f"lre_gid{SHORT[held]}_{c}"
            ckpt = ctx.train(key, "lre", tr, va)
            m = ctx.test(f"{key}__{SHORT[held]}", ckpt,
                         require(select(ffpp, "test", [held], c), f"test set {held}"))
            p = PAPER["gid"][held].get(c, {})
            rows.append([f"GID-{SHORT[held]}({c.upper()})", fmt(m["acc"]), str(p.get("acc", "—")),
                         fmt(m["auc"]), str(p.get("auc", "—"))])
    return header, rows


def _cross_sets(ffpp: list[Sample], celebdf: list[Sample] | None, dfd: list[Sample] | None
                ) -> list[tuple[str, list[Sample] | None]]:
    return [("FF++(c23)", select(ffpp, "test", None, "c23")),
            ("Celeb-DF-v2", test_split(celebdf) if celebdf else None),
            ("DFD", test_split(dfd) if dfd else None)]


def cross_dataset(ctx: ProtocolRun, ffpp: list[Sample], celebdf: list[Sample] | None = None,
                  dfd: list[Sample] | None = None, **_: Any) -> tuple[list[str], list[list[str]]]:
    return _ablation_rows(ctx, ffpp, celebdf, dfd, ["lre"], "cross-dataset")


def ablation(ctx: ProtocolRun, ffpp: list[Sample], celebdf: list[Sample] | None = None,
             dfd: list[Sample] | None = None, **_: Any) -> tuple[list[str], list[list[str]]]:
    return _ablation_rows(ctx, ffpp, celebdf, dfd, ["baseline", "lre"], "ablation")


def _ablation_rows(ctx, ffpp, celebdf, dfd, detectors, name):
    sets = _cross_sets(ffpp, celebdf, dfd)
    header = ["Method"] + [f"{n}{x}" for n, _ in sets for x in ("", " (paper)")]
    rows = []
    for det in detectors:
        tr, va = _splits(ffpp, None, "c23")
        ckpt = ctx.train(f"{det}_all_c23", det, tr, va)
        row = ["Baseline (Xception)" if det == "baseline" else "Ours"]
        for set_name, data in sets:
            paper = PAPER[name][det] if name == "ablation" else PAPER[name]
            if data is None:
                row += ["not run (no manifest)", str(paper[set_name])]
                continue
            m = ctx.test(f"{det}_all_c23__{set_name}", ckpt, require(data, f"test set {set_name}"))
            row += [fmt(m["auc"]), str(paper[set_name])]
        rows.append(row)
    return header, rows


RUNNERS: dict[str, Callable[..., tuple[list[str], list[list[str]]]]] = {
    "in-dataset": in_dataset, "cross-manipulation": cross_manipulation, "gid": gid,
    "cross-dataset": cross_dataset, "ablation": ablation,
}
TITLES = {
    "in-dataset": "Table I. In-dataset evaluation on FF++ (frame-level Acc / AUC, %)",
    "cross-manipulation": "Table II. Cross-manipulation evaluation on FF++ c23 (frame-level AUC, %)",
    "gid": "Table III. Multi-source manipulation (GID) evaluation on FF++ (frame-level Acc / AUC, %)",
    "cross-dataset": "Table IV. Cross-dataset evaluation, trained on FF++ c23 (frame-level AUC, %)",
    "ablation": "Table V. Ablation: Xception baseline vs ours, trained on FF++ c23 (frame-level AUC, %)",
}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run_protocol(name: str, ffpp: list[Sample], mae_ckpt: str | Path | None, cfg: Config,
                 out_dir: str | Path, celebdf: list[Sample] | None = None,
                 dfd: list[Sample] | None = None, compressions: list[str] | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Run protocol ``name`` end to end; returns ``{"markdown", "csv", "rows", "header"}``."""
    if name not in RUNNERS:
        raise ProtocolError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    if not ffpp:
        raise ManifestError("the FF++ manifest is empty")
    splits = {s.split for s in ffpp}
    for needed in ("train", "test"):
        if needed not in splits:
            raise ProtocolError(f"the FF++ manifest has no '{needed}' split (splits: "
                                f"{sorted(splits)}); run `lorefd preprocess` with FF++ splits")
    methods = {s.method for s in ffpp if s.label == FAKE}
    if name in ("cross-manipulation", "gid") and not set(METHODS) <= methods:
        raise ProtocolError(f"{name} needs fakes of {', '.join(METHODS)}; the manifest has "
                            f"{sorted(methods)}")
    if mae_ckpt is None:
        raise ProtocolError("a stage-1 MAE checkpoint is needed (--mae)")
    mae_ckpt = resolve_mae_checkpoint(mae_ckpt, cfg.data.image_size)
    compressions = compressions or ["c23", "c40"]
    if has_compression(ffpp):
        present = {s.compression for s in ffpp}
        missing = [c for c in compressions if c not in present]
        if missing:
            log.warning("protocol: compression(s) %s not in the manifest (has %s); skipped",
                        missing, sorted(present))
            compressions = [c for c in compressions if c in present]
        if not compressions:
            raise ProtocolError("none of the requested compressions is in the manifest")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ProtocolRun(cfg, str(mae_ckpt) if mae_ckpt else None, out, device)
    header, rows = RUNNERS[name](ctx, ffpp, compressions=compressions, celebdf=celebdf, dfd=dfd)
    md = (f"# {TITLES[name]}\n\n{markdown_table(header, rows)}\n\n"
          f"Ours: this run (config image size {cfg.data.image_size}, detector "
          f"{cfg.train.epochs} x {cfg.train.iters_per_epoch} iterations, batch "
          f"{cfg.train.batch_size}). Paper: Wu, Leng, Yu, Tables I-V. Runs: `runs/`, "
          f"per-test metrics: `evals/`.\n")
    atomic_write_text(out / f"{name}.md", md)
    with atomic_path(out / f"{name}.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    atomic_write_json(out / f"{name}.json", {"header": header, "rows": rows, "metrics": ctx.results})
    log.info("protocol %s: wrote %s\n%s", name, out / f"{name}.md", markdown_table(header, rows))
    return {"markdown": str(out / f"{name}.md"), "csv": str(out / f"{name}.csv"),
            "header": header, "rows": rows}


__all__ = ["METHODS", "PAPER", "PROTOCOLS", "ProtocolError", "markdown_table",
           "run_protocol", "select"]
