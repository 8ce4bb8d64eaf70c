"""The one scoring loop: fake probabilities of every item of a loader for one or more
detectors, used by training validation, ``evaluate`` and ``robustness`` (``detect`` scores
in-memory face crops through either runtime: :func:`lorefd.engines.scorer.score_crops`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from lorefd.data.dataset import FaceDataset
from lorefd.data.manifest import Sample
from lorefd.engines.common import autocast
from lorefd.models.detectors import Detector

UNREAD = "unreadable image"  # the reason of an item the dataset replaced by another


@dataclass
class Predictions:
    """Per item of the loader, in loader order: ``probs[k]`` of detector ``k`` (NaN where
    the item was left out), ``ok`` (the item was scored), ``labels`` (-1 where the batches
    carry none) and ``reasons`` ("" for a scored item)."""

    probs: list[np.ndarray]
    ok: np.ndarray
    labels: np.ndarray
    reasons: list[str]


def make_eval_loader(samples: list[Sample], image_size: int, batch_size: int,
                     num_workers: int = 0) -> DataLoader:
    """Samples in order, no augmentation."""
    ds = FaceDataset(samples, image_size, augment=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available())


@torch.no_grad()
def predict(detectors: Sequence[Detector], loader: DataLoader, device: torch.device,
            amp: bool = True) -> Predictions:
    """Score every item with every detector in one pass (eval mode, seeded masks; modes are
    restored after). An item is left out -- never run through a model, never given another
    item's score -- when its batch flags it (``ok`` / ``reason``: a dataset that reports its
    failures) or when the dataset substituted another item for it (``index`` differs from its
    position: :class:`~lorefd.data.dataset.FaceDataset` replaces an unreadable image by the
    next readable one so that training never stops)."""
    modes = [d.training for d in detectors]
    for d in detectors:
        d.eval()
    probs: list[list[torch.Tensor]] = [[] for _ in detectors]
    oks, labels, reasons = [], [], []
    cl = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    seen = 0
    try:
        for batch in loader:
            n = len(batch["image"])
            ok = batch["ok"].bool() if "ok" in batch else torch.ones(n, dtype=torch.bool)
            if "index" in batch:
                ok &= batch["index"] == torch.arange(seen, seen + n)
            images = batch["image"][ok].to(device, non_blocking=True).contiguous(memory_format=cl)
            for out, det in zip(probs, detectors, strict=True):
                p = torch.full((n,), float("nan"))
                if len(images):
                    with autocast(device, amp):
                        p[ok] = torch.sigmoid(det.infer(images)["logits"].float()).cpu()
                out.append(p)
            oks.append(ok)
            labels.append(batch["label"].long() if "label" in batch
                          else torch.full((n,), -1, dtype=torch.long))
            given = batch.get("reason") or [""] * n
            reasons += ["" if k else (r or UNREAD) for k, r in zip(ok.tolist(), given, strict=True)]
            seen += n
    finally:
        for d, mode in zip(detectors, modes, strict=True):
            d.train(mode)
    return Predictions([_cat(p, np.float64) for p in probs], _cat(oks, bool),
                       _cat(labels, int), reasons)


def _cat(parts: list[torch.Tensor], dtype: type) -> np.ndarray:
    return torch.cat(parts).numpy().astype(dtype) if parts else np.zeros(0, dtype)


__all__ = ["Predictions", "make_eval_loader", "predict"]
