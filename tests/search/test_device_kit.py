"""The device kit end to end: ``lut action=export-kit``, bench.py in an interpreter that cannot
import torch or mobilenas, ``lut action=import`` of its CSV, and predictions from the table; bad
kits and tampered models refused by bench.py with one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from evaluators.latency import LatencyProtocol, LatencyTable, kit_bench
from evaluators.latency.csv_format import COLUMNS
from evaluators.latency.kit import export_kit
from search.cli import main
from search_spaces.config import SpaceConfig, build_space
from search_spaces.space import sample_specs

SEED = "in_r32_c3 stem_k3_c16_s2_hs ir_k3_e16_c16_s2_se_re ir_k3_e64_c24_s2_hs head_c96_h128_hs_d0.2_n10"
SPACE = [f"space.seed='{SEED}'", "space.depth_deltas=[0]", "space.widths=[1.0]", "space.kernels=[3]",
         "space.expansions=[1.0]", "resolution=32", "num_classes=10"]
TIMING = ["latency.warmup=1", "latency.runs=2"]


@pytest.fixture(scope="module")
def space():
    config = SpaceConfig(seed=SEED, depth_deltas=[0], widths=[1.0], kernels=[3], expansions=[1.0])
    return build_space(config, num_classes=10, resolution=32)


@pytest.fixture(scope="module")
def kit(tmp_path_factory, space):
    """A kit of the tiny space, fitted on its seed and two samples (not the V3 references)."""
    root = tmp_path_factory.mktemp("kit")
    networks = [space.seed, *sample_specs(space, 2, seed=1, exclude=[space.seed])]
    protocol = LatencyProtocol(runtime="onnxruntime", resolution=32, warmup=1, runs=2)
    export_kit(space.layers(), networks, protocol, root / "kit")
    return root / "kit"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """``python -S`` with only numpy and onnxruntime on its path: no torch, no mobilenas."""
    site = tmp_path_factory.mktemp("site")
    for module in (np, onnxruntime):
        package = Path(module.__file__).parent
        os.symlink(package, site / package.name)
        libs = package.with_name(package.name + ".libs")
        if libs.exists():
            os.symlink(libs, site / libs.name)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    return [sys.executable, "-S"], env


def run_bare(bare_python, args, cwd):
    command, env = bare_python
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_export_kit_writes_a_model_per_layer_a_manifest_and_bench(tmp_path, space, capsys):
    main(["lut", "action=export-kit", f"out={tmp_path / 'kit'}", "fit_specs=0", "progress=false",
          f"hydra.run.dir={tmp_path}/run", *SPACE, *TIMING])
    out = capsys.readouterr().out
    layers = list(space.layers())
    assert f"wrote a device kit for {len(layers)} layers and 0 fit networks" in out
    manifest = json.loads((tmp_path / "kit" / "manifest.json").read_text())
    assert [m["key"] for m in manifest["models"]] == [layer.key for layer in layers]
    assert manifest["protocol"] == {"threads": 1, "batch_size": 1, "input_resolution": 32, "warmup": 1,
                                    "runs": 2, "statistic": "median", "ort_optimization": "all",
                                    "ort_provider": "CPUExecutionProvider"}
    assert (tmp_path / "kit" / "bench.py").read_text() == Path(kit_bench.__file__).read_text()
    first = manifest["models"][0]
    assert first["sha256"] == kit_bench.sha256_of(tmp_path / "kit" / first["file"])


def test_kit_round_trip_bench_without_torch_import_and_predict(tmp_path, kit, bare_python, space, capsys):
    probe = run_bare(bare_python, ["-c", "import onnxruntime, numpy\nfor name in ('torch', 'evaluators'):\n"
                                   "    try:\n        __import__(name)\n    except ImportError:\n"
                                   "        print('no', name)"], tmp_path)
    assert probe.stdout.split("\n")[:2] == ["no torch", "no evaluators"], probe.stderr
    done = run_bare(bare_python, ["bench.py", "--device", "kitbox", "--out", str(tmp_path / "kit.csv")], kit)
    assert done.returncode == 0, done.stderr
    command = "mobilenas lut action=import csv=kit.csv latency=onnxruntime latency.device=kitbox"
    assert command in done.stdout
    assert not list(kit.rglob("*.weights"))  # the generated weights are removed after timing
    with open(tmp_path / "kit.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) <= set(COLUMNS) and len(rows) >= len(list(space.layers()))
    figures = {"scale": 1.0, "overhead": 0.0} | {r["key"]: float(r["latency_ms"]) for r in rows}
    phone = ["latency=onnxruntime", "latency.device=kitbox", *TIMING, *SPACE]
    main(["lut", "action=import", f"csv={tmp_path / 'kit.csv'}", f"latency.tables_dir={tmp_path}",
          f"hydra.run.dir={tmp_path}/run", *phone])
    main(["lut", "action=info", f"latency.tables_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", *phone])
    out = capsys.readouterr().out
    layers = list(space.layers())
    assert f"covers {len(layers)} of the space's {len(layers)} layers" in out
    protocol = LatencyProtocol(device="kitbox", runtime="onnxruntime", resolution=32, warmup=1, runs=2)
    table = LatencyTable.open(tmp_path / "kitbox-t1-b1-r32-ort.json", protocol, create=False)
    layer_sum = sum(figures[layer.key] for layer in space.seed.layers())
    expected = figures["scale"] * layer_sum + figures["overhead"]
    assert table.predict_ms(space.seed) == pytest.approx(expected, abs=1e-4)


def test_bench_writes_the_networks_fit_unless_it_predicts_nonpositive_figures(capsys):
    protocol = {"threads": 1, "batch_size": 1, "input_resolution": 32, "warmup": 1, "runs": 2,
                "statistic": "median", "ort_optimization": "all", "ort_provider": "CPUExecutionProvider"}
    layers = {"stem:r32:c3:stem_k3_c16_s2_hs": 0.5}
    networks = [(1.0, 1.3), (2.0, 2.5), (4.0, 4.9)]  # measured = 1.2 x sum + 0.1
    rows = list(csv.DictReader(kit_bench.csv_text({"layers": layers, "networks": networks,
                                                   "protocol": protocol}, "box").splitlines()))
    assert rows[0]["input_shape"] == "1x3x32x32" and rows[0]["runtime"] == "onnxruntime"
    assert [(r["key"], float(r["latency_ms"])) for r in rows[1:]] == [
        ("scale", pytest.approx(1.2)), ("overhead", pytest.approx(0.1))]
    noisy = [(1.0, 0.01), (1.1, 0.01), (1.05, 0.01)]  # overhead alone: -1.04 ms, a negative figure
    rows = list(csv.DictReader(kit_bench.csv_text({"layers": layers, "networks": noisy,
                                                   "protocol": protocol}, "box").splitlines()))
    assert [r["key"] for r in rows] == list(layers) and "timings were too noisy" in capsys.readouterr().err


def bench_error(kit, capsys, *args):
    assert kit_bench.main(["--device", "kitbox", "--kit", str(kit), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_bench_refuses_bad_kits_with_one_line(tmp_path, kit, capsys):
    assert "not a folder" in bench_error(tmp_path / "nowhere", capsys)
    assert "no manifest; this is not a device kit" in bench_error(tmp_path, capsys)
    copy = Path(shutil.copytree(kit, tmp_path / "copy"))
    manifest = json.loads((copy / "manifest.json").read_text())
    victim = copy / manifest["models"][0]["file"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    assert f"{manifest['models'][0]['file']} does not match its sha256" in bench_error(copy, capsys)
    manifest["models"][0]["file"] = "../../outside.onnx"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "must be a relative path to an .onnx file inside the kit" in bench_error(copy, capsys)
    (copy / "manifest.json").write_text("{not json")
    assert "manifest.json: not valid JSON" in bench_error(copy, capsys)
    assert "--device: 'my phone' is not a device name" in bench_error(kit, capsys, "--device", "my phone")
