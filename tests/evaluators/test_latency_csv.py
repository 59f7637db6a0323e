from __future__ import annotations

import csv

import pytest

from evaluators.latency import LatencyProtocol, LatencyTable, export_layers_csv, import_csv, layer_from_key
from evaluators.latency.csv_format import COLUMNS
from search_spaces.errors import LatencyError
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace

PHONE = LatencyProtocol(device="pixel7-tflite", threads=4, resolution=32)


@pytest.fixture(scope="module")
def spec():
    return reference_spec("mobilenet_v3_small", num_classes=10, resolution=32)


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_every_layer_key_parses_back_to_its_layer(spec):
    for layer in SearchSpace(spec).layers():
        assert layer_from_key(layer.key) == layer
    with pytest.raises(LatencyError, match="layer key 'block:r8:ir_k3' is malformed"):
        layer_from_key("block:r8:ir_k3")
    with pytest.raises(
        LatencyError, match="not in canonical form; write it as 'block:r8:c16:ir_k3_e16_c16_s1_re'"
    ):
        layer_from_key("block:r8:c16:ir_s1_k3_e16_c16_re")


def test_export_lists_the_layers_to_measure_with_the_protocol(tmp_path, spec):
    layers = list(SearchSpace(spec).layers())
    rows = read(export_layers_csv(layers, tmp_path / "todo.csv", PHONE))
    assert len(rows) == len(layers) and tuple(rows[0]) == COLUMNS
    assert all(r["latency_ms"] == "" for r in rows)
    first = rows[0]
    assert first["key"] == layers[0].key and first["input_shape"] == "1x3x32x32"
    assert (first["device"], first["threads"], first["input_resolution"]) == ("pixel7-tflite", "4", "32")


def test_imported_table_predicts_the_exact_sum_plus_overhead(tmp_path, spec):
    rows = read(export_layers_csv(spec.layers(), tmp_path / "todo.csv", PHONE))
    for i, row in enumerate(rows):
        row["latency_ms"] = f"{0.125 * (i + 1)}"
    rows.append({"key": "overhead", "latency_ms": "0.75"})
    write(tmp_path / "done.csv", rows)
    summary = import_csv(tmp_path / "done.csv", tmp_path / "phone.json", PHONE)
    assert (summary.rows, summary.skipped, summary.overhead_ms) == (len(rows) - 1, 0, 0.75)
    table = LatencyTable.open(tmp_path / "phone.json", PHONE, create=False)
    given = {row["key"]: float(row["latency_ms"]) for row in rows}
    assert (
        table.predict_ms(spec) == sum(given[layer.key] for layer in spec.layers()) + 0.75
    )  # exact, in 1/8 ms


def test_foreign_table_refuses_to_measure_missing_rows(tmp_path, spec):
    layers = list(spec.layers())
    rows = read(export_layers_csv(layers, tmp_path / "todo.csv", PHONE))
    for row in rows:
        row["latency_ms"] = "1.0"
    rows[2]["latency_ms"] = ""  # not measured yet: skipped on import
    write(tmp_path / "partial.csv", rows)
    summary = import_csv(tmp_path / "partial.csv", tmp_path / "phone.json", PHONE)
    assert summary.skipped == 1
    table = LatencyTable.open(tmp_path / "phone.json", PHONE)
    with pytest.raises(
        LatencyError,
        match=r"1 layer\(s\) have no row for the external device 'pixel7-tflite' "
        r"and cannot be measured on this machine",
    ) as caught:
        table.predict_ms(spec)
    assert str(caught.value).count(layers[2].key) == 1  # the missing key is named
    assert "action=import" in str(caught.value) and "action=export-layers" in str(caught.value)
    todo = read(tmp_path / "phone.missing.csv")
    assert [r["key"] for r in todo] == [layers[2].key]


def test_layer_fields_instead_of_keys(tmp_path, spec):
    layer = list(spec.layers())[1]
    write(
        tmp_path / "f.csv",
        [
            {
                "kind": "block",
                "resolution": layer.resolution,
                "in_channels": layer.in_channels,
                "op": layer.key.split(":")[3],
                "latency_ms": "0.5",
            }
        ],
        columns=("kind", "resolution", "in_channels", "op", "latency_ms"),
    )
    import_csv(tmp_path / "f.csv", tmp_path / "t.json", PHONE)
    assert LatencyTable.open(tmp_path / "t.json", PHONE).rows == {layer.key: 0.5}


def test_protocol_cells_are_read_as_the_protocol_stores_them(tmp_path, spec):
    key = list(spec.layers())[1].key
    row = {"key": key, "latency_ms": "0.5", "device": "pixel7-tflite", "drift_correction": "auto"}
    write(tmp_path / "p.csv", [row], columns=("key", "latency_ms", "device", "drift_correction"))
    import_csv(tmp_path / "p.csv", tmp_path / "p.json", PHONE)  # auto is none on an external device
    assert LatencyTable.open(tmp_path / "p.json", PHONE).rows == {key: 0.5}
    write(tmp_path / "r.csv", [{**row, "drift_correction": "reference"}], columns=tuple(row))
    message = "column drift_correction is 'reference' but the import's protocol has 'none'"
    with pytest.raises(LatencyError, match=message):
        import_csv(tmp_path / "r.csv", tmp_path / "r.json", PHONE)


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        (
            [{"key": "block:r8:c16:ir_k3_e16_c16_s1_re", "latency": "1"}],
            ("key", "latency"),
            r"unknown column\(s\) latency; allowed: key",
        ),
        (
            [{"key": "block:r8:c16:ir_k3_e16_c16_s1_re", "latency_ms": "fast"}],
            ("key", "latency_ms"),
            r"line 2: latency_ms 'fast' is not a number of milliseconds",
        ),
        (
            [{"key": "block:r8:c16:ir_k3_e16_c16_s1_re", "latency_ms": "-1"}],
            ("key", "latency_ms"),
            r"latency_ms must be a finite number >= 0",
        ),
        (
            [{"key": "block:r8:c16:ir_k3_e16_c16_s1_re", "latency_ms": "1", "threads": "1"}],
            ("key", "latency_ms", "threads"),
            r"column threads is '1' but the import's protocol has 4; import with latency.threads=1",
        ),
        (
            [{"key": "block:r8:c16:ir_k9_e16_c16_s1_re", "latency_ms": "1"}],
            ("key", "latency_ms"),
            r"line 2: layer key .*kernel must be one of \{3, 5, 7\}, got 9",
        ),
        (
            [
                {"key": "block:r8:c16:ir_k3_e16_c16_s1_re", "latency_ms": "1"},
                {"key": "block:r8:c16:ir_k3_e16_c16_s1_re", "latency_ms": "2"},
            ],
            ("key", "latency_ms"),
            r"line 3: layer block:r8:c16:ir_k3_e16_c16_s1_re appears twice with different latencies",
        ),
        (
            [{"op": "ir_k3_e16_c16_s1_re", "latency_ms": "1"}],
            ("op", "latency_ms"),
            r"needs a key column, or the columns kind, resolution, in_channels, op",
        ),
    ],
)
def test_malformed_csv_is_refused_naming_line_and_column(tmp_path, rows, columns, message):
    write(tmp_path / "bad.csv", rows, columns)
    with pytest.raises(LatencyError, match=message):
        import_csv(tmp_path / "bad.csv", tmp_path / "t.json", PHONE)
    assert not (tmp_path / "t.json").exists()
