"""Typed configuration: dataclasses loaded from YAML, with ``key=value`` overrides.

Every command reads one :class:`Config`. ``configs/paper.yaml`` holds the paper's settings
(Section IV-B); ``configs/tiny.yaml`` runs the same code path small enough for a CPU.

Overrides use dotted keys: ``mae.encoder_depth=4 pretrain.batch_size=8``. Values are parsed as
YAML scalars (``1e-4``, ``true``, ``[8, 12]``) and type-checked against the field.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lorefd.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Input pipeline shared by both stages."""

    image_size: int = 224
    num_workers: int = 4
    # ImageNet normalisation is applied inside the models, images travel as [0, 1] floats.
    landmark_cache: str | None = None  # folder for cached landmarks of plain image folders
    # true: horizontal flip + light colour jitter (stage 2 only); "robust": also random
    # DeeperForensics-style degradations (lorefd.data.perturb) in stage 2, reals and fakes
    # alike, and in stage 1 (degraded real faces to reconstruct, no flip)
    augment: bool | Literal["robust"] = True
    # stage 2 with synthesised fakes: a random similarity transform of each training face (image,
    # blend mask and landmarks together): scale 1 +- jitter, shift +- jitter of the side,
    # rotation +- jitter radians, as face detection and landmarks vary between frames. 0: off
    jitter: float = 0.0


@dataclass
class MaskConfig:
    """Key-region masking (Section III-B-1)."""

    patch_size: int = 16
    mask_ratio: float = 0.75
    # Pixels the P1..P4 rectangle is expanded outward by, as a fraction of the image side.
    margin: float = 0.02
    # "dataset": one rectangle for all faces (paper); "sample": per face
    region: Literal["dataset", "sample"] = "dataset"
    random_fraction: float = 0.0  # share of samples masked purely at random (option, off)


@dataclass
class MAEConfig:
    """Stage-1 ViT encoder/decoder (Section III-B-2)."""

    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = False  # pixel targets so reconstructions are real images


@dataclass
class PretrainConfig:
    """Stage-1 optimisation (Section IV-B: Adam 1e-4, batch 32, 300 epochs)."""

    epochs: int = 300
    max_steps: int | None = None  # stop after this many optimiser steps (tests, demo)
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    amp: bool = True  # bf16 autocast on CUDA, ignored on CPU
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"  # torch.compile mode
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500  # steps; a checkpoint is also written at the end of every epoch


@dataclass
class DetectorConfig:
    """Stage-2 detector (Section III-C)."""

    name: str = "lre"  # registry name: "lre" (the method) or "baseline" (Table V; "xception" is deprecated)
    backbone: str = "legacy_xception"
    pretrained: bool = True  # ImageNet weights when reachable; else said once, random init
    weights: str | None = None  # local weights for the feature extractor (and detector init)
    # local weights for the frozen feature extractor only (e.g. a trained baseline's best/)
    extractor_weights: str | None = None
    # attention layers: module names or "strideN"; [] = the stages whose stride is the MAE
    # patch size (block3/7/11 for Xception with 16-px patches; models/backbone.py)
    layers: list[str] = field(default_factory=list)
    eval_masks: int = 1  # reconstructions averaged at evaluation (deterministic seeds)
    # test-time augmentation outside training: "flip" averages the logits (and maps) of the
    # face and its mirror image (2x the inference cost); "none" is the paper's single pass
    tta: Literal["none", "flip"] = "none"
    mask_seed: int = 0
    drop_rate: float = 0.5
    # Dense auxiliary target (beyond the paper, as in Face X-ray): a 1x1 head on mask_layer
    # predicts the synthesis blend mask; loss = BCE + mask_weight * BCE(mask). 0: off (paper).
    mask_weight: float = 0.0
    mask_layer: str = "stride16"
    # what that head predicts: "blend" = the blend mask M; "boundary" = Face X-ray's blending
    # boundary 4 * M * (1 - M) (Eq. 1 of Li et al.), nonzero only where two images mix
    mask_target: Literal["blend", "boundary"] = "blend"


@dataclass
class TrainConfig:
    """Stage-2 optimisation (Section IV-B: Adam 1e-4, batch 32, 30 epochs x 200 iterations)."""

    epochs: int = 30
    iters_per_epoch: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    balance: bool = True  # sample real and fake equally (FF++ is 1 real : 4 fake)
    fakes: Literal["manifest", "synth", "both"] = "manifest"
    # learning rate per step: constant (paper) or cosine decay to 0 over the run,
    # after warmup_steps of linear warm-up
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    amp: bool = True
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    threshold: float = 0.5
    # fine-tuning: start from this trained detector's weights (whatever --model takes: a
    # .lorefd bundle, a run or checkpoint folder; "shipped" = the packaged model) with a new
    # optimiser and schedule. Same detector, backbone and heads; ignored on --resume.
    init: str | None = None


@dataclass
class SynthConfig:
    """Forgery synthesis from real faces (beyond the paper)."""

    kinds: list[Literal["sbi", "swap", "local"]] = field(
        default_factory=lambda: ["sbi", "swap", "local"])
    weights: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.25])
    fake_ratio: float = 0.5  # share of training samples that are synthesised fakes
    jpeg_quality: list[int] = field(default_factory=lambda: [60, 100])
    # share of items whose final compression is H.264 (one intra-coded frame, libx264 at a CRF
    # drawn from h264_crf) instead of JPEG: the codec real deepfake videos are published in
    h264_ratio: float = 0.0
    h264_crf: list[int] = field(default_factory=lambda: [23, 45])


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the schema."""


@dataclass(frozen=True)
class Range:
    """Allowed numbers for a config field: ``lo <= x <= hi`` (strict where ``open_*``).

    A field gets one from :data:`RANGES` (by dotted key) or from its own
    ``field(metadata={"range": Range(...)})``; list fields are checked element by element.
    """

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.open_hi else ']'}")
        if self.lo is not None:
            return f"{'>' if self.open_lo else '>='} {self.lo:g}"
        return f"{'<' if self.open_hi else '<='} {self.hi:g}"

    def check(self, key: str, value: Any) -> None:
        for v in value if isinstance(value, list) else [value]:
            if v is None or isinstance(v, (str, bool)):
                continue
            low_bad = self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo)
            high_bad = self.hi is not None and (v >= self.hi if self.open_hi else v > self.hi)
            if low_bad or high_bad or v != v:  # v != v: NaN
                raise ConfigError(f"{key}: must be {self}, got {v!r}")


AT_LEAST_1, AT_LEAST_0, POSITIVE, FRACTION = Range(1), Range(0), Range(0, open_lo=True), Range(0, 1)
# Every integer field is at most this in size (counts, sizes, seeds), so that no product of two
# (epochs x iterations, a side squared) overflows the 64-bit integers torch and numpy index
# with; every float field is finite. A field's own range may be narrower.
INT_LIMIT = 2**31 - 1
# Bounds of the numeric fields, by dotted key (a new field joins with one line here or with
# field(metadata={"range": ...})). Checked whenever a config is built: file, --set, checkpoint.
RANGES: dict[str, Range] = {
    "data.image_size": AT_LEAST_1, "data.num_workers": AT_LEAST_0, "data.jitter": Range(0, 0.5),
    "mask.patch_size": AT_LEAST_1, "mask.mask_ratio": Range(0, 1, open_lo=True, open_hi=True),
    "mask.margin": FRACTION, "mask.random_fraction": FRACTION,
    **{f"mae.{k}": AT_LEAST_1 for k in ("encoder_dim", "encoder_depth", "encoder_heads",
                                        "decoder_dim", "decoder_depth", "decoder_heads")},
    "mae.mlp_ratio": POSITIVE,
    **{f"pretrain.{k}": AT_LEAST_1 for k in ("epochs", "max_steps", "batch_size", "log_every",
                                             "ckpt_every")},
    "pretrain.lr": POSITIVE, "pretrain.weight_decay": AT_LEAST_0,
    "pretrain.warmup_steps": AT_LEAST_0,
    "detector.eval_masks": AT_LEAST_1, "detector.drop_rate": Range(0, 1, open_hi=True),
    **{f"train.{k}": AT_LEAST_1 for k in ("epochs", "iters_per_epoch", "batch_size",
                                          "log_every")},
    "train.warmup_steps": AT_LEAST_0, "detector.mask_weight": AT_LEAST_0,
    "train.lr": POSITIVE, "train.weight_decay": AT_LEAST_0, "train.threshold": FRACTION,
    "synth.weights": AT_LEAST_0, "synth.fake_ratio": FRACTION, "synth.jpeg_quality": Range(1, 100),
    "synth.h264_ratio": FRACTION, "synth.h264_crf": Range(0, 51),
}


def _check_magnitude(key: str, value: Any) -> None:
    """:data:`INT_LIMIT` for integers, finiteness for floats (element-wise for lists)."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, bool):
            continue
        if isinstance(v, int) and abs(v) > INT_LIMIT:
            raise ConfigError(f"{key}: must be at most {INT_LIMIT} in size, got {v}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: must be a finite number, got {v!r}")


def field_range(f: dataclasses.Field, key: str) -> Range | None:
    """The bounds of one field: its own ``metadata["range"]``, else :data:`RANGES`."""
    return f.metadata.get("range") or RANGES.get(key)


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, choices))}, "
                              f"got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, inner, key) for v in value]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "", strict: bool = True) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        keys = ", ".join(prefix + k for k in sorted(unknown))
        if strict:
            raise ConfigError(f"unknown config keys: {keys}")
        logging.getLogger("lorefd").warning("ignoring config keys this lorefd does not know: %s",
                                            keys)
        data = {k: v for k, v in data.items() if k in names}
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping")
            kwargs[name] = _build(tp, value, prefix=f"{prefix}{name}.", strict=strict)
        else:
            kwargs[name] = _check_type(value, tp, prefix + name)
            _check_magnitude(prefix + name, kwargs[name])
            bounds = field_range(fields[name], prefix + name)
            if bounds is not None:
                bounds.check(prefix + name, kwargs[name])
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file, or the bare name of a bundled config (``paper``, ``tiny``, ``demo``).

    Anything that looks like a path (a folder part, a suffix, ``.``/``~``) must exist: a
    missing ``some/dir/tiny.yaml`` is an error, never the bundled ``tiny``.
    A bare name that is also a folder in the working directory (``lorefd recipe --out cpu``
    makes one) still means the bundled config: a folder is never a config.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    text = str(path)
    looks_like_path = (len(Path(text).parts) > 1 or bool(Path(text).suffix)
                       or text.startswith((".", "~")))
    bundled = CONFIG_DIR / f"{text}.yaml"
    if not looks_like_path and bundled.is_file():
        return bundled
    if p.is_dir():
        raise ConfigError(f"--config {path} is a folder, not a YAML file")
    if looks_like_path:
        raise ConfigError(f"config file not found: {path}")
    raise ConfigError(f"config not found: {path} (no such file; bundled configs: "
                      f"{', '.join(available_configs())})")


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or defaults when ``path`` is None) and apply ``key=value`` overrides."""
    import yaml  # here: checking a bundle's config (config_from_dict) needs no YAML parser

    tree: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path)
        try:
            with open(file) as fh:
                tree = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {' '.join(str(exc).split())}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {file}: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not a valid YAML scalar "
                              "or list") from None
        _set_dotted(tree, key.strip(), value)
    return _build(Config, tree)


def config_from_dict(tree: dict[str, Any], strict: bool = False) -> Config:
    """Rebuild a config saved with a checkpoint (``Config.to_dict``).

    Keys from another lorefd version are ignored with a warning (``strict=False``), so older
    and newer checkpoints stay loadable; missing keys take today's defaults.
    """
    return _build(Config, tree, strict=strict)
