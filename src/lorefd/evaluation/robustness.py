"""``lorefd robustness``: detectors under the DeeperForensics-1.0 perturbations and JPEG.

The standard robustness sweep (DeeperForensics-1.0, Jiang et al., CVPR 2020; used by
LipForensics and later work): the clean set, then each of 7 perturbation types at 5 levels
(:mod:`lorefd.data.perturb`), plus real JPEG recompression at 5 qualities -- 41 settings. For
each model and setting: frame- and video-level AUC and Acc, the mean over the 35
DeeperForensics settings (comparable with published numbers) and over the JPEG levels, and
the drop from clean. Callable from Python::

    result = robustness({"lre": "model.lorefd"}, samples, "rob/")

Manifests hold aligned face crops, so the perturbations apply to the crop as stored, before it
is resized to the model's input (``applied_to`` in the outputs); DeeperForensics perturbed
whole frames before face detection. ``h264`` encodes each video's crops (its manifest rows in
frame order) as one video. An item a perturbation cannot apply to (a one-frame video for
``h264``, an unreadable image) is left out of that setting and counted. Results are written
after every setting; a re-run with the same data, seed and models resumes from them.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lorefd.aggregate import DEFAULT as AGGREGATE
from lorefd.checkpoint import CheckpointError
from lorefd.data.manifest import FAKE, REAL, ManifestError, Sample, describe
from lorefd.data.perturb import DEEPERFORENSICS, LEVELS, PARAMETER_NAMES, TYPES
from lorefd.data.perturbed import CLEAN, PerturbedCrops, Setting
from lorefd.engines.predict import predict
from lorefd.errors import OptionError
from lorefd.evaluation.evaluate import check_crops
from lorefd.evaluation.report import metric_value, robustness_markdown
from lorefd.metrics import NA, accuracy_at, fmt, roc_auc, video_level
from lorefd.models.bundle import Bundle, BundleError, load_bundle
from lorefd.utils import atomic_path, atomic_write_json, atomic_write_text, pick_device
from lorefd.version import __version__

log = logging.getLogger("lorefd")

APPLIED_TO = ("aligned face crop as stored in the manifest, before resizing to the model input "
              "(DeeperForensics-1.0 perturbs whole frames before face detection)")
# Bump when a perturbation's output changes: rows written by another version are recomputed.
PERTURBATION_VERSION = 1
FILES = ("robustness.json", "robustness.csv", "robustness.md", "robustness.png")


def sweep_settings(types: Sequence[str] | None = None, levels: Sequence[int] | None = None
                   ) -> list[Setting]:
    """Clean first, then every type (in :data:`TYPES` order) at every level."""
    types = list(TYPES) if types is None else list(types)
    levels = list(LEVELS) if levels is None else sorted(set(levels))
    bad = [t for t in types if t not in TYPES] + [str(x) for x in levels if x not in LEVELS]
    if bad:
        raise OptionError(f"unknown perturbation types/levels {bad}: types are "
                         f"{', '.join(TYPES)}; levels 1-5")
    return [Setting(CLEAN)] + [Setting(t, lv) for t in TYPES if t in types for lv in levels]


def order_samples(samples: Sequence[Sample]) -> list[Sample]:
    """Samples grouped by video, frames in order (a video's frames are encoded together)."""
    return sorted(samples, key=lambda s: (s.group, s.frame_index, s.path))


def auc_acc(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC (n/a with one class) and Acc at ``threshold`` (n/a when empty), as
    :func:`lorefd.metrics.binary_metrics` reports them, without its other metrics."""
    return {"auc": roc_auc(y, p), "acc": accuracy_at(y, p, threshold) if len(y) else NA}


def setting_row(setting: Setting, samples: Sequence[Sample], probs: np.ndarray, ok: np.ndarray,
                reasons: Sequence[str], threshold: float) -> dict[str, Any]:
    """Frame- and video-level AUC / Acc of one model in one setting (failed items left out)."""
    kept = [s for s, k in zip(samples, ok, strict=True) if k]
    y = np.array([s.label for s in kept], dtype=int)
    p = probs[ok]
    frame = auc_acc(y, p, threshold)
    vy, vp, _ = video_level(y, p, [s.group for s in kept])
    video = auc_acc(vy, vp, threshold)
    skipped = Counter(r for r, k in zip(reasons, ok, strict=True) if not k)
    return {"type": setting.kind, "level": setting.level, "param": setting.param,
            "param_name": PARAMETER_NAMES.get(setting.kind, ""), "n": int(len(y)),
            "n_real": int((y == REAL).sum()), "n_fake": int((y == FAKE).sum()),
            "n_videos": int(len(vy)), "skipped": int(sum(skipped.values())),
            "skip_reasons": dict(skipped), "threshold": threshold,
            "frame_auc": frame["auc"], "frame_acc": frame["acc"],
            "video_auc": video["auc"], "video_acc": video["acc"]}


def summarise(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows with their drop from clean, and the model's summary: clean, the mean over the
    DeeperForensics settings and over the JPEG levels (n/a values left out of the means and
    the count of those averaged given)."""
    clean = next((r for r in rows if r["type"] == CLEAN), None)
    out = []
    for r in rows:
        r = dict(r)
        for lv in ("frame", "video"):
            a, c = metric_value(r[f"{lv}_auc"]), metric_value(clean[f"{lv}_auc"]) if clean else None
            r[f"{lv}_auc_drop"] = NA if a is None or c is None else c - a
        out.append(r)

    def mean_of(kinds: Sequence[str]) -> dict[str, Any]:
        sel = [r for r in out if r["type"] in kinds]
        res: dict[str, Any] = {"settings": len(sel)}
        for m in ("frame_auc", "frame_acc", "video_auc", "video_acc", "frame_auc_drop",
                  "video_auc_drop"):
            vals = [v for v in (metric_value(r[m]) for r in sel) if v is not None]
            res[m] = float(np.mean(vals)) if vals else NA
            res[f"{m}_n"] = len(vals)
        return res

    summary = {"clean": {m: clean[m] for m in ("frame_auc", "frame_acc", "video_auc",
                                               "video_acc", "n", "n_videos")} if clean else None,
               "deeperforensics": mean_of(list(DEEPERFORENSICS)), "jpeg": mean_of(["jpeg"])}
    return out, summary


# ---- the sweep ----------------------------------------------------------------------------
@dataclass
class _Model:
    name: str
    spec: str
    loaded: Bundle  # a .lorefd file, or a checkpoint wrapped alike (source "checkpoint")
    fingerprint: dict[str, Any]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def model_names(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, path)`` per ``--model``: ``NAME=PATH`` or a path named after its file or run
    folder; repeated names get ``-2``, ``-3``."""
    out, seen = [], Counter()
    for spec in specs:
        name, path = "", spec
        head, sep, tail = spec.partition("=")
        if sep and head and "/" not in head and not Path(spec).exists():
            name, path = head, tail
        if not name:
            p = Path(path.rstrip("/"))
            name = (p.stem if p.suffix == ".lorefd" else
                    p.parent.name if p.name in ("best", "last") and p.parent.name else p.name)
        seen[name] += 1
        out.append((name if seen[name] == 1 else f"{name}-{seen[name]}", path))
    return out


def _fingerprint(loaded: Bundle) -> dict[str, Any]:
    f = loaded.path if loaded.path.is_file() else loaded.path / "model.safetensors"
    st = f.stat()
    return {"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_models(models: Mapping[str, str | Path] | Sequence[tuple[str, str | Path]],
                device: torch.device) -> list[_Model]:
    """Load every model (:func:`lorefd.models.bundle.load_bundle`: what ``--model`` takes in
    every command) before any scoring; a failure names the model (CheckpointError)."""
    items = list(models.items()) if isinstance(models, Mapping) else list(models)
    out = []
    for name, spec in items:
        try:
            loaded = load_bundle(spec, device)
        except (CheckpointError, BundleError, OSError, RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot load model {name!r} ({spec}): {exc}") from exc
        out.append(_Model(name, str(spec), loaded, _fingerprint(loaded)))
    return out


def data_signature(samples: Sequence[Sample], seed: int) -> dict[str, Any]:
    """What the stored rows depend on besides the model: the rows scored, the seed, the code."""
    h = hashlib.sha1()
    for s in samples:
        h.update(f"{s.path}\0{s.label}\0{s.group}\0{s.frame_index}\n".encode())
    return {"samples": len(samples), "samples_sha1": h.hexdigest(), "seed": seed,
            "perturbation_version": PERTURBATION_VERSION, "applied_to": APPLIED_TO}


def _resume(path: Path, signature: dict[str, Any], models: list[_Model]) -> None:
    """Take the rows a previous run wrote for the same data, seed and model files."""
    import json

    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
        if old.get("signature") != signature:
            log.warning("%s was written for other data, seed or lorefd perturbations: "
                        "recomputing every setting", path)
            return
        stored = {m["name"]: m for m in old.get("models", [])}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("cannot resume from %s (%s): recomputing", path, exc)
        return
    for m in models:
        prev = stored.get(m.name)
        if prev and prev.get("fingerprint") == m.fingerprint and \
                prev.get("threshold") == m.loaded.threshold:
            m.rows = {r["key"]: r for r in prev.get("rows", []) if "key" in r}
            if m.rows:
                log.info("%s: resuming, %d setting(s) already written", m.name, len(m.rows))
        elif prev:
            log.warning("%s: the model file changed since %s was written: recomputing",
                        m.name, path.name)


def robustness(models: Mapping[str, str | Path] | Sequence[tuple[str, str | Path]],
               samples: Sequence[Sample], out_dir: str | Path,
               types: Sequence[str] | None = None, levels: Sequence[int] | None = None,
               seed: int = 0, batch_size: int = 64, device: str | None = None,
               num_workers: int = 0, amp: bool = True, filters: Sequence[str] | None = None,
               figure: bool = True, allow_mismatch: bool = False) -> dict[str, Any]:
    """Score ``models`` (name -> bundle / run / checkpoint) on ``samples`` under every setting.

    Crops made otherwise than a model's training crops are refused as ``lorefd evaluate``
    refuses them (:func:`lorefd.evaluation.evaluate.check_crops`; ``allow_mismatch``: warn).

    Writes ``robustness.json``, ``.csv``, ``.md`` after each setting and ``.png`` at the end
    into ``out_dir``; returns the JSON's content.
    """
    settings = sweep_settings(types, levels)
    samples = order_samples(samples)
    if not samples:
        raise ManifestError("robustness: no samples" + (f" ({' '.join(filters)})" if filters
                                                         else ""))
    labels = Counter(s.label for s in samples)
    if labels[REAL] == 0 or labels[FAKE] == 0:
        log.warning("robustness: one class only (%s): AUC reported as n/a", describe(samples))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    loaded = load_models(models, dev)
    for m in loaded:
        check_crops(list(samples), m.loaded, allow_mismatch)
    signature = data_signature(samples, seed)
    _resume(out / "robustness.json", signature, loaded)
    header = {"lorefd_version": __version__, "data": describe(samples),
              "filters": list(filters or []), "seed": seed, "applied_to": APPLIED_TO,
              "signature": signature, "settings": [s.key for s in settings],
              "levels_metric": f"frame: every crop; video: {AGGREGATE} frame probability per video_id"}
    total = len(settings)
    for k, st in enumerate(settings, 1):
        todo = [m for m in loaded if st.key not in m.rows]
        if not todo:
            continue
        t0 = time.perf_counter()
        by_size: dict[int, list[_Model]] = defaultdict(list)
        for m in todo:
            by_size[m.loaded.detector.image_size].append(m)
        for size, group in by_size.items():
            ds = PerturbedCrops(samples, st, size, seed)
            loader = DataLoader(ds, batch_size=batch_size, shuffle=False,
                                num_workers=num_workers)
            pred = predict([m.loaded.detector for m in group], loader, dev, amp)
            probs, ok, reasons = pred.probs, pred.ok, pred.reasons
            for m, p in zip(group, probs, strict=True):
                if not np.isfinite(p[ok]).all():
                    raise CheckpointError(f"model {m.name!r} ({m.spec}) gives non-finite scores "
                                          f"under {st.key}: damaged weights?")
                row = setting_row(st, samples, p, ok, reasons, m.loaded.threshold)
                row.update(key=st.key, seconds=round(time.perf_counter() - t0, 3))
                m.rows[st.key] = row
        log.info("[%d/%d] %s%s: %s (%.1f s)", k, total, st.key,
                 f" ({PARAMETER_NAMES[st.kind]} {st.param:g})" if st.param is not None else "",
                 ", ".join(f"{m.name} AUC {fmt(m.rows[st.key]['frame_auc'])}" for m in todo),
                 time.perf_counter() - t0)
        write_outputs(out, header, loaded, settings, complete=False, figure=False)
    return write_outputs(out, header, loaded, settings, complete=True, figure=figure)


def write_outputs(out: Path, header: dict[str, Any], models: Sequence[_Model],
                  settings: Sequence[Setting], complete: bool, figure: bool = True
                  ) -> dict[str, Any]:
    """``robustness.json``, ``.csv``, ``.md`` (and ``.png`` when ``figure``)."""
    entries = []
    for m in models:
        rows, summary = summarise([m.rows[s.key] for s in settings if s.key in m.rows])
        det = m.loaded.detector
        entries.append({"name": m.name, "source": m.spec, "kind": m.loaded.source,
                        "path": str(m.loaded.path), "detector": det.name,
                        "image_size": det.image_size, "threshold": m.loaded.threshold,
                        "fingerprint": m.fingerprint, "summary": summary, "rows": rows})
    result = {**header, "complete": complete, "models": entries}
    atomic_write_json(out / "robustness.json", result)
    write_csv(out / "robustness.csv", entries)
    atomic_write_text(out / "robustness.md", robustness_markdown(result))
    if figure:
        from lorefd.evaluation.figures import plot_robustness  # matplotlib: loaded only here

        plot_robustness(out / "robustness.png", result)
    return result


CSV_COLUMNS = ["model", "type", "level", "param_name", "param", "n", "n_real", "n_fake",
               "n_videos", "skipped", "frame_auc", "frame_acc", "video_auc", "video_acc",
               "frame_auc_drop", "video_auc_drop"]


def write_csv(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for e in entries:
            for r in e["rows"]:
                w.writerow([e["name"]] + [_cell(r.get(c, "")) for c in CSV_COLUMNS[1:]])


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    return f"{v:.6f}" if isinstance(v, float) else v


__all__ = ["APPLIED_TO", "FILES", "data_signature", "load_models", "model_names", "order_samples",
           "robustness", "setting_row", "summarise", "sweep_settings"]
