"""Errors of the latency evaluators; all are bad-input errors (:class:`MobilenasError`)."""

from __future__ import annotations

from search_spaces.errors import MobilenasError


class LatencyError(MobilenasError):
    """Root of the latency errors: a measurement or lookup that cannot be done as asked."""


class ProtocolError(LatencyError, ValueError):
    """A latency protocol field has a value that is not allowed; names the field."""


class ProtocolMismatchError(LatencyError):
    """A lookup table was measured with another protocol (or on another machine)."""


class TableFileError(LatencyError):
    """A lookup table or CSV file is missing, truncated, corrupt or malformed."""


class MissingRowsError(LatencyError):
    """A table for a device that is not this machine lacks rows it cannot measure itself.

    ``keys`` holds the missing layer keys."""

    def __init__(self, message: str, keys: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keys = keys
