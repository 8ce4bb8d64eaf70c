"""The configuration users run: one real-size step of stage 1 and stage 2 with configs/paper.yaml.

ViT-B/16 MAE at 224 px, the frozen MAE + two Xceptions of the method, and the baseline, on CPU
on two images: the paper's shapes, memory layout and checkpoints, exercised end to end.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from lorefd.config import load_config
from lorefd.data.manifest import FAKE, REAL, read_manifest, write_manifest

ONE_STEP = ["data.num_workers=0", "data.augment=false", "detector.pretrained=false",
            "pretrain.max_steps=1", "pretrain.batch_size=2", "pretrain.log_every=1",
            "train.epochs=1", "train.iters_per_epoch=1", "train.batch_size=2",
            "train.log_every=1"]


@pytest.mark.slow
def test_one_paper_size_step_of_each_stage(faces_manifest: Path, tmp_path: Path) -> None:
    from lorefd.engines.pretrain import pretrain
    from lorefd.engines.train import train

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml", ONE_STEP)
    assert cfg.data.image_size == 224 and cfg.mae.encoder_dim == 768  # the paper's sizes
    reals = read_manifest(faces_manifest)[:2]
    write_manifest(tmp_path / "reals.csv", reals)

    s1 = pretrain(cfg, tmp_path / "reals.csv", tmp_path / "stage1")
    assert s1["steps"] == 1 and s1["final_loss"] == s1["final_loss"]  # finite, not NaN
    # The resume state (1.3 GB with Adam's moments) is not needed by stage 2 (--mae RUN reads
    # best/): free the disk.
    assert (tmp_path / "stage1" / "last").is_dir() and (tmp_path / "stage1" / "best").is_dir()
    shutil.rmtree(tmp_path / "stage1" / "last")
    two = [dataclasses.replace(reals[0], label=REAL),
           dataclasses.replace(reals[1], label=FAKE, method="sbi")]
    for name in ("lre", "baseline"):
        c = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, name=name))
        s2 = train(c, two, None, tmp_path / "stage1" if name == "lre" else None,
                   tmp_path / name)
        assert s2["steps"] == 1 and s2["detector"] == name
        meta = json.loads((tmp_path / name / "last" / "config.json").read_text())["meta"]
        assert meta["image_size"] == 224 and meta["preprocess"]["size"] > 0
        shutil.rmtree(tmp_path / name)  # up to 1.3 GB per run: keep CI's disk use low
