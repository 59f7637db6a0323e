"""A supernet run directory: what later commands point at to score sub-networks.

Two files, written atomically (weights first, so a directory with a manifest has its weights)::

    supernet.json          {"format": "mobilenas-supernet", "version": 1, "space": {seed spec string,
                            choices}, "record": {training record; its "data" the data description}}
    supernet.safetensors   the supernet's state dict (buffers included)

Loading treats the directory as hostile: plain files only (no symbolic links), the manifest bounded
in size and checked field by field, the weights read with safetensors only, bounded by the size the
space's supernet needs, and every tensor's name, shape and type checked against that supernet.
Any problem is one :class:`DataError` line naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from evaluators.supernet.network import SuperNet
from evaluators.training.checkpoint import save_weights
from search_spaces.blockstring import from_string
from search_spaces.errors import DataError, MobilenasError
from search_spaces.serialize import atomic_write_text, read_json_object
from search_spaces.space import SearchSpace

MANIFEST = "supernet.json"
WEIGHTS = "supernet.safetensors"
FORMAT, VERSION = "mobilenas-supernet", 1
MAX_MANIFEST_BYTES = 16 * 2**20
HEADER_SLACK_BYTES = 2**20  # safetensors header (names, shapes, offsets) beyond the tensors' bytes
CHOICES = ("depth_deltas", "widths", "kernels", "expansions", "se", "acts")


def describe_space(space: SearchSpace) -> dict[str, Any]:
    """The space as plain data: the seed's spec string and each list of choices."""
    return {"seed": str(space.seed), **{name: list(getattr(space, name)) for name in CHOICES}}


def space_from_description(description: Any, where: str) -> SearchSpace:
    """The space of :func:`describe_space`'s output; :class:`DataError` naming ``where`` if it is not one."""
    if not isinstance(description, dict) or not isinstance(description.get("seed"), str):
        raise DataError(f"{where}: 'space' must be a mapping with the seed's spec string under 'seed'")
    choices = {}
    for name in CHOICES:
        values = description.get(name)
        if not isinstance(values, list):
            raise DataError(f"{where}: space.{name} must be a list of choices, got {values!r}")
        choices[name] = tuple(values)
    if any(isinstance(d, bool) or not isinstance(d, int) for d in choices["depth_deltas"]):
        raise DataError(f"{where}: space.depth_deltas must be integers, got {list(choices['depth_deltas'])}")
    try:
        return SearchSpace(seed=from_string(description["seed"]), **choices)
    except (MobilenasError, TypeError, ValueError) as err:
        raise DataError(f"{where}: not a valid space ({err})") from None


def save_supernet(run_dir: str | os.PathLike[str], net: SuperNet, *, record: dict[str, Any]) -> Path:
    """Write ``net`` (weights and space) and the JSON-serialisable training ``record`` (put the data
    description under ``record["data"]``) into ``run_dir``; returns the manifest's path."""
    root = Path(run_dir)
    save_weights(net, root / WEIGHTS, metadata={"format": FORMAT})
    manifest = {"format": FORMAT, "version": VERSION, "space": describe_space(net.space), "record": record}
    return atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _plain_file(path: Path, what: str) -> Path:
    if path.is_symlink():
        raise DataError(f"{path}: is a symbolic link; a supernet run dir holds its {what} as a plain file")
    if not path.is_file():
        raise DataError(f"{path}: not found; a supernet run dir (of 'mobilenas supernet action=train') "
                        f"holds {MANIFEST} and {WEIGHTS}")
    return path


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked manifest of a supernet run dir (format, version, space, record)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"{root}: supernet run dir not found (the out= dir of "
                        "'mobilenas supernet action=train')")
    path = _plain_file(root / MANIFEST, "manifest")
    manifest = read_json_object(path, max_bytes=MAX_MANIFEST_BYTES, what="supernet run manifest")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a supernet run manifest (no \"format\": \"{FORMAT}\")")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: manifest version {manifest.get('version')!r}; mobilenas reads {VERSION}")
    if not isinstance(manifest.get("record"), dict):
        raise DataError(f"{path}: 'record' must be a mapping (the training record)")
    return manifest


def _read_weights(path: Path, net: SuperNet) -> dict[str, torch.Tensor]:
    expected = net.state_dict()
    limit = sum(t.numel() * t.element_size() for t in expected.values()) + HEADER_SLACK_BYTES
    size = path.stat().st_size
    if size > limit:
        raise DataError(f"{path}: {size:,} bytes, more than the {limit:,} this space's supernet needs")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types
        raise DataError(f"{path}: not a readable safetensors file ({type(err).__name__})") from None
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise DataError(f"{path}: weights do not fit the space in {MANIFEST} ({len(missing)} tensors "
                        f"missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise DataError(f"{path}: weights do not fit the space in {MANIFEST}: {name} is {tensor.dtype} "
                            f"{list(tensor.shape)}, the space needs {want.dtype} {list(want.shape)}")
    return tensors


def load_supernet(run_dir: str | os.PathLike[str]) -> tuple[SuperNet, dict[str, Any]]:
    """The supernet saved in ``run_dir`` (on the CPU, eval mode) and its training record."""
    manifest = read_manifest(run_dir)
    root = Path(run_dir)
    space = space_from_description(manifest.get("space"), str(root / MANIFEST))
    try:
        net = SuperNet(space)
    except MobilenasError as err:  # e.g. a space whose largest network is over the spec limits
        raise DataError(f"{root / MANIFEST}: its space cannot be built ({err})") from None
    net.load_state_dict(_read_weights(_plain_file(root / WEIGHTS, "weights"), net))
    return net.eval(), manifest["record"]
