from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from evaluators.latency import (
    LatencyConfig,
    LatencyTable,
    LutLatency,
    MeasuredLatency,
    default_table_name,
    latency_evaluator,
)
from search.cli import main
from search_spaces.errors import ConfigError, LatencyError
from search_spaces.reference import reference_spec

TINY = {
    "space": "v3_small",
    "resolution": "32",
    "num_classes": "10",
    "latency.warmup": "1",
    "latency.runs": "3",
    "progress": "false",
}


def overrides(**extra: str) -> list[str]:
    return [f"{k}={v}" for k, v in {**TINY, **extra}.items()]


@pytest.fixture(scope="module")
def spec():
    small = reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32)
    return small.with_blocks([block.replace(kernel=7) for block in small.blocks])  # not a reference


def test_lut_evaluator_has_the_shared_shape_and_fits_itself_at_first_use(tmp_path, spec):
    cfg = LatencyConfig(warmup=1, runs=3, fit_rounds=1, tables_dir=str(tmp_path))
    evaluator = latency_evaluator(cfg, 32)
    assert isinstance(evaluator, LutLatency)
    assert (evaluator.name, evaluator.unit, evaluator.backend) == ("latency", "ms", "lut")
    assert evaluator.protocol == cfg.protocol(32)
    ms = evaluator(spec)
    assert ms > 0 and evaluator(spec) == ms
    stored = LatencyTable.open(tmp_path / "cpu-t1-b1-r32.json", cfg.protocol(32), create=False)
    assert stored.fit.n_specs == 9  # the V3 references at 4 widths + the first spec asked


def test_measure_mode_and_bad_config(tmp_path, spec):
    evaluator = latency_evaluator(LatencyConfig(mode="measure", warmup=1, runs=3), 32)
    assert isinstance(evaluator, MeasuredLatency) and evaluator.backend == "measure"
    assert evaluator(spec) > 0
    assert evaluator.reference_ms > 0  # the drift-correction unit it calibrated
    pinned = latency_evaluator(LatencyConfig(mode="measure", warmup=1, runs=3, reference_ms=0.5), 32)
    pinned(spec)
    assert pinned.reference_ms == 0.5
    with pytest.raises(ConfigError, match="latency.mode: must be one of lut, measure, got 'guess'"):
        latency_evaluator(LatencyConfig(mode="guess"), 32)
    with pytest.raises(LatencyError, match="'pixel7' is not this machine"):
        latency_evaluator(LatencyConfig(mode="measure", device="pixel7"), 32)


def test_table_names_key_device_threads_batch_resolution():
    cfg = LatencyConfig(device="cuda:1", threads=4, batch_size=8, memory_format="channels_last")
    assert (
        default_table_name(replace(cfg, device="pixel7-tflite").protocol(160))
        == "pixel7-tflite-t4-b8-r160-cl.json"
    )
    assert LatencyConfig(table="my.json").table_path(224).name == "my.json"
    assert str(LatencyConfig(tables_dir="t").table_path(96)) == "t/cpu-t1-b1-r96.json"


def test_measure_command_prints_latency_with_protocol(capsys):
    main(["measure", "arch=mobilenet_v3_small", "resolution=32", "latency.warmup=1", "latency.runs=3"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mobilenet_v3_small: ") and "ms (median of 3 runs, IQR" in out[0]
    assert (
        out[1].startswith("protocol: cpu [")
        and "1 thread, batch 1, 32x32, contiguous, 1 warm-up, 3 runs" in out[1]
    )


def test_lut_command_export_import_info(tmp_path, capsys):
    todo, tables = tmp_path / "todo.csv", str(tmp_path / "tables")
    phone = {"latency": "external", "latency.device": "toy-npu", "latency.tables_dir": tables}
    main(["lut", "action=export-layers", f"csv={todo}", f"hydra.run.dir={tmp_path}/run", *overrides(**phone)])
    assert "wrote 1972 layer configurations" in capsys.readouterr().out
    lines = todo.read_text().splitlines()
    todo.write_text(
        "\n".join([lines[0]] + [line.replace(",,toy-npu,", ",0.5,toy-npu,") for line in lines[1:]])
    )
    main(["lut", "action=import", f"csv={todo}", f"hydra.run.dir={tmp_path}/run", *overrides(**phone)])
    out = capsys.readouterr().out
    assert "imported 1972 rows into" in out and "covers 1972 of the space's 1972 layers" in out
    main(["lut", "action=info", f"hydra.run.dir={tmp_path}/run", *overrides(**phone)])
    assert "protocol: toy-npu [external], 1 thread" in capsys.readouterr().out


@pytest.mark.slow
def test_lut_command_builds_and_validates(tmp_path, capsys):
    common = [
        f"hydra.run.dir={tmp_path}/run",
        *overrides(**{"latency.tables_dir": str(tmp_path / "t"), "fit_specs": "2"}),
    ]
    main(["lut", "action=validate", "specs=3", "rounds=1", "space.depth_deltas=[0]", *common])
    out = capsys.readouterr().out
    assert "fitted on 9 networks" in out  # seed (= V3-Small) + 1 sample + 8 references
    assert "validation of" in out and "Spearman" in out
    assert "(fitted on other networks timed alongside)" in out
    assert "with the table's stored fit instead" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["n"] == 3 and len(report["specs"]) == 3 and report["protocol"]["resolution"] == 32
    assert report["fit_source"] == "session" and report["table_fit"]["fit_source"] == "table"
    assert (tmp_path / "run" / "validation.png").stat().st_size > 10_000


def test_bad_lut_input_is_a_one_line_error(tmp_path):
    command = [sys.executable, "-m", "search", "lut", "action=frob", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: lut.action: 'frob' is not one of build, validate, import, export-layers, export-kit, info"
    )
