"""``mobilenas export`` and the run directories it reads (train, search/refine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from search.cli import main
from search.export import export_model, load_exported
from search.export_sources import read_run
from search.run_record import RunRecord, write_run_record
from search.training_job import train_record
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model
from search_spaces.errors import DataError, ExportError
from search_spaces.serialize import save_spec

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e8_c8_s1_se_re ir_k5_e32_c16_s2_hs ir_k3_e48_c16_s1_se_hs " \
       "head_c32_h64_hs_d0.2_n10"


@pytest.fixture
def spec():
    return from_string(TINY)


@pytest.fixture
def train_run(spec, tmp_path):
    """A directory laid out as 'mobilenas train' leaves it."""
    run = tmp_path / "runs" / "train" / "2025-01-01_12-00-00"
    torch.manual_seed(3)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    model.train()(torch.randn(2, 3, 32, 32))
    model.eval()
    save_spec(spec, run / "spec.json")
    save_file(model.state_dict(), str(run / "weights.safetensors"))
    metrics = {"top1": 0.625, "top5": 0.9, "split": "test", "data": {"name": "synthetic", "train": 500},
               "budget": {"epochs": 2}, "seconds": 12.5, "ema": False,
               "history": [{"epoch": 1, "top1": 0.4}, {"epoch": 2, "top1": 0.625}]}
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_run_record(run, train_record(spec, metrics))
    return run, model


def test_export_from_train_run_is_exact(train_run, tmp_path, capsys):
    run, model = train_run
    out = tmp_path / "exported"
    main(["export", f"run={run}", f"out={out}"])
    printed = capsys.readouterr().out
    assert f"exported train_2025-01-01_12-00-00 -> {out}" in printed
    assert "ONNX opset 17" in printed
    spec, loaded = load_exported(out)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    card = (out / "MODEL_CARD.md").read_text()
    assert "top-1 62.50%; top-5 90.00%" in card and "data: name: synthetic; train: 500" in card
    assert "budget: epochs: 2" in card and "trained weights" in card
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["metadata"]["provenance"]["seconds"] == 12.5 and "history" not in manifest["metadata"]
    assert manifest["metadata"]["run"] == {"kind": "train", "record": "run.json"}
    assert manifest["metadata"]["source"]["weights"] == "weights.safetensors"


def test_a_run_record_carries_latency_accuracy_and_provenance_to_the_card(spec, tmp_path):
    run = tmp_path / "refine_run"
    run.mkdir()
    save_spec(spec.replace(num_classes=5), run / "spec.json")  # another spec beside it: the record wins
    write_run_record(run, RunRecord(kind="search", spec=spec, latency_ms=2.5,
                                    protocol={"device": "cpu", "threads": 1},
                                    provenance={"method": "search", "trial": 4}))
    source = read_run(run)
    assert source.spec == spec and source.weights is None and source.name == "refine_run"
    assert source.metadata["latency_ms"] == 2.5 and source.metadata["protocol"]["threads"] == 1
    result = export_model(source.spec, source.weights, tmp_path / "out", metadata=source.metadata, onnx=False,
                          torchscript=False)
    card = result.path("MODEL_CARD.md").read_text()
    assert "- 2.500 ms\n- protocol: device: cpu; threads: 1" in card and "## Accuracy\n\n- untrained" in card
    assert "method: search; trial: 4" in card
    # a record naming weights the dir lacks is refused, not exported untrained
    write_run_record(run, RunRecord(kind="refine", spec=spec, weights="weights.safetensors",
                                    accuracy={"val_top1": 0.5, "test_top1": 0.48}))
    with pytest.raises(ExportError, match="run.json: names weights weights.safetensors, which .* does not"):
        read_run(run)


def test_a_run_without_a_record_gives_its_spec_and_weights_only(spec, tmp_path):
    """Runs written before run records: the spec file and weights, none of the figures guessed."""
    run = tmp_path / "old"
    run.mkdir()
    save_spec(spec, run / "winner.json")
    (run / "summary.json").write_text(json.dumps({"latency": {"ms": 2.5}, "accuracy": 0.5}))
    source = read_run(run)
    assert source.spec == spec and source.weights is None
    assert "latency_ms" not in source.metadata and "accuracy" not in source.metadata
    assert "written before run records" in source.metadata["provenance"]


def test_run_directory_errors_name_the_file(tmp_path, spec):
    with pytest.raises(ExportError, match="run=.*nothere: run directory not found"):
        read_run(tmp_path / "nothere")
    (tmp_path / "r").mkdir()
    with pytest.raises(ExportError, match="no run.json, winner.json or spec.json in it"):
        read_run(tmp_path / "r")
    (tmp_path / "r" / "run.json").write_text("{kind: train")
    with pytest.raises(DataError, match=r"r/run.json: not valid JSON"):
        read_run(tmp_path / "r")
    (tmp_path / "r" / "run.json").write_text(json.dumps({"best": 1}))
    with pytest.raises(DataError, match="run.json: not a mobilenas run record"):
        read_run(tmp_path / "r")


def test_command_exports_a_spec_string(tmp_path, capsys):
    out = tmp_path / "s"
    main(["export", f"arch='{TINY}'", f"out={out}", "onnx=false"])
    assert "untrained (initialization)" in capsys.readouterr().out
    assert (out / "model.torchscript.pt").is_file() and not (out / "model.onnx").exists()
    assert "given as arch=" in (out / "MODEL_CARD.md").read_text()


def test_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    result = subprocess.run([sys.executable, "-m", "search", "export"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: export: give exactly one of arch=<reference|spec file|spec string> or run=<run dir>")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "run=missing"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: run=missing: run directory not found"
    with pytest.raises(SystemExit):
        main(["export", "arch=mobilenet_v3_small", "opset=11"])
    assert "export.opset: must be >= 17, got 11" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
