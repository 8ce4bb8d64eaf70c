"""``lorefd explain``: what the detector looks at (Section IV-F, Figs. 3-4).

One row per face: the input, its key-region masked reconstruction, the absolute difference,
and the local difference attention map (Eq. 2) of every layer overlaid on the input, with the
detector's fake probability. Each layer's maps share one colour scale (0 .. the largest value
in the figure). The baseline detector shows the input and probability only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lorefd.data.images import load_rgb, resize_square, to_tensor
from lorefd.errors import NonFiniteScoreError, OptionError, UserError
from lorefd.evaluation.figures import short_name
from lorefd.models.bundle import load_bundle
from lorefd.models.detectors import Detector
from lorefd.models.detectors.base import BLEND_MASK
from lorefd.utils import atomic_path

log = logging.getLogger("lorefd")


def load_images(paths: list[str | Path], image_size: int) -> torch.Tensor:
    """Face crops as a ``(B, 3, S, S)`` ``[0, 1]`` batch."""
    return torch.stack([to_tensor(resize_square(load_rgb(p), image_size)) for p in paths])


def load_faces(paths: list[str | Path], image_size: int, pre: dict[str, Any] | None
               ) -> torch.Tensor:
    """Like :func:`load_images`, but an image that is not already a crop of the model's (a
    square of the recorded crop side) has its largest face found and aligned with the model's
    own crop parameters ``pre`` first, exactly as ``lorefd detect`` does; no face is an error."""
    if pre is None:
        return load_images(paths, image_size)
    from lorefd.data.preprocess.crops import FacePipeline

    side, pipeline, out = int(pre["size"]), None, []
    for p in paths:
        rgb = load_rgb(p)
        if rgb.shape[0] == rgb.shape[1] == side:  # a crop as `lorefd preprocess` writes them
            out.append(to_tensor(resize_square(rgb, image_size)))
            continue
        pipeline = pipeline or FacePipeline.from_preprocess(pre, image_size)
        faces, _ = pipeline.faces(rgb)
        if not faces:
            raise UserError(f"explain: no face found in {p} (give an aligned crop, or a photo "
                            "with a face)")
        log.info("explain: %s is not a %d-px crop: its face aligned as the model's crops", p,
                 side)
        out.append(torch.from_numpy(pipeline.crop(rgb, faces[0]).image))
    return torch.stack(out)


def _short(path: str | Path) -> str:
    p = Path(path)
    return short_name(f"{p.parent.name}/{p.name}", 28)


def _img(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def explain_figure(detector: Detector | str | Path, images: list[str | Path], out: str | Path,
                   device: str = "cpu") -> dict[str, object]:
    """Write the figure to ``out`` (PNG); returns the probabilities and map statistics.

    ``detector``: a module, or what ``--model`` accepts (bundle, run or checkpoint folder);
    with the latter, photos that are not crops are aligned with its crop parameters first.
    A non-finite score (a damaged model) raises :class:`NonFiniteScoreError`, naming the file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not images:
        raise OptionError("no images to explain")
    pre = None
    if isinstance(detector, (str, Path)):
        bundle = load_bundle(detector, device)
        detector, pre = bundle.detector, bundle.preprocess
    detector.eval()
    dev = next(detector.parameters()).device
    batch = load_faces(images, detector.image_size, pre).to(dev)
    with torch.no_grad():
        ex = detector.explain(batch)
    bad = [str(p) for p, ok in zip(images, torch.isfinite(ex["prob"]).tolist(), strict=True)
           if not ok]
    if bad:
        raise NonFiniteScoreError(f"the model gave a non-finite score (NaN/inf) for "
                                  f"{', '.join(bad[:3])}: the model is damaged or unusable")
    fig = build_figure(batch, ex, images)
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")  # no label cut off
    plt.close(fig)
    maps: dict[str, torch.Tensor] = ex.get("attention") or {}
    return {"out": str(out), "prob": [float(p) for p in ex["prob"]],
            "attention_mean": {k: float(v.mean()) for k, v in maps.items()}}


def build_figure(batch: torch.Tensor, ex: dict[str, Any], images: list[str | Path]) -> Any:
    """The matplotlib figure: per image the input, (reconstruction, |difference|) and each
    layer's attention over the input, each map with a colour bar saying what it shows."""
    import matplotlib.pyplot as plt

    maps: dict[str, torch.Tensor] = ex.get("attention") or {}
    has_recon = ex.get("recon") is not None
    cols = ["input"] + (["reconstruction", "|difference|"] if has_recon else []) + \
        [f"attention {k}" for k in maps]
    n = len(images)
    # one colour scale per layer for all faces, so reals and fakes compare directly
    vmax = {k: max(float(v.max()), 1e-6) for k, v in maps.items()}
    layer_of = {f"attention {k}": k for k in maps}
    # square panels with a colour bar beside each: rows 1.9 in tall leave no gaps between rows
    fig, axes = plt.subplots(n, len(cols), figsize=(2.2 * len(cols), 1.9 * n + 0.5), squeeze=False)
    for i in range(n):
        panels = [_img(batch[i])]
        if has_recon:
            panels += [_img(ex["recon"][i])]
            d = ex["diff"][i].mean(0)
            panels += [(d / d.max().clamp_min(1e-6)).cpu().numpy()]
        for a in maps.values():
            up = F.interpolate(a[i:i + 1].float(), size=batch.shape[-2:], mode="bilinear",
                               align_corners=False)[0, 0].cpu().numpy()
            panels.append(up)
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            if cols[j].startswith("attention"):
                ax.imshow(panels[0])
                im = ax.imshow(panel, cmap="jet", alpha=0.5, vmin=0,
                               vmax=vmax[layer_of[cols[j]]])
                bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                bar.set_label("1 - (1+cos)/2: high = differs" if cols[j] != "attention "
                              + BLEND_MASK else "P(blended in)", fontsize=6)
                bar.ax.tick_params(labelsize=6)
            elif panel.ndim == 2:
                im = ax.imshow(panel, cmap="inferno", vmin=0, vmax=1)
                bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                bar.set_label("|input - recon.| / face max", fontsize=6)
                bar.ax.tick_params(labelsize=6)
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
        axes[i][0].set_ylabel(f"{_short(images[i])}\nP(fake)={float(ex['prob'][i]):.3f}",
                              fontsize=8)
    fig.tight_layout(h_pad=0.4)
    return fig


__all__ = ["build_figure", "explain_figure", "load_images"]
