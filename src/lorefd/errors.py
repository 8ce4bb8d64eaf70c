"""Error classes every layer shares: what `lorefd.cli.main` reports without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (path, config, data, model): one line, exit status 2.

    Subclass it (usually together with ``ValueError``) for any error the user can fix;
    ``lorefd.cli.main`` turns every one of them into ``lorefd COMMAND: error: ...``.
    """

    exit_code = 2


class NothingProcessedError(UserError):
    """The inputs were usable in principle, but not one of them could be processed: exit 1."""

    exit_code = 1


class DeviceError(UserError, RuntimeError):
    """A device that was asked for and is not available (e.g. ``--device cuda`` without CUDA)."""


class NonFiniteScoreError(UserError, ValueError):
    """A detector gave NaN or infinity for an input: the model is damaged or unusable, and the
    input gets an error, never a verdict."""


__all__ = ["DeviceError", "NonFiniteScoreError", "NothingProcessedError", "UserError"]
