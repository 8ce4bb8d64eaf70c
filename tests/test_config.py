"""Config loading: bundled names vs paths, typed choices, numeric bounds, YAML errors."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from lorefd.config import (
    RANGES,
    Config,
    ConfigError,
    config_from_dict,
    field_range,
    load_config,
    resolve_config_path,
)


@pytest.mark.parametrize("override", [
    "mask.mask_ratio=1.5", "mask.mask_ratio=0", "data.image_size=0", "pretrain.batch_size=0",
    "train.batch_size=-1", "train.threshold=2", "detector.drop_rate=1.0", "pretrain.lr=0",
    "synth.jpeg_quality=[0,100]", "synth.weights=[1,-1,0]", "mae.encoder_depth=0",
    "data.num_workers=-1", "mask.mask_ratio=.nan",
])
def test_out_of_range_values_fail_with_the_key_named(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("paper", [override])


@pytest.mark.parametrize("override", [
    "mask.region=everywhere", "train.fakes=deepfakes", "synth.kinds=[sbi,morph]",
    "pretrain.compile_mode=fastest",
])
def test_string_options_are_checked_against_their_choices(override: str) -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        load_config("tiny", [override])


def test_valid_edge_values_load() -> None:
    cfg = load_config("tiny", ["mask.mask_ratio=0.9", "train.threshold=0", "detector.drop_rate=0",
                               "pretrain.max_steps=null", "mask.region=sample",
                               "train.fakes=both", "synth.kinds=[swap]"])
    assert cfg.mask.region == "sample" and cfg.pretrain.max_steps is None


def test_bounds_apply_to_saved_configs_too() -> None:
    tree = Config().to_dict()
    tree["data"]["image_size"] = 0
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        config_from_dict(tree)


def test_every_range_names_a_field_and_numbers_have_bounds() -> None:
    keys: dict[str, tuple[dataclasses.Field, typing.Any]] = {}
    for name, cls in typing.get_type_hints(Config).items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            keys[f"{name}.{f.name}"] = (f, hints[f.name])
    assert set(RANGES) <= set(keys), set(RANGES) - set(keys)
    numeric = {int, float, int | None, float | None, list[int], list[float]}
    unbounded = sorted(k for k, (f, tp) in keys.items()
                       if tp in numeric and field_range(f, k) is None and not k.endswith("seed")
                       and k != "detector.mask_seed")
    assert not unbounded, f"numeric config fields without bounds (add them to RANGES): {unbounded}"


def test_a_missing_path_is_an_error_not_the_bundled_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: some/missing/path/tiny.yaml"):
        load_config("some/missing/path/tiny.yaml")
    with pytest.raises(ConfigError, match="not found"):
        resolve_config_path(tmp_path / "tiny.yaml")
    with pytest.raises(ConfigError, match="not found"):
        resolve_config_path("tiny.yaml")  # not in the working directory
    with pytest.raises(ConfigError, match="folder"):
        resolve_config_path(tmp_path)
    assert resolve_config_path("tiny").name == "tiny.yaml"  # bare names: bundled
    own = tmp_path / "tiny.yaml"
    own.write_text("data:\n  image_size: 32\n")
    assert load_config(own).data.image_size == 32


def test_yaml_syntax_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  image_size: [64\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="override"):
        load_config("tiny", ["synth.kinds=[sbi"])


def test_a_bare_name_means_the_bundled_config_even_beside_a_folder_of_that_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `lorefd recipe --out cpu` makes ./cpu/; a later `--config cpu` must still be bundled.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert resolve_config_path("tiny").parent.name == "configs"
    with pytest.raises(ConfigError, match="folder"):
        resolve_config_path("./tiny")
