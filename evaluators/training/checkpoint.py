"""Atomic files: checkpoints (``torch.save``, loaded with ``weights_only=True``) and safetensors."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from search_spaces.errors import DataError
from search_spaces.serialize import atomic_write

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save a dict of tensors and plain values; a kill during the save leaves the old file intact."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_error_reason(err: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed.

    Torch's own text spans lines and advises ``weights_only=False``, which would run the file's
    pickled code; this names what was refused instead and never gives that advice."""
    refused = re.search(r"GLOBAL ([\w.]+)", str(err))
    if refused is not None:
        return (f"it holds objects other than tensors and plain data (refused global {refused.group(1)}); "
                "mobilenas never unpickles arbitrary objects")
    if isinstance(err, pickle.UnpicklingError):
        return ("its pickled data is corrupt or holds unsupported content; "
                "mobilenas never unpickles arbitrary objects")
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.split('. ')[0]}"


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint without running pickled code (``weights_only=True``), on the CPU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means a bad file
        raise DataError(f"{path}: not a readable checkpoint ({load_error_reason(err)})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise DataError(f"{path}: not a mobilenas training checkpoint (no 'step' or 'model')")
    return state


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str],
                 metadata: dict[str, str] | None = None) -> Path:
    """The model's state dict (buffers included) as safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
