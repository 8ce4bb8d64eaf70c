"""Stage-2 training engine (Section III-C; Section IV-B: Adam 1e-4, batch 32, 30 x 200 iterations).

Callable from Python without argparse::

    summary = train(cfg, train_samples, val_samples, mae_ckpt, out_dir, resume=False)

One epoch is ``train.iters_per_epoch`` optimiser steps drawn by a class-balanced sampler
(FF++ is 1 real : 4 fake). Validation AUC runs after every epoch; ``OUT/best`` keeps the best
checkpoint by validation AUC and ``OUT/last`` the latest with the full resume state (optimiser,
RNG, counters), written atomically at each epoch end. ``--resume`` continues from ``OUT/last``
at the next epoch exactly as an uninterrupted run would (same sampler seeds, same RNG).
Under ``torchrun`` each rank draws ``batch_size / world_size`` images per step (DDP).
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

from lorefd.checkpoint import save_checkpoint
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
    DistInfo,
    RunLogger,
    autocast,
    check_finite,
    cleanup_distributed,
    init_distributed,
    lr_lambda,
    restore_training_state,
    save_training_checkpoint,
    truncate_metrics,
)
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
        raise ValueError(f"train.fakes must be manifest|synth|both, got {mode!r}")
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
        fake_ratio=None if mode == "synth" else 1.0), augment=cfg.data.augment, length=length)
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


def make_eval_loader(samples: list[Sample], image_size: int, batch_size: int,
                     num_workers: int = 0) -> DataLoader:
    """Samples in order, no augmentation."""
    ds = FaceDataset(samples, image_size, augment=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available())


def single_threaded_worker(_worker_id: int) -> None:
    """DataLoader workers decode and synthesise with one thread each (OpenCV and torch would
    otherwise start one per core in every worker and starve the training process)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ---- prediction ---------------------------------------------------------------------------
@torch.no_grad()
def predict(detector: Detector, loader: DataLoader, device: torch.device, amp: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """Fake probabilities and labels over a loader, in loader order (eval mode, seeded masks).

    A sample that could not be read (the dataset substituted the next one) is left out, with
    a warning, rather than counted twice.
    """
    was_training = detector.training
    detector.eval()
    probs, labels = [], []
    cl = torch.channels_last
    seen = skipped = 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=cl)
        with autocast(device, amp):
            logits = detector(images)["logits"]
        n, y = images.shape[0], batch["label"]
        own = batch["index"] == torch.arange(seen, seen + n) if "index" in batch else None
        seen += n
        if own is not None and not bool(own.all()):
            skipped += int((~own).sum())
            logits, y = logits[own.to(logits.device)], y[own]
        probs.append(torch.sigmoid(logits.float()))
        labels.append(y)
    detector.train(was_training)
    if skipped:
        log.warning("predict: %d unreadable sample(s) left out of %d", skipped, seen)
    if not probs:
        return np.zeros(0), np.zeros(0, dtype=int)
    return (torch.cat(probs).cpu().numpy().astype(np.float64),
            torch.cat(labels).numpy().astype(int))


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


# ---- training -----------------------------------------------------------------------------
def _prepare_out(out_dir: Path, resume: bool) -> bool:
    """True when resuming from ``out_dir/last``."""
    last = out_dir / "last"
    if resume:
        if last.exists():
            return True
        log.warning("--resume: %s has no checkpoint yet; starting a new run", out_dir)
        return False
    if last.exists() or (out_dir / "best").exists():
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume to continue it or "
                              "choose another --out")
    return False


def init_from(det: Detector, spec: str) -> None:
    """Load a trained detector's weights (``train.init``: any ``--model`` form, or "shipped")
    into ``det``; a :class:`ConfigError` naming both when they are not the same network.

    A ``baseline`` may start the method (``lre``): both share the detection network ``net``
    (and its blend-mask head), which is loaded; the method's frozen MAE and extractor keep
    their own weights (``--mae``, ``detector.extractor_weights``). This is how the method and
    the baseline are compared from one starting point at equal budget."""
    from lorefd.models.bundle import load_model

    src = load_model(None if spec == "shipped" else spec).detector
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


def train(cfg: Config, train_samples: list[Sample], val_samples: list[Sample] | None,
          mae_ckpt: str | Path | None, out_dir: str | Path, resume: bool = False,
          device: str | None = None) -> dict[str, Any]:
    """Train the configured detector (``cfg.detector.name``); returns a summary dict.

    Under DDP every rank returns, but only rank 0's summary (validation, best) is meaningful.
    """
    out_dir = Path(out_dir)
    tc = cfg.train
    # -- checks first: nothing slow happens before the inputs are known to be usable
    counts = check_split(train_samples, "training set", need_both=tc.fakes == "manifest")
    if tc.fakes == "synth" and counts[REAL] == 0:
        raise ManifestError("training set: train.fakes=synth needs real faces with landmarks")
    readable, _ = validate_samples(train_samples, what="training set")  # headers only: cheap
    if not readable:
        raise ManifestError(f"training set: not one of its {len(train_samples)} images can be "
                            f"read (e.g. {train_samples[0].path})")
    train_samples = readable
    if val_samples is not None:
        vcounts = check_split(val_samples, "validation set", need_both=False)
        if vcounts[REAL] == 0 or vcounts[FAKE] == 0:
            log.warning("validation set has one class: AUC is n/a, best = last epoch")
    if mae_ckpt is not None:
        mae_ckpt = resolve_mae_checkpoint(mae_ckpt, cfg.data.image_size)
    if tc.batch_size < 1 or tc.iters_per_epoch < 1 or tc.epochs < 1:
        raise ValueError("train.batch_size, train.iters_per_epoch and train.epochs must be >= 1")
    resuming = _prepare_out(out_dir, resume)

    dist_info: DistInfo = init_distributed(device)
    dev = dist_info.device
    seed_everything(tc.seed + dist_info.rank)
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log.info("train: %s", describe(train_samples))
        if val_samples is not None:
            log.info("val:   %s", describe(val_samples))

    det = build_detector(cfg, mae_ckpt)
    if tc.init and not resuming:
        init_from(det, tc.init)
        if dist_info.is_main:
            log.info("fine-tuning from %s", tc.init)
    dataset = build_train_dataset(cfg, train_samples)
    # channels_last on every device: on CUDA for tensor cores, on this 2-core CPU a ResNet-18
    # step at 128 px measured 1.2x faster (oneDNN's NHWC convolutions)
    det.to(dev).to(memory_format=torch.channels_last)
    # fused Adam on CUDA: one kernel for all parameters instead of several per tensor
    optimizer = torch.optim.Adam(det.trainable_parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                 fused=dev.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        tc.warmup_steps, tc.epochs * tc.iters_per_epoch, tc.schedule))

    start_epoch, step = 0, 0
    extra: dict[str, Any] = {"best_auc": None, "best_epoch": None, "history": []}
    if resuming:
        state = restore_training_state(out_dir / "last", det, optimizer, scheduler,
                                       kind="detector")
        start_epoch, step = state["epoch"] + 1, state["step"]
        extra = {**extra, **state["extra"]}
        if dist_info.is_main:
            log.info("resumed from %s at epoch %d (step %d)", out_dir / "last", start_epoch, step)
            truncate_metrics(out_dir / "metrics.jsonl", step)

    model: torch.nn.Module = det
    if dist_info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            det, device_ids=[dev.index] if dev.type == "cuda" else None)
    fwd = torch.compile(model) if tc.compile else model

    per_rank = max(1, tc.batch_size // dist_info.world_size)
    labels_all = dataset_labels(dataset)
    logger = RunLogger(out_dir, enabled=dist_info.is_main)
    val_loader = make_eval_loader(val_samples, cfg.data.image_size, tc.batch_size * 2,
                                  cfg.data.num_workers) if val_samples else None
    uses_mae = getattr(det, "mae", None) is not None
    meta = {**detector_meta(det), "mae_ckpt": str(mae_ckpt) if uses_mae else None,
            "init": tc.init,
            "train_counts": {"real": counts[REAL], "fake": counts[FAKE]},
            "preprocess": preprocess_record(train_samples)}  # `lorefd export` crops alike
    cl = torch.channels_last
    t_run = time.perf_counter()
    images_seen = 0
    try:
        for epoch in range(start_epoch, tc.epochs):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            sampler = balanced_sampler(labels_all, tc.iters_per_epoch * per_rank,
                                       seed=(tc.seed * 1000 + epoch) * 131 + dist_info.rank,
                                       balance=tc.balance, size=len(dataset))
            loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
                                num_workers=cfg.data.num_workers,
                                worker_init_fn=single_threaded_worker,
                                pin_memory=dev.type == "cuda")
            det.train()
            run_loss = torch.zeros((), device=dev)
            run_correct = torch.zeros((), device=dev)
            n_log, t0 = 0, time.perf_counter()
            for batch in loader:
                images = batch["image"].to(dev, non_blocking=True).contiguous(memory_format=cl)
                labels = batch["label"].to(dev, non_blocking=True)
                with autocast(dev, tc.amp):
                    out = fwd(images)
                masks = batch["mask"].to(dev, non_blocking=True) if "mask" in batch else None
                has_mask = batch["has_mask"].to(dev) if "has_mask" in batch else None
                loss = det.loss(out, labels, masks, has_mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                n_log += images.shape[0]
                images_seen += images.shape[0]
                run_loss += loss.detach()
                run_correct += ((out["logits"].detach() >= 0).float() == labels).sum()
                if step % tc.log_every == 0:
                    k = tc.log_every
                    mean_loss = check_finite(run_loss / k, step)  # the only host sync
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
            # -- end of epoch: validate, keep best, write last (main process)
            record: dict[str, Any] = {"epoch": epoch, "step": step}
            if dist_info.is_main:
                if val_loader is not None:
                    probs, vlabels = predict(det, val_loader, dev, tc.amp)
                    vm = validation_metrics(probs, vlabels)
                    record.update({f"val_{k}": v for k, v in vm.items()})
                    logger.log(step, {k: v for k, v in vm.items() if v is not None}, prefix="val")
                    log.info("epoch %d validation: loss %.4f acc %.3f auc %s", epoch, vm["loss"],
                             vm["acc"], "n/a" if vm["auc"] is None else f"{vm['auc']:.4f}")
                auc = record.get("val_auc")
                improved = (auc is not None and (extra["best_auc"] is None or auc > extra["best_auc"])) \
                    or (auc is None and extra["best_auc"] is None)
                extra["history"].append(record)
                if improved:
                    extra["best_auc"], extra["best_epoch"] = auc, epoch
                    save_checkpoint(out_dir / "best", det, cfg,
                                    {**meta, "step": step, "epoch": epoch, "val": record})
                save_training_checkpoint(out_dir / "last", det, optimizer, scheduler, cfg, meta, step,
                                         epoch, extra=extra)
            if dist_info.distributed:
                dist.barrier()
    finally:
        logger.close()
    elapsed = time.perf_counter() - t_run
    summary = {
        "out": str(out_dir), "best": str(out_dir / "best"), "last": str(out_dir / "last"),
        "detector": det.name, "epochs": tc.epochs, "steps": step,
        "best_auc": extra["best_auc"], "best_epoch": extra["best_epoch"],
        "history": extra["history"],
        "train_img_per_s": images_seen * dist_info.world_size / elapsed if elapsed > 0 else math.nan,
    }
    if dist_info.is_main:
        atomic_write_json(out_dir / "summary.json", summary)
    if dist_info.distributed:
        cleanup_distributed()
    return summary


__all__ = ["balanced_sampler", "build_train_dataset", "check_split", "init_from",
           "make_eval_loader", "predict", "train", "validation_metrics"]
