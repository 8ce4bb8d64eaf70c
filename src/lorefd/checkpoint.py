"""Atomic, resumable checkpoints.

A checkpoint is a folder::

    model.safetensors   weights (safetensors, loadable without pickle)
    config.json         the full Config, plus ``meta`` (kind, step, key region, ...)
    state.pt            optimiser, scheduler, scaler, RNG states and counters (resume only)

It is written into a temporary sibling folder and renamed into place, so a killed run leaves
the previous checkpoint intact. ``meta["kind"]`` names what it holds ("mae", "detector").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lorefd.config import Config, config_from_dict

WEIGHTS, CONFIG, STATE = "model.safetensors", "config.json", "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or of the wrong kind."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
        (tmp / CONFIG).write_text(json.dumps({"config": config.to_dict(), "meta": meta},
                                             indent=2, sort_keys=True, default=str))
        if state is not None:
            torch.save(state, tmp / STATE)
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


def read_checkpoint_info(path: str | Path) -> tuple[Config, dict[str, Any]]:
    """``(config, meta)`` of a checkpoint folder, without loading weights."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS, CONFIG):
        path = path.parent
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        # an interrupted replace leaves the previous checkpoint in ".NAME.old"
        old = path.with_name(f".{path.name}.old") / CONFIG
        if old.is_file():
            cfg_file = old
        else:
            raise CheckpointError(f"not a lorefd checkpoint (no {CONFIG}): {path}")
    try:
        data = json.loads(cfg_file.read_text())
        return config_from_dict(data["config"]), data["meta"]
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {exc}") from exc


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: str = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """``(weights, config, meta)``; checks ``meta["kind"]`` when ``kind`` is given."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    config, meta = read_checkpoint_info(path)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    try:
        weights = load_file(str(path / WEIGHTS), device=map_location)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read weights of {path}: {exc}") from exc
    return weights, config, meta


def load_state(path: str | Path) -> dict[str, Any]:
    """The resume state (optimiser, scheduler, RNG, counters) of a checkpoint."""
    f = Path(path) / STATE
    if not f.is_file():
        raise CheckpointError(f"{path} has no resume state ({STATE})")
    return torch.load(f, map_location="cpu", weights_only=False)
