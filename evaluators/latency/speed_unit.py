"""The drift-correction unit of this machine, kept across processes and days.

A calibration in one process can only see a few seconds of the machine; when those seconds
fall in a slow spell (a busy sibling hyperthread halves the speed of a vCPU for seconds at a
time) its unit is up to 2x off, and so is every figure of the process and of any table it
starts. So the unit is stored per machine, threads and clock in
``$MOBILENAS_CACHE_DIR/speed-unit.json`` (default ``~/.cache/mobilenas``) and every process
reconciles its own calibration with it: a calibration clearly faster than the stored unit
replaces it (the stored one was taken in a slow spell); otherwise the stored unit is used, so
figures measured today and next month share it. Delete the file to calibrate afresh (after a
hardware change the fingerprint changes and a new entry starts by itself).

The file is ours but lives outside the project: it is read defensively (size bound, JSON
object of positive finite numbers); anything else is ignored with a warning and rewritten.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from pathlib import Path

from search_spaces.serialize import atomic_write_text

log = logging.getLogger(__name__)

FILE_NAME = "speed-unit.json"
MAX_BYTES = 1 << 16
FASTER = 0.85  # a calibration below this fraction of the stored unit replaces it


def store_path() -> Path:
    """``$MOBILENAS_CACHE_DIR/speed-unit.json``, default ``~/.cache/mobilenas/speed-unit.json``."""
    root = os.environ.get("MOBILENAS_CACHE_DIR") or Path.home() / ".cache" / "mobilenas"
    return Path(root) / FILE_NAME


def _read(path: Path) -> dict[str, float]:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read
            raise ValueError("not a regular file")
        if info.st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("%s: ignoring the stored speed units (%s); calibrating afresh", path, err)
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        and math.isfinite(v) and v > 0
        for k, v in data.items()
    ):
        log.warning("%s: ignoring the stored speed units (not an object of positive numbers); "
                    "calibrating afresh", path)
        return {}
    return {k: float(v) for k, v in data.items()}


def read_unit(key: str) -> float | None:
    """The unit stored for ``key``, if any."""
    return _read(store_path()).get(key)


def stored_unit(key: str, calibrated_ms: float) -> float:
    """The unit to measure in for ``key`` (machine, threads, clock), given this process's
    calibration ``calibrated_ms``: the stored unit unless there is none or the calibration is
    below :data:`FASTER` times it, in which case the calibration is stored and returned. When
    the store cannot be written, the calibration is used for this process alone."""
    path = store_path()
    units = _read(path)
    stored = units.get(key)
    if stored is not None and calibrated_ms >= FASTER * stored:
        return stored
    if stored is not None:
        log.info("%s: speed unit %.4f ms replaced by %.4f ms (the stored one was calibrated while the "
                 "machine ran slower)", path, stored, calibrated_ms)
    units[key] = calibrated_ms
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(units, indent=1, sort_keys=True) + "\n")
    except OSError as err:
        log.warning("%s: cannot store the speed unit (%s); this process uses its own calibration", path, err)
    return calibrated_ms
