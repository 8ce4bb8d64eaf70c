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


def test_attention_and_difference_panels_have_colour_bars(tiny_mae: Path) -> None:
    from conftest import tiny_config

    from lorefd.evaluation.explain import build_figure
    from lorefd.models.detectors import build_detector

    torch.manual_seed(0)
    det = build_detector(tiny_config(), tiny_mae).eval()
    batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ex = det.explain(batch)
    fig = build_figure(batch, ex, ["a.png", "b.png"])
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    per_row = 1 + len(ex["attention"])  # |difference| and every attention layer
    assert len(bars) == 2 * per_row and all(bars)  # each bar says what its colours mean
    assert sum("differs" in b for b in bars) == 2 * len(ex["attention"])
    figures.plt.close(fig)


def test_no_saved_figure_cuts_its_labels() -> None:
    """Every ``savefig`` in the package keeps what is drawn outside the axes."""
    import ast

    src = Path(figures.__file__).resolve().parents[1]
    calls = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "savefig":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, node.lineno, kw.get("bbox_inches")))
    assert len(calls) >= 5  # the scan finds them (one ROC plot since the two were merged)
    assert [c for c in calls if c[2] != "'tight'"] == []


def test_training_curves_from_metrics_jsonl(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    for name in ("lre", "baseline", "stage1"):
        (tmp_path / name).mkdir()
        recs = [{"step": s, "split": "train", "loss": 1.0 / s} for s in range(1, 6)]
        if name != "stage1":
            recs += [{"step": s, "split": "val", "auc": 0.5 + s / 20} for s in (2, 4)]
        text = "\n".join(json.dumps(r) for r in recs) + "\n{torn"
        (tmp_path / name / "metrics.jsonl").write_text(text)
    figs = []
    real_close = figures.plt.close
    monkeypatch.setattr(figures.plt, "close", lambda fig=None: figs.append(fig))
    out = figures.training_curves({"lre": tmp_path / "lre", "baseline": tmp_path / "baseline"},
                                  tmp_path / "curves.png", stage1=tmp_path / "stage1")
    assert out is not None and out.is_file()
    (fig,) = figs
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["stage 1: masked-patch MSE", "stage 2: training loss (BCE)",
                      "stage 2: validation AUC"]
    auc_lines = {ln.get_label(): ln.get_ydata() for ln in fig.axes[2].get_lines()}
    assert list(auc_lines["lre"]) == [0.6, 0.7]
    real_close(fig)
    assert figures.training_curves({"x": tmp_path / "missing"}, tmp_path / "none.png") is None


def test_demo_report_has_curves_config_version_and_date(tmp_path: Path) -> None:
    from lorefd import __version__
    from lorefd.apps.demo import write_report

    fig_dir = tmp_path / "figures"
    fig_dir.mkdir()
    (fig_dir / "training.png").write_bytes(b"\x89PNG")
    summary = {"identities": {"train": 1, "val": 1, "test": 1}, "seconds": 60.0,
               "quick": True, "metrics": {}, "stages": {"stage 1": 1.0},
               "config": {"train": {"epochs": 6}}, "lorefd_version": __version__,
               "date": "2026-11-27 15:00 UTC"}
    write_report(tmp_path, summary, fig_dir)
    md = (tmp_path / "report.md").read_text()
    assert "## Training curves" in md and "(figures/training.png)" in md
    assert f"lorefd {__version__}" in md and "2026-11-27 15:00 UTC" in md
    assert "```\ntrain:\n  epochs: 6\n```" in md
    assert "<pre>train:\n  epochs: 6\n</pre>" in (tmp_path / "report.html").read_text()


def test_figure_labels_are_shortened_around_an_ellipsis_never_cut() -> None:
    from lorefd.evaluation.figures import short_name

    assert short_name("000000_000000_0.png") == "000000_000000_0.png"  # fits: whole
    long = short_name("a_very_long_name_of_a_synthesised_face_0001.png")
    assert len(long) == 24 and "\u2026" in long and long.endswith(".png")
