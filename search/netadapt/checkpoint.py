"""Atomic checkpoints of a NetAdapt run: plain data and tensors only, loaded with weights_only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from evaluators.training.checkpoint import load_error_reason
from search_spaces.errors import MobilenasError
from search_spaces.serialize import atomic_write

FORMAT_VERSION = 1


class CheckpointError(MobilenasError, ValueError):
    """A NetAdapt checkpoint is unreadable or belongs to a different refinement."""


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half-written."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT_VERSION, **payload}, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The payload saved at ``path``, or ``None`` when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable NetAdapt checkpoint ({load_error_reason(err)}); "
                              "delete it to start the refinement over") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a NetAdapt checkpoint of format {FORMAT_VERSION}")
    return payload
