"""Exceptions raised by :mod:`rankfunnel.models`.

All derive from :class:`rankfunnel.errors.RankfunnelError` (a :class:`ValueError`); the ones
about missing files or packages are also :class:`FileNotFoundError` / :class:`ImportError`, so the
usual ``except`` clauses keep working.
"""

from __future__ import annotations

from ..errors import RankfunnelError

__all__ = ["MissingDependencyError", "ModelError", "ModelFileNotFoundError"]


class ModelError(RankfunnelError):
    """A model that cannot be used: wrong kind, unreadable config, unsupported layout, bad input."""


class ModelFileNotFoundError(ModelError, FileNotFoundError):
    """A model directory, or a file a model needs (ONNX graph, tokenizer.json), does not exist."""


class MissingDependencyError(ModelError, ImportError):
    """An optional package that this feature needs is not installed. The message says what to install."""
