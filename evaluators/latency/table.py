"""Latency lookup tables: one measured row per distinct layer, a fitted network overhead, and
the protocol they were measured under, in one JSON file.

The file::

    {"format": "mobilenas.latency_table", "version": 3,
     "protocol": {"device": "cpu", "threads": 1, ..., "fingerprint": {...}},
     "reference_ms": 0.3121,
     "fit": {"scale": 1.25, "overhead_ms": 0.1, "n_specs": 8, "rmse_ms": 0.2},
     "rows": {"block:r56:c24:ir_k3_e72_c24_s1_re": 0.8123, ...},
     "imports": [{"csv": "pixel.csv", "protocol": {...}, "keys": ["block:...", ...]}]}

A spec's predicted latency is ``fit.scale * sum(rows of its layers) + fit.overhead_ms``.
``reference_ms`` is the drift-correction unit (see :mod:`evaluators.latency.drift`; null when
the protocol does not correct drift): calibrated at the first measurement and then used for
every row and every network timed for the fit, whichever process measures them, so that the
whole table shares one unit.
Missing rows are measured on demand (on this machine only) and the file is rewritten
atomically; rows written meanwhile by another process sharing the file are merged, not lost.
A table is opened for one protocol; any difference, the machine's fingerprint included, or a
damaged file raises a :class:`~search_spaces.errors.LatencyError`.

Rows never mix provenance silently: rows imported from a CSV are listed under ``imports``
(present only when there are any) with the protocol the CSV states (its protocol columns, else
the import's ``latency.*`` settings) and no machine fingerprint (``external``); every other row
was measured under the table's own protocol. Replacing a row with another figure drops the
fitted ``fit`` (it was fitted on the old figures), so a later prediction refits or warns that
the fit is missing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tqdm import tqdm

from evaluators.latency.csv_format import export_layers_csv
from evaluators.latency.fit import OverheadFit, fit_scale_overhead
from evaluators.latency.keys import KEY
from evaluators.latency.measure import LatencyResult, measure_many
from evaluators.latency.protocol import LatencyProtocol, default_table_name
from search_spaces.errors import ConfigError, LatencyError
from search_spaces.serialize import atomic_write_text
from search_spaces.spec import ArchSpec, Layer

log = logging.getLogger(__name__)

FORMAT = "mobilenas.latency_table"
VERSION = 3  # 2: drift correction (reference_ms); 3: its unit is stopwatch ms of the quiet machine
_FIELDS = ("format", "version", "protocol", "reference_ms", "fit", "rows")
_OLDER = {1: "without drift correction", 2: "in the old drift unit, 10-30% below a stopwatch"}
_OPTIONAL_FIELDS = ("imports",)  # written only when the table holds imported rows
_CHUNK = 4  # layers measured between progress updates and save checks (well under a second each)
SAVE_INTERVAL_S = 2.0  # a build saves at least this often: a kill loses at most a few seconds of rows


@dataclass
class ImportRecord:
    """Rows imported from ``csv``, measured under ``protocol`` (the CSV's, not this table's)."""

    csv: str
    protocol: LatencyProtocol
    keys: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"csv": self.csv, "protocol": self.protocol.to_dict(), "keys": sorted(self.keys)}


class LatencyTable:
    """A per-layer latency lookup table bound to one protocol and one file.

    Use :meth:`open` (checks the file against a protocol) or :meth:`read` (takes the file's
    own protocol). Thread-safe; predictions are cached per spec.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: LatencyProtocol,
        *,
        rows: Mapping[str, float] | None = None,
        fit: OverheadFit | None = None,
        reference_ms: float | None = None,
    ) -> None:
        self.path = Path(path)
        self._protocol = protocol
        self._reference_ms = reference_ms
        self._rows: dict[str, float] = dict(rows or {})
        self._fit = fit or OverheadFit()
        self._layer_ms: dict[Layer, float] = {}
        self._spec_ms: dict[ArchSpec, float] = {}
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file as last read or written
        self._warned_unfitted = False
        self._fit_dropped = False  # rows changed under the fit: do not take a stale fit back when merging
        self._imports: list[ImportRecord] = []
        self.save_interval_s = SAVE_INTERVAL_S

    # --- opening ----------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | os.PathLike[str], protocol: LatencyProtocol, *, create: bool = True
    ) -> LatencyTable:
        """The table at ``path`` for ``protocol``; a new empty one when the file does not exist
        and ``create`` (it is written at the first save).

        Raises:
            LatencyError: the file holds a table for another protocol or machine.
            LatencyError: the file is corrupt or truncated, or missing and not ``create``.
        """
        path = Path(path)
        if not path.exists():
            if not create:
                raise LatencyError(
                    f"{path}: no latency table there; build one (mobilenas lut action=build) "
                    "or import one (mobilenas lut action=import csv=...)"
                )
            return cls(path, protocol)
        table = cls.read(path)
        if table.protocol != protocol:
            diffs = "; ".join(table.protocol.differences(protocol))
            if table.protocol.runtime != protocol.runtime:
                raise LatencyError(
                    f"{path}: the table was measured with runtime={table.protocol.runtime}, not "
                    f"runtime={protocol.runtime} ({diffs}; table vs requested); runtimes never share a "
                    f"table: use {path.with_name(default_table_name(protocol))} (or another latency.table) "
                    f"for runtime={protocol.runtime}"
                )
            raise LatencyError(
                f"{path}: the table was measured under another protocol ({diffs}; table vs requested). "
                f"A table is never used for another protocol: point latency.table to a table for this "
                f"protocol, or delete {path} to measure a new one"
            )
        return table

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """The table at ``path`` with the protocol stored in it (for inspection and merging)."""
        path = Path(path)
        protocol, reference_ms, fit, rows, imports = _parse(path)
        table = cls(path, protocol, rows=rows, fit=fit, reference_ms=reference_ms)
        table._imports = imports
        table._stamp = _file_stamp(path)
        return table

    # --- contents ---------------------------------------------------------------------
    @property
    def protocol(self) -> LatencyProtocol:
        return self._protocol

    @property
    def fit(self) -> OverheadFit:
        return self._fit

    @property
    def reference_ms(self) -> float | None:
        """The drift-correction unit of the rows (None: not corrected, or nothing measured yet)."""
        return self._reference_ms

    @property
    def rows(self) -> Mapping[str, float]:
        """Layer key -> milliseconds (read-only view)."""
        return MappingProxyType(self._rows)

    @property
    def imports(self) -> tuple[ImportRecord, ...]:
        """The imports whose rows the table holds, each with the protocol it states."""
        return tuple(record for record in self._imports if record.keys)

    def imported_keys(self) -> set[str]:
        return {key for record in self._imports for key in record.keys}

    def measured_here(self) -> set[str]:
        """Keys of the rows measured on this machine under the table's protocol (not imported)."""
        if not self._protocol.measurable:
            return set()
        return set(self._rows) - self.imported_keys()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, layer: Layer | str) -> bool:
        return (layer if isinstance(layer, str) else layer.key) in self._rows

    def layer_ms(self, layer: Layer) -> float | None:
        """The row of ``layer``, or None when the table lacks it."""
        ms = self._layer_ms.get(layer)
        if ms is None:
            ms = self._rows.get(layer.key)
            if ms is not None:
                self._layer_ms[layer] = ms
        return ms

    def missing(self, layers: Iterable[Layer]) -> list[Layer]:
        """The distinct layers of ``layers`` without a row, in order."""
        return [layer for layer in dict.fromkeys(layers) if self.layer_ms(layer) is None]

    # --- predicting -------------------------------------------------------------------
    def sum_ms(self, spec: ArchSpec) -> float:
        """Sum of the rows of ``spec``'s layers (missing rows are measured first)."""
        self._check_resolution(spec)
        layers = list(spec.layers())
        missing = self.missing(layers)
        if missing:
            self.build(missing, progress=False)
        return sum(self.layer_ms(layer) or 0.0 for layer in layers)

    def predict_ms(self, spec: ArchSpec) -> float:
        """Predicted latency of ``spec``: ``fit.scale * sum_ms(spec) + fit.overhead_ms``.

        Missing rows are measured and saved first (this machine's devices only; for an
        external device :class:`LatencyError` lists them)."""
        cached = self._spec_ms.get(spec)
        if cached is not None:
            return cached
        with self._lock:
            value = self._fit.apply(self.sum_ms(spec))
            if not self._fit.fitted and not self._warned_unfitted:
                self._warned_unfitted = True
                log.warning(
                    "latency table %s has no fitted overhead: predictions are plain sums of layer rows "
                    "(run mobilenas lut action=build to fit it)",
                    self.path,
                )
            self._spec_ms[spec] = value
        return value

    def _check_resolution(self, spec: ArchSpec) -> None:
        if spec.resolution != self._protocol.resolution:
            raise LatencyError(
                f"the spec's resolution {spec.resolution} differs from the table's resolution "
                f"{self._protocol.resolution} ({self.path}); use a table for "
                f"{spec.resolution}x{spec.resolution}"
            )

    # --- measuring --------------------------------------------------------------------
    def build(self, layers: Iterable[Layer], *, progress: bool = True) -> int:
        """Measure and store the rows ``layers`` lack; returns how many were measured.

        The file is saved every ``save_interval_s`` seconds (checked every few layers) and at
        the end (also when interrupted), so a killed build loses at most a few seconds of rows."""
        missing = self.missing(layers)
        if not missing:
            return 0
        self._require_measurable(missing)
        done = 0
        last_save = time.monotonic()
        bar = tqdm(total=len(missing), desc="measuring layers", unit="layer", disable=not progress)
        try:
            with self._lock:
                for start in range(0, len(missing), _CHUNK):
                    chunk = missing[start : start + _CHUNK]
                    for layer, result in zip(chunk, self.measure(chunk), strict=True):
                        self._rows[layer.key] = self._layer_ms[layer] = round(result.ms, 5)
                    done += len(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() - last_save >= self.save_interval_s:
                        self.save()
                        last_save = time.monotonic()
        finally:
            bar.close()
            if done:
                self.save()
        return done

    def _require_measurable(self, missing: list[Layer]) -> None:
        if self._protocol.measurable:
            return
        if self._protocol.local:
            raise LatencyError(
                f"{self.path}: the table was measured on another machine "
                f"({self._protocol.fingerprint}); it cannot get new rows here"
            )
        keys = tuple(layer.key for layer in missing)
        todo = self.path.with_name(self.path.stem + ".missing.csv")
        export_layers_csv(missing, todo, self._protocol)
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        raise LatencyError(
            f"{self.path}: {len(keys)} layer(s) have no row for the external device "
            f"{self._protocol.device!r} "
            f"and cannot be measured on this machine: {shown}. They are listed in {todo}: measure each on "
            f"the device under the protocol in its columns, fill in latency_ms, then run 'mobilenas lut "
            f"action=import csv={todo} latency.device={self._protocol.device}' (with the same latency.* "
            f"settings). Every layer of a space: 'mobilenas lut action=export-layers "
            f"latency.device={self._protocol.device}'"
        )

    def fit_overhead(
        self, specs: Iterable[ArchSpec], *, rounds: int = 3, progress: bool = False
    ) -> OverheadFit:
        """Measure ``specs`` end to end (interleaved over ``rounds``) and fit ``scale`` and
        ``overhead_ms`` by least squares against their layer sums; stores and saves the fit."""
        specs = list(dict.fromkeys(specs))
        if not specs:
            raise LatencyError("fit_overhead needs at least one spec")
        for spec in specs:
            self._check_resolution(spec)
        self.build([layer for spec in specs for layer in spec.layers()], progress=progress)
        measured = self.measure(specs, rounds=rounds, progress=progress, desc="timing networks")
        fit = fit_scale_overhead([self.sum_ms(s) for s in specs], [r.ms for r in measured])
        self.set_fit(fit)
        return fit

    def measure(self, targets: Sequence[Layer | ArchSpec], **options: Any) -> list[LatencyResult]:
        """``measure_many`` in the table's drift-correction unit (adopting the calibrated one
        at the first measurement)."""
        with self._lock:
            results = measure_many(targets, self._protocol, reference_ms=self._reference_ms, **options)
            if results and self._reference_ms is None:
                self._reference_ms = results[0].reference_ms
        return results

    # --- changing and saving ----------------------------------------------------------
    def set_fit(self, fit: OverheadFit, *, save: bool = True) -> None:
        with self._lock:
            self._fit = fit
            self._spec_ms.clear()
            if save:
                self.save()

    def add_rows(
        self, rows: Mapping[str, float], *, source: ImportRecord | None = None, save: bool = True
    ) -> int:
        """Store ``rows`` (layer key -> ms), replacing rows with the same keys; returns how many
        existing rows got another figure. ``source``: the import they come from (None: measured
        under the table's protocol). Replacing rows drops a fitted ``fit`` (with a warning)."""
        checked = {key: _check_row(key, ms, "rows") for key, ms in rows.items()}
        with self._lock:
            replaced = sum(key in self._rows and self._rows[key] != ms for key, ms in checked.items())
            self._rows.update(checked)
            for record in self._imports:
                record.keys.difference_update(checked)
            self._imports = [record for record in self._imports if record.keys]
            if source is not None:
                source.keys.update(checked)
                self._imports.append(source)
            self._layer_ms.clear()
            self._spec_ms.clear()
            if replaced:
                self._drop_fit(f"{replaced} row(s) replaced")
            if save:
                self.save()
        return replaced

    def _drop_fit(self, reason: str) -> None:
        if not self._fit.fitted:
            return
        log.warning(
            "latency table %s: fit dropped (%s; it was fitted on the old figures): predictions refit or "
            "are plain sums until it is fitted again (mobilenas lut action=build)",
            self.path, reason,
        )
        self._fit = OverheadFit()
        self._fit_dropped = True
        self._warned_unfitted = False

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "protocol": self._protocol.to_dict(),
            "reference_ms": self._reference_ms,
            "fit": self._fit.to_dict(),
            "rows": dict(sorted(self._rows.items())),
        }
        if self.imports:
            data["imports"] = [record.to_dict() for record in self.imports]
        return data

    def save(self) -> Path:
        """Write the table atomically, first merging rows another process saved meanwhile."""
        with self._lock:
            if self.path.exists() and _file_stamp(self.path) != self._stamp:
                other = LatencyTable.read(self.path)
                if other.protocol != self._protocol:
                    diffs = "; ".join(other.protocol.differences(self._protocol))
                    raise LatencyError(
                        f"{self.path}: the file now holds a table for another protocol "
                        f"({diffs}; file vs this table); not overwriting it"
                    )
                # rows measured in another unit convert exactly: a row is time x reference_ms / speed
                if self._reference_ms is None:
                    self._reference_ms = other.reference_ms
                to_ours = 1.0
                if self._reference_ms and other.reference_ms:
                    to_ours = self._reference_ms / other.reference_ms
                adopted = set(other._rows) - set(self._rows)
                for key in adopted:
                    self._rows[key] = round(other._rows[key] * to_ours, 5)
                for record in other._imports:
                    if record.keys & adopted:
                        self._imports.append(ImportRecord(record.csv, record.protocol, record.keys & adopted))
                if not self._fit.fitted and other.fit.fitted and not self._fit_dropped:
                    self.set_fit(other.fit, save=False)
            atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1) + "\n")
            self._stamp = _file_stamp(self.path)
        return self.path

    def __repr__(self) -> str:
        return f"LatencyTable({str(self.path)!r}, {len(self)} rows, {self._protocol.describe()})"


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _check_row(key: Any, ms: Any, where: str) -> float:
    if not isinstance(key, str) or not KEY.match(key):
        raise LatencyError(
            f"{where}: {key!r} is not a layer key (<kind>:r<resolution>:c<channels>:<token>)"
        )
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
        raise LatencyError(f"{where}[{key!r}]: latency must be a finite number of ms >= 0, got {ms!r}")
    return float(ms)


def _parse(
    path: Path,
) -> tuple[LatencyProtocol, float | None, OverheadFit, dict[str, float], list[ImportRecord]]:
    """Read and check a table file; every problem raises :class:`LatencyError` naming it."""
    advice = f"delete {path} to measure a new table, or restore it"
    try:
        text = path.read_text()
    except OSError as err:
        raise LatencyError(f"{path}: cannot read the latency table ({err.strerror})") from None
    if not text.strip():
        raise LatencyError(f"{path}: the latency table file is empty; {advice}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LatencyError(
            f"{path}: not a valid latency table, the file is truncated or corrupt "
            f"({err.msg} at line {err.lineno}, column {err.colno}); {advice}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LatencyError(f"{path}: not a mobilenas latency table (its 'format' is not {FORMAT!r})")
    if data.get("version") != VERSION:
        older = data.get("version") in _OLDER
        raise LatencyError(
            f"{path}: latency table version {data.get('version')!r} is not supported; expected {VERSION}"
            + (f"; it was measured by an older mobilenas ({_OLDER[data['version']]}): delete {path} to "
               "measure a new table" if older else "")
        )
    if not set(_FIELDS) <= set(data) <= {*_FIELDS, *_OPTIONAL_FIELDS}:
        raise LatencyError(
            f"{path}: the latency table must have the fields {', '.join(_FIELDS)} "
            f"(and optionally {', '.join(_OPTIONAL_FIELDS)}); got {', '.join(sorted(data))}"
        )
    try:
        protocol = LatencyProtocol.from_dict(data["protocol"])
        fit = OverheadFit.from_dict(data["fit"])
    except (ConfigError, LatencyError) as err:
        raise LatencyError(f"{path}: bad header: {err}") from None
    reference_ms = data["reference_ms"]
    if reference_ms is not None and (
        isinstance(reference_ms, bool) or not isinstance(reference_ms, int | float) or not reference_ms > 0
        or not math.isfinite(reference_ms)
    ):
        raise LatencyError(f"{path}: 'reference_ms' must be a positive number of ms or null, "
                           f"got {reference_ms!r}")
    if reference_ms is not None and protocol.drift_correction != "reference":
        raise LatencyError(
            f"{path}: 'reference_ms' is set but the protocol does not correct drift "
            f"(drift_correction={protocol.drift_correction}); {advice}"
        )
    if not isinstance(data["rows"], dict):
        raise LatencyError(f"{path}: 'rows' must map layer keys to milliseconds")
    try:
        rows = {key: _check_row(key, ms, "rows") for key, ms in data["rows"].items()}
    except LatencyError as err:
        raise LatencyError(f"{path}: {err}; {advice}") from None
    return protocol, reference_ms, fit, rows, _parse_imports(path, data.get("imports", []), rows)


def _parse_imports(path: Path, data: Any, rows: Mapping[str, float]) -> list[ImportRecord]:
    """The ``imports`` list: each with a csv name, a protocol and keys of rows the table holds."""
    where = f"{path}: 'imports'"
    if not isinstance(data, list):
        raise LatencyError(f"{where} must be a list of {{csv, protocol, keys}}")
    records = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"csv", "protocol", "keys"}:
            raise LatencyError(f"{where}[{i}]: expected the fields csv, protocol, keys")
        keys = item["keys"]
        if (not isinstance(item["csv"], str) or not isinstance(keys, list)
                or not all(isinstance(key, str) and key in rows for key in keys)):
            raise LatencyError(f"{where}[{i}]: csv must be a name and keys a list of the table's row keys")
        try:
            protocol = LatencyProtocol.from_dict(item["protocol"])
        except ConfigError as err:
            raise LatencyError(f"{where}[{i}]: bad protocol: {err}") from None
        records.append(ImportRecord(item["csv"], protocol, set(keys)))
    return records
