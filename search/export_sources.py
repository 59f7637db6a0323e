"""What to export: a spec given directly, or a finished run directory and whatever it recorded.

Run directories this reads (every file but the spec is optional, every key is optional):

- ``mobilenas train``: ``spec.json``, ``weights.safetensors``, ``metrics.json`` (``top1``,
  ``top5``, ``data``, ``budget``, ``seconds``, ``history``, ...);
- ``mobilenas search`` / ``refine``: ``winner.json`` (a spec dict, or ``{"spec": dict|string,
  ...}``) or ``spec.json``, ``weights.safetensors``, ``summary.json`` (``latency_ms`` or
  ``latency``, ``protocol``, ``accuracy``/``top1``, ``data``, ``budget``, ``provenance``, ...);
- an earlier export (it has ``export.json``): its spec and weights, checked against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from search.export import MANIFEST, read_weights, verify_export
from search.model_card import is_accuracy_key
from search_spaces import serialize
from search_spaces.blockstring import from_string
from search_spaces.errors import ExportError, MobilenasError
from search_spaces.reference import REFERENCES
from search_spaces.spec import ArchSpec

SPEC_SOURCES = ("winner.json", "spec.json")  # winner first: a refine run may keep its seed as spec.json
_CARD_KEYS = ("latency_ms", "protocol", "data", "budget", "provenance")


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None


def _spec_from_winner(path: Path) -> tuple[ArchSpec, dict[str, Any]]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object with a spec, got {type(data).__name__}")
    try:
        if "blocks" in data:
            return serialize.from_dict(data), {}
        if "spec" in data:
            spec = data["spec"]
            extra = {k: v for k, v in data.items() if k != "spec"}
            return (from_string(spec) if isinstance(spec, str) else serialize.from_dict(spec)), extra
    except MobilenasError as err:
        raise ExportError(f"{path}: {err}") from None
    raise ExportError(f"{path}: holds no spec; expected a spec object (with 'blocks') or a 'spec' key")


def _card_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Lift the keys the model card reads (latency in either form) out of a run's summary."""
    out = {k: v for k, v in data.items() if k in _CARD_KEYS or is_accuracy_key(k)}
    latency = data.get("latency")
    if isinstance(latency, dict):
        for key in ("ms", "latency_ms", "value", "median_ms", "mean_ms"):
            if isinstance(latency.get(key), (int, float)):
                out.setdefault("latency_ms", latency[key])
                break
        if "protocol" in latency:
            out.setdefault("protocol", latency["protocol"])
    elif isinstance(latency, (int, float)) and not isinstance(latency, bool):
        out.setdefault("latency_ms", latency)
    return out


def _split(data: dict[str, Any], rest_key: str) -> dict[str, Any]:
    """The card's keys of ``data``, and everything else under ``rest_key``."""
    out = _card_fields(data)
    rest = {k: v for k, v in data.items() if k not in out and k != "latency"}
    return {**out, rest_key: rest} if rest else out


def _metrics_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in metrics.items() if k in ("data", "budget") or is_accuracy_key(k)}
    if "data" not in out and "dataset" in metrics:
        out["data"] = metrics["dataset"]
    if "budget" not in out:
        budget = {k: metrics[k] for k in ("epochs", "steps") if k in metrics}
        if budget:
            out["budget"] = budget
    consumed = {*out, "history", "dataset", *(out["budget"] if isinstance(out.get("budget"), dict) else ())}
    training = {k: v for k, v in metrics.items() if k not in consumed}
    if training:
        out["training"] = training
    return out


def _run_name(root: Path) -> str:
    name = root.name
    return f"{root.parent.name}_{name}" if name[:1].isdigit() and root.parent.name else name


def read_run(run_dir: str | os.PathLike[str], *, verify: bool = True,
             skip: str = "pass verify=False to read it unchecked") -> ExportSource:
    """The spec, weights and metadata of a train, search or refine run directory, or of an export
    directory (with ``verify``, its spec and weights must match its ``export.json``; an error
    ends with ``skip``)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ExportError(f"run={root}: run directory not found")
    spec_file = next((root / n for n in SPEC_SOURCES if (root / n).is_file()), None)
    if spec_file is None:
        raise ExportError(f"run={root}: no {' or '.join(SPEC_SOURCES)} in it; a run directory of "
                          "'mobilenas train', 'search' or 'refine' holds one")
    weights_path = root / "weights.safetensors"
    if verify and (root / MANIFEST).is_file():
        verify_export(root, (spec_file.name, *((weights_path.name,) if weights_path.is_file() else ())),
                      skip=skip)
    metadata: dict[str, Any] = {}
    if spec_file.name == "winner.json":
        spec, extra = _spec_from_winner(spec_file)
        metadata.update(_split(extra, "winner"))
    else:
        try:
            spec = serialize.load_spec_file(spec_file)
        except MobilenasError as err:
            raise ExportError(str(err)) from None
    summary_path = root / "summary.json"
    if summary_path.is_file():
        summary = _read_json(summary_path)
        if not isinstance(summary, dict):
            raise ExportError(f"{summary_path}: expected a JSON object, got {type(summary).__name__}")
        metadata.update(_split(summary, "summary"))
    metrics_path = root / "metrics.json"
    if metrics_path.is_file():
        metrics = _read_json(metrics_path)
        if not isinstance(metrics, dict):
            raise ExportError(f"{metrics_path}: expected a JSON object, got {type(metrics).__name__}")
        metadata.update(_metrics_fields(metrics))
    weights = read_weights(weights_path) if weights_path.is_file() else None
    metadata.setdefault("provenance", f"run directory {root} ({spec_file.name})")
    metadata["source"] = {"run": str(root), "spec_file": spec_file.name,
                          "weights": weights_path.name if weights is not None else None}
    return ExportSource(spec=spec, weights=weights, name=_run_name(root), metadata=metadata)
