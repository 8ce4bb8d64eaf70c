"""Atomic, resumable checkpoints.

A checkpoint is a folder::

    model.safetensors   weights (safetensors, loadable without pickle)
    config.json         the full Config, plus ``meta`` (kind, step, key region, ...) and
                        ``checksums`` (SHA-256 of model.safetensors and state.pt)
    state.pt            optimiser, scheduler, scaler, RNG states and counters (resume only):
                        tensors and plain data, read with ``torch.load(weights_only=True)``

It is written into a temporary sibling folder and renamed into place, so a killed run leaves
the previous checkpoint intact. ``meta["kind"]`` names what it holds ("mae", "detector").
Loading verifies the checksums (checkpoints of older lorefd versions have none) and refuses
weights that are not finite, so a damaged file is a :class:`CheckpointError` naming it, never
a model that scores NaN. Resume state is never unpickled as code: ``state.pt`` is read with
PyTorch's weights-only unpickler (tensors, numbers, strings, lists, dicts; numpy arrays of
older runs through an explicit allow-list), so a crafted file is refused, not run. A resume
state without a recorded checksum is refused unless the caller allows it
(``allow_unchecksummed``; ``lorefd train/pretrain --allow-unchecksummed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lorefd.config import Config, config_from_dict
from lorefd.errors import CheckpointError

WEIGHTS, CONFIG, STATE = "model.safetensors", "config.json", "state.pt"
_CHUNK = 1 << 22
log = logging.getLogger("lorefd")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def nonfinite_tensors(weights: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [k for k, v in weights.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def rng_state() -> dict[str, Any]:
    """The random generators' states as tensors and plain data (what ``weights_only``
    loading reads): numpy's key as a list of ints, not an array."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [name, [int(k) for k in key], int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]  # a list (this lorefd) or numpy's tuple
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _contiguous(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}


def save_checkpoint(path: str | Path, model: torch.nn.Module | dict[str, torch.Tensor],
                    config: Config, meta: dict[str, Any], state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (replacing an older one at ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = model if isinstance(model, dict) else model.state_dict()
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(_contiguous(weights), str(tmp / WEIGHTS))
        if state is not None:
            torch.save(state, tmp / STATE)
        sums = {name: file_sha256(tmp / name) for name in (WEIGHTS, STATE)
                if (tmp / name).is_file()}
        body = json.loads(json.dumps({"config": config.to_dict(), "meta": meta}, default=str))
        (tmp / CONFIG).write_text(json.dumps(
            {**body, "checksums": {**sums, CONFIG: _config_sha256(body)}},
            indent=2, sort_keys=True))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _config_sha256(data: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's config and meta, as canonical JSON (stored beside them)."""
    text = json.dumps({"config": data["config"], "meta": data["meta"]}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checkpoint_json(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder actually holding the files, and its parsed ``config.json``."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS, CONFIG, STATE):
        path = path.parent
    folder = path
    if not (folder / CONFIG).is_file():
        # an interrupted replace leaves the previous checkpoint in ".NAME.old"
        folder = path.with_name(f".{path.name}.old")
        if not (folder / CONFIG).is_file():
            raise CheckpointError(f"not a lorefd checkpoint (no {CONFIG}): {path}")
    try:
        data = json.loads((folder / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {folder / CONFIG}: {exc}") from exc
    if not isinstance(data, dict) or "config" not in data or "meta" not in data:
        raise CheckpointError(f"corrupt checkpoint {path}: {folder / CONFIG} lacks config/meta")
    expected = (data.get("checksums") or {}).get(CONFIG)
    if expected is not None and _config_sha256(data) != expected:
        raise CheckpointError(f"corrupt checkpoint {path}: the config or meta in {folder / CONFIG} "
                              "does not match its checksum (damaged or edited after saving)")
    return folder, data


def verify_file(folder: Path, name: str, checksums: dict[str, str] | None) -> None:
    """Check ``folder/name`` against the checksum stored with the checkpoint (if any)."""
    f = folder / name
    if not f.is_file():
        raise CheckpointError(f"checkpoint file missing: {f}")
    expected = (checksums or {}).get(name)
    if expected is None:
        log.debug("%s: no checksum recorded (checkpoint of an older lorefd)", f)
        return
    if file_sha256(f) != expected:
        raise CheckpointError(f"corrupt checkpoint file {f}: SHA-256 does not match the checksum "
                              f"in {folder / CONFIG} (damaged or changed after saving)")


def read_checkpoint_info(path: str | Path) -> tuple[Config, dict[str, Any]]:
    """``(config, meta)`` of a checkpoint folder, without loading weights."""
    _, data = _checkpoint_json(path)
    try:
        return config_from_dict(data["config"]), data["meta"]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {exc}") from exc


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: str = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """``(weights, config, meta)``; checks ``meta["kind"]`` when ``kind`` is given.

    The weights file is verified against its stored checksum and must hold finite numbers.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    config, meta = read_checkpoint_info(path)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    folder, data = _checkpoint_json(path)
    verify_file(folder, WEIGHTS, data.get("checksums"))
    try:
        weights = load_file(str(folder / WEIGHTS), device=map_location)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read weights of {path}: {exc}") from exc
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(f"corrupt checkpoint file {folder / WEIGHTS}: non-finite values "
                              f"(NaN/inf) in {len(bad)} tensor(s), e.g. {bad[0]}")
    return weights, config, meta


def _numpy_globals() -> list[Any]:
    """What a numpy array pickles as: older resume states hold numpy's RNG key as one."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy.core / numpy._core multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _load_weights_only(path: Path) -> Any:
    """``torch.load`` with PyTorch's weights-only unpickler (no code runs) and numpy arrays
    allowed."""
    scoped = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if scoped is None:  # pragma: no cover - torch 2.4
        torch.serialization.add_safe_globals(_numpy_globals())
        return torch.load(path, map_location="cpu", weights_only=True)
    with scoped(_numpy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def check_resumable(path: str | Path, allow_unchecksummed: bool = False) -> Path:
    """Before any work: ``path`` holds a resume state whose checksum is recorded (or
    ``allow_unchecksummed``); returns the state file. Cheap: reads ``config.json`` only."""
    folder, data = _checkpoint_json(path)
    state_file = folder / STATE
    if not state_file.is_file():
        raise CheckpointError(f"{path} has no resume state ({STATE})")
    if STATE not in (data.get("checksums") or {}) and not allow_unchecksummed:
        raise CheckpointError(
            f"{state_file} has no checksum in {folder / CONFIG} (a run of an older lorefd, or "
            "edited): not resumed; pass --allow-unchecksummed if you trust where this run "
            "folder comes from")
    return state_file


def load_state(path: str | Path, allow_unchecksummed: bool = False) -> dict[str, Any]:
    """The resume state (optimiser, scheduler, RNG, counters) of a checkpoint.

    Read without running code (:func:`_load_weights_only`): a ``state.pt`` holding anything
    but tensors and plain data is a :class:`CheckpointError`. A state whose checksum is not
    recorded in ``config.json`` (an older lorefd, or an edited folder) is refused unless
    ``allow_unchecksummed``."""
    state_file = check_resumable(path, allow_unchecksummed)
    folder, data = _checkpoint_json(path)
    verify_file(folder, STATE, data.get("checksums"))
    try:
        state = _load_weights_only(state_file)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a reference to {found.group(1)}" if found else "objects"
        raise CheckpointError(f"refused {state_file}: it holds {what}, not only tensors and "
                              "plain data (lorefd runs no code from a checkpoint)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint file {state_file}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"corrupt checkpoint file {state_file}: not a resume state "
                              f"(a {type(state).__name__})")
    return state
