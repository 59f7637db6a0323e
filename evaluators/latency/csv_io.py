"""Latency rows measured elsewhere, as CSV (the columns: :mod:`evaluators.latency.csv_format`):
read them, and import them into a latency table.

Protocol columns are optional on import; where present they must agree with the protocol
of the import (the ``latency`` config), so that a table is never filed under the wrong one.
A row whose ``key`` is ``overhead`` sets the table's per-network overhead (ms).

Imported rows keep their provenance: the table lists them with the protocol the CSV states
(its columns, else the import's ``latency.*``) and no machine fingerprint. Importing into a
table that holds rows measured on this machine needs every protocol column, in every row,
matching the table's protocol -- or ``replace_measured=True``, which accepts the CSV as it is
(rows recorded with the CSV's own protocol). Rows replaced with other figures drop the table's
fit.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.latency.csv_format import COLUMNS, LATENCY_COLUMN, OVERHEAD_KEY, PROTOCOL_COLUMNS, SCALE_KEY
from evaluators.latency.fit import OverheadFit
from evaluators.latency.keys import FIELD_COLUMNS, compose_key, layer_from_key
from evaluators.latency.protocol import EXTERNAL, LatencyProtocol
from evaluators.latency.table import ImportRecord, LatencyTable
from search_spaces.errors import ConfigError, LatencyError


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows stored, rows skipped for an empty latency, the overhead, rows
    that replaced other figures, whether the table's fit was dropped, the CSV's protocol."""

    rows: int
    skipped: int
    overhead_ms: float | None
    table: Path
    replaced: int = 0
    fit_dropped: bool = False
    protocol: LatencyProtocol | None = None


@dataclass
class _Contents:
    """A CSV read: rows, overhead, skipped rows, and per protocol column the stored values seen
    (with the first line of each) and whether some row left it out."""

    rows: dict[str, float]
    overhead: float | None
    skipped: int
    cells: dict[str, dict[Any, int]]
    gaps: set[str]
    scale: float | None = None


def read_latency_csv(
    path: str | os.PathLike[str], protocol: LatencyProtocol
) -> tuple[dict[str, float], float | None, int]:
    """``(rows, overhead_ms or None, skipped)`` from a CSV in the format of
    :mod:`~evaluators.latency.csv_format`; every problem, a protocol cell that differs from
    ``protocol`` included, raises :class:`LatencyError` naming the file, line and column."""
    contents = _read_csv(Path(path), protocol)
    _check_cells(Path(path), contents, protocol)
    return contents.rows, contents.overhead, contents.skipped


def import_csv(
    csv_path: str | os.PathLike[str],
    table_path: str | os.PathLike[str],
    protocol: LatencyProtocol,
    *,
    replace_measured: bool = False,
) -> ImportSummary:
    """Read a CSV of measured layers into the table at ``table_path`` for ``protocol``
    (created if absent; rows with the same keys are replaced), recording the CSV's protocol
    with its rows. Into a table holding rows measured on this machine, the CSV must state the
    table's protocol in every protocol column unless ``replace_measured``; otherwise
    :class:`LatencyError` says what is missing or differs. Nothing is written then."""
    csv_path = Path(csv_path)
    table = LatencyTable.open(table_path, protocol, create=True)
    contents = _read_csv(csv_path, protocol)
    measured = table.measured_here()
    if not measured:
        _check_cells(csv_path, contents, protocol)
    source = _csv_protocol(csv_path, contents, protocol)
    if measured and not replace_measured:
        _require_stated_protocol(csv_path, table, contents, measured)
    had_fit = table.fit.fitted
    replaced = table.add_rows(contents.rows, source=ImportRecord(csv_path.name, source), save=False)
    if contents.overhead is not None or contents.scale is not None:
        fit = OverheadFit(scale=contents.scale or 1.0, overhead_ms=contents.overhead or 0.0)
        table.set_fit(fit, save=False)
    table.save()
    return ImportSummary(
        rows=len(contents.rows), skipped=contents.skipped, overhead_ms=contents.overhead, table=table.path,
        replaced=replaced, fit_dropped=had_fit and bool(replaced), protocol=source,
    )


def _read_csv(path: Path, protocol: LatencyProtocol) -> _Contents:
    if not path.is_file():
        raise LatencyError(f"{path}: CSV file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        _check_header(path, header)
        reader.fieldnames = header
        contents = _Contents({}, None, 0, {column: {} for column in PROTOCOL_COLUMNS}, set())
        contents.gaps = {column for column in PROTOCOL_COLUMNS if column not in header}
        for record in reader:
            where = f"{path}: line {reader.line_num}"
            if None in record:
                raise LatencyError(f"{where}: more cells than header columns")
            values = {k: (v or "").strip() for k, v in record.items()}
            if not any(values.values()):
                continue
            key = _row_key(values, where)
            # a row without a figure, or the overhead, need not state the protocol
            counted = bool(values[LATENCY_COLUMN]) and key not in (OVERHEAD_KEY, SCALE_KEY)
            _collect_cells(values, protocol, where, reader.line_num, contents, counted)
            if not values[LATENCY_COLUMN]:
                contents.skipped += 1
                continue
            ms = _latency(values[LATENCY_COLUMN], where, signed=key == OVERHEAD_KEY)
            if key == OVERHEAD_KEY:
                contents.overhead = ms
                continue
            if key == SCALE_KEY:
                if not ms > 0:
                    raise LatencyError(f"{where}: the scale row's {LATENCY_COLUMN} must be a factor > 0, "
                                       f"got {ms}")
                contents.scale = ms
                continue
            if key in contents.rows and contents.rows[key] != ms:
                raise LatencyError(
                    f"{where}: layer {key} appears twice with different latencies "
                    f"({contents.rows[key]} and {ms} ms)"
                )
            contents.rows[key] = ms
    return contents


def _check_header(path: Path, header: list[str]) -> None:
    if not header:
        raise LatencyError(
            f"{path}: the CSV is empty; its first line must name the columns ({', '.join(COLUMNS)})"
        )
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise LatencyError(f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
    if LATENCY_COLUMN not in header:
        raise LatencyError(f"{path}: the CSV needs a {LATENCY_COLUMN} column")
    if "key" not in header and not set(FIELD_COLUMNS) <= set(header):
        raise LatencyError(f"{path}: the CSV needs a key column, or the columns {', '.join(FIELD_COLUMNS)}")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise LatencyError(f"{path}: column(s) {', '.join(duplicates)} appear more than once")


def _row_key(values: dict[str, str], where: str) -> str:
    key = values.get("key", "")
    if key in (OVERHEAD_KEY, SCALE_KEY):
        return key
    fields = [values.get(name, "") for name in FIELD_COLUMNS]
    if any(fields):
        if not all(fields):
            raise LatencyError(f"{where}: give all of {', '.join(FIELD_COLUMNS)} (or a key)")
        composed = compose_key(*fields)
        if key and key != composed:
            raise LatencyError(f"{where}: key {key!r} disagrees with its fields ({composed!r})")
        key = composed
    if not key:
        raise LatencyError(f"{where}: no layer key (column key, or {', '.join(FIELD_COLUMNS)})")
    try:
        layer_from_key(key)
    except LatencyError as err:
        raise LatencyError(f"{where}: {err}") from None
    return key


def _latency(text: str, where: str, *, signed: bool = False) -> float:
    """The number in a latency cell; ``signed``: the fitted overhead, which may be negative."""
    try:
        ms = float(text)
    except ValueError:
        raise LatencyError(f"{where}: {LATENCY_COLUMN} {text!r} is not a number of milliseconds") from None
    if not math.isfinite(ms) or (ms < 0 and not signed):
        raise LatencyError(f"{where}: {LATENCY_COLUMN} must be a finite number >= 0, got {text}")
    return ms


def _as_stored(protocol: LatencyProtocol, field: str, value: Any) -> Any:
    """``value`` as the protocol stores it (``cuda`` -> ``cuda:0``, ``auto`` resolved)."""
    try:
        return getattr(protocol.replace(**{field: value}), field)
    except ConfigError:
        return value


def _collect_cells(
    values: dict[str, str], protocol: LatencyProtocol, where: str, line: int, contents: _Contents,
    counted: bool,
) -> None:
    for column, field_name in PROTOCOL_COLUMNS.items():
        text = values.get(column, "")
        if not text:
            if counted:
                contents.gaps.add(column)
            continue
        expected: Any = getattr(protocol, field_name)
        try:
            value = type(expected)(text)
        except ValueError:
            raise LatencyError(
                f"{where}: column {column} {text!r} is not a {type(expected).__name__}"
            ) from None
        contents.cells[column].setdefault(_as_stored(protocol, field_name, value), line)


def _setting(column: str) -> str:
    return "resolution" if column == "input_resolution" else f"latency.{PROTOCOL_COLUMNS[column]}"


def _check_cells(path: Path, contents: _Contents, protocol: LatencyProtocol) -> None:
    """Every protocol cell must agree with ``protocol`` (the first that does not is named)."""
    for column, seen in contents.cells.items():
        expected = getattr(protocol, PROTOCOL_COLUMNS[column])
        for value, line in seen.items():
            if value != expected:
                raise LatencyError(
                    f"{path}: line {line}: column {column} is {str(value)!r} but the import's protocol has "
                    f"{expected!r}; import with {_setting(column)}={value} so that the table is filed under "
                    "the protocol it was measured with"
                )


def _csv_protocol(path: Path, contents: _Contents, protocol: LatencyProtocol) -> LatencyProtocol:
    """The protocol the CSV states: its columns over ``protocol``, with no machine fingerprint."""
    changes: dict[str, Any] = {}
    for column, seen in contents.cells.items():
        if len(seen) > 1:
            raise LatencyError(
                f"{path}: column {column} has several values ({', '.join(map(str, seen))}); one import is "
                f"one protocol: split the CSV by {column}"
            )
        if seen:
            changes[PROTOCOL_COLUMNS[column]] = next(iter(seen))
    try:
        return protocol.replace(**changes, fingerprint=EXTERNAL)
    except ConfigError as err:
        raise LatencyError(f"{path}: its protocol columns do not form a protocol: {err}") from None


def _require_stated_protocol(
    path: Path, table: LatencyTable, contents: _Contents, measured: set[str]
) -> None:
    """Refuse (one line) a CSV that does not state the table's protocol in every row."""
    missing = [column for column in PROTOCOL_COLUMNS if column in contents.gaps]
    differ = [
        f"{column} {'/'.join(map(str, seen))} vs {getattr(table.protocol, PROTOCOL_COLUMNS[column])}"
        for column, seen in contents.cells.items()
        if set(seen) - {getattr(table.protocol, PROTOCOL_COLUMNS[column])}
    ]
    if not missing and not differ:
        return
    replacing = len(measured & set(contents.rows))
    problems = "; ".join(
        ([f"missing protocol column(s) {', '.join(missing)}"] if missing else [])
        + ([f"differing: {', '.join(differ)} (CSV vs table)"] if differ else [])
    )
    raise LatencyError(
        f"{path}: the import would replace {replacing} of the {len(measured)} rows measured on this machine "
        f"in {table.path} with figures of another or unstated protocol ({problems}); either give the CSV the "
        f"protocol columns {', '.join(PROTOCOL_COLUMNS)} matching the table (lut action=export-layers writes "
        "them), or import anyway with replace_measured=true (the rows are recorded with the CSV's protocol; "
        "a fit of replaced rows is dropped)"
    )
