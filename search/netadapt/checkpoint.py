"""Atomic checkpoints of a NetAdapt run: plain data and tensors only, loaded with weights_only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from evaluators.training.checkpoint import load_error_reason
from search_spaces.errors import DataError
from search_spaces.serialize import atomic_write

FORMAT_VERSION = 1


def save_netadapt_state(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save the state of a NetAdapt run (``torch.save`` to a temporary file beside ``path``, then
    rename: never half-written)."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT_VERSION, **state}, tmp))


def load_netadapt_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The NetAdapt state saved at ``path``, or ``None`` when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise DataError(f"{path}: not a readable NetAdapt checkpoint ({load_error_reason(err)}); "
                        "delete it to start the refinement over") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: not a NetAdapt checkpoint of format {FORMAT_VERSION}")
    return payload
