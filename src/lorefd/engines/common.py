"""Training plumbing shared by both stages: devices, DDP, bf16, logging, resumable checkpoints."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lorefd.checkpoint import (
    STATE,
    CheckpointError,
    load_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lorefd.config import Config
from lorefd.errors import UserError
from lorefd.utils import append_jsonl, atomic_write_text, pick_device

log = logging.getLogger("lorefd")


@dataclass
class DistInfo:
    """Where this process runs. ``world_size == 1`` without ``torchrun``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if world > 1:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if want_cuda:
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
        return DistInfo(rank, world, local, dev)
    return DistInfo(device=pick_device(device))


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN/inf; the run stops and the last good checkpoint is kept."""


def check_finite(loss: torch.Tensor, step: int) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss is {value} at step {step}; stopping (the last good checkpoint is kept). "
            "Lower the learning rate or check the inputs.")
    return value


class RunLogger:
    """TensorBoard scalars plus ``metrics.jsonl`` in the run folder (main process only).

    ``tb/`` is made with the first record, so a run refused before it logs anything leaves
    no empty TensorBoard folder behind."""

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "metrics.jsonl"
        self.writer: Any = None

    def log(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"))
        append_jsonl(self.path, {"step": step, "split": prefix, **metrics})
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def lr_lambda(warmup_steps: int, total_steps: int, schedule: str = "constant"
              ) -> Callable[[int], float]:
    """The learning-rate factor of optimiser step ``s`` (for ``LambdaLR``): linear warm-up over
    ``warmup_steps``, then constant (the paper) or cosine decay to 0 at ``total_steps``."""
    warm, total = max(0, int(warmup_steps)), max(1, int(total_steps))

    def factor(s: int) -> float:
        if warm and s < warm:
            return (s + 1) / warm
        if schedule == "cosine":
            t = min(1.0, (s - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0
    return factor


def save_training_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler: Any, config: Config, meta: dict[str, Any], step: int,
                             epoch: int, extra: dict[str, Any] | None = None) -> Path:
    """Weights + config + everything needed to resume exactly (optimiser, scheduler, RNG)."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "step": step,
        "epoch": epoch,
        "extra": extra or {},
    }
    return save_checkpoint(path, unwrap(model), config, {**meta, "step": step, "epoch": epoch}, state)


# what a resume state must hold, and of which type (save_training_checkpoint writes them)
RESUME_KEYS = {"optimizer": dict, "rng": dict, "step": int, "epoch": int}


def restore_training_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any = None, kind: str | None = None,
                           allow_unchecksummed: bool = False) -> dict[str, Any]:
    """Load weights and resume state saved by :func:`save_training_checkpoint`.

    A state without one of :data:`RESUME_KEYS`, or one the optimiser, scheduler or random
    generators cannot take, is a :class:`~lorefd.checkpoint.CheckpointError` naming it (no
    partial resume); ``allow_unchecksummed``: see :func:`~lorefd.checkpoint.load_state`."""
    weights, _, _ = load_checkpoint(path, kind=kind)
    state = load_state(path, allow_unchecksummed=allow_unchecksummed)
    where = Path(path) / STATE
    for key, kind_ in RESUME_KEYS.items():
        if not isinstance(state.get(key), kind_) or isinstance(state.get(key), bool):
            raise CheckpointError(f"resume state {where} lacks {key!r} (or it is not a "
                                  f"{kind_.__name__}): not resumed")
    try:
        unwrap(model).load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise CheckpointError(f"resume state {where} does not fit this run: "
                              f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    extra = state.get("extra")
    return {"step": state["step"], "epoch": state["epoch"],
            "extra": extra if isinstance(extra, dict) else {}}


def truncate_metrics(path: Path, step: int) -> None:
    """Drop ``metrics.jsonl`` records after the resume step (an interrupted run's tail), so a
    resumed run never lists a step twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(f"{ln}\n" for ln in keep))
