"""Latency tables measured elsewhere, as CSV: export the layers to measure, import the figures.

One row per layer configuration. Columns (header names, any order):

==================  ===================================================================
``key``             the layer key, e.g. ``block:r56:c24:ir_k3_e72_c24_s1_re`` -- or the
                    four columns ``kind``, ``resolution``, ``in_channels``, ``op`` instead
``kind``            ``stem``, ``block`` or ``head``
``resolution``      the layer's input height = width
``in_channels``     the layer's input channels
``op``              the layer's token (spec string form, e.g. ``ir_k3_e72_c24_s1_re``)
``input_shape``     informative: ``batch x channels x height x width`` of the input
``latency_ms``      the measured latency in ms; empty in an export, empty rows are skipped
``device`` ...      protocol columns: ``device``, ``threads``, ``batch_size``,
                    ``input_resolution`` (the network's input), ``memory_format``,
                    ``warmup``, ``runs``, ``statistic``, ``timer``,
                    ``drift_correction`` (``none`` for devices measured elsewhere)
==================  ===================================================================

Protocol columns are optional on import; where present they must agree with the protocol
of the import (the ``latency`` config), so that a table is never filed under the wrong one.
A row whose ``key`` is ``overhead`` sets the per-network overhead (ms) added to every
prediction (otherwise 0: a plain sum of layer rows).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.latency.errors import ProtocolError, TableFileError
from evaluators.latency.fit import OverheadFit
from evaluators.latency.keys import FIELD_COLUMNS, compose_key, layer_from_key
from evaluators.latency.protocol import LatencyProtocol
from evaluators.latency.table import LatencyTable
from search_spaces.blockstring import layer_token
from search_spaces.serialize import atomic_write_text
from search_spaces.spec import Layer

OVERHEAD_KEY = "overhead"
LATENCY_COLUMN = "latency_ms"
# CSV column -> protocol field
PROTOCOL_COLUMNS = {
    "device": "device",
    "threads": "threads",
    "batch_size": "batch_size",
    "input_resolution": "resolution",
    "memory_format": "memory_format",
    "warmup": "warmup",
    "runs": "runs",
    "statistic": "statistic",
    "timer": "timer",
    "drift_correction": "drift_correction",
}
COLUMNS = ("key", *FIELD_COLUMNS, "input_shape", LATENCY_COLUMN, *PROTOCOL_COLUMNS)


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows stored, rows skipped for an empty latency, the overhead."""

    rows: int
    skipped: int
    overhead_ms: float | None
    table: Path


def export_layers_csv(
    layers: Iterable[Layer], path: str | os.PathLike[str], protocol: LatencyProtocol
) -> Path:
    """Write ``layers`` (distinct, in order) as CSV rows with an empty ``latency_ms``: the list
    of configurations to measure on a device under ``protocol`` (its values fill the protocol
    columns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    settings = [getattr(protocol, name) for name in PROTOCOL_COLUMNS.values()]
    for layer in dict.fromkeys(layers):
        shape = f"{protocol.batch_size}x{layer.in_channels}x{layer.resolution}x{layer.resolution}"
        writer.writerow(
            [
                layer.key,
                layer.kind,
                layer.resolution,
                layer.in_channels,
                layer_token(layer),
                shape,
                "",
                *settings,
            ]
        )
    return atomic_write_text(path, buffer.getvalue())


def read_latency_csv(
    path: str | os.PathLike[str], protocol: LatencyProtocol
) -> tuple[dict[str, float], float | None, int]:
    """``(rows, overhead_ms or None, skipped)`` from a CSV in the format above; every problem
    raises :class:`TableFileError` naming the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise TableFileError(f"{path}: CSV file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        _check_header(path, header)
        reader.fieldnames = header
        rows: dict[str, float] = {}
        overhead: float | None = None
        skipped = 0
        for record in reader:
            where = f"{path}: line {reader.line_num}"
            if None in record:
                raise TableFileError(f"{where}: more cells than header columns")
            values = {k: (v or "").strip() for k, v in record.items()}
            if not any(values.values()):
                continue
            key = _row_key(values, where)
            _check_protocol_cells(values, protocol, where)
            if not values[LATENCY_COLUMN]:
                skipped += 1
                continue
            ms = _latency(values[LATENCY_COLUMN], where)
            if key == OVERHEAD_KEY:
                overhead = ms
                continue
            if key in rows and rows[key] != ms:
                raise TableFileError(
                    f"{where}: layer {key} appears twice with different latencies ({rows[key]} and {ms} ms)"
                )
            rows[key] = ms
    return rows, overhead, skipped


def import_csv(
    csv_path: str | os.PathLike[str], table_path: str | os.PathLike[str], protocol: LatencyProtocol
) -> ImportSummary:
    """Read a CSV of measured layers into the table at ``table_path`` for ``protocol``
    (created if absent; rows with the same keys are replaced). Returns what was done."""
    rows, overhead, skipped = read_latency_csv(csv_path, protocol)
    table = LatencyTable.open(table_path, protocol, create=True)
    table.add_rows(rows, save=False)
    if overhead is not None:
        table.set_fit(OverheadFit(overhead_ms=overhead), save=False)
    table.save()
    return ImportSummary(rows=len(rows), skipped=skipped, overhead_ms=overhead, table=table.path)


def _check_header(path: Path, header: list[str]) -> None:
    if not header:
        raise TableFileError(
            f"{path}: the CSV is empty; its first line must name the columns ({', '.join(COLUMNS)})"
        )
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise TableFileError(f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
    if LATENCY_COLUMN not in header:
        raise TableFileError(f"{path}: the CSV needs a {LATENCY_COLUMN} column")
    if "key" not in header and not set(FIELD_COLUMNS) <= set(header):
        raise TableFileError(f"{path}: the CSV needs a key column, or the columns {', '.join(FIELD_COLUMNS)}")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise TableFileError(f"{path}: column(s) {', '.join(duplicates)} appear more than once")


def _row_key(values: dict[str, str], where: str) -> str:
    key = values.get("key", "")
    if key == OVERHEAD_KEY:
        return key
    fields = [values.get(name, "") for name in FIELD_COLUMNS]
    if any(fields):
        if not all(fields):
            raise TableFileError(f"{where}: give all of {', '.join(FIELD_COLUMNS)} (or a key)")
        composed = compose_key(*fields)
        if key and key != composed:
            raise TableFileError(f"{where}: key {key!r} disagrees with its fields ({composed!r})")
        key = composed
    if not key:
        raise TableFileError(f"{where}: no layer key (column key, or {', '.join(FIELD_COLUMNS)})")
    try:
        layer_from_key(key)
    except TableFileError as err:
        raise TableFileError(f"{where}: {err}") from None
    return key


def _latency(text: str, where: str) -> float:
    try:
        ms = float(text)
    except ValueError:
        raise TableFileError(f"{where}: {LATENCY_COLUMN} {text!r} is not a number of milliseconds") from None
    if not math.isfinite(ms) or ms < 0:
        raise TableFileError(f"{where}: {LATENCY_COLUMN} must be a finite number >= 0, got {text}")
    return ms


def _as_stored(protocol: LatencyProtocol, field: str, value: Any) -> Any:
    """``value`` as the protocol stores it (``cuda`` -> ``cuda:0``, ``auto`` resolved)."""
    try:
        return getattr(protocol.replace(**{field: value}), field)
    except ProtocolError:
        return value


def _check_protocol_cells(values: dict[str, str], protocol: LatencyProtocol, where: str) -> None:
    for column, field in PROTOCOL_COLUMNS.items():
        text = values.get(column, "")
        if not text:
            continue
        expected: Any = getattr(protocol, field)
        try:
            value = type(expected)(text)
        except ValueError:
            raise TableFileError(
                f"{where}: column {column} {text!r} is not a {type(expected).__name__}"
            ) from None
        if _as_stored(protocol, field, value) != expected:
            setting = "resolution" if field == "resolution" else f"latency.{field}"
            raise TableFileError(
                f"{where}: column {column} is {text!r} but the import's protocol has {expected!r}; "
                f"import with {setting}={text} so that the table is filed under the protocol it was "
                "measured with"
            )
