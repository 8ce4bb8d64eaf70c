"""Error classes every layer shares: what `lorefd.cli.main` reports without a traceback."""

from __future__ import annotations

import importlib.util

# The base install screens (detect, serve, quality, preprocess with dlib, ``lorefd.detect()``
# on the shipped ONNX bundle); training, evaluation, export, the demo and PyTorch inference
# need the `train` extra. Its packages by import name (pyproject.toml [train]):
TRAIN_EXTRA = "pip install 'lorefd[train]'"
TRAIN_MODULES = ("torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib",
                 "tensorboard", "onnx", "onnxscript")


class UserError(Exception):
    """A problem with the user's input (path, config, data, model): one line, exit status 2.

    Subclass it (usually together with ``ValueError``) for any error the user can fix;
    ``lorefd.cli.main`` turns every one of them into ``lorefd COMMAND: error: ...``.
    """

    exit_code = 2


class NothingProcessedError(UserError):
    """The inputs were usable in principle, but not one of them could be processed: exit 1."""

    exit_code = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, or of the wrong kind (here, not in
    :mod:`lorefd.checkpoint`, so that finding one needs no torch)."""


class DeviceError(UserError, RuntimeError):
    """A device that was asked for and is not available (e.g. ``--device cuda`` without CUDA)."""


class NonFiniteScoreError(UserError, ValueError):
    """A detector gave NaN or infinity for an input: the model is damaged or unusable, and the
    input gets an error, never a verdict."""


class OptionError(UserError, ValueError):
    """A command option or library argument out of its range or set (``--threads 0``,
    ``runtime="evil"``): the caller's input, not a bug."""


class MissingExtraError(UserError, ImportError):
    """``what`` needs a package of the training extra that this install lacks (a base,
    screening-only install): one line naming ``pip install 'lorefd[train]'``, exit 2. An
    ``ImportError`` too, so code that guards an import with ``except ImportError`` still
    catches it."""

    def __init__(self, what: str, module: str) -> None:
        super().__init__(f"{what} needs the training extra ({module} is not installed): "
                         f"{TRAIN_EXTRA}")
        self.name = module


def missing_module(modules: tuple[str, ...] | list[str] = TRAIN_MODULES) -> str | None:
    """The first of ``modules`` (top-level import names) that is not installed, else None.
    Looks only (``find_spec``): nothing is imported."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def require_training_extra(what: str, modules: tuple[str, ...] | list[str] = TRAIN_MODULES
                           ) -> None:
    """Raise :class:`MissingExtraError` for ``what`` when one of ``modules`` is missing."""
    name = missing_module(modules)
    if name is not None:
        raise MissingExtraError(what, name)


def missing_extra(exc: BaseException, what: str) -> MissingExtraError | None:
    """The :class:`MissingExtraError` an ``ImportError`` of a training package means when
    that package is not installed (not when an installed one is broken), else None."""
    if isinstance(exc, MissingExtraError):
        return exc
    if not isinstance(exc, ImportError) or not exc.name:
        return None
    root = exc.name.split(".")[0]
    if root in TRAIN_MODULES and missing_module((root,)) is not None:
        return MissingExtraError(what, root)
    return None


__all__ = ["TRAIN_EXTRA", "TRAIN_MODULES", "CheckpointError", "DeviceError", "MissingExtraError",
           "NonFiniteScoreError", "NothingProcessedError", "OptionError", "UserError", "missing_extra",
           "missing_module", "require_training_extra"]
