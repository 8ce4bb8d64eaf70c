"""Stage-2 training engine (Section III-C; Section IV-B: Adam 1e-4, batch 32, 30 x 200 iterations).

Callable from Python without argparse::

    summary = train(cfg, train_samples, val_samples, mae_ckpt, out_dir, resume=False)

One epoch is ``train.iters_per_epoch`` optimiser steps drawn by a class-balanced sampler
(FF++ is 1 real : 4 fake). Validation AUC runs after every epoch. The run folder has stage 1's
layout (:mod:`lorefd.engines.common`): ``OUT/best`` keeps the best checkpoint by validation AUC
(the last epoch without one) and ``OUT/last`` the latest with the full resume state
(optimiser, RNG, counters), written atomically at each epoch end by the
:class:`~lorefd.engines.common.CheckpointSaver`; ``config.yaml``, ``metrics.jsonl``, ``tb/``
and ``summary.json`` beside them. ``--resume`` continues from ``OUT/last`` at the next epoch
exactly as an uninterrupted run would (same sampler seeds, same RNG). Under ``torchrun`` each
rank draws ``batch_size / world_size`` images per step (DDP).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler

from lorefd.config import Config, ConfigError
from lorefd.data.dataset import FaceDataset, validate_samples
from lorefd.data.manifest import (
    FAKE,
    REAL,
    ManifestError,
    Sample,
    check_files,
    describe,
    preprocess_record,
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
from lorefd.engines.predict import make_eval_loader, predict
from lorefd.metrics import accuracy_at, best_threshold, roc_auc
from lorefd.models.detectors import Detector, build_detector, detector_meta
from lorefd.models.mae import resolve_mae_checkpoint
from lorefd.utils import atomic_write_json, seed_everything

log = logging.getLogger("lorefd")


# ---- data ---------------------------------------------------------------------------------
def check_split(samples: list[Sample], what: str, need_both: bool = True) -> Counter:
    """Fail early on an empty split, missing files or (when required) a single class."""
    if not samples:
        raise ManifestError(f"{what}: no samples (empty split or filter)")
    check_files(samples, what)
    counts = Counter(s.label for s in samples)
    if need_both and (counts[REAL] == 0 or counts[FAKE] == 0):
        only = "real" if counts[FAKE] == 0 else "fake"
        raise ManifestError(f"{what}: only {only} samples ({describe(samples)}); "
                            "training needs both real and fake faces")
    return counts


def build_train_dataset(cfg: Config, samples: list[Sample]) -> Dataset:
    """The training set, by ``train.fakes``.

    * ``manifest``: the manifest's reals and fakes (:class:`FaceDataset`).
    * ``synth``: only the manifest's reals; fakes synthesised from them on the fly, new every
      epoch (``synth.fake_ratio`` of the items), so no deepfake data is needed.
    * ``both``: the manifest's reals and fakes plus one synthesised fake per real.
    """
    mode = cfg.train.fakes
    if mode not in ("manifest", "synth", "both"):
        raise ConfigError(f"train.fakes must be manifest|synth|both, got {mode!r}")
    faces = FaceDataset(samples, cfg.data.image_size, augment=cfg.data.augment, seed=cfg.train.seed)
    if mode == "manifest":
        return faces
    from lorefd.data.synth.dataset import SynthDataset, SynthFaceItems

    reals = [s for s in samples if s.label == REAL]
    fakes = len(samples) - len(reals)
    # synth: as many distinct items as an epoch draws (x4), so repeats within an epoch are rare
    length = 4 * cfg.train.iters_per_epoch * cfg.train.batch_size if mode == "synth" else fakes
    synth = SynthFaceItems(SynthDataset.from_config(
        reals, cfg.synth, seed=cfg.train.seed, image_size=cfg.data.image_size,
        fake_ratio=None if mode == "synth" else 1.0), augment=cfg.data.augment, length=length,
        jitter=cfg.data.jitter)
    if mode == "synth":
        return synth
    return _Concat([faces, synth])


class _Concat(ConcatDataset):
    """ConcatDataset that forwards ``set_epoch`` and knows its labels (for balancing)."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    @property
    def labels(self) -> list[int]:
        faces, synth = self.datasets
        return [s.label for s in faces.samples] + [FAKE] * len(synth)


def dataset_labels(dataset: Dataset) -> list[int] | None:
    """Per-item labels for class balancing; None when labels are drawn per item (synth)."""
    if hasattr(dataset, "labels"):
        return list(dataset.labels)
    if hasattr(dataset, "synth"):
        return None
    return [s.label for s in dataset.samples]


def balanced_sampler(labels: list[int] | None, num_samples: int, seed: int, balance: bool = True,
                     size: int | None = None) -> WeightedRandomSampler:
    """Draw ``num_samples`` indices with replacement; each class equally likely if ``balance``.

    ``labels`` None (labels decided per item, as with synthesised fakes): uniform over ``size``.
    """
    if labels is None:
        labels = [0] * int(size or 0)
    counts = Counter(labels)
    weights = [1.0 / counts[y] if balance else 1.0 for y in labels]
    g = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples, replacement=True, generator=g)


def single_threaded_worker(_worker_id: int) -> None:
    """DataLoader workers decode and synthesise with one thread each (OpenCV and torch would
    otherwise start one per core in every worker and starve the training process)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ---- validation ---------------------------------------------------------------------------
def validation_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Validation loss (BCE), Acc at 0.5 (the untuned decision), AUC (None with one class)
    and the best-accuracy threshold with its accuracy (recorded with the best checkpoint)."""
    eps = 1e-7
    p = np.clip(probs, eps, 1 - eps)
    auc = roc_auc(labels, probs)
    out: dict[str, Any] = {
        "loss": float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))),
        "acc": accuracy_at(labels, probs, 0.5),
        "auc": auc if isinstance(auc, float) else None,
    }
    out["threshold"], out["best_acc"] = best_threshold(labels, probs)
    return out


def validate(detector: Detector, loader: DataLoader, device: torch.device, amp: bool = True
             ) -> dict[str, Any]:
    """:func:`validation_metrics` of the validation loader's scored samples (an unreadable
    one is left out with a warning, never counted with another image's score)."""
    pred = predict([detector], loader, device, amp)
    if not pred.ok.all():
        log.warning("validation: %d unreadable sample(s) left out of %d", int((~pred.ok).sum()),
                    len(pred.ok))
    return validation_metrics(pred.probs[0][pred.ok], pred.labels[pred.ok])


# ---- training -----------------------------------------------------------------------------
def init_from(det: Detector, spec: str) -> None:
    """Load a trained detector's weights (``train.init``: any ``--model`` form, or "shipped")
    into ``det``; a :class:`ConfigError` naming both when they are not the same network.

    A ``baseline`` may start the method (``lre``): both share the detection network ``net``
    (and its blend-mask head), which is loaded; the method's frozen MAE and extractor keep
    their own weights (``--mae``, ``detector.extractor_weights``). This is how the method and
    the baseline are compared from one starting point at equal budget."""
    from lorefd.models.bundle import load_bundle

    src = load_bundle(None if spec == "shipped" else spec).detector
    sd = src.state_dict()
    strict = True
    if src.name == "baseline" and det.name == "lre":
        own = det.state_dict()
        sd = {k: v for k, v in sd.items() if k.startswith("net.")}
        missing = [k for k in own if k.startswith("net.") and k not in sd]
        if missing or not sd:
            raise ConfigError(f"train.init={spec}: its detection network does not fit this "
                              f"run's method (missing e.g. {missing[:2]})")
        strict = False
    elif src.name != det.name:
        raise ConfigError(f"train.init={spec} is a {src.name!r} detector, this run trains "
                          f"{det.name!r}")
    try:
        result = det.load_state_dict(sd, strict=strict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ConfigError(f"train.init={spec}: its weights do not fit this run's detector "
                          f"(backbone, heads and image size must match): {first[0].strip()}"
                          ) from exc
    if not strict and result.unexpected_keys:
        raise ConfigError(f"train.init={spec}: unexpected weights {result.unexpected_keys[:2]}")


def check_inputs(cfg: Config, train_samples: list[Sample], val_samples: list[Sample] | None,
                 mae_ckpt: str | Path | None) -> tuple[list[Sample], Counter, Path | None]:
    """Everything that can fail before anything slow: the split, readable training images,
    the MAE checkpoint and the step counts. Returns the readable training samples, their
    label counts and the resolved MAE checkpoint."""
    tc = cfg.train
    counts = check_split(train_samples, "training set", need_both=tc.fakes == "manifest")
    if tc.fakes == "synth" and counts[REAL] == 0:
        raise ManifestError("training set: train.fakes=synth needs real faces with landmarks")
    readable, _ = validate_samples(train_samples, what="training set")  # headers only: cheap
    if not readable:
        raise ManifestError(f"training set: not one of its {len(train_samples)} images can be "
                            f"read (e.g. {train_samples[0].path})")
    if val_samples is not None:
        vcounts = check_split(val_samples, "validation set", need_both=False)
        if vcounts[REAL] == 0 or vcounts[FAKE] == 0:
            log.warning("validation set has one class: AUC is n/a, best = last epoch")
    if mae_ckpt is not None:
        mae_ckpt = resolve_mae_checkpoint(mae_ckpt, cfg.data.image_size)
    if tc.batch_size < 1 or tc.iters_per_epoch < 1 or tc.epochs < 1:
        raise ConfigError("train.batch_size, train.iters_per_epoch and train.epochs must be >= 1")
    return readable, counts, mae_ckpt


def epoch_loader(dataset: Dataset, labels: list[int] | None, cfg: Config, epoch: int,
                 dist_info: DistInfo) -> DataLoader:
    """The epoch's ``train.iters_per_epoch`` batches per rank, class-balanced, seeded by the
    epoch (so a resumed run draws what an uninterrupted one would)."""
    tc = cfg.train
    per_rank = max(1, tc.batch_size // dist_info.world_size)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    sampler = balanced_sampler(labels, tc.iters_per_epoch * per_rank,
                               seed=(tc.seed * 1000 + epoch) * 131 + dist_info.rank,
                               balance=tc.balance, size=len(dataset))
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
                      num_workers=cfg.data.num_workers, worker_init_fn=single_threaded_worker,
                      pin_memory=dist_info.device.type == "cuda")


def train_one_epoch(det: Detector, fwd: torch.nn.Module, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, scheduler: Any, cfg: Config, epoch: int,
                    step: int, logger: RunLogger, dist_info: DistInfo) -> tuple[int, int]:
    """One epoch of optimiser steps on the detector's own loss (Eq. 3,
    :meth:`~lorefd.models.detectors.Detector.get_losses`); loss, accuracy and throughput
    logged every ``train.log_every`` steps. Returns the step count and the images seen."""
    tc, dev = cfg.train, dist_info.device
    det.train()
    run_loss = torch.zeros((), device=dev)
    run_correct = torch.zeros((), device=dev)
    n_log, seen, t0 = 0, 0, time.perf_counter()
    for batch in loader:
        images = batch["image"].to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(dev, tc.amp):
            out = fwd(images)
        loss = det.get_losses(out, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        n_log += images.shape[0]
        seen += images.shape[0]
        run_loss += loss.detach()
        labels = batch["label"].to(dev, non_blocking=True)
        run_correct += ((out["logits"].detach() >= 0).float() == labels).sum()
        if step % tc.log_every == 0:
            mean_loss = check_finite(run_loss / tc.log_every, step)  # the only host sync
            dt = time.perf_counter() - t0
            metrics = {"loss": mean_loss, "acc": float(run_correct) / n_log,
                       "img_per_s": n_log * dist_info.world_size / max(dt, 1e-9),
                       "epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            logger.log(step, metrics)
            if dist_info.is_main:
                log.info("epoch %d step %d loss %.4f acc %.3f %.1f img/s", epoch, step,
                         metrics["loss"], metrics["acc"], metrics["img_per_s"])
            run_loss.zero_()
            run_correct.zero_()
            n_log, t0 = 0, time.perf_counter()
    return step, seen


def train(cfg: Config, train_samples: list[Sample], val_samples: list[Sample] | None,
          mae_ckpt: str | Path | None, out_dir: str | Path, resume: bool = False,
          device: str | None = None, allow_unchecksummed: bool = False) -> dict[str, Any]:
    """Train the configured detector (``cfg.detector.name``); returns a summary dict.

    Under DDP every rank returns, but only rank 0's summary (validation, best) is meaningful.
    A resume state is read without running code and, unless ``allow_unchecksummed``, only
    with its checksum recorded (:func:`~lorefd.checkpoint.load_state`).
    """
    out_dir, tc = Path(out_dir), cfg.train
    train_samples, counts, mae_ckpt = check_inputs(cfg, train_samples, val_samples, mae_ckpt)
    resume_from = resume_point(out_dir, resume, allow_unchecksummed)
    with distributed_run(device) as dist_info:
        seed_everything(tc.seed + dist_info.rank)
        write_run_config(out_dir, cfg, dist_info.is_main)
        if dist_info.is_main:
            log.info("train: %s", describe(train_samples))
            if val_samples is not None:
                log.info("val:   %s", describe(val_samples))
        det = build_run_detector(cfg, mae_ckpt, resume_from is None, dist_info)
        dataset = build_train_dataset(cfg, train_samples)
        optimizer, scheduler = build_optimizer(det.trainable_parameters(), tc, dist_info.device,
                                               tc.epochs * tc.iters_per_epoch)
        saver = CheckpointSaver(out_dir, det, optimizer, scheduler, cfg,
                                run_meta(det, cfg, mae_ckpt, counts, train_samples),
                                kind="detector", metric="val_auc", enabled=dist_info.is_main)
        start_epoch, step = ((0, 0) if resume_from is None
                             else restore(saver, resume_from, allow_unchecksummed))
        fwd = wrap_model(det, dist_info, tc.compile)
        labels_all = dataset_labels(dataset)
        val_loader = make_eval_loader(val_samples, cfg.data.image_size, tc.batch_size * 2,
                                      cfg.data.num_workers) if val_samples else None
        t_run, images_seen = time.perf_counter(), 0
        with RunLogger(out_dir, enabled=dist_info.is_main) as logger:
            for epoch in range(start_epoch, tc.epochs):
                loader = epoch_loader(dataset, labels_all, cfg, epoch, dist_info)
                step, seen = train_one_epoch(det, fwd, loader, optimizer, scheduler, cfg, epoch,
                                             step, logger, dist_info)
                images_seen += seen
                if dist_info.is_main:  # end of epoch: validate, keep best, write last
                    record = {"epoch": epoch, "step": step}
                    if val_loader is not None:
                        record.update(log_validation(det, val_loader, cfg, epoch, step, logger,
                                                     dist_info.device))
                    saver.update(step, epoch, record)
                if dist_info.distributed:
                    dist.barrier()
        return finish(out_dir, det, cfg, step, saver.extra, images_seen * dist_info.world_size,
                      time.perf_counter() - t_run, dist_info)


def build_run_detector(cfg: Config, mae_ckpt: Path | None, fresh: bool, dist_info: DistInfo
                       ) -> Detector:
    """The detector to train, on the run's device in channels_last; a ``fresh`` (not resumed)
    run starts from ``train.init`` when set."""
    det = build_detector(cfg, mae_ckpt)
    if cfg.train.init and fresh:
        init_from(det, cfg.train.init)
        if dist_info.is_main:
            log.info("fine-tuning from %s", cfg.train.init)
    # channels_last on every device: on CUDA for tensor cores, on the CPU for oneDNN's NHWC
    # convolutions (measured: benchmarks/RESULTS.md, the shipped model's recipe on this CPU)
    return det.to(dist_info.device).to(memory_format=torch.channels_last)


def run_meta(det: Detector, cfg: Config, mae_ckpt: Path | None, counts: Counter,
             train_samples: list[Sample]) -> dict[str, Any]:
    """What both checkpoints record of the run beyond the config."""
    uses_mae = getattr(det, "mae", None) is not None
    return {**detector_meta(det), "mae_ckpt": str(mae_ckpt) if uses_mae else None,
            "init": cfg.train.init, "train_counts": {"real": counts[REAL], "fake": counts[FAKE]},
            "preprocess": preprocess_record(train_samples)}  # `lorefd export` crops alike


def restore(saver: CheckpointSaver, path: Path, allow_unchecksummed: bool = False
            ) -> tuple[int, int]:
    """Weights, optimiser, scheduler, RNG and the validation history from ``path``; returns
    the epoch to start and the step count."""
    state = saver.restore(path, allow_unchecksummed)
    if saver.enabled:
        log.info("resumed from %s at epoch %d (step %d)", path, state["epoch"] + 1, state["step"])
    return state["epoch"] + 1, state["step"]


def log_validation(det: Detector, loader: DataLoader, cfg: Config, epoch: int, step: int,
                   logger: RunLogger, device: torch.device) -> dict[str, Any]:
    """:func:`validate`, logged; returns the ``val_*`` entries of the epoch record."""
    vm = validate(det, loader, device, cfg.train.amp)
    logger.log(step, {k: v for k, v in vm.items() if v is not None}, prefix="val")
    log.info("epoch %d validation: loss %.4f acc %.3f auc %s", epoch, vm["loss"], vm["acc"],
             "n/a" if vm["auc"] is None else f"{vm['auc']:.4f}")
    return {f"val_{k}": v for k, v in vm.items()}


def finish(out_dir: Path, det: Detector, cfg: Config, step: int, extra: dict[str, Any],
           images: int, elapsed: float, dist_info: DistInfo) -> dict[str, Any]:
    """The run's summary (written to ``OUT/summary.json`` by the main process)."""
    summary = {
        "out": str(out_dir), "best": str(out_dir / BEST), "last": str(out_dir / LAST),
        "detector": det.name, "epochs": cfg.train.epochs, "steps": step,
        "best_auc": extra["best_auc"], "best_epoch": extra["best_epoch"],
        "history": extra["history"],
        "train_img_per_s": images / elapsed if elapsed > 0 else math.nan,
    }
    if dist_info.is_main:
        atomic_write_json(out_dir / "summary.json", summary)
    return summary

__all__ = ["balanced_sampler", "build_run_detector", "build_train_dataset", "check_inputs",
           "check_split", "epoch_loader", "init_from", "train", "train_one_epoch", "validate",
           "validation_metrics"]
