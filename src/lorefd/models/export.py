"""Writing a ``.lorefd`` bundle from a training run or a detector checkpoint (``lorefd export``).

The manifest is built by :func:`lorefd.models.bundle_manifest.detector_manifest`, the file
written by :func:`lorefd.models.bundle_file.write_bundle`; the format is described in
:mod:`lorefd.models.bundle`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorefd.models.bundle import DETECTOR_KIND, checkpoint_folder, load_bundle_file
from lorefd.models.bundle_file import BundleError, write_bundle
from lorefd.models.bundle_manifest import detector_manifest, with_tta


def export_bundle(run: str | Path, out_path: str | Path, threshold: float | None = None,
                  preprocess: dict[str, Any] | None = None, verify: bool = True,
                  half: bool = False, tta: str | None = None,
                  threshold_rule: str | None = None) -> dict[str, Any]:
    """Write the single-file bundle of a training run or detector checkpoint.

    ``threshold`` overrides the decision threshold (else the run's validation threshold if it
    recorded one, else ``train.threshold`` of its config, 0.5 by default; the source is
    stored). The face pipeline (crop ``size``, template ``margin``, face detector) is the one
    the run recorded for its training data
    (:func:`~lorefd.models.bundle_manifest.bundle_preprocess`); ``preprocess`` overrides
    entries (a warning where they differ from the recorded ones). With ``verify`` the written
    bundle is loaded back once. ``half`` stores float weights as float16 (half the size;
    loading casts them back to float32). ``tta`` sets ``detector.tta`` (the test-time flip)
    in the bundle's config (default: the run's). Returns the stored manifest.
    """
    import torch

    from lorefd.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info

    ckpt = checkpoint_folder(run)
    cfg, meta = read_checkpoint_info(ckpt)
    if meta.get("kind") != DETECTOR_KIND:
        raise CheckpointError(f"{ckpt} holds a {meta.get('kind')!r} checkpoint, expected a "
                              "'detector' (from `lorefd train`)")
    weights, cfg, meta = load_checkpoint(ckpt, kind=DETECTOR_KIND)  # checksums, finite values
    if tta is not None:
        cfg, meta = with_tta(cfg, tta), {**meta, "tta": tta}
    manifest = detector_manifest(ckpt, weights, cfg, meta, threshold, preprocess)
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
        load_bundle_file(out_path)
    return stored


__all__ = ["export_bundle"]
