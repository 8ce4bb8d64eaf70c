"""The manifest of a bundle made from a detector checkpoint: threshold, face pipeline, config.

:func:`detector_manifest` is what ``lorefd export`` writes (:mod:`lorefd.models.export`) and
what a checkpoint folder given as ``--model`` is wrapped in
(:func:`lorefd.models.bundle.load_bundle`), so both describe a checkpoint alike; the file
checksums are added when it is written (:func:`lorefd.models.bundle_file.write_bundle`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorefd.errors import CheckpointError, OptionError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("lorefd")
# preprocessing parameters a training run records (``meta["preprocess"]``) and a bundle keeps
PREPROCESS_KEYS = ("face_detector", "detect_side", "track_face_side", "frames", "size", "margin",
                   "crop")


def _recorded_threshold(ckpt: Path, meta: dict[str, Any]) -> tuple[float, str] | None:
    """A decision threshold the training run chose on validation data, if it recorded one."""
    val = meta.get("val") or {}
    for key in ("val_threshold", "val_best_threshold", "best_threshold", "threshold"):
        if isinstance(val.get(key), (int, float)):
            return float(val[key]), f"validation ({ckpt.name}: meta.val.{key})"
    summary = ckpt.parent / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        for key in ("best_threshold", "val_threshold"):
            if isinstance(data.get(key), (int, float)):
                return float(data[key]), f"validation (summary.json: {key})"
    return None


def default_preprocess() -> dict[str, Any]:
    """The face pipeline of ``lorefd preprocess`` with its defaults (what training saw)."""
    from lorefd.data.preprocess.runner import PreprocessOptions

    opts = PreprocessOptions()
    return {"face_detector": opts.detector, "detect_side": opts.detect_side,
            "track_face_side": opts.track_face_side, "frames": opts.frames,
            "size": opts.size, "margin": opts.margin, "crop": opts.crop,
            "template": "arcface-5point", "alignment": "similarity",
            "resize": "area (shrink) / linear (enlarge) to image_size"}


def bundle_preprocess(meta: dict[str, Any], given: dict[str, Any] | None = None,
                      warn: bool = True) -> dict[str, Any]:
    """The face pipeline a bundle must reproduce: what the training data was preprocessed
    with (``meta["preprocess"]``, recorded by ``lorefd train``), else ``lorefd preprocess``'s
    defaults (said once); entries of ``given`` win, with a warning where they differ."""
    recorded = {k: v for k, v in (meta.get("preprocess") or {}).items()
                if k in PREPROCESS_KEYS and v is not None}
    pre = {**default_preprocess(), **recorded}
    for key, value in (given or {}).items():
        if warn and key in recorded and recorded[key] != value:
            log.warning("export: %s=%s differs from the training data's %s=%s (recorded from "
                        "%s): faces will be cropped unlike in training", key, value, key,
                        recorded[key], meta["preprocess"].get("source", "the run"))
        pre[key] = value
    if pre["crop"] == "box":  # no template, no alignment: the landmarks' box (data.preprocess.align)
        pre["template"], pre["alignment"] = "68-landmark box", "none (axis-aligned box)"
    missing = [k for k in ("size", "margin") if k not in recorded and k not in (given or {})]
    if warn and missing:
        log.warning("export: the run recorded no %s of its training crops; assuming lorefd "
                    "preprocess's default%s (%s); pass --%s if the crops were made otherwise",
                    " or ".join(missing), "s" if len(missing) > 1 else "",
                    ", ".join(f"{k} {pre[k]}" for k in missing), " / --".join(missing))
    if "source" in (meta.get("preprocess") or {}):
        pre["recorded_from"] = _portable(str(meta["preprocess"]["source"]))
    return pre


def _portable(source: str) -> str:
    """A recorded path as a bundle may carry it: relative to the working directory when inside
    it, else its last two parts (a bundle travels; the training machine's layout does not)."""
    path = Path(os.path.normpath(source))
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(*path.parts[-2:]).as_posix()


def detector_manifest(ckpt: Path, weights: dict[str, torch.Tensor], cfg: Any,
                      meta: dict[str, Any], threshold: float | None,
                      preprocess: dict[str, Any] | None, warn: bool = True) -> dict[str, Any]:
    """The manifest of a bundle made from a detector checkpoint (without file checksums)."""
    import torch

    if threshold is not None:
        thr = (float(threshold), "given at export")
    else:
        thr = _recorded_threshold(ckpt, meta) or (
            float(cfg.train.threshold),
            "default 0.5 (no validation threshold recorded)" if cfg.train.threshold == 0.5
            else "config train.threshold (no validation threshold recorded)")
    if not 0.0 <= thr[0] <= 1.0:  # given: the caller's; else what the checkpoint recorded
        error = OptionError if threshold is not None else CheckpointError
        raise error(f"threshold must be in [0, 1], got {thr[0]}")
    key = weights.get("mae.key_patches")
    pre = bundle_preprocess(meta, preprocess, warn)
    mae_meta = (meta.get("mae") or {}).get("meta") or {}
    if "source" in (meta.get("preprocess") or {}):  # no path of the training machine
        meta = {**meta, "preprocess": {**meta["preprocess"],
                                       "source": _portable(str(meta["preprocess"]["source"]))}}
    return {
        "detector": meta["detector"], "image_size": int(meta.get("image_size",
                                                                 cfg.data.image_size)),
        "config": cfg.to_dict(), "checkpoint_meta": meta,
        "key_patches": [] if key is None else torch.nonzero(key.flatten()).flatten().tolist(),
        "key_region": mae_meta.get("key_region"),
        "preprocess": pre,
        "threshold": {"value": thr[0], "source": thr[1]},
        "source": {"checkpoint": _portable(str(ckpt.resolve())), "epoch": meta.get("epoch"),
                   "step": meta.get("step")},
    }


def with_tta(cfg: Any, tta: str) -> Any:
    """``cfg`` with ``detector.tta`` set (checked like any config value)."""
    from lorefd.config import config_from_dict

    d = cfg.to_dict()
    d["detector"]["tta"] = tta
    return config_from_dict(d)


__all__ = ["PREPROCESS_KEYS", "bundle_preprocess", "default_preprocess", "detector_manifest",
           "with_tta"]
