from __future__ import annotations

import json

import pytest

from evaluators.latency import LatencyProtocol, LatencyTable, OverheadFit, fit_scale_overhead, validate_table
from search_spaces.errors import LatencyError
from search_spaces.reference import reference_spec

FAST = {"resolution": 32, "warmup": 1, "runs": 3}


@pytest.fixture(scope="module")
def specs():
    return [
        reference_spec("mobilenet_v3_small", width_mult=w, num_classes=10, resolution=32) for w in (0.5, 0.75)
    ]


@pytest.fixture(scope="module")
def protocol():
    return LatencyProtocol(**FAST)


@pytest.fixture
def built(tmp_path, specs, protocol):
    """A table file holding the rows of the first spec."""
    path = tmp_path / "table.json"
    LatencyTable.open(path, protocol).predict_ms(specs[0])
    return path


def test_missing_rows_are_measured_on_demand_and_persisted_atomically(tmp_path, specs, protocol):
    path = tmp_path / "table.json"
    table = LatencyTable.open(path, protocol)
    assert len(table) == 0 and not path.exists()
    predicted = table.predict_ms(specs[0])
    keys = {layer.key for layer in specs[0].layers()}
    assert set(table.rows) == keys
    assert predicted == pytest.approx(sum(table.rows[layer.key] for layer in specs[0].layers()))  # plain sum
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary file left behind
    reopened = LatencyTable.open(path, protocol, create=False)
    assert set(reopened.rows) == keys and reopened.protocol == protocol
    assert reopened.predict_ms(specs[0]) == pytest.approx(predicted)
    reopened.predict_ms(specs[1])  # adds the second spec's rows
    assert set(json.loads(path.read_text())["rows"]) == keys | {layer.key for layer in specs[1].layers()}


def test_another_protocol_or_machine_is_refused(built, protocol):
    with pytest.raises(
        LatencyError, match=r"another protocol \(threads: 1 vs 2; table vs requested\)"
    ):
        LatencyTable.open(built, protocol.replace(threads=2))
    data = json.loads(built.read_text())
    data["protocol"]["fingerprint"]["host"] = "AMD EPYC 9654 x192"
    built.write_text(json.dumps(data))
    with pytest.raises(
        LatencyError, match=r"fingerprint: AMD EPYC 9654 x192, torch .* vs .*never used"
    ):
        LatencyTable.open(built, protocol)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], r"truncated or corrupt \(.* at line \d+, column \d+\); delete"),
        (lambda text: "", "the latency table file is empty"),
        (lambda text: json.dumps({"format": "something else"}), "not a mobilenas latency table"),
        (lambda text: text.replace('"version": 3', '"version": 7'), "version 7 is not supported"),
        (
            lambda text: text.replace('"version": 3', '"version": 2'),
            "version 2 is not supported; expected 3; it was measured by an older mobilenas .in the old drift",
        ),
        (lambda text: text.replace('"reference_ms": ', '"reference_ms": -'),
         "'reference_ms' must be a positive"),
        (lambda text: text.replace('"threads": 1', '"threads": -1'), r"bad header: latency.threads: must be"),
        (
            lambda text: text.replace(': {\n  "block', ': {\n  "bogus": 1.0,\n  "block'),
            "'bogus' is not a layer key",
        ),
    ],
)
def test_corrupt_or_truncated_tables_are_refused(built, protocol, damage, message):
    built.write_text(damage(built.read_text()))
    with pytest.raises(LatencyError, match=message):
        LatencyTable.open(built, protocol)


def test_bad_row_values_and_missing_files(built, protocol, tmp_path):
    data = json.loads(built.read_text())
    key = next(iter(data["rows"]))
    data["rows"][key] = -0.5
    built.write_text(json.dumps(data))
    with pytest.raises(LatencyError, match=r"latency must be a finite number of ms >= 0, got -0.5"):
        LatencyTable.open(built, protocol)
    with pytest.raises(LatencyError, match="no latency table there; build one"):
        LatencyTable.open(tmp_path / "absent.json", protocol, create=False)


def test_prediction_resolution_must_match(built, protocol):
    table = LatencyTable.open(built, protocol)
    with pytest.raises(LatencyError, match=r"resolution 64 differs from the table's resolution 32"):
        table.predict_ms(reference_spec("mobilenet_v3_small", num_classes=10, resolution=64))


def test_overhead_is_fitted_stored_and_applied(built, protocol, specs):
    table = LatencyTable.open(built, protocol)
    fit = table.fit_overhead(specs, rounds=1)
    assert fit.n_specs == 2 and fit.scale == 1.0  # two networks: the overhead only
    reopened = LatencyTable.open(built, protocol)
    assert reopened.fit == fit
    expected = sum(reopened.rows[layer.key] for layer in specs[0].layers()) + fit.overhead_ms
    assert reopened.predict_ms(specs[0]) == pytest.approx(expected)


def test_least_squares_fit_is_exact_on_linear_data():
    fit = fit_scale_overhead([1.0, 2.0, 4.0], [2.5, 4.5, 8.5])
    assert fit.scale == pytest.approx(2.0) and fit.overhead_ms == pytest.approx(0.5)
    assert fit.rmse_ms == pytest.approx(0.0, abs=1e-9) and fit.n_specs == 3
    few = fit_scale_overhead([1.0, 2.0], [1.5, 2.7])
    assert few.scale == 1.0 and few.overhead_ms == pytest.approx(0.6)
    with pytest.raises(LatencyError, match="fit.scale: must be > 0"):
        OverheadFit(scale=0.0)


def test_rows_saved_by_another_process_are_merged_not_lost(built, protocol, specs):
    first, second = LatencyTable.open(built, protocol), LatencyTable.open(built, protocol)
    first.add_rows({"block:r8:c16:ir_k3_e16_c16_s1_re": 0.25})
    second.add_rows({"block:r8:c16:ir_k5_e16_c16_s1_re": 0.5})
    rows = LatencyTable.open(built, protocol).rows
    assert (
        rows["block:r8:c16:ir_k3_e16_c16_s1_re"] == 0.25 and rows["block:r8:c16:ir_k5_e16_c16_s1_re"] == 0.5
    )


def test_rows_share_the_tables_drift_unit_across_processes(built, protocol, specs, monkeypatch):
    table = LatencyTable.open(built, protocol)
    unit = table.reference_ms
    assert protocol.drift_correction == "reference" and unit is not None and unit > 0
    assert json.loads(built.read_text())["reference_ms"] == unit

    # a later process extends the table in the stored unit: it never calibrates its own
    import evaluators.latency.measure as measure

    seen = []
    real = measure._timed_runs
    monkeypatch.setattr(measure, "calibrated_reference_ms", lambda *a: pytest.fail("calibrated again"))
    monkeypatch.setattr(measure, "_timed_runs", lambda *a: seen.append(a[-1]) or real(*a))
    reopened = LatencyTable.open(built, protocol)
    reopened.predict_ms(specs[1])
    assert seen and set(seen) == {unit}
    assert reopened.reference_ms == unit


def test_rows_saved_meanwhile_in_another_unit_are_converted(tmp_path, protocol):
    path = tmp_path / "table.json"
    small = reference_spec("mobilenet_v3_small", num_classes=10, resolution=32)
    keys = [layer.key for layer in small.layers()]
    theirs = LatencyTable(path, protocol, reference_ms=0.5, rows={keys[0]: 1.0})
    theirs.save()
    ours = LatencyTable(path, protocol, reference_ms=0.25, rows={keys[1]: 2.0})
    ours.save()  # merges the file's row, measured in a unit twice as large
    merged = LatencyTable.open(path, protocol)
    assert merged.reference_ms == 0.25
    assert merged.rows[keys[0]] == pytest.approx(0.5) and merged.rows[keys[1]] == pytest.approx(2.0)


def test_a_table_without_drift_correction_has_no_unit(tmp_path, specs, protocol):
    raw = protocol.replace(drift_correction="none")
    table = LatencyTable.open(tmp_path / "raw.json", raw)
    table.predict_ms(specs[0])
    assert table.reference_ms is None
    data = json.loads((tmp_path / "raw.json").read_text())
    assert data["reference_ms"] is None
    data["reference_ms"] = 0.3
    (tmp_path / "raw.json").write_text(json.dumps(data))
    with pytest.raises(LatencyError, match="'reference_ms' is set but the protocol does not correct drift"):
        LatencyTable.open(tmp_path / "raw.json", raw)


def test_validation_can_fit_on_other_networks_timed_alongside(built, protocol, specs):
    table = LatencyTable.open(built, protocol)
    stored = table.fit_overhead(specs, rounds=1)
    fitting = [reference_spec("mobilenet_v3_small", width_mult=w, num_classes=10, resolution=32)
               for w in (0.35, 1.0)]
    report = validate_table(table, specs, fit_specs=[*fitting, specs[0]], rounds=1, progress=False)
    assert report.fit_source == "session" and report.fit.n_specs == 2  # validation specs are never fitted on
    assert report.predicted_ms == pytest.approx([report.fit.apply(table.sum_ms(s)) for s in specs])
    assert report.table_predicted_ms == pytest.approx([table.predict_ms(s) for s in specs])
    # the table is not changed
    assert table.fit == stored and LatencyTable.open(built, protocol).fit == stored
    with_stored = report.table_fit_report()
    assert with_stored.fit_source == "table" and with_stored.fit == stored
    assert with_stored.predicted_ms == report.table_predicted_ms
    assert with_stored.measured_ms == report.measured_ms
    plain = validate_table(table, specs, rounds=1, progress=False)
    assert plain.fit_source == "table" and plain.fit == stored and plain.table_fit_report() is None
