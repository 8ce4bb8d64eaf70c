"""The ``.lorefd`` bundle: one file with everything ``lorefd detect`` needs.

A bundle is a `safetensors <https://github.com/huggingface/safetensors>`_ file (no pickle):

* tensors: the detector's full ``state_dict`` -- for ``lre`` the frozen MAE (``mae.*``, with
  the key-patch set T in ``mae.key_patches``), the frozen feature Xception (``extractor.*``)
  and the detection Xception (``net.*``); for the ``xception`` baseline only ``net.*``;
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
architecture. Version 1 bundles had no ``tensors_sha256``: they are refused with the command
that re-seals them (``lorefd export OLD.lorefd --out NEW.lorefd`` verifies the old payload and
writes a version 2 bundle).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorefd.errors import UserError
from lorefd.utils import atomic_path
from lorefd.version import __version__

if TYPE_CHECKING:  # torch is imported where weights are read (not by the ONNX runtime path)
    import torch

    from lorefd.models.detectors.base import Detector

FORMAT = "lorefd-bundle"
BUNDLE_VERSION = 2
SUFFIX = ".lorefd"
_CHUNK = 1 << 22
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
RESERVED_PREFIX = "onnx."  # bundle tensors that are not weights (models/graph.py)
DETECTOR_KIND = "detector"  # lorefd.models.detectors.base.KIND
CONFIG, WEIGHTS = "config.json", "model.safetensors"  # lorefd.checkpoint's file names
log = logging.getLogger("lorefd")
# preprocessing parameters a training run records (``meta["preprocess"]``) and a bundle keeps
PREPROCESS_KEYS = ("face_detector", "detect_side", "track_face_side", "frames", "size", "margin",
                   "crop")


class BundleError(UserError, ValueError):
    """A bundle that is missing, corrupted, of another version, or not a bundle at all."""


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


def shipped_bundle() -> Path | None:
    """The trained model shipped in the package (``assets/model/default.lorefd``), if present.

    ``lorefd detect`` (and the other commands that read a detector) use it when no
    ``--model`` is given; its model card is ``assets/model/MODEL.md``.
    """
    return SHIPPED_BUNDLE if SHIPPED_BUNDLE.is_file() else None


# ------------------------------------------------------------------------------ file level
def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header and the byte offset where tensor data starts."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise BundleError(f"not a lorefd bundle (file too short: {size} bytes): {path}")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise BundleError(f"not a lorefd bundle (no safetensors header): {path}")
            raw = fh.read(n)
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"not a lorefd bundle or corrupted bundle (bad header): {path}") from exc
    if not isinstance(header, dict):
        raise BundleError(f"not a lorefd bundle (bad header): {path}")
    return header, 8 + n


def _tensors_sha256(header: dict[str, Any]) -> str:
    """SHA-256 of the tensor table (names, dtypes, shapes, offsets) in canonical JSON."""
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    return hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def _payload_sha256(path: Path, offset: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_bundle_header(path: str | Path, verify: bool = True, old: bool = False) -> dict[str, Any]:
    """The manifest of a bundle, after checking format, version, the tensor table and
    (``verify``) the tensor data. ``old``: accept a version 1 bundle (no tensor-table
    checksum), for re-sealing it.

    Raises :class:`BundleError` with a one-line reason; reads no weights into memory.
    """
    path = Path(path)
    if path.is_dir():
        hint = (" (a checkpoint folder: export it first with `lorefd export "
                f"{path} --out model{SUFFIX}`)") if (path / "config.json").is_file() \
            or (path / "best").is_dir() or (path / "last").is_dir() else ""
        raise BundleError(f"{path} is a folder, not a bundle file{hint}")
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    header, offset = _read_header(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise BundleError(f"not a lorefd bundle (format {meta.get('format')!r}): {path}")
    try:
        version = int(meta.get("bundle_version", ""))
    except ValueError:
        raise BundleError(f"corrupted bundle: bad version field "
                          f"{meta.get('bundle_version')!r}: {path}") from None
    if version > BUNDLE_VERSION:
        raise BundleError(f"bundle version {version} is newer than this lorefd supports "
                          f"({BUNDLE_VERSION}); upgrade lorefd (lorefd {__version__}): {path}")
    if version < 1:
        raise BundleError(f"unsupported bundle version {version}: {path}")
    if version < BUNDLE_VERSION and not old:
        raise BundleError(f"bundle version {version} does not checksum its tensor table; "
                          f"re-seal it: lorefd export {path} --out NEW{SUFFIX}")
    text = meta.get("manifest", "")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != meta.get("manifest_sha256"):
        raise BundleError(f"corrupted bundle: manifest checksum mismatch: {path}")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"corrupted bundle: manifest is not JSON: {path}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"corrupted bundle: manifest is not an object: {path}")
    if version >= 2 and _tensors_sha256(header) != manifest.get("tensors_sha256"):
        raise BundleError(f"corrupted bundle: tensor table checksum mismatch (a name, dtype, "
                          f"shape or offset was changed): {path}")
    if verify and _payload_sha256(path, offset) != manifest.get("payload_sha256"):
        raise BundleError(f"corrupted bundle: checksum mismatch (weights damaged or "
                          f"truncated): {path}")
    return manifest


def write_bundle(path: str | Path, weights: dict[str, torch.Tensor],
                 manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``weights`` + ``manifest`` as a bundle at ``path`` (atomic); returns the manifest
    as stored (with ``format``, versions and ``payload_sha256`` filled in)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    manifest = {"format": FORMAT, "bundle_version": BUNDLE_VERSION, "lorefd_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "num_tensors": len(tensors)}
    with atomic_path(path, suffix=SUFFIX) as tmp:
        # The checksum covers the tensor data, which is laid out independently of the metadata:
        # write once without it, hash the payload, write again with it (same tensor bytes).
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        header, offset = _read_header(tmp)
        manifest["payload_sha256"] = _payload_sha256(tmp, offset)
        manifest["tensors_sha256"] = _tensors_sha256(header)
        text = json.dumps(manifest, sort_keys=True, default=str)
        save_file(tensors, str(tmp), metadata={
            "format": FORMAT, "bundle_version": str(BUNDLE_VERSION), "manifest": text,
            "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
        header, offset = _read_header(tmp)
        if (_payload_sha256(tmp, offset) != manifest["payload_sha256"]
                or _tensors_sha256(header) != manifest["tensors_sha256"]):  # pragma: no cover
            raise BundleError("internal error: tensor payload changed between writes")
    return manifest


# ------------------------------------------------------------------------------ model level
def _check_kinds(weights: dict[str, torch.Tensor], det: Detector, path: Path) -> None:
    """Every tensor is of the kind (floating or integer) the architecture holds there."""
    expected = det.state_dict()
    for k, v in weights.items():
        if k in expected and v.dtype.is_floating_point != expected[k].dtype.is_floating_point:
            raise BundleError(f"corrupted or incompatible bundle {path}: tensor {k} is "
                              f"{v.dtype}, the architecture holds {expected[k].dtype}")


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
        weights = {k: v for k, v in load_file(str(path), device="cpu").items()
                   if not k.startswith(RESERVED_PREFIX)}
        bad = nonfinite_tensors(weights)
        if bad:
            raise BundleError(f"corrupted bundle {path}: non-finite values (NaN/inf) in "
                              f"{len(bad)} tensor(s), e.g. {bad[0]}; re-export it from an "
                              "intact checkpoint")
        cfg = config_from_dict(manifest["config"])
        meta = manifest["checkpoint_meta"]
        det = detector_from_state(weights, cfg, meta)
        _check_kinds(weights, det, path)
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
    from lorefd.checkpoint import CheckpointError

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
                  half: bool = False, tta: str | None = None) -> dict[str, Any]:
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
    try:
        det = detector_from_state(weights, cfg, meta, device)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"incompatible detector checkpoint {path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    return Bundle(detector=det, manifest=manifest, path=path, source="checkpoint")


__all__ = ["BUNDLE_VERSION", "FORMAT", "SUFFIX", "Bundle", "BundleError", "bundle_preprocess",
           "default_preprocess", "export_bundle", "load_model", "read_bundle_header", "resolve_model",
           "shipped_bundle", "write_bundle"]
