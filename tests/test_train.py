"""Stage-2 training: overfitting, one harness for both detectors, exact resume, bad inputs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import make_detector_checkpoint, make_mini_ffpp, save_tiny_mae, tiny_config

from lorefd.apps.protocols import select
from lorefd.checkpoint import CheckpointError, load_checkpoint
from lorefd.config import ConfigError
from lorefd.data.dataset import FaceDataset
from lorefd.data.manifest import ManifestError, Sample, read_manifest
from lorefd.engines.predict import make_eval_loader, predict
from lorefd.engines.train import balanced_sampler, train
from lorefd.models.bundle import load_bundle
from lorefd.models.detectors import build_detector


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2train")
    manifest = make_mini_ffpp(root / "ffpp", n_faces=12)
    ffpp = read_manifest(manifest)
    return {"mae": save_tiny_mae(root / "mae"), "ffpp": ffpp, "manifest": str(manifest),
            "train": select(ffpp, "train"), "val": select(ffpp, "val")}


def test_detector_overfits_a_tiny_set(data):
    torch.manual_seed(0)
    pick = [s for s in data["train"] if s.method in ("", "Deepfakes")][:8]
    ds = FaceDataset(pick, 64)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = torch.stack([ds[i]["label"] for i in range(len(ds))])
    assert y.sum() == 4
    # no dropout: the test is whether the harness can fit, not how noisy training mode is
    det = build_detector(tiny_config("detector.drop_rate=0.0"), data["mae"])
    opt = torch.optim.Adam(det.trainable_parameters(), lr=1e-3)
    det.train()
    losses, accs = [], []
    for _ in range(10):
        out = det(x)
        loss = det.loss(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append(((out["logits"] >= 0).float() == y).float().mean().item())
    assert sum(losses[-3:]) / 3 < 0.4 * losses[0], losses
    assert sum(accs[-3:]) / 3 >= 0.9, accs


@pytest.mark.parametrize("name", ["lre", "baseline"])
def test_one_harness_for_method_and_baseline(data, tmp_path, name):
    cfg = tiny_config(f"detector.name={name}")
    s = train(cfg, data["train"], data["val"], data["mae"], tmp_path / "run")
    assert s["detector"] == name and s["steps"] == 2 and s["best_epoch"] == 0
    assert s["best_auc"] is None or 0.0 <= s["best_auc"] <= 1.0
    for f in ("best/model.safetensors", "last/state.pt", "config.yaml", "metrics.jsonl",
              "summary.json"):
        assert (tmp_path / "run" / f).is_file(), f
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {r["split"] for r in records} == {"train", "val"}
    det = load_bundle(tmp_path / "run" / "best").detector
    assert det.name == name
    assert (name == "lre") == ("mae" in det.checkpoint_meta)


def test_resume_is_exact(data, tmp_path):
    straight = train(tiny_config("train.epochs=2"), data["train"], None, data["mae"], tmp_path / "a")
    train(tiny_config("train.epochs=1"), data["train"], None, data["mae"], tmp_path / "b")
    with (tmp_path / "b" / "metrics.jsonl").open("a") as fh:  # logged after the checkpoint,
        fh.write(json.dumps({"step": 3, "split": "train", "loss": 9.0}) + "\n")  # then killed
    resumed = train(tiny_config("train.epochs=2"), data["train"], None, data["mae"],
                    tmp_path / "b", resume=True)
    assert straight["steps"] == resumed["steps"] == 4
    wa, _, ma = load_checkpoint(tmp_path / "a" / "last", kind="detector")
    wb, _, mb = load_checkpoint(tmp_path / "b" / "last", kind="detector")
    assert ma["epoch"] == mb["epoch"] == 1
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [(r["split"], r["step"]) for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl")
                                                   .read_text().splitlines())]
    assert len(steps) == len(set(steps)) and 9.0 not in [
        r.get("loss") for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").open())]


def test_init_starts_from_a_trained_detector(data, tmp_path):
    """train.init (fine-tuning) loads every weight of the given detector before step 1, takes
    every --model form, and refuses another detector or backbone with a clear error."""
    src = make_detector_checkpoint(tmp_path, name="baseline")
    w0, _, _ = load_checkpoint(src, kind="detector")
    cfg = tiny_config("detector.name=baseline", f"train.init={src}", "train.lr=1e-12")
    s = train(cfg, data["train"], None, None, tmp_path / "ft")
    w1, _, meta = load_checkpoint(tmp_path / "ft" / "last", kind="detector")
    assert s["steps"] == 2 and meta["init"] == str(src)
    learned = [k for k in w0 if "running_" not in k and "num_batches" not in k]  # not BN stats
    assert all(torch.allclose(w0[k], w1[k], atol=1e-6) for k in learned)  # lr ~0: the source
    # without init the same run starts elsewhere: the test above can fail
    plain = train(tiny_config("detector.name=baseline", "train.lr=1e-12"), data["train"], None,
                  None, tmp_path / "plain")
    w2, _, _ = load_checkpoint(tmp_path / "plain" / "last", kind="detector")
    assert plain["steps"] == 2 and not all(torch.allclose(w0[k], w2[k], atol=1e-6) for k in learned)
    # the method starts from a baseline: its detection network is the baseline's
    lre = train(tiny_config("detector.name=lre", f"train.init={src}", "train.lr=1e-12"),
                data["train"], None, data["mae"], tmp_path / "lre")
    w3, _, _ = load_checkpoint(tmp_path / "lre" / "last", kind="detector")
    shared = [k for k in learned if k.startswith("net.")]
    assert lre["steps"] == 2 and shared and all(k in w3 for k in shared)
    assert all(torch.allclose(w0[k], w3[k], atol=1e-6) for k in shared)
    lre_src = tmp_path / "lre" / "last"
    with pytest.raises(ConfigError, match="'lre' detector, this run trains 'baseline'"):
        train(tiny_config("detector.name=baseline", f"train.init={lre_src}"), data["train"],
              None, None, tmp_path / "x")
    with pytest.raises(ConfigError, match="do not fit"):
        train(tiny_config("detector.name=baseline", "detector.backbone=resnet18",
                          f"train.init={src}"), data["train"], None, None, tmp_path / "y")
    assert not (tmp_path / "x" / "best").exists() and not (tmp_path / "y" / "best").exists()


def test_validation_leaves_out_unreadable_samples(data, tmp_path):
    """Validation inside training scores each sample with its own image: an unreadable one is
    left out (the dataset substitutes the next image; counting that one twice would bias AUC)."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = data["val"][:5]
    samples = good[:2] + [Sample(path=str(bad), label=1)] + good[2:]
    det = build_detector(tiny_config("detector.name=baseline"))
    got = predict([det], make_eval_loader(samples, 64, batch_size=2), torch.device("cpu"))
    ref = predict([det], make_eval_loader(good, 64, batch_size=2), torch.device("cpu"))
    assert got.ok.tolist() == [True, True, False, True, True, True] and ref.ok.all()
    assert got.reasons[2] and np.isnan(got.probs[0][2])
    probs, labels = got.probs[0][got.ok], got.labels[got.ok]
    assert len(probs) == len(good) and labels.tolist() == ref.labels.tolist()
    assert torch.allclose(torch.from_numpy(probs), torch.from_numpy(ref.probs[0]), atol=1e-5)


def test_bad_inputs_fail_before_training(data, tmp_path):
    cfg = tiny_config()
    reals = [s for s in data["train"] if s.label == 0]
    with pytest.raises(ManifestError, match="only real"):
        train(cfg, reals, None, data["mae"], tmp_path / "r1")
    with pytest.raises(ManifestError, match="no samples"):
        train(cfg, [], None, data["mae"], tmp_path / "r2")
    missing = data["train"] + [Sample(path=str(tmp_path / "gone.jpg"), label=1)]
    with pytest.raises(ManifestError, match="missing file"):
        train(cfg, missing, None, data["mae"], tmp_path / "r3")
    with pytest.raises(ManifestError, match="validation set: no samples"):
        train(cfg, data["train"], [], data["mae"], tmp_path / "r4")
    with pytest.raises(CheckpointError, match="not found"):
        train(cfg, data["train"], None, tmp_path / "nomae", tmp_path / "r5")
    fakes_only = [s for s in data["train"] if s.label == 1]
    with pytest.raises(ManifestError, match="needs real faces"):
        train(tiny_config("train.fakes=synth"), fakes_only, None, data["mae"], tmp_path / "r6")
    (tmp_path / "r7" / "last").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, data["train"], None, data["mae"], tmp_path / "r7")
    assert not any((tmp_path / f"r{i}" / "best").exists() for i in range(1, 7))


def test_one_optimizer_builder_for_both_stages():
    """engines.common.build_optimizer: Adam with the stage section's lr and weight decay,
    default betas, one parameter group, warm-up then the section's schedule (stage 1:
    constant), as each engine built it before it was shared."""
    from lorefd.engines.common import build_optimizer, lr_lambda

    cfg = tiny_config("train.lr=3e-4", "train.weight_decay=0.01", "train.warmup_steps=2",
                      "train.schedule=cosine", "pretrain.lr=2e-4", "pretrain.warmup_steps=3")
    net = torch.nn.Linear(3, 2)
    opt, sched = build_optimizer(net.parameters(), cfg.train, torch.device("cpu"), 10)
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["lr"], g["initial_lr"], g["weight_decay"], g["betas"]) == (
        pytest.approx(3e-4 * 0.5), 3e-4, 0.01, (0.9, 0.999))
    want = lr_lambda(2, 10, "cosine")
    for s in range(1, 10):
        opt.step()  # no gradients: nothing moves, the schedule advances
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(3e-4 * want(s))
    opt, sched = build_optimizer(net.parameters(), cfg.pretrain, torch.device("cpu"), 10)
    for s in range(1, 10):
        opt.step()  # no gradients: nothing moves, the schedule advances
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 * min(1.0, (s + 1) / 3))
    assert opt.param_groups[0]["weight_decay"] == 0.0


def test_one_checkpoint_saver_keeps_last_and_best(tmp_path):
    """engines.common.CheckpointSaver: last/ at every save with the resume state, best/ (no
    resume state) on the highest metric, the latest epoch while there is none; a non-finite
    weight is never written; restore brings the bookkeeping back."""
    from lorefd.checkpoint import STATE, load_state
    from lorefd.engines.common import CheckpointSaver, NonFiniteLossError, build_optimizer

    cfg = tiny_config()
    net = torch.nn.Linear(3, 2)
    opt, sched = build_optimizer(net.parameters(), cfg.train, torch.device("cpu"))
    saver = CheckpointSaver(tmp_path, net, opt, sched, cfg, {"kind": "detector"},
                            kind="detector", metric="val_auc")
    assert saver.update(1, 0, {"epoch": 0}) and saver.extra["best_epoch"] == 0  # no AUC yet
    assert saver.update(2, 1, {"epoch": 1, "val_auc": 0.6})
    assert not saver.update(3, 2, {"epoch": 2, "val_auc": 0.5})
    assert not saver.update(4, 3, {"epoch": 3})  # an AUC was seen: none is not better
    _, _, meta = load_checkpoint(tmp_path / "best", kind="detector")
    assert (meta["epoch"], meta["val"]["val_auc"]) == (1, 0.6)
    assert not (tmp_path / "best" / STATE).exists()
    state = load_state(tmp_path / "last")
    assert state["step"] == 4 and state["extra"]["best_auc"] == 0.6
    assert len(state["extra"]["history"]) == 4
    again = CheckpointSaver(tmp_path, net, opt, sched, cfg, {"kind": "detector"},
                            kind="detector", metric="val_auc")
    assert again.restore(tmp_path / "last")["epoch"] == 3 and again.extra == saver.extra
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="weight"):
        saver.save_last(5, 4)
    assert load_state(tmp_path / "last")["step"] == 4  # the last good one is kept


def test_mae_run_folders_of_both_layouts_resolve(data, tmp_path):
    """``--mae RUN`` as training reads it: best/, else last/ (this layout), else mae/, else
    checkpoints/last (a stage-1 run of the older layout)."""
    from lorefd.engines.train import check_inputs

    def resolved(run):
        return check_inputs(tiny_config(), data["train"], None, run)[2]

    old = tmp_path / "old"
    save_tiny_mae(old / "checkpoints" / "last")
    assert resolved(old) == old / "checkpoints" / "last"
    save_tiny_mae(old / "mae")
    assert resolved(old) == old / "mae"
    new = tmp_path / "new"
    save_tiny_mae(new / "last")
    assert resolved(new) == new / "last"
    save_tiny_mae(new / "best")
    assert resolved(new) == new / "best"


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 20 + [1] * 80  # FF++'s 1 real : 4 fake
    drawn = Counter(labels[i] for i in balanced_sampler(labels, 4000, seed=0))
    assert abs(drawn[0] - drawn[1]) < 300
    plain = Counter(labels[i] for i in balanced_sampler(labels, 4000, seed=0, balance=False))
    assert plain[1] > 3 * plain[0]
    assert list(balanced_sampler(labels, 50, seed=3)) == list(balanced_sampler(labels, 50, seed=3))


def test_train_command(data, tmp_path, capsys):
    from conftest import TINY

    from lorefd.cli import main

    manifest = data["manifest"]
    sets = [a for o in TINY for a in ("--set", o)]
    base = ["train", "--config", "tiny", *sets, "--train", manifest, "--filter", "split=train"]
    assert main([*base, "--detector", "baseline", "--val", manifest, "--val-filter", "split=val",
                 "--out", str(tmp_path / "xc")]) == 0
    assert "best:" in capsys.readouterr().out
    assert load_bundle(tmp_path / "xc" / "best").detector.name == "baseline"
    # clear errors, exit code 2 (user errors), before any training
    assert main([*base, "--out", str(tmp_path / "nomae")]) == 2
    assert "--mae CKPT is required" in capsys.readouterr().err
    assert main([*base, "--detector", "baseline", "--out", str(tmp_path / "xc")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--train", manifest, "--filter", "split=nope",
                 "--detector", "baseline", "--out", str(tmp_path / "empty")]) == 2
    assert "no samples" in capsys.readouterr().err
