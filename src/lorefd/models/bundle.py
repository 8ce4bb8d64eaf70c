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
runtimes (:func:`~lorefd.models.bundle_check.check_manifest`), the reference face stored at
export is scored again and must get its recorded score
(:func:`~lorefd.models.bundle_check.check_reference`), and the shipped model must have the
digest this lorefd pins (:data:`SHIPPED_MANIFEST_SHA256`). Version 1 bundles had no
``tensors_sha256``: they are refused with the command that re-seals them (``lorefd export
OLD.lorefd --out NEW.lorefd`` verifies the old payload and writes a version 2 bundle).

This module loads a detector from what ``--model`` names (:func:`resolve_model`,
:func:`load_bundle`); the file level is :mod:`lorefd.models.bundle_file`, the checks
:mod:`lorefd.models.bundle_check`, the manifest of a checkpoint
:mod:`lorefd.models.bundle_manifest` and writing one :mod:`lorefd.models.export`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorefd.models.bundle_check import REFERENCE_KEY, check_manifest, check_reference
from lorefd.models.bundle_file import (  # the file level, re-exported here
    BUNDLE_VERSION,
    FORMAT,
    RESERVED_PREFIX,
    SUFFIX,
    BundleError,
    write_bundle,
)
from lorefd.models.bundle_file import read_bundle_header as _read_file_header
from lorefd.models.bundle_manifest import detector_manifest
from lorefd.version import __version__

if TYPE_CHECKING:  # torch is imported where weights are read (not by the ONNX runtime path)
    import torch

    from lorefd.models.detectors.base import Detector

DETECTOR_KIND = "detector"  # lorefd.models.detectors.base.KIND
CONFIG, WEIGHTS = "config.json", "model.safetensors"  # lorefd.checkpoint's file names


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
SHIPPED_MANIFEST_SHA256 = "2991a3f38a091121b52a261030e309151f470cb0e0824d1eb6eafed21db52dcf"


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


def load_bundle_file(path: str | Path, device: torch.device | str = "cpu", old: bool = False
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


# ------------------------------------------------------------------------------ --model
def checkpoint_folder(run: str | Path) -> Path:
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
        return checkpoint_folder(path)
    raise BundleError(f"model not found: {spec} (a .lorefd bundle, a run folder or a "
                      "checkpoint folder)")


def load_bundle(spec: str | Path | None, device: torch.device | str = "cpu",
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
        return load_bundle_file(path, device, old=old)
    cfg, meta = read_checkpoint_info(path)
    if meta.get("kind") != DETECTOR_KIND:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected a "
                              "detector (a run of `lorefd train`, its best/ or a bundle)")
    weights, cfg, meta = load_checkpoint(path, kind=DETECTOR_KIND)
    manifest = {"format": FORMAT, "bundle_version": BUNDLE_VERSION,
                "lorefd_version": __version__, "created": None, "payload_sha256": None,
                "num_tensors": len(weights),
                **detector_manifest(path, weights, cfg, meta, None, None, warn)}
    check_manifest(manifest, path)  # what the run recorded (meta.preprocess) is checked too
    try:
        det = detector_from_state(weights, cfg, meta, device)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"incompatible detector checkpoint {path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    return Bundle(detector=det, manifest=manifest, path=path, source="checkpoint")


def load_model(spec: str | Path | None, device: torch.device | str = "cpu",
               warn: bool = False, old: bool = False) -> Bundle:
    """Deprecated name of :func:`load_bundle` (it returns a :class:`Bundle` for a checkpoint
    folder too)."""
    warnings.warn("lorefd.models.bundle.load_model is deprecated; use load_bundle",
                  DeprecationWarning, stacklevel=2)
    return load_bundle(spec, device, warn=warn, old=old)


__all__ = ["BUNDLE_VERSION", "CONFIG", "DETECTOR_KIND", "FORMAT", "RESERVED_PREFIX",
           "SHIPPED_BUNDLE", "SHIPPED_MANIFEST_SHA256", "SUFFIX", "WEIGHTS", "Bundle",
           "BundleError", "checkpoint_folder", "load_bundle", "load_bundle_file", "load_model",
           "read_bundle_header", "resolve_model", "shipped_bundle", "write_bundle"]
