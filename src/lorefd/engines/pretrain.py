"""Stage 1: train the key-region MAE on real faces (Section III-B, setup of Section IV-B).

The run folder ``OUT`` has the layout of a stage-2 run (:mod:`lorefd.engines.common`)::

    last/               resume point (kind "mae"; weights + config/meta + optimiser/RNG state),
                        every ``pretrain.ckpt_every`` steps and at every epoch end
    best/               the final weights (kind "mae"), what ``--mae OUT`` loads; stage 1 has
                        no validation loss, and its training loss, a mean over a few batches
                        each drawn with other masks, ranks no checkpoint: best = the last step
    key_region.json     P1..P4, the rectangle and T
    config.yaml         the resolved config
    metrics.jsonl, tb/  training curves
    summary.json        the returned summary

A folder of the older layout (``checkpoints/last/``, ``mae/``: :data:`LEGACY`) still resumes
(the run continues into ``last/`` and ``best/``) and still loads as ``--mae OUT``.

Each step of the method is a named function: :func:`prepare_pretrain_samples` (real faces
with landmarks), :func:`compute_key_region` (Section III-B-1), :func:`build_pretrain_loader`,
:func:`sample_masks` and :func:`pretrain_step` (Eq. 1), tied together by :func:`pretrain`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from lorefd.checkpoint import read_checkpoint_info
from lorefd.config import Config, ConfigError
from lorefd.data.dataset import FaceDataset
from lorefd.data.keyregion import (
    KeyRegion,
    sample_key_masks,
)
from lorefd.data.manifest import Sample
from lorefd.data.stage1 import (
    EmptyDatasetError,
    compute_key_region,
    key_region_record,
    prepare_pretrain_samples,
)
from lorefd.engines.common import (
    BEST,
    LAST,
    CheckpointSaver,
    DistInfo,
    RunLogger,
    autocast,
    build_optimizer,
    check_finite,
    distributed_run,
    resume_point,
    wrap_model,
    write_run_config,
)
from lorefd.models.mae import KeyRegionMAE, build_mae, count_parameters
from lorefd.utils import atomic_write_json, seed_everything

log = logging.getLogger("lorefd")

# stage 1's run layout before it took stage 2's: (resume point, final weights); still read
LEGACY = ("checkpoints/last", "mae")


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` whose order is a function of ``(seed, epoch)`` only and
    that can skip the batches an interrupted epoch already did."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.start)


def build_pretrain_loader(samples: list[Sample], cfg: Config, dist: DistInfo | None = None
                          ) -> tuple[DataLoader, ResumableSampler]:
    """Loader of ``[0, 1]`` crops and normalised landmarks; no flip or jitter in stage 1, only
    ``data.augment: robust``'s random degradations (real faces at lower quality)."""
    dist = dist or DistInfo()
    dataset = FaceDataset(samples, cfg.data.image_size, augment=False, seed=cfg.pretrain.seed,
                          perturb=cfg.data.augment == "robust")
    sampler = ResumableSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                               shuffle=True, seed=cfg.pretrain.seed, drop_last=False)
    per_rank = len(sampler)
    workers = cfg.data.num_workers
    loader = DataLoader(
        dataset, batch_size=cfg.pretrain.batch_size, sampler=sampler, num_workers=workers,
        pin_memory=dist.device.type == "cuda", drop_last=per_rank >= cfg.pretrain.batch_size,
        persistent_workers=False, prefetch_factor=4 if workers else None)
    return loader, sampler


# ---- one step ----------------------------------------------------------------------------------
def mask_generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device)


def sample_masks(model: KeyRegionMAE, batch_size: int, generator: torch.Generator,
                 landmarks: torch.Tensor | None = None, region: str = "dataset",
                 margin: float = 0.02) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Key-region masks for one batch (Section III-B-1): the dataset T, or each face's own."""
    if region == "sample":
        if landmarks is None:
            raise ValueError("mask.region=sample needs the batch landmarks")
        key = sample_key_masks(landmarks, model.image_size, model.patch_size, margin)
    elif region == "dataset":
        key = None  # the model's dataset T
    else:
        raise ConfigError(f"mask.region must be 'dataset' or 'sample', got {region!r}")
    return model.key_region_masking(batch_size, key, generator)


def pretrain_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                  imgs: torch.Tensor, masking: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  amp: bool = True) -> torch.Tensor:
    """One optimiser step on Eq. (1); returns the detached loss (no host sync)."""
    with autocast(imgs.device, amp):
        loss, _, _ = model(imgs, masking=masking)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Mask randomness of a step: a function of (seed, step, rank), so resume is exact."""
    return (seed * 1_000_003 + step) * 1_009 + rank


# ---- the run -----------------------------------------------------------------------------------
def pretrain(cfg: Config, data: str | Path | list[Sample], out_dir: str | Path,
             resume: bool = False, device: str | None = None,
             allow_unchecksummed: bool = False) -> dict[str, Any]:
    """Train stage 1 and return a summary dict (also written to ``OUT/summary.json``).

    Callable from Python (the demo) and from ``lorefd pretrain`` / ``torchrun``. With
    ``resume`` the run continues exactly from ``OUT/last`` (or an older layout's
    ``OUT/checkpoints/last``): model, optimiser, scheduler, RNG, data position, step. Raises
    :class:`EmptyDatasetError` before building a model when no real face is usable, and
    :class:`NonFiniteLossError` on a NaN/inf loss (the last good checkpoint is kept). A
    resume state is read without running code and, unless ``allow_unchecksummed``, only with
    its checksum recorded (:func:`~lorefd.checkpoint.load_state`).
    """
    out = Path(out_dir)
    with distributed_run(device) as dist:
        resume_from = resume_point(out, resume, allow_unchecksummed, legacy=LEGACY)
        samples, skipped = prepare_pretrain_samples(data, cfg, out, verbose=dist.is_main)
        if resume_from is not None:
            saved, meta = read_checkpoint_info(resume_from)
            _warn_resume_changes(saved, cfg, meta, dist)
            region = KeyRegion.from_dict(meta["key_region"])
            patch_set = list(meta["key_patches"])
        else:
            region, patch_set = compute_key_region(samples, cfg)
        record = key_region_record(region, patch_set, cfg)
        if dist.is_main:
            write_run_config(out, cfg)
            atomic_write_json(out / "key_region.json", record)
            log.info("key region %s (margin %.3f): |T| = %d of %d patches",
                     tuple(round(v, 3) for v in region.rect), region.margin, len(patch_set),
                     (cfg.data.image_size // cfg.mask.patch_size) ** 2)
        return _train(cfg, samples, skipped, record, out, resume_from, dist, allow_unchecksummed)


def _warn_resume_changes(saved: Config, cfg: Config, meta: dict[str, Any], dist: DistInfo) -> None:
    """Exact resume needs the same data order and masks: say which settings changed."""
    keys = [("pretrain", "seed"), ("pretrain", "batch_size"), ("data", "image_size"),
            ("mask", "patch_size"), ("mask", "mask_ratio"), ("mask", "region"),
            ("mask", "random_fraction"), ("pretrain", "lr")]
    changed = [f"{a}.{b}: {getattr(getattr(saved, a), b)} -> {getattr(getattr(cfg, a), b)}"
               for a, b in keys if getattr(getattr(saved, a), b) != getattr(getattr(cfg, a), b)]
    if meta.get("world_size", dist.world_size) != dist.world_size:
        changed.append(f"world size: {meta['world_size']} -> {dist.world_size}")
    if changed and dist.is_main:
        log.warning("resuming with changed settings (the run continues, but not exactly as "
                    "the original would have): %s", "; ".join(changed))


@dataclass
class Progress:
    """Where stage 1 stands: optimiser steps, epoch, batches done in it (the resume point),
    the last logged loss and the images counted into the throughput."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    last_loss: float = float("nan")
    images: int = 0


def pretrain_one_epoch(model: KeyRegionMAE, train_model: torch.nn.Module, loader: DataLoader,
                       optimizer: torch.optim.Optimizer, scheduler: Any, cfg: Config,
                       prog: Progress, steps_per_epoch: int, max_steps: int, logger: RunLogger,
                       saver: CheckpointSaver, dist: DistInfo, bar: Any) -> None:
    """The rest of epoch ``prog.epoch`` from batch ``prog.batch_in_epoch`` (Eq. 1 on
    key-region masks seeded by step, so resume is exact), up to ``max_steps``; logs every
    ``pretrain.log_every`` steps and writes ``OUT/last`` every ``pretrain.ckpt_every``, at the
    epoch end and at ``max_steps``."""
    pc, device = cfg.pretrain, dist.device
    gen = mask_generator(device)
    window = torch.zeros((), device=device)
    window_n, seen, t0 = 0, 0, time.perf_counter()
    for batch in loader:
        imgs = batch["image"].to(device, non_blocking=True)
        gen.manual_seed(_step_seed(pc.seed, prog.step, dist.rank))
        lms = batch["landmarks"].to(device, non_blocking=True) if cfg.mask.region == "sample" else None
        masking = sample_masks(model, imgs.shape[0], gen, lms, cfg.mask.region, cfg.mask.margin)
        window += pretrain_step(train_model, optimizer, scheduler, imgs, masking, pc.amp)
        prog.step += 1
        prog.batch_in_epoch += 1
        window_n += 1
        seen += imgs.shape[0]
        bar.update(1)
        at_end = prog.step >= max_steps or prog.batch_in_epoch == steps_per_epoch
        if prog.step % pc.log_every == 0 or prog.step % pc.ckpt_every == 0 or at_end:
            if dist.distributed:
                torch.distributed.all_reduce(window)
                window /= dist.world_size
            prog.last_loss = check_finite(window / window_n, prog.step)
            ips = seen * dist.world_size / max(time.perf_counter() - t0, 1e-9)
            logger.log(prog.step, {"loss": prog.last_loss, "lr": optimizer.param_groups[0]["lr"],
                                   "epoch": prog.epoch, "img_per_s": ips})
            bar.set_postfix(loss=f"{prog.last_loss:.4f}", ips=f"{ips:.0f}")
            prog.images += seen
            window.zero_()
            window_n, seen, t0 = 0, 0, time.perf_counter()
        if prog.batch_in_epoch == steps_per_epoch:  # epoch end: a resume starts the next one
            saver.save_last(prog.step, prog.epoch + 1, batch_in_epoch=0)
        elif prog.step % pc.ckpt_every == 0 or prog.step >= max_steps:
            saver.save_last(prog.step, prog.epoch, batch_in_epoch=prog.batch_in_epoch)
        if prog.step >= max_steps:
            break
    if prog.batch_in_epoch == steps_per_epoch:
        prog.epoch += 1
        prog.batch_in_epoch = 0


def _train(cfg: Config, samples: list[Sample], skipped: Counter, record: dict[str, Any],
           out: Path, resume_from: Path | None, dist: DistInfo, allow_unchecksummed: bool = False
           ) -> dict[str, Any]:
    pc, device = cfg.pretrain, dist.device
    seed_everything(pc.seed)
    model = build_mae(cfg.data.image_size, cfg.mae, cfg.mask)
    model.set_key_patches(record["key_patches"])
    model.to(device)
    loader, sampler = build_pretrain_loader(samples, cfg, dist)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise EmptyDatasetError("no batch per epoch; lower pretrain.batch_size")
    total = pc.epochs * steps_per_epoch
    max_steps = min(total, pc.max_steps) if pc.max_steps is not None else total
    optimizer, scheduler = build_optimizer(model.parameters(), pc, device, max_steps)
    meta = {"kind": "mae", **record, "world_size": dist.world_size}
    saver = CheckpointSaver(out, model, optimizer, scheduler, cfg, meta, kind="mae",
                            enabled=dist.is_main)
    prog = (Progress() if resume_from is None
            else _restore(saver, resume_from, dist, allow_unchecksummed))
    train_model = wrap_model(model, dist, pc.compile, pc.compile_mode)
    if dist.is_main:
        log.info("stage 1: %s params, %d faces, %d steps/epoch, %d steps, batch %d x %d, %s%s",
                 count_parameters(model), len(samples), steps_per_epoch, max_steps,
                 pc.batch_size, dist.world_size, device, " (bf16)" if pc.amp and device.type == "cuda" else "")
    from tqdm import tqdm

    bar = tqdm(total=max_steps, initial=prog.step, disable=not dist.is_main, unit="step",
               desc="pretrain", dynamic_ncols=True)
    t_start = time.perf_counter()
    model.train()
    with RunLogger(out, enabled=dist.is_main) as logger:
        try:
            while prog.step < max_steps:
                sampler.set_epoch(prog.epoch)
                loader.dataset.set_epoch(prog.epoch)  # new degradations each epoch (data.augment: robust)
                sampler.set_start(prog.batch_in_epoch * pc.batch_size)
                pretrain_one_epoch(model, train_model, loader, optimizer, scheduler, cfg, prog,
                                   steps_per_epoch, max_steps, logger, saver, dist, bar)
        finally:
            bar.close()
    return _finish(out, saver, prog, samples, skipped, loader, steps_per_epoch,
                   time.perf_counter() - t_start, dist)


def _restore(saver: CheckpointSaver, path: Path, dist: DistInfo,
             allow_unchecksummed: bool = False) -> Progress:
    """Model, optimiser, scheduler and RNG from the resume point ``path``, and where it stood."""
    state = saver.restore(path, allow_unchecksummed)
    prog = Progress(step=state["step"], epoch=state["epoch"],
                    batch_in_epoch=state["extra"].get("batch_in_epoch", 0))
    if dist.is_main:
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, prog.step,
                 prog.epoch, prog.batch_in_epoch)
    return prog


def _finish(out: Path, saver: CheckpointSaver, prog: Progress, samples: list[Sample],
            skipped: Counter, loader: DataLoader, steps_per_epoch: int, elapsed: float,
            dist: DistInfo) -> dict[str, Any]:
    """The final weights (``OUT/best``) and the summary (``OUT/summary.json``)."""
    summary = {
        "out": str(out), "best": str(out / BEST), "last": str(out / LAST),
        "steps": prog.step, "epoch": prog.epoch, "steps_per_epoch": steps_per_epoch,
        "final_loss": prog.last_loss, "num_samples": len(samples), "skipped": dict(skipped),
        "load_failures": dict(loader.dataset.failures),
        "images_per_s": prog.images / max(elapsed, 1e-9),
        "world_size": dist.world_size, "device": str(dist.device),
        "key_patches": len(saver.meta["key_patches"]),
    }
    saver.save_best(prog.step, prog.epoch)
    if dist.is_main:
        atomic_write_json(out / "summary.json", summary)
        log.info("stage 1 done: step %d, loss %.4f, %.1f img/s; weights in %s", prog.step,
                 prog.last_loss, summary["images_per_s"], out / BEST)
    return summary

__all__ = ["LEGACY", "Progress", "build_pretrain_loader", "pretrain", "pretrain_one_epoch",
           "pretrain_step", "sample_masks"]
