"""The last hop to the network: one interface, :class:`Scorer`, for both runtimes.

A loaded :class:`~lorefd.models.bundle.Bundle` holds the detector its loader chose
(:func:`lorefd.models.graph.load_runtime_model`: an ONNX Runtime session for a bundle with a
graph, else the PyTorch module). :func:`scorer_for` wraps it once, right after loading, in
the adapter of that runtime; from there on ``lorefd detect`` and ``lorefd serve`` see only
``scores(images, maps)`` on numpy face crops, and never ask which runtime runs::

    bundle = load_runtime_model("model.lorefd")
    scorer = scorer_for(bundle)          # OnnxScorer or TorchScorer
    prob, maps = scorer.scores(crops, maps=True)

:func:`score_crops` and :class:`StreamScorer` fill a list of
:class:`~lorefd.data.preprocess.crops.FaceCrop` in batches (the second on a thread of its
own, overlapping the network with decoding); :func:`attention_heat` turns the maps into one
heatmap per face. Nothing here imports torch unless the PyTorch adapter runs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from lorefd.data.preprocess.crops import FaceCrop
from lorefd.models.registry import BLEND_MASK

if TYPE_CHECKING:
    from lorefd.models.bundle import Bundle
    from lorefd.models.detectors import Detector
    from lorefd.models.graph import OnnxDetector

DEFAULT_BATCH = {"cpu": 4, "cuda": 32}  # faces per forward pass (larger was not faster on CPU)
Maps = dict[str, np.ndarray]  # map name -> (B, 1, h, w): attention maps or the blend mask


class Scorer(Protocol):
    """A detector on numpy face crops, whichever runtime runs it."""

    runtime: str  # "onnx" | "torch": what the report's model block names
    device: str  # where it runs: "cpu", "cuda", "cuda:0"
    name: str  # the detector's name ("lre", "xception", ...)
    image_size: int  # the side S of the crops it takes

    def scores(self, images: np.ndarray, maps: bool = False) -> tuple[np.ndarray, Maps]:
        """``(P(fake) (B,), maps)`` for crops ``images (B, 3, S, S)`` float32 in [0, 1];
        ``maps`` (attention / blend-mask maps) only when asked for, else ``{}``."""
        ...


class OnnxScorer:
    """The adapter of an :class:`~lorefd.models.graph.OnnxDetector` (CPU only; its session
    computes the maps with the probabilities, so ``maps=False`` only drops them)."""

    runtime = "onnx"
    device = "cpu"

    def __init__(self, detector: OnnxDetector, device: str | None = None) -> None:
        self.detector = detector  # ``device``: the ONNX runtime runs on the CPU whatever it says
        self.name, self.image_size = detector.name, int(detector.image_size)

    def scores(self, images: np.ndarray, maps: bool = False) -> tuple[np.ndarray, Maps]:
        prob, out = self.detector.run(images)
        return prob, out if maps else {}


class TorchScorer:
    """The adapter of a PyTorch detector, moved to ``device`` (default: CUDA when there is
    one, :func:`lorefd.utils.pick_device`)."""

    runtime = "torch"

    def __init__(self, detector: Detector, device: str | None = None) -> None:
        from lorefd.utils import pick_device

        self.detector = detector.to(pick_device(device))
        self._device = next(self.detector.parameters()).device
        self.device = str(self._device)
        self.name, self.image_size = detector.name, int(detector.image_size)

    def scores(self, images: np.ndarray, maps: bool = False) -> tuple[np.ndarray, Maps]:
        import torch

        with torch.no_grad():
            batch = torch.from_numpy(np.ascontiguousarray(images)).to(self._device)
            if not maps:
                return self.detector.predict_proba(batch).float().cpu().numpy(), {}
            ex = self.detector.explain(batch)
            return (ex["prob"].float().cpu().numpy(),
                    {k: v.float().cpu().numpy() for k, v in (ex.get("attention") or {}).items()})


# the runtime a loader records on its detector (OnnxDetector.runtime; a PyTorch module has none)
ADAPTERS: dict[str, Callable[[Any, str | None], Scorer]] = {"onnx": OnnxScorer,
                                                             "torch": TorchScorer}


def runtime_of(bundle: Bundle) -> str:
    """The runtime ``bundle``'s loader chose: ``"onnx"`` or ``"torch"``."""
    return str(getattr(bundle.detector, "runtime", "torch"))


def scorer_for(bundle: Bundle, device: str | None = None) -> Scorer:
    """``bundle``'s detector behind :class:`Scorer`, in the adapter of its runtime; a PyTorch
    detector is moved to ``device`` (the ONNX runtime stays on the CPU)."""
    return ADAPTERS[runtime_of(bundle)](bundle.detector, device)


def default_batch(scorer: Scorer) -> int:
    """Faces per forward pass when none is asked for: :data:`DEFAULT_BATCH` of the device."""
    return DEFAULT_BATCH["cuda" if scorer.device.startswith("cuda") else "cpu"]


# ------------------------------------------------------------------------------ face crops
def attention_heat(attention: Maps, size: int) -> np.ndarray | None:
    """Mean over layers of the attention maps ``(B, 1, h, w)``, upsampled (bilinear) to
    ``size``, each face scaled to ``[0, 1]`` by its own maximum: ``(B, size, size)``; None
    without maps.

    A detector with a blend-mask head gives ``"blend mask"``: the probability that each pixel
    was blended in, shown as it is (not rescaled, so a clean real face stays dark)."""
    if not attention:
        return None

    def up(maps: np.ndarray) -> np.ndarray:
        return np.stack([cv2.resize(np.asarray(m[0], np.float32), (size, size),
                                    interpolation=cv2.INTER_LINEAR) for m in maps])

    if BLEND_MASK in attention:
        return up(attention[BLEND_MASK]).clip(0, 1).astype(np.float32)
    heat = np.mean([up(a) for a in attention.values()], axis=0)
    peak = np.maximum(heat.reshape(len(heat), -1).max(1), 1e-8)[:, None, None]
    return (heat / peak).clip(0, 1).astype(np.float32)


def score_crops(scorer: Scorer, crops: list[FaceCrop], batch_size: int = 16,
                heat_size: int | None = None) -> None:
    """Fill ``score`` (and, with ``heat_size``, ``heat``) of every crop, in batches."""
    for start in range(0, len(crops), batch_size):
        chunk = crops[start:start + batch_size]
        probs, maps = scorer.scores(np.stack([c.image for c in chunk]), maps=bool(heat_size))
        heat = attention_heat(maps, heat_size) if heat_size else None
        for i, c in enumerate(chunk):
            c.score = float(probs[i])
            c.heat = None if heat is None else heat[i]


class StreamScorer:
    """Scores a video's crops in batches on a second thread as they are found, so that
    decoding and the face stage of the next frames overlap the network (``with`` block;
    :meth:`wait` returns when every crop added has its score)."""

    def __init__(self, scorer: Scorer, batch_size: int, heat_size: int | None) -> None:
        self.scorer, self.batch_size, self.heat_size = scorer, batch_size, heat_size
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lorefd-score")
        self.pending: list[FaceCrop] = []
        self.futures: list[Future[None]] = []

    def add(self, crop: FaceCrop) -> None:
        self.pending.append(crop)
        if len(self.pending) >= self.batch_size:
            self._submit()

    def _submit(self) -> None:
        if self.pending:
            self.futures.append(self.pool.submit(score_crops, self.scorer, self.pending,
                                                 self.batch_size, self.heat_size))
            self.pending = []

    def wait(self) -> None:
        self._submit()
        for f in self.futures:
            f.result()  # re-raises a failure of the network

    def __enter__(self) -> StreamScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["ADAPTERS", "DEFAULT_BATCH", "OnnxScorer", "Scorer", "StreamScorer", "TorchScorer",
           "attention_heat", "default_batch", "runtime_of", "scorer_for", "score_crops"]
