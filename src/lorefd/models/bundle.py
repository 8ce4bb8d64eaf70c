"""The ``.lorefd`` bundle: one file with everything ``lorefd detect`` needs.

A bundle is a `safetensors <https://github.com/huggingface/safetensors>`_ file (no pickle):

* tensors: the detector's full ``state_dict`` -- for ``lre`` the frozen MAE (``mae.*``, with
  the key-patch set T in ``mae.key_patches``), the frozen feature Xception (``extractor.*``)
  and the detection Xception (``net.*``); for the ``baseline`` detector only ``net.*``;
* metadata (safetensors' string map):

  ``format``          ``"lorefd-bundle"`` (magic)
  ``bundle_version``  integer as text; this build reads :data:`BUNDLE_VERSION`
  ``manifest``        JSON: ``lorefd_version``, ``created``, ``detector``, ``image_size``,
                      ``config`` (full training Config), ``checkpoint_meta`` (incl. the MAE's
                      config and key region), ``key_patches`` (T as patch indices),
                      ``preprocess`` (face detector, crop size, template margin, ...),
                      ``threshold`` ``{"value", "source"}``, ``source`` (exported from),
                      ``payload_sha256``, ``tensors_sha256``, ``num_tensors``
  ``manifest_sha256`` SHA-256 of the manifest text

Integrity covers every byte that is read: ``payload_sha256`` every byte after the safetensors
header (all tensor data), ``tensors_sha256`` the header's tensor table (each name, dtype, shape
and offset, as canonical JSON), ``manifest_sha256`` the manifest that holds both. A flipped bit
in the weights, an edited dtype or offset, or a truncated file is refused before any weight is
used; then every tensor's shape and kind (floating or integer) is checked against the
architecture. Checksums show a file is intact, not that its contents are sane (anyone can
re-seal an edited manifest): every value a bundle declares is range-checked at load on both
runtimes (:func:`check_manifest`), the reference face stored at export is scored again and
must get its recorded score (:func:`check_reference`), and the shipped model must have the
digest this lorefd pins (:data:`SHIPPED_MANIFEST_SHA256`). Version 1 bundles had no ``tensors_sha256``: they are refused with the command
that re-seals them (``lorefd export OLD.lorefd --out NEW.lorefd`` verifies the old payload and
writes a version 2 bundle).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorefd.models.bundle_file import (  # the file level, re-exported here
    BUNDLE_VERSION,
    FORMAT,
    RESERVED_PREFIX,
    SUFFIX,
    BundleError,
    write_bundle,
)
from lorefd.models.bundle_file import read_bundle_header as _read_file_header
from lorefd.version import __version__

if TYPE_CHECKING:  # torch is imported where weights are read (not by the ONNX runtime path)
    import torch

    from lorefd.models.detectors.base import Detector

DETECTOR_KIND = "detector"  # lorefd.models.detectors.base.KIND
CONFIG, WEIGHTS = "config.json", "model.safetensors"  # lorefd.checkpoint's file names
log = logging.getLogger("lorefd")
# preprocessing parameters a training run records (``meta["preprocess"]``) and a bundle keeps
PREPROCESS_KEYS = ("face_detector", "detect_side", "track_face_side", "frames", "size", "margin",
                   "crop")


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


@dataclass
class Bundle:
    """A loaded bundle: the detector (eval mode) and the manifest it came with."""

    detector: Detector
    manifest: dict[str, Any]
    path: Path
    source: str = "bundle"  # "bundle" (a .lorefd file) or "checkpoint" (a run/checkpoint folder)

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])

    @property
    def preprocess(self) -> dict[str, Any]:
        return self.manifest["preprocess"]

    def to(self, device: torch.device | str) -> Bundle:
        """The same bundle with its detector on ``device``."""
        self.detector.to(device)
        return self


SHIPPED_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "model" / "default.lorefd"
# The shipped bundle's manifest digest (its ``manifest_sha256``, which seals the tensor data's
# and the tensor table's checksums): a default model whose digest differs was modified and
# is refused. Replacing the shipped bundle on purpose means setting this to the new bundle's
# digest (tests/test_hostile.py::test_the_shipped_model_digest_is_pinned prints it).
SHIPPED_MANIFEST_SHA256 = "24c28a205723c1a40ea2eb2f4d6e3f630a03c2c710aa5f702b35f692014af25c"


def shipped_bundle() -> Path | None:
    """The trained model shipped in the package (``assets/model/default.lorefd``), if present.

    ``lorefd detect`` (and the other commands that read a detector) use it when no
    ``--model`` is given; its model card is ``assets/model/MODEL.md``.
    """
    return SHIPPED_BUNDLE if SHIPPED_BUNDLE.is_file() else None


# ------------------------------------------------------------------------------ file level
def read_bundle_header(path: str | Path, verify: bool = True, old: bool = False) -> dict[str, Any]:
    """The manifest of a bundle, checked (:func:`lorefd.models.bundle_file.read_bundle_header`);
    the shipped model must have the digest this lorefd pins (:data:`SHIPPED_MANIFEST_SHA256`).

    Raises :class:`BundleError` with a one-line reason; reads no weights into memory.
    """
    return _read_file_header(path, verify=verify, old=old,
                             pinned=(SHIPPED_BUNDLE, SHIPPED_MANIFEST_SHA256))


# ------------------------------------------------------------------------------ model level
def _check_kinds(weights: dict[str, torch.Tensor], det: Detector, path: Path) -> None:
    """Every tensor is of the kind (floating or integer) the architecture holds there."""
    expected = det.state_dict()
    for k, v in weights.items():
        if k in expected and v.dtype.is_floating_point != expected[k].dtype.is_floating_point:
            raise BundleError(f"corrupted or incompatible bundle {path}: tensor {k} is "
                              f"{v.dtype}, the architecture holds {expected[k].dtype}")


def _torch_probs(det: Detector, images: Any) -> Any:
    """P(fake) of a PyTorch detector (on the CPU, eval mode) for numpy crops."""
    import torch

    with torch.no_grad():
        return det.predict_proba(torch.from_numpy(images)).float().numpy()


def _load_bundle_file(path: str | Path, device: torch.device | str = "cpu", old: bool = False
                      ) -> Bundle:
    """Check and load a bundle; :class:`BundleError` on anything wrong with the file.
    ``old``: also a version 1 bundle (to re-seal it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lorefd.checkpoint import nonfinite_tensors
    from lorefd.config import config_from_dict
    from lorefd.models.detectors.base import detector_from_state

    path = Path(path)
    manifest = read_bundle_header(path, verify=True, old=old)
    try:
        tensors = load_file(str(path), device="cpu")
        reference = tensors.get(REFERENCE_KEY)
        weights = {k: v for k, v in tensors.items() if not k.startswith(RESERVED_PREFIX)}
        bad = nonfinite_tensors(weights)
        if bad:
            raise BundleError(f"corrupted bundle {path}: non-finite values (NaN/inf) in "
                              f"{len(bad)} tensor(s), e.g. {bad[0]}; re-export it from an "
                              "intact checkpoint")
        check_manifest(manifest, path)
        cfg = config_from_dict(manifest["config"])
        meta = manifest["checkpoint_meta"]
        det = detector_from_state(weights, cfg, meta)
        _check_kinds(weights, det, path)
        check_reference(lambda x: _torch_probs(det, x), manifest,
                        None if reference is None else reference.numpy(), path, "PyTorch")
    except BundleError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError, SafetensorError) as exc:
        raise BundleError(f"corrupted or incompatible bundle {path}: "
                          f"{type(exc).__name__}: {exc}") from exc
    return Bundle(detector=det.to(device), manifest=manifest, path=path)


# ------------------------------------------------------------------------------ export
def _run_checkpoint(run: str | Path) -> Path:
    """A detector checkpoint folder from a training run (``RUN/best``, else ``RUN/last``) or
    the checkpoint folder itself."""
    from lorefd.errors import CheckpointError

    run = Path(run)
    if not run.exists():
        raise CheckpointError(f"not found: {run}")
    if (run / "config.json").is_file():
        return run
    if (run / "best").is_dir() and not (run / "best" / "config.json").is_file():
        # never fall back silently to last/: it has other weights and no validation threshold
        raise CheckpointError(f"{run / 'best'} has no config.json (damaged or incomplete); "
                              f"give {run / 'last'} explicitly to use the last checkpoint")
    for sub in ("best", "last"):
        if (run / sub / "config.json").is_file():
            return run / sub
    raise CheckpointError(f"{run} is neither a training run (with best/ or last/) nor a "
                          "detector checkpoint folder (with config.json)")


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


def _detector_manifest(ckpt: Path, weights: dict[str, torch.Tensor], cfg: Any,
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
    if not 0.0 <= thr[0] <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {thr[0]}")
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


def export_bundle(run: str | Path, out_path: str | Path, threshold: float | None = None,
                  preprocess: dict[str, Any] | None = None, verify: bool = True,
                  half: bool = False, tta: str | None = None,
                  threshold_rule: str | None = None) -> dict[str, Any]:
    """Write the single-file bundle of a training run or detector checkpoint.

    ``threshold`` overrides the decision threshold (else the run's validation threshold if it
    recorded one, else ``train.threshold`` of its config, 0.5 by default; the source is
    stored). The face pipeline (crop ``size``, template ``margin``, face detector) is the one
    the run recorded for its training data (:func:`bundle_preprocess`); ``preprocess``
    overrides entries (a warning where they differ from the recorded ones). With ``verify``
    the written bundle is loaded back once. ``half`` stores float weights as float16 (half
    the size; loading casts them back to float32). ``tta`` sets ``detector.tta`` (the
    test-time flip) in the bundle's config (default: the run's). Returns the stored manifest.
    """
    import torch

    from lorefd.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info

    ckpt = _run_checkpoint(run)
    cfg, meta = read_checkpoint_info(ckpt)
    if meta.get("kind") != DETECTOR_KIND:
        raise CheckpointError(f"{ckpt} holds a {meta.get('kind')!r} checkpoint, expected a "
                              "'detector' (from `lorefd train`)")
    weights, cfg, meta = load_checkpoint(ckpt, kind=DETECTOR_KIND)  # checksums, finite values
    if tta is not None:
        cfg, meta = with_tta(cfg, tta), {**meta, "tta": tta}
    manifest = _detector_manifest(ckpt, weights, cfg, meta, threshold, preprocess)
    if threshold is not None and threshold_rule:
        manifest["threshold"]["source"] = f"given at export: {threshold_rule}"
    if half:
        big = [k for k, v in weights.items() if v.is_floating_point() and v.numel()
               and float(v.abs().max()) > torch.finfo(torch.float16).max]
        if big:
            raise BundleError(f"cannot store {ckpt} as float16: {len(big)} tensor(s) exceed its "
                              f"range (e.g. {big[0]}); export without --half")
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
        manifest["weights_dtype"] = "float16"
    stored = write_bundle(out_path, weights, manifest)
    if verify:
        _load_bundle_file(out_path)
    return stored


# ------------------------------------------------------------------------------ --model
def resolve_model(spec: str | Path | None) -> Path:
    """What ``--model`` names: a ``.lorefd`` bundle file, a training run folder or a detector
    checkpoint folder (returned as the checkpoint folder). ``None``: the shipped bundle."""
    if spec is None or str(spec) == "":
        shipped = shipped_bundle()
        if shipped is None:
            raise BundleError("--model is required: no trained model is shipped with this "
                              "installation (give a .lorefd bundle, a run folder or a "
                              "checkpoint folder)")
        return shipped
    path = Path(spec).expanduser()
    if path.is_file():
        return path.parent if path.name in (WEIGHTS, CONFIG) else path
    if path.is_dir():
        return _run_checkpoint(path)
    raise BundleError(f"model not found: {spec} (a .lorefd bundle, a run folder or a "
                      "checkpoint folder)")


def load_model(spec: str | Path | None, device: torch.device | str = "cpu",
               warn: bool = False, old: bool = False) -> Bundle:
    """The one detector loader: what ``--model`` names (see :func:`resolve_model`) as a
    :class:`Bundle`; a bundle file is checked (:class:`BundleError` on anything wrong with
    it; ``old``: also a version 1 bundle, to re-seal it).

    A checkpoint folder is verified and wrapped in memory exactly as ``lorefd export`` would
    write it (threshold, recorded preprocessing; ``source`` "checkpoint"), so every command
    that reads a detector accepts all three forms alike.
    """
    from lorefd.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
    from lorefd.models.detectors.base import detector_from_state

    path = resolve_model(spec)
    if path.is_file():
        return _load_bundle_file(path, device, old=old)
    cfg, meta = read_checkpoint_info(path)
    if meta.get("kind") != DETECTOR_KIND:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected a "
                              "detector (a run of `lorefd train`, its best/ or a bundle)")
    weights, cfg, meta = load_checkpoint(path, kind=DETECTOR_KIND)
    manifest = {"format": FORMAT, "bundle_version": BUNDLE_VERSION,
                "lorefd_version": __version__, "created": None, "payload_sha256": None,
                "num_tensors": len(weights),
                **_detector_manifest(path, weights, cfg, meta, None, None, warn)}
    check_manifest(manifest, path)  # what the run recorded (meta.preprocess) is checked too
    try:
        det = detector_from_state(weights, cfg, meta, device)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"incompatible detector checkpoint {path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    return Bundle(detector=det, manifest=manifest, path=path, source="checkpoint")


__all__ = ["BUNDLE_VERSION", "FORMAT", "RESERVED_PREFIX", "SUFFIX", "Bundle", "BundleError", "bundle_preprocess",
           "check_manifest", "check_reference",
           "default_preprocess", "export_bundle", "load_model", "read_bundle_header", "resolve_model",
           "shipped_bundle", "write_bundle"]
