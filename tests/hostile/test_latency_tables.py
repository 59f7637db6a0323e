"""Hostile and careless input to latency tables: a CSV that would mix provenance, a killed build,
labels that hide what was measured."""

from __future__ import annotations

import csv
import shutil
from types import SimpleNamespace

import pytest

from evaluators.latency import (
    LatencyProtocol,
    LatencyResult,
    LatencyTable,
    OverheadFit,
    export_layers_csv,
    import_csv,
)
from evaluators.latency import table as table_module
from evaluators.latency.csv_format import PROTOCOL_COLUMNS
from evaluators.latency.protocol import EXTERNAL
from search.cli import main
from search_spaces.errors import LatencyError
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace

PROTOCOL = LatencyProtocol(resolution=32, warmup=1, runs=3)
FIT = OverheadFit(scale=1.2, overhead_ms=0.3, n_specs=4, rmse_ms=0.01)


@pytest.fixture(scope="module")
def spec():
    return reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)


def distinct(spec):
    return len({layer.key for layer in spec.layers()})


@pytest.fixture(scope="module")
def measured_file(tmp_path_factory, spec):
    """A table measured on this machine (the spec's layers) with a fit."""
    path = tmp_path_factory.mktemp("measured") / "table.json"
    table = LatencyTable.open(path, PROTOCOL)
    table.build(spec.layers(), progress=False)
    table.set_fit(FIT)
    return path


@pytest.fixture
def measured(tmp_path, measured_file):
    return shutil.copy(measured_file, tmp_path / "table.json")


def write_csv(path, spec, ms, **columns):
    """The spec's layers at ``ms`` each, with the protocol ``columns`` given."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("key", "latency_ms", *columns))
        writer.writeheader()
        for layer in dict.fromkeys(spec.layers()):
            writer.writerow({"key": layer.key, "latency_ms": ms, **columns})
    return path


def stated(protocol, **changes):
    """Every protocol column, as the CSV export writes them for ``protocol``, with ``changes``."""
    return {column: getattr(protocol, name) for column, name in PROTOCOL_COLUMNS.items()} | changes


def test_csv_without_protocol_columns_cannot_replace_measured_rows(tmp_path, measured, spec):
    before = measured.read_bytes()
    bare = write_csv(tmp_path / "bare.csv", spec, 9.0)
    with pytest.raises(LatencyError) as caught:
        import_csv(bare, measured, PROTOCOL)
    message = str(caught.value)
    assert "\n" not in message
    n = distinct(spec)
    assert f"would replace {n} of the {n} rows measured on this machine" in message
    assert "missing protocol column(s) device, threads, batch_size, input_resolution" in message
    assert "replace_measured=true" in message and "lut action=export-layers" in message
    assert measured.read_bytes() == before  # nothing written


def test_csv_stating_another_protocol_names_the_difference(tmp_path, measured, spec):
    before = measured.read_bytes()
    other = write_csv(tmp_path / "other.csv", spec, 9.0, **stated(PROTOCOL, threads=4))
    with pytest.raises(LatencyError, match=r"differing: threads 4 vs 1 \(CSV vs table\)"):
        import_csv(other, measured, PROTOCOL)
    assert measured.read_bytes() == before


def test_replace_measured_records_the_imports_provenance_and_drops_the_fit(tmp_path, measured, spec):
    other = write_csv(tmp_path / "other.csv", spec, 9.0, threads=4)
    summary = import_csv(other, measured, PROTOCOL, replace_measured=True)
    n = distinct(spec)
    assert (summary.rows, summary.replaced, summary.fit_dropped) == (n, n, True)
    table = LatencyTable.open(measured, PROTOCOL, create=False)  # still this machine's table
    assert set(table.rows.values()) == {9.0}
    assert not table.fit.fitted  # a later prediction refits or warns
    assert table.measured_here() == set()
    (record,) = table.imports
    assert record.csv == "other.csv" and record.keys == set(table.rows)
    assert record.protocol.fingerprint == EXTERNAL and record.protocol.threads == 4
    assert record.protocol.differences(PROTOCOL.replace(threads=4, fingerprint=EXTERNAL)) == []


def test_csv_stating_the_tables_protocol_is_accepted_as_provenance(tmp_path, measured, spec):
    layers = list(spec.layers())[:3]
    rows = list(csv.DictReader(export_layers_csv(layers, tmp_path / "todo.csv", PROTOCOL).open()))
    for row in rows:
        row["latency_ms"] = "2.5"
    with open(tmp_path / "done.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=tuple(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = import_csv(tmp_path / "done.csv", measured, PROTOCOL)
    assert summary.replaced == 3 and summary.fit_dropped
    table = LatencyTable.read(measured)
    assert len(table.measured_here()) == distinct(spec) - 3
    (record,) = table.imports
    assert record.keys == {layer.key for layer in layers}
    assert record.protocol == PROTOCOL.replace(fingerprint=EXTERNAL)


def test_lut_import_refuses_then_accepts_with_the_flag(tmp_path, measured, spec, capsys):
    bare = write_csv(tmp_path / "bare.csv", spec, 9.0)
    args = [
        "lut", "action=import", f"csv={bare}", f"latency.table={measured}", "space=v3_small", "resolution=32",
        "num_classes=10", "latency.warmup=1", "latency.runs=3", f"hydra.run.dir={tmp_path}/run",
    ]
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    n = distinct(spec)
    assert err.startswith("error: ") and f"would replace {n} of the {n} rows" in err and "\n" not in err
    main([*args, "replace_measured=true"])
    out = capsys.readouterr().out
    assert f"imported {n} rows" in out and f"{n} replaced other figures" in out
    assert "fit dropped" in out and f"imported: {n} rows from bare.csv, measured as cpu [external]" in out


def test_killed_build_loses_at_most_a_few_seconds(tmp_path, monkeypatch):
    """A kill (the file as it is on disk at that moment) after 20 s of measuring at 0.3 s a layer
    keeps every row measured up to a few seconds before."""
    layers = list(SearchSpace(reference_spec("mobilenet_v3_small", num_classes=10, resolution=32)).layers())
    path = tmp_path / "table.json"
    table = LatencyTable.open(path, PROTOCOL)
    clock = SimpleNamespace(now=0.0, monotonic=lambda: clock.now)
    monkeypatch.setattr(table_module, "time", clock)
    measured_at: list[float] = []
    on_disk: list[int] = []

    def fake_measure(targets, **_):
        results = []
        for _target in targets:
            clock.now += 0.3
            measured_at.append(clock.now)
            results.append(LatencyResult(0.1, 0.1, 0.0, 3, PROTOCOL))
            if clock.now >= 20.0:  # killed: what a SIGKILL leaves is what is on disk now
                on_disk.append(len(LatencyTable.read(path)) if path.exists() else 0)
                raise KeyboardInterrupt
        return results

    monkeypatch.setattr(table, "measure", fake_measure)
    with pytest.raises(KeyboardInterrupt):
        table.build(layers, progress=False)
    kept_until = clock.now - 3.0
    assert on_disk[0] >= sum(t <= kept_until for t in measured_at) > 0


def test_measure_label_says_the_width(capsys):
    main(["measure", "arch=mobilenet_v3_small", "width_mult=0.75", "resolution=32", "num_classes=10",
          "latency.warmup=1", "latency.runs=1"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("mobilenet_v3_small (width_mult=0.75, num_classes=10): ")
