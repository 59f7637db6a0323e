"""runtime=onnxruntime: its protocol fields, timing in an InferenceSession, its own tables (refused
for torch and the other way round), figures that another process reads back unchanged, and the
scale/overhead rows of a CSV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest

from evaluators.latency import (
    LatencyConfig,
    LatencyProtocol,
    LatencyTable,
    OverheadFit,
    import_csv,
    latency_evaluator,
    measure_latency,
)
from evaluators.latency.csv_format import PROTOCOL_COLUMNS
from evaluators.latency.protocol import default_table_name
from search_spaces.errors import ConfigError, LatencyError
from search_spaces.reference import reference_spec

ROOT = Path(__file__).resolve().parents[2]
FAST = {"resolution": 32, "warmup": 1, "runs": 2}
ORT = {"runtime": "onnxruntime", **FAST}


@pytest.fixture(scope="module")
def spec():
    return reference_spec("mobilenet_v3_small", num_classes=10, resolution=32)


@pytest.fixture(scope="module")
def ort_table(tmp_path_factory, spec):
    """An onnxruntime table holding the rows of ``spec`` and a fit."""
    path = tmp_path_factory.mktemp("ort") / default_table_name(LatencyProtocol(**ORT))
    table = LatencyTable.open(path, LatencyProtocol(**ORT))
    table.predict_ms(spec)
    table.set_fit(OverheadFit(scale=1.25, overhead_ms=0.125, n_specs=3))
    return path


def test_the_onnxruntime_protocol_states_the_session_and_corrects_drift_on_this_cpu():
    protocol = LatencyProtocol(**ORT)
    assert (protocol.drift_correction, protocol.ort_optimization, protocol.ort_provider) == (
        "reference", "all", "CPUExecutionProvider")
    assert protocol.fingerprint.accelerator == f"onnxruntime {onnxruntime.__version__}"
    session = "onnxruntime InferenceSession (CPUExecutionProvider, graph optimization all)"
    assert protocol.describe().endswith(session)
    assert LatencyProtocol.from_dict(protocol.to_dict()) == protocol
    torch_protocol = LatencyProtocol(**FAST)
    assert torch_protocol.ort_optimization == "-" and "runtime" not in torch_protocol.to_dict()  # old files
    assert LatencyProtocol.from_dict(torch_protocol.to_dict()) == torch_protocol
    assert torch_protocol.replace(runtime="onnxruntime") == protocol


@pytest.mark.parametrize("changes, message", [
    ({"runtime": "tflite"}, "latency.runtime: must be one of torch, onnxruntime, got 'tflite'"),
    ({"ort_optimization": "basic"}, "latency.ort_optimization: applies to runtime=onnxruntime only"),
    ({**ORT, "memory_format": "channels_last"}, "latency.memory_format: must be contiguous"),
    ({**ORT, "ort_optimization": "max"}, "latency.ort_optimization: must be one of disable, basic"),
    ({**ORT, "ort_provider": "XnnpackExecutionProvider"}, "latency.ort_provider: XnnpackExecutionProvider "
                                                          "is not this machine's CPU"),
])
def test_bad_runtime_settings_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        LatencyProtocol(**changes)


def test_onnxruntime_times_the_exported_network_not_eager_torch(spec):
    ort = measure_latency(spec, LatencyProtocol(**{**ORT, "runs": 5}))
    eager = measure_latency(spec, LatencyProtocol(**{**FAST, "runs": 5, "drift_correction": "none"}))
    assert ort.protocol.runtime == "onnxruntime" and ort.reference_ms is not None
    # V3-Small at 32x32: ~0.3 ms in onnxruntime against ~2 ms in eager PyTorch (framework overhead)
    assert 0 < ort.ms < eager.ms / 2


def test_torch_and_onnxruntime_tables_refuse_each_other(tmp_path, ort_table):
    torch_path = tmp_path / "cpu-t1-b1-r32.json"
    LatencyTable(torch_path, LatencyProtocol(**FAST)).save()
    with pytest.raises(LatencyError) as err:
        LatencyTable.open(torch_path, LatencyProtocol(**ORT))
    message = str(err.value)
    assert "\n" not in message and f"{torch_path}: the table was measured with runtime=torch" in message
    assert "runtime: torch vs onnxruntime" in message and "ort_provider: - vs CPUExecutionProvider" in message
    assert str(tmp_path / "cpu-t1-b1-r32-ort.json") in message
    with pytest.raises(LatencyError, match=r"runtime=onnxruntime, not runtime=torch .*use .*-r32\.json"):
        LatencyTable.open(ort_table, LatencyProtocol(**FAST))
    config = LatencyConfig(runtime="onnxruntime", warmup=1, runs=2, table=str(torch_path))
    with pytest.raises(LatencyError, match="runtime: torch vs onnxruntime"):
        latency_evaluator(config, 32)


def test_runtimes_have_their_own_table_files():
    names = {default_table_name(LatencyProtocol(**changes)) for changes in (
        FAST, ORT, {**ORT, "ort_optimization": "disable"})}
    assert names == {"cpu-t1-b1-r32.json", "cpu-t1-b1-r32-ort.json", "cpu-t1-b1-r32-ort-disable.json"}
    assert LatencyConfig(runtime="onnxruntime").table_path(224) == Path("tables/cpu-t1-b1-r224-ort.json")


def test_a_table_opened_in_another_process_gives_the_same_figure(ort_table, spec):
    here = LatencyTable.open(ort_table, LatencyProtocol(**ORT), create=False).predict_ms(spec)
    code = (
        "import sys; from evaluators.latency import LatencyProtocol, LatencyTable;"
        "from search_spaces.reference import reference_spec;"
        "spec = reference_spec('mobilenet_v3_small', num_classes=10, resolution=32);"
        f"table = LatencyTable.open(sys.argv[1], LatencyProtocol(**{ORT!r}), create=False);"
        "print(repr(table.predict_ms(spec)), len(table))"
    )
    rows = len(json.loads(ort_table.read_text())["rows"])
    done = subprocess.run([sys.executable, "-c", code, str(ort_table)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.split() == [repr(here), str(rows)]  # same figure, nothing measured again
    assert here == pytest.approx(1.25 * sum(json.loads(ort_table.read_text())["rows"][layer.key]
                                            for layer in spec.layers()) + 0.125)


def test_measure_mode_times_in_onnxruntime(spec):
    config = LatencyConfig(runtime="onnxruntime", mode="measure", warmup=1, runs=2)
    evaluator = latency_evaluator(config, 32)
    assert evaluator.protocol.runtime == "onnxruntime" and evaluator(spec) > 0
    assert "onnxruntime InferenceSession" in evaluator.describe()


def write_csv(path: Path, key: str, protocol: LatencyProtocol, extra: list[str]) -> Path:
    cells = [str(getattr(protocol, name)) for name in PROTOCOL_COLUMNS.values()]
    lines = [",".join(["key", "latency_ms", *PROTOCOL_COLUMNS]), ",".join([key, "0.5", *cells]), *extra]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_sets_scale_and_a_negative_overhead_and_states_the_runtime(tmp_path, spec):
    phone = LatencyProtocol(device="pixel7-ort", **ORT)
    key = next(iter(spec.layers())).key
    csv = write_csv(tmp_path / "phone.csv", key, phone, ["scale,1.25", "overhead,-0.125"])
    summary = import_csv(csv, tmp_path / "phone.json", phone)
    table = LatencyTable.read(summary.table)
    assert (table.fit.scale, table.fit.overhead_ms) == (1.25, -0.125) and table.rows[key] == 0.5
    assert table.imports[0].protocol.runtime == "onnxruntime"
    with pytest.raises(LatencyError, match=r"line 2: column runtime is 'onnxruntime' but the import's "
                                           r"protocol has 'torch'; import with latency.runtime=onnxruntime"):
        import_csv(csv, tmp_path / "torch.json", LatencyProtocol(device="pixel7-ort", **FAST))
    write_csv(csv, key, phone, ["scale,0"])
    with pytest.raises(LatencyError, match="line 3: the scale row's latency_ms must be a factor > 0, got 0"):
        import_csv(csv, tmp_path / "phone2.json", phone)


def test_replace_resolves_again_only_what_depends_on_a_changed_device_or_runtime():
    protocol = LatencyProtocol(**{**ORT, "ort_optimization": "basic"})
    same = protocol.replace(runtime="onnxruntime", device=protocol.device, runs=7)  # as a CSV import does
    assert same.ort_optimization == "basic" and same.drift_correction == protocol.drift_correction
    assert same.runs == 7
    torch_protocol = protocol.replace(runtime="torch")
    assert torch_protocol.ort_optimization == "-" and torch_protocol.drift_correction == "reference"
    assert protocol.replace(device="pixel7").drift_correction == "none"  # an external device
