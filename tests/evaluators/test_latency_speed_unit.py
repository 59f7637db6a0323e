"""The drift-correction unit is stored per machine and shared by later processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from evaluators.latency import drift
from evaluators.latency.speed_unit import FASTER, store_path, stored_unit


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "speed-unit.json"


def test_the_first_calibration_is_stored_and_later_ones_use_it(store):
    assert store_path() == store
    assert stored_unit("m|threads=1|timer=wall", 0.70) == 0.70
    assert json.loads(store.read_text()) == {"m|threads=1|timer=wall": 0.70}
    # a later process calibrating a bit slower or faster measures in the stored unit
    assert stored_unit("m|threads=1|timer=wall", 0.90) == 0.70
    assert stored_unit("m|threads=1|timer=wall", 0.62) == 0.70
    # other threads or clocks have units of their own
    assert stored_unit("m|threads=2|timer=wall", 0.40) == 0.40
    assert set(json.loads(store.read_text())) == {"m|threads=1|timer=wall", "m|threads=2|timer=wall"}


def test_a_unit_calibrated_in_a_slow_spell_is_replaced_by_a_clearly_faster_one(store):
    stored_unit("m", 1.40)  # calibrated while a sibling hyperthread was busy: 2x slow
    assert stored_unit("m", 0.70) == 0.70 < FASTER * 1.40
    assert stored_unit("m", 1.30) == 0.70


@pytest.mark.parametrize(
    "content",
    ['{"m": -1.0}', '{"m": "fast"}', '{"m": true}', "[0.7]", "{not json", "\xff\xfe", " " * (1 << 17)],
)
def test_a_damaged_store_is_ignored_with_a_warning_and_rewritten(store, content, caplog):
    store.parent.mkdir(parents=True)
    store.write_bytes(content.encode("latin-1"))
    assert stored_unit("m", 0.70) == 0.70
    assert "ignoring the stored speed units" in caplog.text
    assert json.loads(store.read_text()) == {"m": 0.70}


def test_a_fifo_in_place_of_the_store_is_not_read(store, caplog):
    store.parent.mkdir(parents=True)
    os.mkfifo(store)  # reading it would block forever
    assert stored_unit("m", 0.70) == 0.70
    assert "not a regular file" in caplog.text
    assert json.loads(store.read_text()) == {"m": 0.70}  # replaced by the store


def test_an_unwritable_store_leaves_the_process_its_own_calibration(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MOBILENAS_CACHE_DIR", str(blocker / "cache"))  # a folder under a file
    assert stored_unit("m", 0.70) == 0.70
    assert "cannot store the speed unit" in caplog.text


def test_processes_measure_in_the_machines_stored_unit(store, monkeypatch):
    first, later = drift.FIRST_CALIBRATION_S, drift.CALIBRATION_S
    calibrations = iter([(1.0, first), (0.9, later), (0.5, later)])

    def calibrate(self, clock, seconds):  # the first calibration of a machine takes longer
        unit, expected = next(calibrations)
        assert seconds == expected
        return unit

    monkeypatch.setattr(drift.SpeedReference, "calibrate", calibrate)
    units = []
    for _ in range(3):  # three processes: each calibrates once
        monkeypatch.setattr(drift, "_calibrated", {})
        units.append(drift.calibrated_reference_ms(1, "wall", "machine"))
        assert drift.calibrated_reference_ms(1, "wall", "machine") == units[-1]  # once per process
    assert units == [1.0, 1.0, 0.5]


def test_calibration_takes_the_full_speed_windows_not_a_slow_spell(monkeypatch):
    """One window at full speed (0.7 ms), two in a sibling-busy 2x slow state: the unit is the
    full-speed window's median (the median of all windows would be 1.4 ms)."""
    timings = iter([0.7] * 5 + [0.69, 0.71, 0.70] + [1.4, 1.41, 1.39] * 2)
    monkeypatch.setattr(drift.SpeedReference, "time_ms", lambda self, clock: next(timings))
    monkeypatch.setattr(drift, "CALIBRATION_WINDOW_S", 0.0)  # 3 windows of 3 timings
    unit = drift.SpeedReference.calibrate(object.__new__(drift.SpeedReference), time.perf_counter_ns, 0.0)
    assert unit == pytest.approx(0.70)


CHILD = """
import json, sys
from evaluators.latency import LatencyProtocol, LatencyTable, measure_latency
from search_spaces.reference import reference_spec
protocol = LatencyProtocol(resolution=32, warmup=1, runs=3)
spec = reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)
table = LatencyTable.open(sys.argv[1], protocol)
print(json.dumps([table.predict_ms(spec), measure_latency(spec, protocol).reference_ms]))
"""


def test_another_process_predicts_the_same_figure_and_measures_in_the_stored_unit(store, tmp_path):
    """A table opened in another process gives the same figure; a fresh process measuring on
    its own takes the machine's stored unit (0.001 ms here: never beaten by a calibration)."""
    from evaluators.latency import LatencyProtocol, LatencyTable, OverheadFit
    from search_spaces.reference import reference_spec

    store.parent.mkdir(parents=True)
    protocol = LatencyProtocol(resolution=32, warmup=1, runs=3)
    key = drift.unit_key(str(protocol.fingerprint), 1, "wall")
    store.write_text(json.dumps({key: 0.001}))
    spec = reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)
    table = LatencyTable.open(tmp_path / "table.json", protocol)
    table.predict_ms(spec)  # measures the rows
    table.set_fit(OverheadFit(scale=1.1, overhead_ms=0.2, n_specs=3))
    here = table.predict_ms(spec)
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "table.json")],
                           capture_output=True, text=True, timeout=120, check=True)
    there, unit = json.loads(child.stdout)
    assert there == here and unit == 0.001


def test_lut_info_warns_when_a_tables_unit_is_not_the_machines(store, tmp_path):
    from evaluators.latency import LatencyProtocol, LatencyTable
    from search.commands.lut import _unit_line

    protocol = LatencyProtocol(resolution=32)
    stored_unit(drift.unit_key(str(protocol.fingerprint), 1, "wall"), 0.7)
    slow_start = LatencyTable(tmp_path / "a.json", protocol, reference_ms=1.4)  # calibrated in a slow spell
    assert "figures read 2.00x a quiet stopwatch: rebuild it" in _unit_line(slow_start)
    assert _unit_line(LatencyTable(tmp_path / "b.json", protocol, reference_ms=0.72)) == (
        "drift unit: reference workload 0.7200 ms\n")
