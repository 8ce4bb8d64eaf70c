"""report.md loads its images from its own folder; the difference figure has a colour bar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lorefd.evaluation import figures
from lorefd.evaluation.report import Report


def test_markdown_images_are_relative_to_the_report_folder(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs" / "demo"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "roc.png").write_bytes(b"png")
    (tmp_path / "elsewhere.png").write_bytes(b"png")
    monkeypatch.chdir(tmp_path)  # figures named relative to the working directory
    rep = Report("t")
    rep.figure(Path("runs/demo/figures/roc.png"), "ROC")
    rep.figure(tmp_path / "elsewhere.png", "other")
    md, _ = rep.write(Path("runs/demo"))
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md.read_text())
    assert links == ["figures/roc.png", "../../elsewhere.png"]
    for link in links:  # each loads from the report's folder
        assert (md.parent / link).is_file()


def test_difference_panel_has_a_colour_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figs = []
    real_close = figures.plt.close
    monkeypatch.setattr(figures.plt, "close", lambda fig=None: figs.append(fig))
    g = torch.Generator().manual_seed(0)
    images, recon = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    mask = torch.zeros(2, 16)
    mask[:, :8] = 1
    figures.reconstruction_grid(images, recon, mask, 8, tmp_path / "grid.png")
    (fig,) = figs
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert sum("reconstruction" in label for label in labels) == 2  # one bar per row
    real_close(fig)
