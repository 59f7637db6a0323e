"""The project's exceptions: bad input (exit 2), failed runs (exit 1); anything else is a bug."""

from __future__ import annotations


class MobilenasError(Exception):
    """Root of every error caused by bad input (config, spec, data, files): exit status 2."""


class RunFailure(Exception):
    """A run that started from good input but failed (diverged training, a failed check): exit 1.

    Not a :class:`MobilenasError`: the input was fine, the result is not."""


class SpecError(MobilenasError, ValueError):
    """An architecture spec, spec string or spec file is invalid; says where and what."""


class NotInSpaceError(MobilenasError, ValueError):
    """A spec cannot be expressed by a search space's parameters."""
