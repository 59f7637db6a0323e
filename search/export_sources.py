"""What to export: a spec given directly, or a finished run directory and what it recorded.

Run directories this reads:

- a run of ``mobilenas train``, ``search`` or ``refine``: its run record ``run.json``
  (:mod:`search.run_record`: the spec, the weights file, latency with its protocol, accuracy,
  data, budget, provenance) and the weights it names;
- an earlier export (it has ``export.json``): its ``spec.json`` and weights, checked against the
  manifest;
- a run written before run records existed: its ``winner.json`` or ``spec.json`` and weights
  only (its figures are not carried over; rerun it, or export it as is).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from search.export import MANIFEST, read_weights, verify_export
from search.run_record import RUN_RECORD, RunRecord, read_run_record
from search_spaces import serialize
from search_spaces.errors import ExportError, MobilenasError
from search_spaces.reference import REFERENCES
from search_spaces.spec import ArchSpec

SPEC_SOURCES = ("winner.json", "spec.json")  # winner first: a refine run may keep its seed as spec.json


@dataclass(frozen=True)
class ExportSource:
    """A spec, its weights (None: untrained) and the metadata found beside them."""

    spec: ArchSpec
    weights: dict[str, torch.Tensor] | None
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


def arch_name(arch: str, spec: ArchSpec, width_mult: float = 1.0) -> str:
    """A short default name: the reference (with width), the spec file's stem, or a spec hash."""
    if arch in REFERENCES:
        return arch if width_mult == 1.0 else f"{arch}_w{width_mult:g}"
    if Path(arch).suffix.lower() in (".json", ".yaml", ".yml", ".txt"):
        return Path(arch).stem
    return "arch_" + hashlib.sha1(str(spec).encode()).hexdigest()[:8]


def _run_name(root: Path) -> str:
    name = root.name
    return f"{root.parent.name}_{name}" if name[:1].isdigit() and root.parent.name else name


def _from_record(root: Path, record: RunRecord) -> ExportSource:
    """The spec, the weights the record names (checked to exist) and the record's figures."""
    weights = None
    if record.weights is not None:
        path = root / record.weights
        if not path.is_file():
            raise ExportError(f"{root / RUN_RECORD}: names weights {record.weights}, which {root} "
                              "does not hold")
        weights = read_weights(path)
    metadata = {**record.card_metadata(), "run": {"kind": record.kind, "record": RUN_RECORD}}
    metadata.setdefault("provenance", f"{record.kind} run directory {root}")
    metadata["source"] = {"run": str(root), "spec_file": RUN_RECORD, "weights": record.weights}
    return ExportSource(spec=record.spec, weights=weights, name=_run_name(root), metadata=metadata)


def _from_files(root: Path, *, verify: bool, skip: str) -> ExportSource:
    """An export dir (verified against its manifest) or a run without a record: spec and weights."""
    spec_file = next((root / n for n in SPEC_SOURCES if (root / n).is_file()), None)
    if spec_file is None:
        raise ExportError(f"run={root}: no {RUN_RECORD}, {' or '.join(SPEC_SOURCES)} in it; a run directory "
                          "of 'mobilenas train', 'search' or 'refine' holds one")
    weights_path = root / "weights.safetensors"
    exported = (root / MANIFEST).is_file()
    if verify and exported:
        verify_export(root, (spec_file.name, *((weights_path.name,) if weights_path.is_file() else ())),
                      skip=skip)
    try:
        spec = serialize.load_spec_file(spec_file)
    except MobilenasError as err:
        raise ExportError(str(err)) from None
    weights = read_weights(weights_path) if weights_path.is_file() else None
    provenance = (f"export directory {root}" if exported else
                  f"run directory {root} ({spec_file.name}; written before run records, figures not read)")
    source = {"run": str(root), "spec_file": spec_file.name,
              "weights": weights_path.name if weights is not None else None}
    metadata: dict[str, Any] = {"provenance": provenance, "source": source}
    return ExportSource(spec=spec, weights=weights, name=_run_name(root), metadata=metadata)


def read_run(run_dir: str | os.PathLike[str], *, verify: bool = True,
             skip: str = "pass verify=False to read it unchecked") -> ExportSource:
    """The spec, weights and metadata of a train, search or refine run directory (its run record),
    or of an export directory (with ``verify``, its spec and weights must match its ``export.json``;
    an error ends with ``skip``)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ExportError(f"run={root}: run directory not found")
    record = read_run_record(root)
    if record is not None:
        return _from_record(root, record)
    return _from_files(root, verify=verify, skip=skip)
