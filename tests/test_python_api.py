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
