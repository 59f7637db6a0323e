"""The project's exceptions: one root, so the command line can tell bad input from bugs."""

from __future__ import annotations


class MobilenasError(Exception):
    """Root of every error caused by bad input (config, spec, data, files)."""


class SpecError(MobilenasError, ValueError):
    """An architecture spec, spec string or spec file is invalid; says where and what."""


class NotInSpaceError(MobilenasError, ValueError):
    """A spec cannot be expressed by a search space's parameters."""
