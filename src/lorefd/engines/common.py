"""Training plumbing shared by both stages, so that both have one shape.

* :func:`distributed_run`: the process group of a run, left in a ``finally``;
* :func:`build_optimizer`: Adam and its warm-up / schedule from the stage's config section;
* :func:`wrap_model`: DDP across ranks, then ``torch.compile``;
* :func:`resume_point` and :class:`CheckpointSaver`: the run layout (``OUT/last`` = the resume
  point, ``OUT/best`` = the weights to use), atomic and checksummed;
* :class:`RunLogger`: ``metrics.jsonl`` and ``tb/``; devices, bf16, finite-loss checks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lorefd.checkpoint import (
    STATE,
    CheckpointError,
    check_resumable,
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


@contextlib.contextmanager
def distributed_run(device: str | None = None) -> Iterator[DistInfo]:
    """:func:`init_distributed` for the length of a run: the process group it joins is left in
    a ``finally``, on success and on any error alike (one the caller had already joined is
    the caller's, and is left alone)."""
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device)
    try:
        yield info
    finally:
        if owns_group:
            cleanup_distributed()


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

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def build_optimizer(params: Iterable[torch.nn.Parameter], oc: Any, device: torch.device,
                    total_steps: int = 1
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (Section IV-B, both stages) over ``params`` with the stage's config section ``oc``
    (``cfg.pretrain`` or ``cfg.train``): ``lr``, ``weight_decay``, default betas, fused on
    CUDA (one kernel for all parameters instead of several per tensor); the learning rate
    warms up linearly over ``oc.warmup_steps``, then follows ``oc.schedule`` (constant when
    the section has none, as stage 1's) to ``total_steps``."""
    opt = torch.optim.Adam(params, lr=oc.lr, weight_decay=oc.weight_decay,
                           fused=device.type == "cuda")
    schedule = getattr(oc, "schedule", "constant")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(oc.warmup_steps, total_steps, schedule))
    return opt, sched


def compile_mode(mode: str | None) -> str | None:
    """A config's ``compile_mode`` as ``torch.compile`` takes it (``None`` for the default)."""
    return None if mode in (None, "", "default") else mode


def wrap_model(model: torch.nn.Module, dist_info: DistInfo, use_compile: bool = False,
               mode: str | None = None) -> torch.nn.Module:
    """The module the training steps call, the same for both stages: DDP across ranks first,
    then ``torch.compile`` (``mode``: see :func:`compile_mode`) of that.

    This order because it is the one PyTorch documents for compiling DDP
    (``torch._dynamo.config.optimize_ddp``: "how to optimize a compiled DDP module"): Dynamo
    then splits the graph at DDP's gradient buckets so that the all-reduce of one bucket
    overlaps the backward of the next, and its compiled-autograd reducer needs the DDP module
    compiled. Weights are saved from :func:`unwrap`, so the order changes no checkpoint."""
    wrapped = model
    if dist_info.distributed:
        dev = dist_info.device
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return torch.compile(wrapped, mode=compile_mode(mode)) if use_compile else wrapped


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


# ---- the run layout, the same for both stages -------------------------------------------------
LAST, BEST = "last", "best"  # OUT/last: the resume point; OUT/best: the weights to use
CONFIG_FILE = "config.yaml"  # the resolved config (not config.json: that marks a checkpoint)


def _present(path: Path) -> bool:
    """A checkpoint folder is there, or the previous one that an interrupted replace left."""
    return path.exists() or path.with_name(f".{path.name}.old").exists()


def resume_point(out_dir: Path, resume: bool, allow_unchecksummed: bool = False,
                 legacy: tuple[str, str] | None = None) -> Path | None:
    """The checkpoint a run into ``out_dir`` continues from; None for a new run.

    With ``resume``: ``OUT/last``, else the resume point of ``legacy`` (an older layout's
    ``(resume point, final weights)``, e.g. stage 1's ``("checkpoints/last", "mae")``); with
    neither the run starts anew, with a warning. Its resume state and checksum are checked
    here, before any slow work (:func:`~lorefd.checkpoint.check_resumable`). Without
    ``resume``, a folder that already holds a run (``last/``, ``best/`` or ``legacy``'s) is a
    :class:`FileExistsError`."""
    old = list(legacy or ())
    if resume:
        found = next((out_dir / p for p in [LAST, *old[:1]] if _present(out_dir / p)), None)
        if found is None:
            log.warning("--resume: %s has no checkpoint yet; starting a new run", out_dir)
        else:
            check_resumable(found, allow_unchecksummed)
        return found
    if any(_present(out_dir / p) for p in [LAST, BEST, *old]):
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume (resume=True) to "
                              "continue it or choose another --out")
    return None


def write_run_config(out_dir: Path, cfg: Config, enabled: bool = True) -> None:
    """``OUT/config.yaml``: the resolved config of the run (main process only)."""
    if enabled:
        import yaml

        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


@dataclass
class CheckpointSaver:
    """The two checkpoints of a run, one saver for both stages:

    * ``OUT/last``: weights, config/meta and the full resume state (optimiser, scheduler, RNG,
      step, epoch and :attr:`extra`), replaced at every :meth:`save_last`;
    * ``OUT/best``: weights and config/meta only, what ``--model RUN`` / ``--mae RUN`` load.
      :meth:`update` (an epoch end) writes it when ``record[metric]`` is the highest so far,
      or while there has been no value (the latest epoch: stage 2 without validation);
      :meth:`save_best` writes it as it is (stage 1: the final weights).

    Both are written atomically with SHA-256 checksums (:func:`~lorefd.checkpoint.save_checkpoint`).
    Weights that are not finite are never written (:class:`NonFiniteLossError`: the last good
    checkpoint is kept). Only an ``enabled`` saver (the main process) writes; :attr:`extra`
    keeps the best value (:attr:`best_key`), its epoch, the epoch records (``history``) and
    what the engine adds, and comes back with :meth:`restore`."""

    out_dir: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    cfg: Config
    meta: dict[str, Any]
    kind: str  # what meta["kind"] a resume point must be: "mae" or "detector"
    metric: str | None = None  # the epoch-record entry best/ is chosen by (higher is better)
    enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.metric is not None:
            self.extra = {self.best_key: None, "best_epoch": None, "history": [], **self.extra}

    @property
    def best_key(self) -> str:
        """Where :attr:`extra` keeps the best value: ``best_auc`` for the metric ``val_auc``."""
        return "best_" + (self.metric or "value").removeprefix("val_")

    def _check_finite(self, step: int) -> None:
        for name, p in unwrap(self.model).named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise NonFiniteLossError(f"weights became NaN/inf ({name}) by step {step}; "
                                         "stopping (the last good checkpoint is kept)")

    def save_last(self, step: int, epoch: int, **extra: Any) -> Path:
        """``OUT/last`` with the resume state; ``extra`` joins :attr:`extra`."""
        self._check_finite(step)
        self.extra.update(extra)
        if self.enabled:
            save_training_checkpoint(self.out_dir / LAST, self.model, self.optimizer,
                                     self.scheduler, self.cfg, self.meta, step, epoch,
                                     extra=self.extra)
        return self.out_dir / LAST

    def save_best(self, step: int, epoch: int, **meta: Any) -> Path:
        """``OUT/best``: the weights now, with ``meta`` added to the run's."""
        self._check_finite(step)
        if self.enabled:
            save_checkpoint(self.out_dir / BEST, unwrap(self.model), self.cfg,
                            {**self.meta, "step": step, "epoch": epoch, **meta})
        return self.out_dir / BEST

    def update(self, step: int, epoch: int, record: dict[str, Any]) -> bool:
        """An epoch end: ``record`` joins the history; ``OUT/best`` (its meta ``val`` = the
        record) if it improves; then ``OUT/last``. Returns whether best/ was written."""
        value, best = record.get(self.metric) if self.metric else None, self.extra.get(self.best_key)
        improved = best is None if value is None else (best is None or value > best)
        self.extra.setdefault("history", []).append(record)
        if improved:
            self.extra[self.best_key], self.extra["best_epoch"] = value, epoch
            self.save_best(step, epoch, val=record)
        self.save_last(step, epoch)
        return improved

    def restore(self, path: Path, allow_unchecksummed: bool = False) -> dict[str, Any]:
        """Weights, optimiser, scheduler, RNG and :attr:`extra` from the resume point ``path``
        (:func:`resume_point`); returns ``{"step", "epoch", "extra"}``. The metrics log is cut
        back to that step."""
        state = restore_training_state(path, self.model, self.optimizer, self.scheduler,
                                       kind=self.kind, allow_unchecksummed=allow_unchecksummed)
        if not isinstance(state["extra"].get("history", []), list):
            raise CheckpointError(f"resume state {path}: its validation history is not a "
                                  "list: not resumed")
        self.extra.update(state["extra"])
        if self.enabled:
            truncate_metrics(self.out_dir / "metrics.jsonl", state["step"])
        return state
