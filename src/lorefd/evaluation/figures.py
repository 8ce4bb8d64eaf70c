"""Stage-1 figures: the key region (Fig. 2) and masked reconstructions (Fig. 4); training
curves, ROC curves and the robustness plot (AUC against perturbation level).

Matplotlib with the Agg backend; every function writes a PNG and returns its path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from lorefd.data.keyregion import KeyRegion  # noqa: E402
from lorefd.errors import NothingProcessedError  # noqa: E402

log = logging.getLogger("lorefd")


def short_name(name: str, width: int = 24) -> str:
    """``name`` whole when it fits in ``width`` characters, else its start and end around an
    ellipsis (the extension kept): figure labels are never cut mid-word."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}\u2026{name[-(width - 1 - head):]}"


def _hwc(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` tensor in ``[0, 1]`` or ``HxWx3`` array -> ``HxWx3`` float array."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
        if img.ndim == 3 and img.shape[0] in (1, 3):
            img = img.transpose(1, 2, 0)
    img = np.asarray(img, dtype=np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    return np.clip(img, 0, 1)


def patch_mask_image(mask: torch.Tensor | np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """A ``(N,)`` patch mask (1 = masked) as an ``image_size`` square boolean array."""
    g = image_size // patch_size
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).reshape(g, g)
    return np.kron(m, np.ones((patch_size, patch_size))).astype(bool)


def masked_input(img: np.ndarray, pix_mask: np.ndarray, grey: float = 0.5) -> np.ndarray:
    out = img.copy()
    out[pix_mask] = grey
    return out


def key_region_figure(image: torch.Tensor | np.ndarray, landmarks: np.ndarray | None,
                      region: KeyRegion, patch_set: Sequence[int], mask: torch.Tensor | np.ndarray,
                      patch_size: int, out: str | Path, title: str = "") -> Path:
    """Fig. 2: a face with its landmarks, P1..P4, the expanded rectangle, T and one mask.

    ``landmarks`` and the region are normalised to ``[0, 1]``; ``image`` is already resized
    to the model's image size; ``mask`` is one sampled ``(N,)`` mask (1 = masked).
    """
    img = _hwc(image)
    s = img.shape[0]
    g = s // patch_size
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    ax = axes[0]
    ax.imshow(img)
    if landmarks is not None:
        lm = np.asarray(landmarks) * s
        ax.scatter(lm[:, 0], lm[:, 1], s=6, c="cyan", label="68 landmarks")
    cs = np.asarray(region.corners) * s
    ax.scatter(cs[:, 0], cs[:, 1], s=40, c="red", marker="x", label="P1..P4 (dataset)")
    for i, (x, y) in enumerate(cs):
        ax.annotate(f"P{i + 1}", (x, y), color="red", fontsize=9, xytext=(3, -3),
                    textcoords="offset points")
    x0, y0, x1, y1 = (v * s for v in region.rect)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5,
                           label=f"key rectangle (margin {region.margin:g})"))
    ax.set_title("landmarks, P1..P4, rectangle")
    ax.legend(loc="upper left", fontsize=6, framealpha=0.7)

    ax = axes[1]
    ax.imshow(img)
    key = np.zeros(g * g, bool)
    key[list(patch_set)] = True
    overlay = np.zeros((s, s, 4), np.float32)
    overlay[patch_mask_image(key, s, patch_size)] = (1.0, 0.2, 0.2, 0.35)
    ax.imshow(overlay)
    for k in range(g + 1):
        ax.axhline(k * patch_size - 0.5, color="white", lw=0.3)
        ax.axvline(k * patch_size - 0.5, color="white", lw=0.3)
    ax.set_title(f"key patch set T ({len(patch_set)} of {g * g})")

    ax = axes[2]
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    ax.imshow(masked_input(img, patch_mask_image(m, s, patch_size)))
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.0))
    n_t = int(key.sum())
    ax.set_title(f"sampled mask: {int(m.sum())} masked, {int((m & key).sum())}/{n_t} of T")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.95) if title else (0, 0, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def reconstruction_grid(images: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor,
                        patch_size: int, out: str | Path, names: Sequence[str] | None = None,
                        title: str = "") -> Path:
    """Fig. 4: one row per face: original, masked input, reconstruction, |difference|.

    ``images``/``recon`` are ``(B, 3, S, S)`` in ``[0, 1]`` (``recon`` with the visible
    patches pasted back, as ``KeyRegionMAE.reconstruct`` returns); ``mask`` is ``(B, N)``.
    """
    b, s = images.shape[0], images.shape[-1]
    fig, axes = plt.subplots(b, 4, figsize=(8, 2.1 * b), squeeze=False)
    cols = ["original", "masked input", "reconstruction", "|difference|"]
    for i in range(b):
        img, rec = _hwc(images[i]), _hwc(recon[i])
        pm = patch_mask_image(mask[i], s, patch_size)
        diff = np.abs(img - rec).mean(-1)
        panels = [img, masked_input(img, pm), rec, diff]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j == 3:
                im = ax.imshow(panel, cmap="inferno", vmin=0, vmax=max(0.25, float(panel.max())))
                ax.set_xlabel(f"mean {diff[pm].mean() if pm.any() else 0:.3f}", fontsize=7)
                bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                bar.set_label("|original - reconstruction|\n(mean over RGB, 0-1)", fontsize=6)
                bar.ax.tick_params(labelsize=6)
            else:
                ax.imshow(panel)
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            if j == 0 and names is not None:
                ax.set_ylabel(short_name(str(names[i])), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (a torn last line is skipped)."""
    import json

    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def training_curves(runs: dict[str, str | Path], out: str | Path,
                    stage1: str | Path | None = None) -> Path | None:
    """Training curves from the runs' ``metrics.jsonl``: the stage-1 reconstruction loss (with
    ``stage1``), each stage-2 run's training loss and validation AUC against the step (0.5 =
    chance, dashed). None when no run logged anything."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {name: read_metrics(Path(d) / "metrics.jsonl") for name, d in runs.items()}
    s1 = read_metrics(Path(stage1) / "metrics.jsonl") if stage1 is not None else []
    if not s1 and not any(logs.values()):
        return None

    def series(recs: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in recs
               if r.get("split") == split and isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [float(p[1]) for p in pts]

    panels = (["stage 1: masked-patch MSE"] if s1 else []) + [
        "stage 2: training loss (BCE)", "stage 2: validation AUC"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    axes = list(axes[0])
    if s1:
        ax = axes.pop(0)
        ax.plot(*series(s1, "train", "loss"), lw=1)
        ax.set_title(panels[0], fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    loss_ax, auc_ax = axes
    for name, recs in logs.items():
        loss_ax.plot(*series(recs, "train", "loss"), lw=1, label=name)
        auc_ax.plot(*series(recs, "val", "auc"), marker="o", ms=3, lw=1, label=name)
    loss_ax.set_title(panels[-2], fontsize=9)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    auc_ax.axhline(0.5, color="k", ls=":", lw=0.8, label="chance")
    auc_ax.set_ylim(0, 1)
    auc_ax.set_title(panels[-1], fontsize=9)
    auc_ax.set_xlabel("step")
    auc_ax.set_ylabel("AUC")
    for ax in (loss_ax, auc_ax):
        ax.legend(fontsize=7)
    return _save(fig, out)


def _save(fig, out: str | Path, dpi: int = 110) -> Path:  # noqa: ANN001
    """Lay out, write (labels never cut) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def roc_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], out: str | Path,
               bold: Sequence[str] = (), size: float = 5.0, dpi: int = 100) -> Path:
    """The one ROC plot: a curve per ``(label, labels, probabilities)`` with its AUC in the
    legend (:func:`lorefd.metrics.roc_points`; a one-class curve is left out, and a plot with
    none says so), the chance diagonal, written atomically as PNG."""
    from lorefd.metrics import roc_points
    from lorefd.utils import atomic_path

    fig, ax = plt.subplots(figsize=(size, size))
    for name, y, p in curves:
        roc = roc_points(y, p)
        if roc is not None:
            fpr, tpr, auc = roc
            ax.plot(fpr, tpr, lw=1.5 if name in bold else 1, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (fake = positive)",
           xlim=(0, 1), ylim=(0, 1))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    else:
        ax.text(0.5, 0.5, "one class only: no ROC", ha="center")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return out


def plot_robustness(path: Path, result: dict[str, Any]) -> Path:
    """AUC against level, one line per type, one panel per model, clean AUC dashed.

    Video-level AUC when some video has several frames, else frame level (the axis says);
    ``result``: :func:`lorefd.evaluation.robustness.robustness`'s.
    """
    from lorefd.data.perturb import LEVELS, TYPES
    from lorefd.evaluation.report import metric_value
    from lorefd.utils import atomic_path

    models = result["models"]
    level = "video" if any(
        (e["summary"]["clean"] or {}).get("n_videos", 0) < (e["summary"]["clean"] or {}).get("n", 0)
        for e in models) else "frame"
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4), squeeze=False,
                             sharey=True)
    for ax, e in zip(axes[0], models, strict=True):
        for kind in TYPES:
            pts = [(r["level"], metric_value(r[f"{level}_auc"])) for r in e["rows"] if r["type"] == kind]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2,
                        ls="--" if kind == "jpeg" else "-", label=kind)
        clean = metric_value((e["summary"]["clean"] or {}).get(f"{level}_auc"))
        if clean is not None:
            ax.axhline(clean, color="k", ls=":", lw=1, label="clean")
        ax.axhline(0.5, color="0.6", lw=0.6)
        ax.set(title=e["name"] + (f" (clean AUC {clean:.3f})" if clean is not None else ""),
               xlabel="perturbation level", xticks=list(LEVELS), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{level}-level AUC")
    handles, names = axes[0][-1].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle("AUC under DeeperForensics-1.0 perturbations and JPEG", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["key_region_figure", "masked_input", "patch_mask_image", "plot_robustness",
           "read_metrics", "reconstruction_grid", "roc_figure", "training_curves"]


def collect_images(items: list[str], limit: int) -> list[str]:
    """Image files from files, folders (sorted) and manifests, at most ``limit``."""
    from lorefd.data.images import is_image
    from lorefd.data.manifest import load_samples

    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_file() and is_image(p):
            out.append(str(p))
        elif p.is_dir() or p.suffix.lower() == ".csv":
            out.extend(s.path for s in load_samples(p))
        else:
            raise FileNotFoundError(f"not an image, folder or manifest: {item}")
    return out[:limit]


def reconstruct_figure(ckpt: str | Path, images: list[str], out: str | Path, seed: int = 0,
                       device: str | None = None) -> Path:
    """Load a stage-1 model, reconstruct ``images`` under key-region masking, draw Fig. 4."""
    from lorefd.data.images import ImageLoadError, load_rgb, resize_square, to_tensor
    from lorefd.evaluation.figures import reconstruction_grid
    from lorefd.models.mae import load_mae
    from lorefd.utils import pick_device

    dev = pick_device(device)
    model = load_mae(ckpt, device=dev)
    tensors, names = [], []
    for path in images:
        try:
            tensors.append(to_tensor(resize_square(load_rgb(path), model.image_size)))
            names.append(Path(path).name)
        except ImageLoadError as exc:
            log.warning("skipping %s: %s", path, exc)
    if not tensors:
        raise NothingProcessedError("no readable image to reconstruct")
    imgs = torch.stack(tensors).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    res = model.reconstruct(imgs, generator=gen)
    return reconstruction_grid(imgs.cpu(), res["image"].cpu(), res["mask"].cpu(),
                               model.patch_size, out, names,
                               title=f"{Path(ckpt)}: mask ratio {model.mask_ratio:g}")
