"""``lorefd.detect`` and ``lorefd.Model``: a path or a list, clear type errors, one load."""

from __future__ import annotations

from pathlib import Path

import pytest

import lorefd

FACES = Path(lorefd.__file__).parent / "assets" / "faces" / "real"


def _face() -> Path:
    return sorted(FACES.glob("*.jpg"))[0]


@pytest.mark.parametrize("bad", [3, None, {"a": 1}, [Path("x.jpg"), 7], b"x.jpg"])
def test_detect_refuses_what_is_not_a_path_with_a_type_error(bad) -> None:
    with pytest.raises(TypeError, match="expected a path or a list of paths, got"):
        lorefd.detect(bad)


def test_detect_takes_a_string_and_keeps_the_model_loaded(monkeypatch) -> None:
    import lorefd.models.graph as graph

    loads = []  # loads from a file (a Bundle already loaded is passed through, not loaded)
    real = graph.load_runtime_model
    monkeypatch.setattr(graph, "load_runtime_model", lambda spec, *a, **k: (
        loads.append(spec) if not isinstance(spec, graph.Bundle) else None) or real(spec, *a, **k))
    lorefd._LOADED.clear()
    one = lorefd.detect(str(_face()))           # a string, not a list
    two = lorefd.detect([_face()])              # a list of Paths
    assert len(loads) == 1, "the second call reloaded the model"
    assert one["results"][0]["status"] == "ok" and len(one["results"]) == 1
    assert one["results"][0]["p_fake"] == pytest.approx(two["results"][0]["p_fake"], abs=1e-6)
    assert one["results"][0]["verdict"] in ("real", "fake")


def test_model_object_scores_like_the_shortcut() -> None:
    model = lorefd.Model(runtime="onnx")
    assert 0.0 < model.threshold < 1.0
    r = model.detect(_face())["results"][0]
    lorefd._LOADED.clear()
    assert r["p_fake"] == pytest.approx(lorefd.detect(_face())["results"][0]["p_fake"], abs=1e-6)


@pytest.mark.parametrize("bad", [{"frames": 0}, {"threshold": 1.5}, {"threshold": float("nan")},
                                 {"batch_size": -1}, {"workers": 2.5}, {"threads": True},
                                 {"runtime": "evil"}])
def test_options_out_of_range_are_refused_before_any_loading(bad, monkeypatch) -> None:
    """A bad option is an OptionError (a user error: exit 2 on the command line) raised when
    the options are made, before a model is loaded or a file read."""
    import lorefd.models.graph as graph
    from lorefd.engines.detect import DetectOptions
    from lorefd.errors import OptionError

    def no_loading(*a, **k):
        raise AssertionError("loaded a model")

    monkeypatch.setattr(graph, "load_runtime_model", no_loading)
    lorefd._LOADED.clear()
    with pytest.raises(OptionError):
        DetectOptions(**bad)
    with pytest.raises(OptionError):
        lorefd.detect(str(_face()), **bad)
    if {"runtime", "threads"} & set(bad):  # the options lorefd.Model takes
        with pytest.raises(OptionError):
            lorefd.Model(**bad)


def test_both_runtimes_behind_one_scorer() -> None:
    """The loaded bundle's detector is scored through the Scorer of its runtime: the same
    crops, the same probabilities (within the export tolerance), maps only when asked."""
    from lorefd.engines.scorer import scorer_for
    from lorefd.models.graph import PROB_TOL, load_runtime_model, reference_crops

    bundle = load_runtime_model(None, "cpu", "onnx")
    onnx = scorer_for(bundle)
    crops = reference_crops(onnx.image_size, bundle.preprocess, 2)
    p, maps = onnx.scores(crops)
    assert (onnx.runtime, onnx.device, p.shape, maps) == ("onnx", "cpu", (2,), {})
    p_maps, maps = onnx.scores(crops, maps=True)
    assert maps and all(m.shape[0] == 2 for m in maps.values())
    assert p_maps == pytest.approx(p, abs=1e-6)
    pytest.importorskip("torch")
    torch_ = scorer_for(load_runtime_model(None, "cpu", "torch"), "cpu")
    assert (torch_.runtime, torch_.device, torch_.name) == ("torch", "cpu", onnx.name)
    assert torch_.scores(crops)[0] == pytest.approx(p, abs=PROB_TOL)
