"""The run record: one versioned schema for what a finished train, search or refine run produced.

Each of those runs writes ``run.json`` in its run directory (beside the files users read:
``metrics.json``, ``summary.json``, ``winner.*``); ``mobilenas export run=<dir>``, the pipeline
and ``mobilenas reproduce`` read it. A record is a value; JSON only at the file boundary, where a
file that is too large, not JSON, of another schema, of a newer version or malformed is one
:class:`~search_spaces.errors.DataError` line naming it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.protocols import LatencyEvaluator
from search_spaces.errors import DataError, MobilenasError
from search_spaces.serialize import atomic_write_text, from_dict, read_json_object, to_dict
from search_spaces.spec import ArchSpec

RUN_RECORD = "run.json"
SCHEMA = "mobilenas.run"
VERSION = 1
KINDS = ("train", "search", "refine")
MAX_RECORD_BYTES = 1 << 20  # a record holds figures and one spec: a few KB


@dataclass(frozen=True)
class RunRecord:
    """What a run produced: its network and the figures measured on it.

    ``weights``: the file name of its weights in the run dir (None: untrained, e.g. a search
    winner); ``accuracy``: figures on ``split`` of these weights (e.g. ``top1``, ``val_top1``);
    ``latency_ms`` with the ``protocol`` it was measured under; ``data`` and ``budget``: what and how
    long it was trained on; ``provenance``: how it was found (method, study, trial, iterations)."""

    kind: str
    spec: ArchSpec
    weights: str | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    split: str | None = None
    latency_ms: float | None = None
    protocol: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.weights is not None and (Path(self.weights).name != self.weights
                                         or not self.weights.endswith(".safetensors")):
            raise ValueError(f"weights: {self.weights!r} is not a .safetensors file name in the run dir")

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object ``run.json`` holds."""
        return {"schema": SCHEMA, "version": VERSION, "kind": self.kind, "spec": to_dict(self.spec),
                "weights": self.weights, "accuracy": self.accuracy, "split": self.split,
                "latency_ms": self.latency_ms, "protocol": self.protocol, "data": self.data,
                "budget": self.budget, "provenance": self.provenance}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """The record of a JSON object of this schema and version (KeyError/TypeError/ValueError else)."""
        latency = data["latency_ms"]
        return cls(kind=str(data["kind"]), spec=from_dict(data["spec"]),
                   weights=_optional_str(data["weights"]),
                   accuracy={str(k): float(v) for k, v in _object(data["accuracy"]).items()},
                   split=_optional_str(data["split"]),
                   latency_ms=None if latency is None else float(latency),
                   protocol=None if data["protocol"] is None else _object(data["protocol"]),
                   data=_object(data["data"]), budget=_object(data["budget"]),
                   provenance=_object(data["provenance"]))

    def card_metadata(self) -> dict[str, Any]:
        """What the model card of an export of this run shows (see :mod:`search.model_card`)."""
        out: dict[str, Any] = {}
        if self.latency_ms is not None:
            out.update(latency_ms=self.latency_ms, protocol=self.protocol)
        if self.accuracy:
            out["accuracy"] = {**self.accuracy, **({"split": self.split} if self.split else {})}
        out.update({k: v for k, v in (("data", self.data), ("budget", self.budget),
                                      ("provenance", self.provenance)) if v})
        return out


def latency_protocol(evaluator: LatencyEvaluator) -> dict[str, Any]:
    """The protocol a latency evaluator states, as a plain dict with its backend and description."""
    return {**evaluator.protocol.to_dict(), "backend": evaluator.backend, "description": evaluator.describe()}


def data_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """A data set's summary as a record holds it: its plain numbers and names only."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {type(value).__name__}")
    return value


def write_run_record(run_dir: str | os.PathLike[str], record: RunRecord) -> Path:
    """Write ``record`` as ``run_dir/run.json`` (atomically)."""
    return atomic_write_text(Path(run_dir) / RUN_RECORD, json.dumps(record.to_json(), indent=2) + "\n")


def read_run_record(run_dir: str | os.PathLike[str]) -> RunRecord | None:
    """The record in ``run_dir/run.json``; None when there is none."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    data = read_json_object(path, max_bytes=MAX_RECORD_BYTES, what="run record")
    if data.get("schema") != SCHEMA:
        raise DataError(f"{path}: not a mobilenas run record (no \"schema\": \"{SCHEMA}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise DataError(f"{path}: run record version {version!r}; this mobilenas reads versions 1 to "
                        f"{VERSION} (a newer mobilenas wrote it?)")
    try:
        return RunRecord.from_json(data)
    except (KeyError, TypeError, ValueError, MobilenasError) as err:
        reason = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise DataError(f"{path}: malformed run record ({reason})") from None
