"""What a ``.lorefd`` bundle may declare, and the checks that hold it to that.

Checksums (:mod:`lorefd.models.bundle_file`) show a file is intact, not that its contents are
sane: anyone can re-seal an edited manifest. So every value a manifest declares that detection
uses is range-checked at load on both runtimes (:func:`check_manifest`; ``lorefd export`` takes
its option ranges from the same constants), and the reference faces stored at export are scored
again and must get their recorded scores (:func:`check_reference`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorefd.models.bundle_file import BundleError

# ------------------------------------------------------------------------------ declared values
# What a bundle may declare, checked at load on both runtimes (check_manifest) and at export
# (cli/export.py takes its --size / --margin / --crop / --face-detector ranges from here).
CROP_SIDE = (16, 4096)  # preprocess.size: the aligned crop's side in px
MARGIN = (0.0, 1.0)  # preprocess.margin: the template margin
CROP_MODES = ("template", "box")
FACE_DETECTORS = ("dlib", "retinaface")
IMAGE_SIDE = (16, 4096)  # image_size: the network's input side in px
DETECT_SIDE = (0, 8192)  # preprocess.detect_side / track_face_side (0: off)
FRAMES = (1, 10_000)  # preprocess.frames: frames sampled per video
TTAS = ("none", "flip")


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def _in(where: str, key: str, value: Any, bounds: tuple[float, float],
        integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if not _number(value, integer) or not bounds[0] <= value <= bounds[1]:
        raise BundleError(f"invalid bundle {where}: {key} must be {kind} in "
                          f"[{bounds[0]:g}, {bounds[1]:g}], got {value!r}")


def _one_of(where: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BundleError(f"invalid bundle {where}: {key} must be one of "
                          f"{', '.join(choices)}, got {value!r}")


def _section(where: str, manifest: dict[str, Any], key: str) -> dict[str, Any]:
    value = manifest.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"invalid bundle {where}: {key} must be an object, got "
                          f"{'nothing' if key not in manifest else repr(value)[:60]}")
    return value


# ------------------------------------------------------------------------------ reference faces
REFERENCE_KEY = "onnx.reference"  # uint8 (n, 3, S, S): face crops whose scores export recorded
REFERENCE_TOL = 1e-3  # largest |P(fake) at load - P(fake) recorded| accepted (export: 1e-4)
# ... and of their logits (probabilities clipped to [1e-4, 1 - 1e-4]): near 0 or 1 a
# probability moves little when the network's output moves much
REFERENCE_LOGIT_TOL = 1e-2


def check_reference(run: Any, manifest: dict[str, Any], stored: Any, path: str | Path,
                    runtime: str) -> bool:
    """Run ``run`` (``(n, 3, S, S)`` float32 in [0, 1] -> P(fake) ``(n,)``) on the reference
    faces stored in the bundle and compare with the scores PyTorch gave them at export
    (``manifest["reference"]``). False when the bundle records none; a :class:`BundleError`
    when a score differs by more than :data:`REFERENCE_TOL` (the graph or the network does
    not compute what was exported: a swapped graph, an edited config) or the record is
    malformed."""
    import numpy as np

    rec = manifest.get("reference")
    if rec is None:
        return False
    where = str(path)
    probs = rec.get("prob") if isinstance(rec, dict) else None
    if (not isinstance(probs, list) or not probs
            or not all(_number(p, False) and 0.0 <= p <= 1.0 for p in probs)):
        raise BundleError(f"invalid bundle {where}: reference.prob must be a list of "
                          "probabilities")
    side = manifest.get("image_size")
    if stored is None:
        raise BundleError(f"invalid bundle {where}: the reference faces ({REFERENCE_KEY}) "
                          "are missing")
    faces = np.asarray(stored)
    if faces.dtype != np.uint8 or faces.shape != (len(probs), 3, side, side):
        raise BundleError(f"invalid bundle {where}: {REFERENCE_KEY} must be uint8 of shape "
                          f"({len(probs)}, 3, {side}, {side}), got {faces.dtype} "
                          f"{tuple(faces.shape)}")
    got = np.asarray(run(faces.astype(np.float32) / 255.0), dtype=np.float64).reshape(-1)
    want = np.asarray(probs, dtype=np.float64)

    def logit(p: Any) -> Any:
        p = np.clip(p, 1e-4, 1.0 - 1e-4)
        return np.log(p) - np.log1p(-p)

    if got.shape != want.shape:
        raise BundleError(f"refused {where}: {runtime} gives {got.size} scores for its "
                          f"{want.size} reference face(s)")
    with np.errstate(invalid="ignore"):  # a NaN score fails both comparisons
        ok = (np.abs(got - want) <= REFERENCE_TOL) & (
            np.abs(logit(got) - logit(want)) <= REFERENCE_LOGIT_TOL)
    if not ok.all():
        i = int(np.argmin(ok))
        raise BundleError(
            f"refused {where}: {runtime} gives P(fake) {got[i]:.4f} on its reference face where "
            f"the export recorded {want[i]:.4f} (tolerance {REFERENCE_TOL:g}, "
            f"{REFERENCE_LOGIT_TOL:g} in logit): the "
            f"{'ONNX graph' if runtime == 'ONNX Runtime' else 'network'} does not compute "
            "what was exported")
    return True


def check_manifest(manifest: dict[str, Any], path: str | Path) -> None:
    """Every value the manifest declares that detection uses, in the range ``lorefd export``
    accepts: the threshold, the face pipeline (crop side, margin, crop mode, face detector,
    detection and tracking sides, frames), the input side, the training config (every field
    against its type and range, :mod:`lorefd.config`; so ``detector.tta`` too) and the ONNX
    entry's shape. A :class:`BundleError` in one line naming the key; run before any file is
    scored, by both runtimes alike."""
    where = str(path)
    thr = _section(where, manifest, "threshold")
    _in(where, "threshold.value", thr.get("value"), (0.0, 1.0))
    pre = _section(where, manifest, "preprocess")
    _in(where, "preprocess.size", pre.get("size"), CROP_SIDE, integer=True)
    _in(where, "preprocess.margin", pre.get("margin"), MARGIN)
    _one_of(where, "preprocess.crop", pre.get("crop", "template"), CROP_MODES)
    _one_of(where, "preprocess.face_detector", pre.get("face_detector"), FACE_DETECTORS)
    for key in ("detect_side", "track_face_side"):
        if pre.get(key) is not None:
            _in(where, f"preprocess.{key}", pre[key], DETECT_SIDE, integer=True)
    if pre.get("frames") is not None:
        _in(where, "preprocess.frames", pre["frames"], FRAMES, integer=True)
    _in(where, "image_size", manifest.get("image_size"), IMAGE_SIDE, integer=True)
    if not isinstance(manifest.get("detector"), str) or not manifest["detector"]:
        raise BundleError(f"invalid bundle {where}: detector must be a name, got "
                          f"{manifest.get('detector')!r}")
    from lorefd.config import ConfigError, config_from_dict

    try:
        config_from_dict(_section(where, manifest, "config"))  # detector.tta, data.image_size..
    except ConfigError as exc:
        raise BundleError(f"invalid bundle {where}: config: {exc}") from None
    _section(where, manifest, "checkpoint_meta")
    patches = manifest.get("key_patches", [])
    if not isinstance(patches, list) or not all(_number(k, True) and k >= 0 for k in patches):
        raise BundleError(f"invalid bundle {where}: key_patches must be a list of patch "
                          "indices")
    info = manifest.get("onnx")
    if info is not None:
        info = _section(where, manifest, "onnx")
        for key in ("outputs", "shared"):
            if not isinstance(info.get(key), list) or not all(isinstance(v, str)
                                                              for v in info[key]):
                raise BundleError(f"invalid bundle {where}: onnx.{key} must be a list of names")
        if not isinstance(info.get("prefix", ""), str):
            raise BundleError(f"invalid bundle {where}: onnx.prefix must be a string")


__all__ = ["CROP_MODES", "CROP_SIDE", "DETECT_SIDE", "FACE_DETECTORS", "FRAMES", "IMAGE_SIDE",
           "MARGIN", "REFERENCE_KEY", "REFERENCE_LOGIT_TOL", "REFERENCE_TOL", "TTAS",
           "check_manifest", "check_reference"]
