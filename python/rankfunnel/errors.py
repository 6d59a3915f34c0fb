"""Exceptions raised by rankfunnel.

Every error about what a caller passed derives from :class:`RankfunnelError`, itself a
:class:`ValueError`, so ``except ValueError`` keeps working. File-system problems raise the
usual :class:`OSError` subclasses (``FileNotFoundError`` ...).
"""

from __future__ import annotations

__all__ = [
    "CorruptFileError",
    "RankfunnelError",
    "UnknownIdError",
    "UnsupportedVersionError",
]


class RankfunnelError(ValueError):
    """Invalid input: a wrong shape, dtype, value or parameter. The message names the problem."""


class UnknownIdError(RankfunnelError, KeyError):
    """An id that the index does not hold (also a :class:`KeyError`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CorruptFileError(RankfunnelError):
    """A file that is not a rankfunnel index, is truncated, or fails its checksum."""


class UnsupportedVersionError(CorruptFileError):
    """An index file written by a newer rankfunnel format version."""
